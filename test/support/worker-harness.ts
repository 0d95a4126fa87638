import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { startRedisServer, type RedisServer, type RedisServerOptions } from '../../localcluster/redis-server.js';
import { BatchQueue, type BatchSnapshot, type ItemInput } from '../../queue/index.js';

/** Test helpers for the worker: fixture handler specs, batch builders, spawned workers. */

export const FIXTURES = fileURLToPath(new URL('../fixtures/worker-handlers.js', import.meta.url));
export const CJS_FIXTURE = fileURLToPath(new URL('../fixtures/worker-cjs-handler.cjs', import.meta.url));
export const BAD_FIXTURE = fileURLToPath(new URL('../fixtures/worker-bad-handler.js', import.meta.url));
export const WORKER_MAIN = fileURLToPath(new URL('../../worker/main.js', import.meta.url));

/** A handler spec (as TASKBATCH_HANDLER text) for one fixture export. */
export function fixture(exportName: string): string {
  return JSON.stringify({ module: FIXTURES, export: exportName });
}

export function uniqueName(prefix: string): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 15_000, everyMs = 50): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v as T;
    } catch (err) {
      last = err;
    }
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Fluent builder: aBatch(redis).withItems([...]).maxAttempts(2).closed().create() */
export class BatchBuilder {
  private items: ItemInput[] = [];
  private attempts = 3;
  private close = false;
  private backoffMs = 0;
  readonly name: string;

  constructor(
    private readonly redis: Redis,
    name?: string,
    readonly namespace = 'test',
  ) {
    this.name = name ?? uniqueName('wb');
  }

  withItems(data: readonly unknown[], idPrefix = 'item'): this {
    const first = this.items.length + 1;
    data.forEach((d, i) => {
      this.items.push({ id: `${idPrefix}-${first + i}`, data: d });
    });
    return this;
  }

  withItem(id: string, data: unknown): this {
    this.items.push({ id, data });
    return this;
  }

  maxAttempts(n: number): this {
    this.attempts = n;
    return this;
  }

  retryBackoffMs(ms: number): this {
    this.backoffMs = ms;
    return this;
  }

  closed(): this {
    this.close = true;
    return this;
  }

  async create(): Promise<{ queue: BatchQueue; epoch: string; name: string; namespace: string }> {
    const queue = new BatchQueue(this.redis, { namespace: this.namespace, name: this.name });
    const { epoch } = await queue.create({ maxAttempts: this.attempts, backoff: { initialMs: this.backoffMs, maxMs: Math.max(this.backoffMs, 1), factor: 1, jitter: 0 } });
    if (this.items.length > 0) await queue.enqueueMany(this.items);
    if (this.close) await queue.close();
    return { queue, epoch, name: this.name, namespace: this.namespace };
  }
}

export function aBatch(redis: Redis, name?: string): BatchBuilder {
  return new BatchBuilder(redis, name);
}

export interface LogLine {
  level: string;
  msg: string;
  [k: string]: unknown;
}

export interface SpawnedWorker {
  proc: ChildProcess;
  pid: number;
  logs: LogLine[];
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  waitForLog(predicate: (l: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** http://host:port of the worker's HTTP server (after it logged "Started HTTP server"). */
  httpUrl(): Promise<string>;
  kill(signal?: NodeJS.Signals): void;
}

/** Runs `node dist/worker/main.js` with TASKBATCH_* settings (metrics on an ephemeral port). */
export function spawnWorker(env: Record<string, string>, args: string[] = []): SpawnedWorker {
  const proc = spawn(process.execPath, [WORKER_MAIN, ...args], {
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '/tmp',
      TASKBATCH_METRICS_ADDR: '127.0.0.1',
      TASKBATCH_METRICS_PORT: '0',
      TASKBATCH_NAMESPACE: 'test',
      TASKBATCH_WORKER_ID: uniqueName('w'),
      TASKBATCH_HEARTBEAT_SECONDS: '0.2',
      TASKBATCH_PRESENCE_STALE_SECONDS: '2',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: LogLine[] = [];
  let err = '';
  let buf = '';
  const listeners = new Set<() => void>();
  proc.stdout?.on('data', (b: Buffer) => {
    buf += b.toString();
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        logs.push(JSON.parse(line) as LogLine);
      } catch {
        logs.push({ level: 'raw', msg: line });
      }
    }
    for (const l of listeners) l();
  });
  proc.stderr?.on('data', (b: Buffer) => {
    err += b.toString();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  const waitForLog = (predicate: (l: LogLine) => boolean, timeoutMs = 15_000): Promise<LogLine> =>
    new Promise((resolve, reject) => {
      const check = (): boolean => {
        const hit = logs.find(predicate);
        if (hit) {
          cleanup();
          resolve(hit);
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(
          new Error(
            `no matching log line within ${timeoutMs}ms; last lines:\n${logs
              .slice(-15)
              .map((l) => JSON.stringify(l))
              .join('\n')}\nstderr: ${err.slice(-2000)}`,
          ),
        );
      }, timeoutMs);
      const onExit = (): void => {
        setTimeout(() => {
          if (!check()) {
            cleanup();
            reject(
              new Error(
                `worker exited before a matching log line; last lines:\n${logs
                  .slice(-15)
                  .map((l) => JSON.stringify(l))
                  .join('\n')}\nstderr: ${err.slice(-2000)}`,
              ),
            );
          }
        }, 50);
      };
      const cleanup = (): void => {
        clearTimeout(timer);
        listeners.delete(listener);
        proc.off('exit', onExit);
      };
      const listener = (): void => void check();
      if (check()) return;
      listeners.add(listener);
      proc.once('exit', onExit);
    });
  return {
    proc,
    pid: proc.pid as number,
    logs,
    stderr: () => err,
    exited,
    waitForLog,
    httpUrl: async () => {
      const l = await waitForLog((x) => x.msg === 'Started HTTP server');
      const address = String(l.address);
      return `http://${address.includes(':') ? `[${address}]` : address}:${l.port as number}`;
    },
    kill: (signal = 'SIGTERM') => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    },
  };
}

/** Base environment for a spawned worker on a batch. */
export function workerEnv(redisUrl: string, batch: string, handler: string, extra: Record<string, string> = {}): Record<string, string> {
  return { TASKBATCH_REDIS_URL: redisUrl, TASKBATCH_BATCH: batch, TASKBATCH_HANDLER: handler, ...extra };
}

export async function snapshotOf(queue: BatchQueue): Promise<BatchSnapshot> {
  return queue.snapshot();
}

export async function httpGet(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(url);
  return { status: res.status, body: await res.text() };
}

/** Value of one sample in Prometheus text, e.g. metric('taskbatch_worker_items_total', {outcome: 'succeeded'}). */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

/**
 * A test file's real redis-server (started before its tests, stopped after) and the worker
 * processes its tests spawn (tracked, SIGKILLed after each test).
 */
export function useWorkerRedis(options: RedisServerOptions = {}): { readonly redis: Redis; readonly server: RedisServer; track(w: SpawnedWorker): SpawnedWorker } {
  let server: RedisServer | undefined;
  let redis: Redis | undefined;
  const workers: SpawnedWorker[] = [];
  beforeAll(async () => {
    server = await startRedisServer(options);
    redis = new Redis(server.port, server.host);
  });
  afterEach(async () => {
    for (const w of workers.splice(0)) {
      w.kill('SIGKILL');
      await w.exited;
    }
  });
  afterAll(async () => {
    redis?.disconnect();
    await server?.stop();
  });
  return {
    get redis(): Redis {
      if (!redis) throw new Error('useWorkerRedis: the redis-server starts in beforeAll');
      return redis;
    },
    get server(): RedisServer {
      if (!server) throw new Error('useWorkerRedis: the redis-server starts in beforeAll');
      return server;
    },
    track(w: SpawnedWorker): SpawnedWorker {
      workers.push(w);
      return w;
    },
  };
}
