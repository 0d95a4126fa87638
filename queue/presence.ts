import { PROTOCOL_VERSION, workerWakeKey } from './keys.js';
import { InvalidArgumentError, translateScriptError } from './errors.js';
import { requireNumber } from './options.js';
import { runScript, type ScriptName } from './scripts.js';
import type { BatchQueue } from './queue.js';

/**
 * Worker presence: each worker of a batch keeps one entry in the batch's `workers` hash
 * (refreshed by heartbeats, stamped with Redis's clock) so the operator can see live
 * workers and drain idle ones first; `drain` holds the ids of workers asked to stop.
 * An entry whose heartbeat is older than the caller's `staleMs` is treated as gone and
 * removed by pruneWorkers()/listWorkers().
 */

/** What a worker reports about itself on each heartbeat. */
export interface PresenceReport {
  /** Items claimed and not yet finished (prefetched + running). */
  inflight: number;
  /** Items running in an executor now. */
  running: number;
  /** Pool size. */
  capacity: number;
  mode: string;
  /** The worker stopped claiming (SIGTERM or a drain request). */
  draining: boolean;
  startedAt: number;
  podIp?: string;
  version?: string;
}

export interface WorkerPresence extends PresenceReport {
  id: string;
  /** Last heartbeat, by Redis's clock. */
  heartbeatAt: Date;
  /** Ms since the last heartbeat, by Redis's clock. */
  ageMs: number;
  /** A drain was requested for this worker. */
  drainRequested: boolean;
}

export const DEFAULT_STALE_MS = 30_000;
const MAX_WORKER_ID_BYTES = 253;

export function validateWorkerId(id: unknown): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
  if (typeof id !== 'string' || id.length === 0 || Buffer.byteLength(id) > MAX_WORKER_ID_BYTES || /[\u0000-\u001f\u007f]/.test(id)) {
    throw new InvalidArgumentError(`worker id ${JSON.stringify(id)} is invalid: use a non-empty string of at most ${MAX_WORKER_ID_BYTES} bytes without control characters (a pod name)`);
  }
  return id;
}

/** Registers or refreshes a worker; returns whether a drain was requested for it. */
export async function heartbeat(queue: BatchQueue, workerId: string, report: PresenceReport): Promise<{ drainRequested: boolean; serverTimeMs: number }> {
  validateWorkerId(workerId);
  const json = JSON.stringify({ id: workerId, ...report });
  const [drain, now] = (await run(queue, 'presence-beat', [workerId, json])) as [number, number];
  return { drainRequested: drain === 1, serverTimeMs: Number(now) };
}

/** Removes entries older than `staleMs` and drain requests of unregistered workers. */
export async function pruneWorkers(queue: BatchQueue, staleMs = DEFAULT_STALE_MS): Promise<{ removed: number; drainRequestsRemoved: number }> {
  requireStale(staleMs);
  const [removed, dropped] = (await run(queue, 'presence-prune', [staleMs])) as [number, number];
  return { removed: Number(removed), drainRequestsRemoved: Number(dropped) };
}

/**
 * The live workers, most recently seen first. Stale entries are pruned first (one round
 * trip for both), so a worker that stopped heartbeating disappears from the registry.
 */
export async function listWorkers(queue: BatchQueue, options: { staleMs?: number } = {}): Promise<WorkerPresence[]> {
  const staleMs = requireStale(options.staleMs ?? DEFAULT_STALE_MS);
  const pipeline = queue.redis.pipeline();
  const keys = presenceKeys(queue);
  void runScript(pipeline, 'presence-prune', keys, [PROTOCOL_VERSION, queue.expectedEpoch, staleMs]);
  void runScript(pipeline, 'presence-list', keys, [PROTOCOL_VERSION, queue.expectedEpoch]);
  const replies = (await pipeline.exec()) ?? [];
  for (const [err] of replies) if (err) throw translateScriptError(err, batchName(queue));
  const reply = (replies[1]?.[1] ?? [0]) as (string | number)[];
  const now = Number(reply[0]);
  const out: WorkerPresence[] = [];
  for (let i = 1; i + 2 < reply.length; i += 3) {
    const id = String(reply[i]);
    let entry: Partial<PresenceReport> & { at?: number };
    try {
      entry = JSON.parse(String(reply[i + 1])) as Partial<PresenceReport> & { at?: number };
    } catch {
      continue;
    }
    const at = Number(entry.at ?? 0);
    if (now - at > staleMs) continue;
    out.push({
      id,
      heartbeatAt: new Date(at),
      ageMs: Math.max(0, now - at),
      drainRequested: Number(reply[i + 2]) === 1,
      inflight: Number(entry.inflight ?? 0),
      running: Number(entry.running ?? 0),
      capacity: Number(entry.capacity ?? 0),
      mode: String(entry.mode ?? ''),
      draining: entry.draining === true,
      startedAt: Number(entry.startedAt ?? 0),
      ...(entry.podIp ? { podIp: String(entry.podIp) } : {}),
      ...(entry.version ? { version: String(entry.version) } : {}),
    });
  }
  return out.sort((a, b) => a.ageMs - b.ageMs || a.id.localeCompare(b.id));
}

/**
 * Asks a worker to drain: it stops claiming, finishes or releases its items and exits 0,
 * as on SIGTERM. Returns whether the worker is currently registered (the request is kept
 * either way, so a worker that registers later drains at once).
 */
export async function requestDrain(queue: BatchQueue, workerId: string): Promise<boolean> {
  validateWorkerId(workerId);
  return Number(await run(queue, 'presence-drain', [workerId], [workerWakeKey(queue.keys, workerId)])) === 1;
}

/** Removes a worker's entry and drain request (called by a worker as it exits). */
export async function leave(queue: BatchQueue, workerId: string): Promise<boolean> {
  validateWorkerId(workerId);
  return Number(await run(queue, 'presence-leave', [workerId], [workerWakeKey(queue.keys, workerId)])) === 1;
}

function presenceKeys(queue: BatchQueue): string[] {
  return [queue.keys.meta, queue.keys.workers, queue.keys.drain];
}

function batchName(queue: BatchQueue): string {
  return `${queue.ref.namespace}/${queue.ref.name}`;
}

function requireStale(staleMs: number): number {
  try {
    return requireNumber('staleMs', staleMs, 1, 86_400_000);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

async function run(queue: BatchQueue, script: ScriptName, args: (string | number)[], extraKeys: string[] = []): Promise<unknown> {
  try {
    return await runScript(queue.redis, script, [...presenceKeys(queue), ...extraKeys], [PROTOCOL_VERSION, queue.expectedEpoch, ...args]);
  } catch (err) {
    throw translateScriptError(err, batchName(queue));
  }
}
