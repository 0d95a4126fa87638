import { randomUUID } from 'node:crypto';
import { Cluster, type ChainableCommander } from 'ioredis';
import { allKeys, batchId, batchKeys, PROTOCOL_VERSION, validateBatchRef, workerWakeKey, type BatchKeys, type BatchRef } from './keys.js';
import { InvalidArgumentError, translateScriptError } from './errors.js';
import { requireNumber, resolveBatchOptions, resolveLimits, type BatchOptionsInput, type QueueLimits } from './options.js';
import { defineScripts, runScript, type RedisClient, type ScriptName, type ScriptReply } from './scripts.js';
import { errorJson, toJson, type ItemError } from './serialize.js';
import { callReplySeal, type ReplyMode, type SignableClaim } from './call-replies.js';

export interface QueueOptions {
  /** Epoch returned by create(); when set, every call fails with BatchStateLostError if Redis no longer holds it. */
  expectedEpoch?: string;
  /** Key prefix (default "tb"); one Redis can host several installations. */
  prefix?: string;
  limits?: Partial<QueueLimits>;
  /**
   * 'local' (default): a call succeeds once the primary applied it; a failover to a replica that
   * had not received it yet loses it. 'replicated': every state change is followed, on the same
   * connection, by `WAIT 1 <replicaTimeoutMs>`, and succeeds only once a replica has it; else it
   * fails with ReplicaNotAcknowledgedError (the change stays on the primary; retrying is safe,
   * every transition being idempotent or fenced). Not on a Redis Cluster client.
   */
  durability?: Durability;
  /** With 'replicated': how long a call waits for a replica's acknowledgement (default 1000 ms). */
  replicaTimeoutMs?: number;
}

export const DURABILITY_LEVELS = ['local', 'replicated'] as const;
export type Durability = (typeof DURABILITY_LEVELS)[number];
export const DEFAULT_REPLICA_TIMEOUT_MS = 1000;

/**
 * Durability 'replicated': no replica acknowledged a state change in time. The change was applied
 * on the primary and may or may not survive a failover; the caller retries (the transitions are
 * idempotent or fenced), as after a connection error.
 */
export class ReplicaNotAcknowledgedError extends Error {
  override name = 'ReplicaNotAcknowledgedError';
  readonly code = 'ReplicaNotAcknowledged';
  constructor(
    readonly batch: string,
    readonly operation: string,
    readonly timeoutMs: number,
  ) {
    super(
      `batch ${batch}: durability 'replicated': no replica acknowledged the ${operation} within ${timeoutMs} ms (WAIT 1 ${timeoutMs}); it is applied on the primary but a failover may lose it, so it is reported as failed (retrying is safe). Check the replica (INFO replication on the primary), raise replicaTimeoutMs, or use durability 'local'`,
    );
  }
}

export interface ItemInput {
  /** Caller-given id: enqueueing the same id again is a no-op. Must not start with '#'. */
  id?: string;
  data: unknown;
  /** Run no earlier than this many ms from now. */
  delayMs?: number;
  /** Run no earlier than this time (converted to a delay with this machine's clock). */
  notBefore?: Date | number;
}

export interface EnqueueResult {
  added: number;
  duplicates: number;
  /** Ids of the items given without one, in input order. */
  generatedIds: string[];
}

/** A leased item. `token` fences every later call about it. */
export interface Claim {
  id: string;
  /** "<token>:<id>": the lease's identity in Redis. */
  token: string;
  /** 1 for the first run, 2 for the first retry, ... */
  attempt: number;
  /** The item's JSON as enqueued. */
  payload: string;
}

export interface ClaimResult {
  items: Claim[];
  closed: boolean;
  /** Ms until the next delayed item is due, or -1 when none is delayed. */
  nextDueMs: number;
  /**
   * Items that were due and within `count` but left at the front of pending (in order) because
   * the reply's byte budget was reached; 0 when the budget did not bind. Claim again for them.
   */
  leftByBudget: number;
  /** Ms until the earliest lease (any worker's) expires, or -1 when none is held. */
  nextExpiryMs: number;
  /** For a claim that waited (ClaimOptions.wait): what ended the wait. */
  wokenBy?: 'batch' | 'worker' | 'timeout';
}

/**
 * Block until woken before claiming: the claim is pipelined behind a BLPOP on the batch's wake
 * list and this worker's own wake list (workerWakeKey), on a connection of its own (a blocked
 * connection can serve nothing else, and must have no command timeout shorter than the wait).
 */
export interface ClaimWait {
  client: RedisClient;
  workerId: string;
  /** Longest wait; Redis times blocking calls out at its `hz` (0.1 s by default), so not exact. */
  timeoutMs: number;
}

export interface ClaimOptions {
  /**
   * Byte budget of one reply: the claimed items' payload bytes plus their "<token>:<id>" bytes.
   * Items are taken in queue order while the total stays within it; the first item is always
   * taken, so an item larger than the budget is claimed alone. Default 8 MiB.
   */
  maxBytes?: number;
  /** How many of the claimed items start at once (marked started); the rest must go through start(). Default: all. */
  startNow?: number;
  /** Wait for a wake-up first (an idle worker); without it the claim runs at once. */
  wait?: ClaimWait;
}

export interface Counts {
  total: number;
  pending: number;
  delayed: number;
  running: number;
  succeeded: number;
  failed: number;
  retries: number;
}

export interface BatchSnapshot extends Counts {
  epoch: string;
  closed: boolean;
  /** Delayed items that are already due (counted in `delayed` until a claimer promotes them). */
  dueDelayed: number;
  /** Where resumable seeding got to ('' when never set). */
  seedCursor: string;
  /**
   * Items a stopping worker (SIGTERM, drain, suspension) gave back to the queue unstarted or
   * unfinished (release()): they run again but are not failures, so `retries` leaves them out.
   * With `retries`, what tells whether anything ran more than once.
   */
  handedBack: number;
  /**
   * State changes so far (enqueued, claimed, finished, retried, released, reclaimed, replayed,
   * closed): only ever grows, so less than seen before means Redis went back in time.
   */
  changes: number;
  /** Closed and nothing left pending, delayed or running. */
  complete: boolean;
}

export interface FailInput {
  /** The Claim itself: a call item's payload and attempt sign its reply (call-replies.ts). */
  claim: SignableClaim;
  error: ItemError;
  /** false sends the item straight to the dead-letter set. */
  retryable?: boolean;
}

export interface CompleteInput {
  /** The Claim itself: a call item's payload signs its reply (call-replies.ts). */
  claim: SignableClaim;
  /** Stored for resultTtlSeconds when not undefined. */
  result?: unknown;
}

export interface DeadLetter {
  id: string;
  attempts: number;
  failedAt: Date;
  error: ItemError;
  payload: unknown;
}

export interface StoredResult {
  id: string;
  completedAt: Date;
  result: unknown;
}

const ENQUEUE_CHUNK = 500;
const MAX_CLAIM = 10_000;
/** Default byte budget of one claim reply (ClaimOptions.maxBytes). */
export const DEFAULT_CLAIM_MAX_BYTES = 8 * 1024 * 1024;
/** Largest claim budget accepted: Redis' own default bound on a bulk string (proto-max-bulk-len). */
export const MAX_CLAIM_MAX_BYTES = 512 * 1024 * 1024;
const MAX_ID_BYTES = 256;

/**
 * The queue protocol for one batch: every state change is one atomic Lua script that
 * also keeps the batch's counters, so reading counts is O(1).
 * Delivery is at-least-once: an item whose lease lapses is run again elsewhere, and the
 * stale holder's complete/fail/renew is rejected (fencing) instead of double-committing.
 */
export class BatchQueue {
  readonly ref: BatchRef;
  readonly keys: BatchKeys;
  readonly limits: QueueLimits;
  readonly durability: Durability;
  private readonly replicaTimeoutMs: number;
  private readonly name: string;
  private epoch: string;

  constructor(
    readonly redis: RedisClient,
    ref: BatchRef,
    options: QueueOptions = {},
  ) {
    validateBatchRef(ref);
    this.ref = { namespace: ref.namespace, name: ref.name };
    this.name = batchId(ref);
    this.keys = batchKeys(ref, options.prefix ?? 'tb');
    this.limits = resolveLimits(options.limits);
    this.epoch = options.expectedEpoch ?? '';
    const durability: unknown = options.durability ?? 'local';
    if (!(DURABILITY_LEVELS as readonly unknown[]).includes(durability)) {
      throw new InvalidArgumentError(`durability must be one of ${DURABILITY_LEVELS.join(', ')}, got ${JSON.stringify(durability)}`, this.name);
    }
    this.durability = durability as Durability;
    this.replicaTimeoutMs = requireNumberFor(this.name, 'replicaTimeoutMs', options.replicaTimeoutMs ?? DEFAULT_REPLICA_TIMEOUT_MS, 1, 600_000);
    // WAIT is keyless: on a Cluster client it would go to an arbitrary node, not the primary of
    // the batch's slot, and prove nothing.
    if (this.durability === 'replicated' && redis instanceof Cluster) {
      throw new InvalidArgumentError(
        "durability 'replicated' is not supported on a Redis Cluster client (WAIT cannot be routed to the batch's slot); use durability 'local' or a Sentinel-managed primary",
        this.name,
      );
    }
    defineScripts(redis);
  }

  /** The epoch this client checks on every call ('' = any). */
  get expectedEpoch(): string {
    return this.epoch;
  }

  /**
   * Creates the batch's state if absent. Returns its epoch (keep it outside Redis) and
   * whether it was created now. From then on this client checks that epoch.
   */
  async create(input: BatchOptionsInput = {}): Promise<{ epoch: string; created: boolean }> {
    const o = resolveBatchOptions(input);
    const reply = (await this.run(
      'create',
      [this.keys.meta],
      [randomUUID(), o.maxAttempts, o.backoff.initialMs, o.backoff.factor, o.backoff.maxMs, o.backoff.jitter, o.resultTtlSeconds * 1000],
      false,
    )) as [string, number];
    this.epoch = reply[0];
    return { epoch: reply[0], created: reply[1] === 1 };
  }

  async enqueue(item: ItemInput): Promise<EnqueueResult> {
    return this.enqueueMany([item]);
  }

  /**
   * Adds items in chunks of 500 per script, pipelined. All items are validated before
   * anything is written. `cursor` is recorded atomically with the last chunk (resumable seeding).
   */
  async enqueueMany(items: readonly ItemInput[], options: { cursor?: string } = {}): Promise<EnqueueResult> {
    if (!Array.isArray(items)) throw new InvalidArgumentError('items must be an array', this.name);
    const now = Date.now();
    const encoded: string[][] = [];
    let chunk: string[] = [];
    items.forEach((item, index) => {
      const where = item && typeof item === 'object' && typeof item.id === 'string' ? `item ${index} (id ${JSON.stringify(item.id)})` : `item ${index}`;
      if (!item || typeof item !== 'object') throw new InvalidArgumentError(`${where} must be an object {id?, data, delayMs?, notBefore?}`, this.name);
      const id = item.id ?? '';
      if (item.id !== undefined) validateItemId(item.id, where, this.name);
      let delay = 0;
      if (item.delayMs !== undefined) delay = requireNumberFor(this.name, `${where}: delayMs`, item.delayMs, 0, 366 * 86_400_000);
      if (item.notBefore !== undefined) {
        const at = item.notBefore instanceof Date ? item.notBefore.getTime() : item.notBefore;
        if (typeof at !== 'number' || !Number.isFinite(at)) throw new InvalidArgumentError(`${where}: notBefore must be a Date or epoch milliseconds`, this.name);
        delay = Math.max(delay, at - now);
      }
      chunk.push(id, toJson(`${where}: data`, item.data, this.limits.maxPayloadBytes, this.name), String(Math.max(0, Math.ceil(delay))));
      if (chunk.length === ENQUEUE_CHUNK * 3) {
        encoded.push(chunk);
        chunk = [];
      }
    });
    if (chunk.length > 0 || encoded.length === 0) encoded.push(chunk);

    const replies = await this.durable('enqueue', (pipeline) => {
      encoded.forEach((c, i) => {
        const cursor = i === encoded.length - 1 && options.cursor !== undefined ? options.cursor : '';
        void runScript(
          pipeline,
          'enqueue',
          [this.keys.meta, this.keys.pending, this.keys.delayed, this.keys.items, this.keys.seen, this.keys.wake],
          [PROTOCOL_VERSION, this.epoch, cursor, c.length / 3, ...c],
        );
      });
    });
    const result: EnqueueResult = { added: 0, duplicates: 0, generatedIds: [] };
    replies.forEach(([err, reply], i) => {
      if (err) throw translateScriptError(err, this.name);
      const [added, dups, firstSeq] = reply as [number, number, number];
      result.added += added;
      result.duplicates += dups;
      // Generated ids are consecutive, in input order within each chunk.
      if (firstSeq > 0) for (let s = 0; s < countGenerated(encoded[i] ?? []); s++) result.generatedIds.push(`#${firstSeq + s}`);
    });
    return result;
  }

  /**
   * Leases up to `count` due items for `leaseMs`, reclaiming expired leases first. The reply is
   * bounded in bytes by `options.maxBytes` (see ClaimOptions): items beyond it stay pending, at
   * the front and in order (`leftByBudget` says how many were due within `count`). The first
   * `options.startNow` (default: all) are marked started; the others are prefetched and must be
   * marked with start() before their handlers run. A lease that lapses is charged an attempt
   * only if its item was started, so a worker that dies costs its prefetched items nothing.
   */
  async claim(count: number, leaseMs: number, options: ClaimOptions = {}): Promise<ClaimResult> {
    requireNumberFor(this.name, 'claim count', count, 1, MAX_CLAIM);
    requireNumberFor(this.name, 'leaseMs', leaseMs, 100, 86_400_000);
    const maxBytes = requireNumberFor(this.name, 'claim maxBytes', options.maxBytes ?? DEFAULT_CLAIM_MAX_BYTES, 1, MAX_CLAIM_MAX_BYTES);
    const startNow = requireNumberFor(this.name, 'claim startNow', options.startNow ?? count, 0, MAX_CLAIM);
    const keys = [
      this.keys.meta,
      this.keys.pending,
      this.keys.delayed,
      this.keys.running,
      this.keys.items,
      this.keys.att,
      this.keys.dead,
      this.keys.errors,
      this.keys.started,
      this.keys.calls,
      this.keys.wake,
      this.keys.workers,
    ];
    const args = [count, leaseMs, 100, maxBytes, startNow];
    let wokenBy: ClaimResult['wokenBy'];
    let reply: (string | number)[];
    if (options.wait) {
      const woken = await this.claimWhenWoken(options.wait, keys, args);
      reply = woken.reply as (string | number)[];
      wokenBy = woken.key === null ? 'timeout' : woken.key === this.keys.wake ? 'batch' : 'worker';
    } else reply = (await this.run('claim', keys, args)) as (string | number)[];
    const items: Claim[] = [];
    for (let i = 4; i < reply.length; i += 3) {
      const token = reply[i] as string;
      items.push({ id: token.slice(token.indexOf(':') + 1), token, attempt: Number(reply[i + 1]) + 1, payload: reply[i + 2] as string });
    }
    return { items, closed: reply[0] === 1, nextDueMs: Number(reply[1]), leftByBudget: Number(reply[2]), nextExpiryMs: Number(reply[3]), ...(wokenBy ? { wokenBy } : {}) };
  }

  /** One flight: BLPOP on the wake lists, then (when Redis unblocks it) the claim script. */
  private async claimWhenWoken(wait: ClaimWait, keys: string[], args: (string | number)[]): Promise<{ key: string | null; reply: ScriptReply }> {
    // A timeout under 1 ms would be sent as 0, which Redis reads as "block forever".
    const seconds = Math.max(0.01, wait.timeoutMs / 1000).toFixed(3);
    defineScripts(wait.client);
    try {
      const replies = await this.durable(
        'claim',
        (p) => {
          p.blpop(this.keys.wake, workerWakeKey(this.keys, wait.workerId), seconds);
          void runScript(p, 'claim', keys, [PROTOCOL_VERSION, this.epoch, ...args]);
        },
        wait.client,
      );
      const [[blockErr, popped] = [null, null], [claimErr, reply] = [null, null]] = replies;
      if (claimErr) throw claimErr;
      if (blockErr) throw blockErr;
      return { key: (popped as [string, string] | null)?.[0] ?? null, reply: reply as ScriptReply };
    } catch (err) {
      throw translateScriptError(err, this.name);
    }
  }

  /** Wakes a worker blocked in claim({wait}) at once (it is stopping): see wake-worker.lua. Returns false when it is not registered. */
  async wakeWorker(workerId: string): Promise<boolean> {
    return Number(await this.run('wake-worker', [this.keys.meta, this.keys.workers, workerWakeKey(this.keys, workerId)], [workerId])) === 1;
  }

  /** Extends leases; returns the tokens whose lease was lost (their items must be abandoned). */
  async renew(claims: readonly Pick<Claim, 'token'>[], leaseMs: number): Promise<{ lost: string[] }> {
    requireNumberFor(this.name, 'leaseMs', leaseMs, 100, 86_400_000);
    if (claims.length === 0) return { lost: [] };
    const lost = (await this.run('renew', [this.keys.meta, this.keys.running], [leaseMs, ...claims.map((c) => c.token)])) as string[];
    return { lost };
  }

  /** Marks prefetched items as started (call just before their handlers run); returns the tokens whose lease was lost (do not run those). */
  async start(claims: readonly Pick<Claim, 'token'>[]): Promise<{ lost: string[] }> {
    if (claims.length === 0) return { lost: [] };
    const lost = (await this.run(
      'start',
      [this.keys.meta, this.keys.running, this.keys.started],
      claims.map((c) => c.token),
    )) as string[];
    return { lost };
  }

  /** Gives items back to the front of the queue without counting an attempt (graceful shutdown). */
  async release(claims: readonly Pick<Claim, 'token'>[]): Promise<{ released: number; lost: string[] }> {
    if (claims.length === 0) return { released: 0, lost: [] };
    const lost = (await this.run(
      'release',
      [this.keys.meta, this.keys.running, this.keys.pending, this.keys.started, this.keys.wake],
      claims.map((c) => c.token),
    )) as string[];
    return { released: claims.length - lost.length, lost };
  }

  /**
   * Records successes. Results are validated first (nothing is written if one is too
   * large). Returns the tokens that were rejected because their lease was lost.
   */
  async complete(entries: readonly CompleteInput[]): Promise<{ completed: number; rejected: string[] }> {
    if (entries.length === 0) return { completed: 0, rejected: [] };
    const args: (string | number)[] = [];
    for (const e of entries) {
      const json = e.result === undefined ? '' : toJson(`result of ${e.claim.token}`, e.result, this.limits.maxResultBytes, this.name);
      args.push(e.claim.token, json, ...callReplySeal(e.claim, 'result', json));
    }
    const rejected = (await this.run(
      'complete',
      [
        this.keys.meta,
        this.keys.running,
        this.keys.items,
        this.keys.att,
        this.keys.errors,
        this.keys.results,
        this.keys.resultsIdx,
        this.keys.seen,
        this.keys.dead,
        this.keys.calls,
        this.keys.started,
        this.keys.wake,
        this.keys.workers,
      ],
      args,
    )) as string[];
    return { completed: entries.length - rejected.length, rejected };
  }

  /** Records failed attempts: retried with backoff until maxAttempts, then dead-lettered. */
  async fail(entries: readonly FailInput[]): Promise<{ retried: number; deadLettered: number; rejected: string[] }> {
    if (entries.length === 0) return { retried: 0, deadLettered: 0, rejected: [] };
    const args: (string | number)[] = [];
    for (const e of entries) {
      const json = errorJson(e.error, this.limits.maxErrorBytes);
      args.push(e.claim.token, json, e.retryable === false ? '0' : '1', Math.random(), ...callReplySeal(e.claim, 'error', json));
    }
    const reply = (await this.run(
      'fail',
      [
        this.keys.meta,
        this.keys.running,
        this.keys.delayed,
        this.keys.att,
        this.keys.dead,
        this.keys.errors,
        this.keys.items,
        this.keys.seen,
        this.keys.calls,
        this.keys.results,
        this.keys.resultsIdx,
        this.keys.started,
        this.keys.wake,
        this.keys.workers,
      ],
      args,
    )) as (number | string)[];
    return { retried: Number(reply[0]), deadLettered: Number(reply[1]), rejected: reply.slice(2) as string[] };
  }

  /**
   * The sweeper: requeue or dead-letter items with expired leases; promote due delayed items;
   * wake as many idle workers as items became pending. Idle workers run it at the times claim
   * returned (nextDueMs, nextExpiryMs); it returns the next such times.
   */
  async reclaimExpired(limit = 1000): Promise<{ reclaimed: number; promoted: number; nextDueMs: number; nextExpiryMs: number }> {
    requireNumberFor(this.name, 'reclaim limit', limit, 1, 100_000);
    const [reclaimed, promoted, nextDueMs, nextExpiryMs] = (await this.run(
      'reclaim',
      [
        this.keys.meta,
        this.keys.pending,
        this.keys.delayed,
        this.keys.running,
        this.keys.att,
        this.keys.dead,
        this.keys.errors,
        this.keys.started,
        this.keys.items,
        this.keys.calls,
        this.keys.wake,
        this.keys.workers,
      ],
      [limit, limit],
    )) as [number, number, number, number];
    return { reclaimed, promoted, nextDueMs, nextExpiryMs };
  }

  /** No more items will be added; the batch is complete once it drains. */
  async close(): Promise<void> {
    await this.run('close', [this.keys.meta, this.keys.wake, this.keys.workers], []);
  }

  /** Counters in O(1), checked against the expected epoch. */
  async snapshot(): Promise<BatchSnapshot> {
    const r = (await this.run('counts', [this.keys.meta, this.keys.delayed, this.keys.pending, this.keys.running, this.keys.items, this.keys.dead], [])) as (string | number | null)[];
    const n = (i: number): number => Number(r[i] ?? 0);
    const s: BatchSnapshot = {
      epoch: String(r[0]),
      closed: r[1] === '1',
      total: n(2),
      pending: n(3),
      delayed: n(4),
      running: n(5),
      succeeded: n(6),
      failed: n(7),
      retries: n(8),
      dueDelayed: n(9),
      seedCursor: String(r[10] ?? ''),
      handedBack: n(11),
      changes: n(12),
      complete: false,
    };
    s.complete = s.closed && s.pending + s.delayed + s.running === 0;
    return s;
  }

  /** Dead-lettered items, a page at a time (pass the returned cursor back; '0' = done). */
  async deadLetters(cursor = '0', count = 100): Promise<{ cursor: string; items: DeadLetter[] }> {
    await this.snapshot();
    const [next, flat] = await this.redis.hscan(this.keys.dead, cursor, 'COUNT', count);
    const ids: string[] = [];
    const records: string[] = [];
    for (let i = 0; i < flat.length; i += 2) {
      ids.push(flat[i] as string);
      records.push(flat[i + 1] as string);
    }
    const payloads = ids.length ? await this.redis.hmget(this.keys.items, ...ids) : [];
    const items = ids.map((id, i) => {
      const rec = JSON.parse(records[i] as string) as { attempts: number; failedAt: number; error: ItemError };
      const payload = payloads[i];
      return { id, attempts: rec.attempts, failedAt: new Date(rec.failedAt), error: rec.error, payload: payload == null ? null : (JSON.parse(payload) as unknown) };
    });
    return { cursor: next, items };
  }

  /** Moves dead-lettered items back to pending with fresh attempts; returns how many moved. */
  async replay(ids: readonly string[]): Promise<number> {
    let moved = 0;
    for (let i = 0; i < ids.length; i += ENQUEUE_CHUNK) {
      moved += Number(await this.run('replay', [this.keys.meta, this.keys.dead, this.keys.att, this.keys.pending, this.keys.wake], ids.slice(i, i + ENQUEUE_CHUNK)));
    }
    return moved;
  }

  /** Replays every dead-lettered item. */
  /**
   * Replays every dead-lettered item, a page at a time (HSCAN, not HKEYS: a large dead-letter
   * set is never loaded whole). Items dead-lettered meanwhile may or may not be included.
   */
  async replayAll(): Promise<number> {
    let moved = 0;
    let cursor = '0';
    do {
      const [next, flat] = await this.redis.hscan(this.keys.dead, cursor, 'COUNT', 1000);
      const ids = flat.filter((_, i) => i % 2 === 0);
      if (ids.length > 0) moved += await this.replay(ids);
      cursor = next;
    } while (cursor !== '0');
    return moved;
  }

  async result(id: string): Promise<StoredResult | undefined> {
    const [json, at] = await Promise.all([this.redis.hget(this.keys.results, id), this.redis.zscore(this.keys.resultsIdx, id)]);
    if (json == null || at == null) return undefined;
    return { id, completedAt: new Date(Number(at)), result: JSON.parse(json) as unknown };
  }

  /** Results in completion order, from `offset`, at most `count`. */
  async results(offset = 0, count = 100): Promise<StoredResult[]> {
    const flat = await this.redis.zrange(this.keys.resultsIdx, offset, offset + count - 1, 'WITHSCORES');
    const ids: string[] = [];
    const times: number[] = [];
    for (let i = 0; i < flat.length; i += 2) {
      ids.push(flat[i] as string);
      times.push(Number(flat[i + 1]));
    }
    if (ids.length === 0) return [];
    const values = await this.redis.hmget(this.keys.results, ...ids);
    const out: StoredResult[] = [];
    ids.forEach((id, i) => {
      const v = values[i];
      if (v != null) out.push({ id, completedAt: new Date(times[i] as number), result: JSON.parse(v) as unknown });
    });
    return out;
  }

  /**
   * Turns on call replies for this batch (idempotent; the first caller's mode wins): from now
   * on, complete/fail announce the outcome of items whose id is `call:<client>:<n>` on
   * replyChannel(<client>) — a result when one succeeds, the dead letter when one fails for
   * good (retries announce nothing). Sharded Pub/Sub (SPUBLISH, Redis 7+, one slot on Redis
   * Cluster) when the server has it, else PUBLISH. Returns the mode in effect, which decides
   * how to subscribe (SSUBSCRIBE or SUBSCRIBE). Announcements are fire-and-forget: results and
   * dead letters are stored as for any item, so a subscriber that missed one can read them.
   */
  async enableReplies(): Promise<ReplyMode> {
    await this.snapshot(); // the batch must exist (and have the expected epoch)
    let mode = await this.redis.hget(this.keys.meta, 'notify');
    if (mode === null) {
      const info = await this.redis.info('server');
      const major = Number(/redis_version:(\d+)/.exec(info)?.[1] ?? 0);
      await this.redis.hsetnx(this.keys.meta, 'notify', major >= 7 ? 's' : 'p');
      mode = await this.redis.hget(this.keys.meta, 'notify');
    }
    return mode === 's' ? 'spublish' : 'publish';
  }

  /** The channel on which the outcomes of `call:<clientId>:*` items are announced. */
  replyChannel(clientId: string): string {
    return `${this.keys.meta.slice(0, -'meta'.length)}reply:${clientId}`;
  }

  /**
   * Forgets finished call items once their caller has the outcome: their caller id (so the
   * idempotence set does not grow with every call of a long-lived service), and for calls that
   * succeeded their stored result and expiry entry. Dead letters stay (listable, replayable)
   * until their failure TTL. Never touches items that are still queued.
   */
  async forgetCalls(succeeded: readonly string[], failed: readonly string[] = []): Promise<void> {
    if (succeeded.length + failed.length === 0) return;
    await this.durable('forgetCalls', (pipeline) => {
      for (let i = 0; i < succeeded.length; i += ENQUEUE_CHUNK) {
        const chunk = succeeded.slice(i, i + ENQUEUE_CHUNK);
        pipeline.srem(this.keys.seen, ...chunk);
        pipeline.hdel(this.keys.results, ...chunk);
        pipeline.zrem(this.keys.resultsIdx, ...chunk);
        pipeline.zrem(this.keys.calls, ...chunk);
      }
      for (let i = 0; i < failed.length; i += ENQUEUE_CHUNK) pipeline.srem(this.keys.seen, ...failed.slice(i, i + ENQUEUE_CHUNK));
    });
  }

  /** One dead letter by id, or undefined when the item is not dead-lettered. */
  async deadLetter(id: string): Promise<{ attempts: number; failedAt: Date; error: ItemError } | undefined> {
    const json = await this.redis.hget(this.keys.dead, id);
    if (json == null) return undefined;
    const rec = JSON.parse(json) as { attempts: number; failedAt: number; error: ItemError };
    return { attempts: rec.attempts, failedAt: new Date(rec.failedAt), error: rec.error };
  }

  /** Deletes every key of the batch (cancel or cleanup). Idempotent; returns keys deleted. */
  async purge(): Promise<number> {
    const [[err, deleted] = [null, 0]] = await this.durable('purge', (p) => void runScript(p, 'purge', allKeys(this.keys), []));
    if (err) throw err;
    return Number(deleted);
  }

  private async run(script: ScriptName, keys: string[], args: (string | number)[], checked = true): Promise<ScriptReply> {
    const fullArgs = checked ? [PROTOCOL_VERSION, this.epoch, ...args] : [PROTOCOL_VERSION, ...args];
    try {
      // Reading the counters changes nothing: no replica to wait for.
      if (this.durability === 'local' || script === 'counts') return await runScript(this.redis, script, keys, fullArgs);
      const [[err, reply] = [null, null]] = await this.durable(script, (p) => void runScript(p, script, keys, fullArgs));
      if (err) throw err;
      return reply as ScriptReply;
    } catch (err) {
      throw translateScriptError(err, this.name);
    }
  }

  /**
   * Sends the commands `queue` adds as one pipeline and returns their replies. With durability
   * 'replicated', WAIT follows them in the same pipeline: the same connection, so it waits for
   * exactly these writes (a reconnection in between would fail both, never pair WAIT with another
   * primary). Throws ReplicaNotAcknowledgedError when every command succeeded but no replica
   * acknowledged them in time; a command's own error is left in the replies for the caller.
   */
  private async durable(operation: string, queue: (pipeline: ChainableCommander) => void, client: RedisClient = this.redis): Promise<[Error | null, unknown][]> {
    const pipeline = client.pipeline();
    queue(pipeline);
    const replicated = this.durability === 'replicated';
    if (replicated) pipeline.call('WAIT', 1, this.replicaTimeoutMs);
    const replies = (await pipeline.exec()) ?? [];
    if (!replicated) return replies;
    const [waitErr, acked] = replies.pop() ?? [null, 0];
    if (replies.some(([err]) => err)) return replies;
    if (waitErr) throw waitErr;
    if (Number(acked) < 1) throw new ReplicaNotAcknowledgedError(this.name, operation, this.replicaTimeoutMs);
    return replies;
  }
}

function countGenerated(chunk: readonly string[]): number {
  let n = 0;
  for (let i = 0; i < chunk.length; i += 3) if (chunk[i] === '') n++;
  return n;
}

function validateItemId(id: unknown, where: string, batch: string): void {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
  if (typeof id !== 'string' || id.length === 0 || Buffer.byteLength(id) > MAX_ID_BYTES || id.startsWith('#') || /[\u0000-\u001f]/.test(id)) {
    throw new InvalidArgumentError(`${where}: id must be a non-empty string of at most ${MAX_ID_BYTES} bytes, without control characters, not starting with '#' (reserved for generated ids)`, batch);
  }
}

function requireNumberFor(batch: string, name: string, value: unknown, min: number, max: number): number {
  try {
    return requireNumber(name, value, min, max);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message, batch);
  }
}
