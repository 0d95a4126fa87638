import { randomBytes, randomFillSync } from 'node:crypto';
import {
  batchId,
  CALL_ID_PREFIX,
  CALL_TTL_MAX_MS,
  parseCallReplies,
  verifyCallReply,
  type BatchQueue,
  type CallReplyTerms,
  type ItemError,
  type ItemInput,
  type RedisClient,
  type SignedCallReply,
} from '../queue/index.js';
import type { Cluster } from 'ioredis';
import type { HandlerContext } from '../worker/handler/api.js';
import { CallTimeoutError, ClientClosedError, ConnectionError, RemoteCallError, TaskBatchError } from './errors.js';

/** Options of one remote call (or the defaults of a proxy). */
export interface CallOptions {
  /** Reject with CallTimeoutError when no answer arrives in time (default 30 s). The call may still run later. */
  timeoutMs?: number;
  /** Abort waiting (the call may still run). */
  signal?: AbortSignal;
  /**
   * How long Redis keeps what a call that succeeded leaves behind when its outcome was not
   * collected (the caller timed out, gave up or went away): its id in the batch's idempotence set
   * and its stored result. Counted from when it completed. Default: timeoutMs + 60 s.
   */
  idTtlMs?: number;
  /** How long Redis keeps a call's dead letter (error, payload, attempts) once it failed for good (default 24 h). */
  failureTtlMs?: number;
}

/** Why a reply message (or one of its lines) was dropped: see CallStats.droppedReplies. */
export type DroppedReplyKind = 'badShape' | 'badJson' | 'unknownCall' | 'badMac';

/** Counters of one batch's call dispatcher (TaskBatchClient.callStats()). */
export interface CallStats {
  /** "<namespace>/<name>" */
  batch: string;
  /** The id in this client's call ids and reply channel. */
  clientId: string;
  inFlight: number;
  /**
   * Replies dropped without effect, by kind: not a reply line (badShape), a signed reply whose
   * JSON does not parse (badJson), an id that is not in flight here (unknownCall: a late reply
   * of a call that timed out, or a forgery), a signature that does not verify — including the
   * unsigned format of workers before signatures (badMac).
   */
  droppedReplies: Record<DroppedReplyKind, number>;
}

type AnyFunction = (...args: never[]) => unknown;
type IsAny<T> = 0 extends 1 & T ? true : false;
/** Drops a trailing `ctx: HandlerContext` parameter: the worker passes it, the caller does not. */
export type CallArgs<A extends readonly unknown[]> = A extends readonly [...infer P, infer L] ? (IsAny<L> extends true ? A : [L] extends [HandlerContext] ? P : A) : A;

/**
 * The callable surface of a handler module: every exported function (not `default`, not names
 * starting with '_'), taking the same arguments minus a trailing HandlerContext and returning
 * a Promise of its (awaited) result. Arguments and results travel as JSON.
 *
 *     const math = client.proxy<typeof import('./math.js')>('math-service');
 *     const n: number = await math.square(4);
 */
export type Remote<T> = {
  readonly [K in keyof T as K extends string ? (K extends `_${string}` | 'default' ? never : T[K] extends AnyFunction ? K : never) : never]: T[K] extends (...args: infer A) => infer R
    ? (...args: CallArgs<A>) => Promise<Awaited<R>>
    : never;
};

interface PendingCall {
  fn: string;
  /** This call's reply key (call-replies.ts): lives only here and in the item's payload. */
  key: Buffer;
  idTtlMs: number;
  resolve(value: unknown): void;
  reject(err: unknown): void;
  timer: NodeJS.Timeout;
  onAbort?: () => void;
  signal?: AbortSignal;
}

const FORGET_DELAY_MS = 50;
const MAX_PAYLOAD_BYTES = 1024 * 1024;
/** Room left in an item for {reply: {...}} and the function's name around the arguments. */
const ENVELOPE_BYTES = 512;
const DEFAULT_FAILURE_TTL_MS = 86_400_000;
const ID_TTL_MARGIN_MS = 60_000;
const MAX_ABANDONED = 100_000;

const DROPPED_WHY: Record<DroppedReplyKind, string> = {
  badShape: 'it is not a reply line',
  badJson: 'its signed body is not valid JSON',
  unknownCall: 'its call id is not in flight here (a late reply of a call that timed out, or a forgery)',
  badMac: 'its signature does not verify (a forgery, or a worker older than signed replies)',
};

/**
 * Remote calls over one open batch whose handler dispatches by function name
 * (`handler: {module, dispatch: fn}`). Each call is an item `{reply, fn, args}` with the id
 * `call:<client>:<n>`; the queue announces its outcome on this client's reply channel as the
 * worker completes it (or dead-letters it), so a call costs no polling. Calls made in the same
 * tick are enqueued together (one pipelined round trip), and their outcomes arrive batched as
 * the worker acknowledges them. A reply counts only if signed with its call's own key
 * (`reply.key`, queue/call-replies.ts): anyone who may publish on the channel is not thereby
 * trusted. Stored results of delivered calls (and their ids in the idempotence set) are removed
 * in the background; what undelivered and failed calls leave expires in Redis (idTtlMs,
 * failureTtlMs), so a long-lived service does not grow.
 */
export class CallDispatcher {
  readonly clientId = randomBytes(6).toString('hex');
  private seq = 0;
  private readonly pending = new Map<string, PendingCall>();
  private buffer: ItemInput[] = [];
  private flushScheduled = false;
  private forgetSucceeded: string[] = [];
  private forgetFailed: string[] = [];
  private readonly dropped: Record<DroppedReplyKind, number> = { badShape: 0, badJson: 0, unknownCall: 0, badMac: 0 };
  /** Keys of calls given up on (timeout, abort), so a late genuine reply still gets the call's traces removed. */
  private readonly abandoned = new Map<string, { key: Buffer; untilMs: number }>();
  private forgetTimer: NodeJS.Timeout | undefined;
  private sub: RedisClient | undefined;
  private started: Promise<void> | undefined;
  private closed = false;
  private readyOnce = false;

  constructor(
    private readonly queue: BatchQueue,
    private readonly redis: RedisClient,
    private readonly defaults: CallOptions = {},
    /** Told once per kind of dropped reply (the SDK's warning channel, ConnectOptions.onWarning). */
    private readonly onWarning?: (message: string) => void,
  ) {}

  /** Calls in flight. */
  get inFlight(): number {
    return this.pending.size;
  }

  get stats(): CallStats {
    return { batch: batchId(this.queue.ref), clientId: this.clientId, inFlight: this.pending.size, droppedReplies: { ...this.dropped } };
  }

  call(fn: string, args: readonly unknown[], options: CallOptions = {}): Promise<unknown> {
    if (this.closed) return Promise.reject(new ClientClosedError());
    if (typeof fn !== 'string' || fn === '' || fn.startsWith('_')) {
      return Promise.reject(new TaskBatchError('Usage', `remote function name ${JSON.stringify(fn)} is invalid: use an exported function's name (not starting with '_')`));
    }
    let json: string | undefined;
    try {
      json = JSON.stringify(args);
    } catch (err) {
      return Promise.reject(new TaskBatchError('Usage', `arguments of ${fn}() are not JSON-serializable: ${(err as Error).message}`));
    }
    if (json === undefined || Buffer.byteLength(json) + Buffer.byteLength(fn) > MAX_PAYLOAD_BYTES - ENVELOPE_BYTES) {
      return Promise.reject(new TaskBatchError('Usage', `arguments of ${fn}() with the function's name must be JSON of at most ${MAX_PAYLOAD_BYTES - ENVELOPE_BYTES} bytes`));
    }
    const timeoutMs = options.timeoutMs ?? this.defaults.timeoutMs ?? 30_000;
    const idTtlMs = options.idTtlMs ?? this.defaults.idTtlMs ?? Math.min(CALL_TTL_MAX_MS, Math.ceil(timeoutMs) + ID_TTL_MARGIN_MS);
    const failureTtlMs = options.failureTtlMs ?? this.defaults.failureTtlMs ?? DEFAULT_FAILURE_TTL_MS;
    for (const [name, v] of [
      ['idTtlMs', idTtlMs],
      ['failureTtlMs', failureTtlMs],
    ] as const) {
      if (!Number.isInteger(v) || v < 1 || v > CALL_TTL_MAX_MS) {
        return Promise.reject(new TaskBatchError('Usage', `call ${fn}(): ${name} must be an integer number of ms between 1 and ${CALL_TTL_MAX_MS} (90 days), got ${String(v)}`));
      }
    }
    const signal = options.signal ?? this.defaults.signal;
    if (signal?.aborted) return Promise.reject(signal.reason);
    const id = `${CALL_ID_PREFIX}${this.clientId}:${++this.seq}`;
    const key = nextReplyKey();
    const reply: CallReplyTerms = { key: key.toString('hex'), idTtlMs, failureTtlMs };
    return new Promise((resolve, reject) => {
      const p: PendingCall = {
        fn,
        key,
        idTtlMs,
        resolve,
        reject,
        timer: setTimeout(() => void this.onTimeout(id, timeoutMs), timeoutMs),
      };
      if (signal) {
        p.signal = signal;
        p.onAbort = () => {
          this.settle(id);
          this.abandon(id, p);
          reject(signal.reason);
        };
        signal.addEventListener('abort', p.onAbort, { once: true });
      }
      this.pending.set(id, p);
      this.buffer.push({ id, data: { reply, fn, args } });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => void this.flush());
      }
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const [id, p] of this.pending) {
      this.settle(id);
      p.reject(new ClientClosedError('the taskbatch client was closed while the call was in flight; it may still run'));
    }
    await this.flushForget();
    this.sub?.disconnect();
  }

  private start(): Promise<void> {
    this.started ??= (async () => {
      const mode = await this.queue.enableReplies();
      // On Redis Cluster, sharded subscriptions need ioredis' per-node subscribers.
      const sub = (this.redis as { isCluster?: boolean }).isCluster ? (this.redis as Cluster).duplicate(undefined, { shardedSubscribers: true }) : this.redis.duplicate();
      sub.on('error', () => undefined);
      this.sub = sub;
      const channel = this.queue.replyChannel(this.clientId);
      const onMessage = (ch: string, message: unknown): void => {
        if (ch !== channel) return;
        // Anyone allowed to publish on the channel can send anything: nothing here may throw.
        try {
          this.onMessage(String(message));
        } catch {
          this.drop('badShape');
        }
      };
      sub.on(mode === 'spublish' ? 'smessage' : 'message', onMessage);
      // After a reconnection (ioredis resubscribes by itself) announcements made meanwhile
      // are lost: read the outcomes of the calls in flight from Redis instead.
      sub.on('ready', () => {
        if (this.readyOnce) setTimeout(() => void this.recover(), 100);
        this.readyOnce = true;
      });
      const subscribed = mode === 'spublish' ? (sub as unknown as { ssubscribe(c: string): Promise<unknown> }).ssubscribe(channel) : sub.subscribe(channel);
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          subscribed,
          new Promise((_, reject) => {
            timer = setTimeout(() => reject(new ConnectionError(`could not subscribe to the reply channel ${channel} within 10 s (${mode === 'spublish' ? 'SSUBSCRIBE' : 'SUBSCRIBE'})`)), 10_000);
          }),
        ]);
      } catch (err) {
        sub.disconnect();
        this.sub = undefined;
        throw err;
      } finally {
        clearTimeout(timer);
      }
      this.readyOnce = true;
    })();
    return this.started;
  }

  private async flush(): Promise<void> {
    this.flushScheduled = false;
    const items = this.buffer;
    this.buffer = [];
    if (items.length === 0) return;
    try {
      await this.start();
      await this.queue.enqueueMany(items);
    } catch (err) {
      if (!this.sub) this.started = undefined; // retry start-up on the next call
      for (const item of items) {
        const p = this.pending.get(item.id!);
        if (!p) continue;
        this.settle(item.id!);
        p.reject(err);
      }
    }
  }

  /** One reply message: each line is delivered only if its call is in flight here and its signature verifies. */
  private onMessage(message: string): void {
    const { replies, malformed } = parseCallReplies(message);
    for (let i = 0; i < malformed; i++) this.drop('badShape');
    for (const r of replies) {
      const p = this.pending.get(r.id);
      if (!p) this.onLateReply(r);
      else if (!verifyCallReply(p.key, r)) this.drop('badMac');
      else {
        const outcome = decodeReply(r);
        if (outcome === undefined) this.drop('badJson');
        else this.deliver(r.id, outcome);
      }
    }
  }

  private onLateReply(r: SignedCallReply): void {
    const a = this.abandoned.get(r.id);
    if (!a || !verifyCallReply(a.key, r)) return this.drop('unknownCall');
    this.abandoned.delete(r.id);
    this.forget(r.id, r.kind === 'result');
  }

  private abandon(id: string, p: PendingCall): void {
    const now = Date.now();
    this.abandoned.set(id, { key: p.key, untilMs: now + p.idTtlMs });
    // Oldest first (insertion order); past its idTtlMs Redis trims the call's traces itself.
    for (const [oldId, a] of this.abandoned) {
      if (a.untilMs > now && this.abandoned.size <= MAX_ABANDONED) break;
      this.abandoned.delete(oldId);
    }
  }

  private drop(kind: DroppedReplyKind): void {
    if (this.dropped[kind]++ === 0) {
      this.onWarning?.(
        `Dropped a call reply on ${this.queue.replyChannel(this.clientId)}: ${DROPPED_WHY[kind]}. Further ones of this kind are only counted (client.callStats(), droppedReplies.${kind})`,
      );
    }
  }

  private deliver(id: string, outcome: CallOutcome): void {
    const p = this.pending.get(id);
    if (!p) return; // timed out or aborted earlier
    this.settle(id);
    this.forget(id, outcome.ok);
    if (outcome.ok) p.resolve(outcome.value);
    else p.reject(new RemoteCallError(outcome.error.name, outcome.error.message, p.fn, id, outcome.attempts, outcome.error.stack));
  }

  private settle(id: string): void {
    const p = this.pending.get(id);
    if (!p) return;
    clearTimeout(p.timer);
    if (p.onAbort) p.signal?.removeEventListener('abort', p.onAbort);
    this.pending.delete(id);
  }

  private async onTimeout(id: string, timeoutMs: number): Promise<void> {
    const p = this.pending.get(id);
    if (!p) return;
    // A last look in Redis: the announcement may have been missed, or the item was
    // dead-lettered by lease expiry (which announces nothing).
    try {
      const found = await this.lookup([id]);
      for (const [foundId, outcome] of found) this.deliver(foundId, outcome);
      if (found.size > 0) return;
    } catch {
      // fall through to the timeout
    }
    if (!this.pending.has(id)) return;
    this.settle(id);
    this.abandon(id, p);
    p.reject(
      new CallTimeoutError(
        `call ${p.fn}() on batch ${batchId(this.queue.ref)} got no answer within ${timeoutMs} ms; it may still run later (at-least-once). Is a worker running (kubectl get taskbatch ${this.queue.ref.name} -n ${this.queue.ref.namespace}), and does the batch use handler dispatch: fn?`,
        id,
        p.fn,
      ),
    );
  }

  /**
   * Outcomes stored in Redis for the given call ids (results, dead letters). Unsigned: whoever can
   * write the batch's keys can also read the calls' keys from their payloads (docs/sdk.md).
   */
  private async lookup(ids: readonly string[]): Promise<Map<string, CallOutcome>> {
    const out = new Map<string, CallOutcome>();
    for (let i = 0; i < ids.length; i += 500) {
      const chunk = ids.slice(i, i + 500);
      const pipeline = this.redis.pipeline();
      pipeline.hmget(this.queue.keys.results, ...chunk);
      pipeline.hmget(this.queue.keys.dead, ...chunk);
      const replies = (await pipeline.exec()) ?? [];
      const results = (replies[0]?.[1] ?? []) as (string | null)[];
      const dead = (replies[1]?.[1] ?? []) as (string | null)[];
      chunk.forEach((id, k) => {
        const r = results[k];
        const d = dead[k];
        if (r != null) out.set(id, { ok: true, value: JSON.parse(r) as unknown });
        else if (d != null) {
          const rec = JSON.parse(d) as { attempts: number; error: ItemError };
          out.set(id, { ok: false, attempts: rec.attempts, error: rec.error });
        }
      });
    }
    return out;
  }

  private async recover(): Promise<void> {
    if (this.closed || this.pending.size === 0) return;
    try {
      for (const [id, outcome] of await this.lookup([...this.pending.keys()])) this.deliver(id, outcome);
    } catch {
      // the next reconnection or the calls' timeouts try again
    }
  }

  private forget(id: string, succeeded: boolean): void {
    (succeeded ? this.forgetSucceeded : this.forgetFailed).push(id);
    if (this.forgetSucceeded.length + this.forgetFailed.length >= 500) void this.flushForget();
    else this.forgetTimer ??= setTimeout(() => void this.flushForget(), FORGET_DELAY_MS);
  }

  private async flushForget(): Promise<void> {
    if (this.forgetTimer) clearTimeout(this.forgetTimer);
    this.forgetTimer = undefined;
    const succeeded = this.forgetSucceeded;
    const failed = this.forgetFailed;
    this.forgetSucceeded = [];
    this.forgetFailed = [];
    if (succeeded.length + failed.length === 0) return;
    try {
      await this.queue.forgetCalls(succeeded, failed);
    } catch {
      // best effort: leftovers expire with the calls' idTtlMs / failureTtlMs
    }
  }
}

/** 32 random bytes per call, cut from a pool refilled from the CSPRNG (randomBytes(32) costs ~5 µs a call; this, ~0.5). */
const keyPool = Buffer.alloc(32 * 256);
let keyPoolOffset = keyPool.length;
function nextReplyKey(): Buffer {
  if (keyPoolOffset === keyPool.length) {
    randomFillSync(keyPool);
    keyPoolOffset = 0;
  }
  const key = Buffer.from(keyPool.subarray(keyPoolOffset, keyPoolOffset + 32));
  keyPoolOffset += 32;
  return key;
}

type CallOutcome = { ok: true; value: unknown } | { ok: false; attempts: number; error: ItemError };

/** The outcome a verified reply carries, or undefined when its body does not parse as one. */
function decodeReply(r: SignedCallReply): CallOutcome | undefined {
  try {
    if (r.kind === 'result') return { ok: true, value: r.json === '' ? undefined : (JSON.parse(r.json) as unknown) };
    const e = JSON.parse(r.errorJson) as Partial<ItemError> | null;
    if (!e || typeof e.name !== 'string' || typeof e.message !== 'string') return undefined;
    return { ok: false, attempts: r.attempts, error: { name: e.name, message: e.message, ...(typeof e.stack === 'string' ? { stack: e.stack } : {}) } };
  } catch {
    return undefined;
  }
}

/** A typed proxy whose property accesses are remote functions (see Remote<T>). */
export function createProxy<T>(call: (fn: string, args: unknown[]) => Promise<unknown>): Remote<T> {
  return new Proxy(Object.create(null) as object, {
    get(_target, prop) {
      // Not thenable (so `await proxy` is the proxy), and no symbol or inspection hooks.
      if (typeof prop !== 'string' || prop === 'then' || prop === 'toJSON' || prop === 'constructor' || prop.startsWith('_')) return undefined;
      return (...args: unknown[]) => call(prop, args);
    },
  }) as Remote<T>;
}
