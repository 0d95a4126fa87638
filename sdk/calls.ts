import { randomBytes } from 'node:crypto';
import { batchId, CALL_ID_PREFIX, parseCallReplies, type BatchQueue, type CallReply, type ItemInput, type RedisClient } from '../queue/index.js';
import type { Cluster } from 'ioredis';
import type { HandlerContext } from '../worker/handler/api.js';
import { CallTimeoutError, ClientClosedError, ConnectionError, RemoteCallError, TaskBatchError } from './errors.js';

/** Options of one remote call (or the defaults of a proxy). */
export interface CallOptions {
  /** Reject with CallTimeoutError when no answer arrives in time (default 30 s). The call may still run later. */
  timeoutMs?: number;
  /** Abort waiting (the call may still run). */
  signal?: AbortSignal;
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
  resolve(value: unknown): void;
  reject(err: unknown): void;
  timer: NodeJS.Timeout;
  onAbort?: () => void;
  signal?: AbortSignal;
}

const FORGET_DELAY_MS = 50;
const MAX_PAYLOAD_BYTES = 1024 * 1024;

/**
 * Remote calls over one open batch whose handler dispatches by function name
 * (`handler: {module, dispatch: fn}`). Each call is an item `{fn, args}` with the id
 * `call:<client>:<n>`; the queue announces its outcome on this client's reply channel as the
 * worker completes it (or dead-letters it), so a call costs no polling. Calls made in the same
 * tick are enqueued together (one pipelined round trip), and their outcomes arrive batched as
 * the worker acknowledges them. Stored results of delivered calls (and their ids in the
 * idempotence set) are removed in the background, so a long-lived service does not grow.
 */
export class CallDispatcher {
  readonly clientId = randomBytes(6).toString('hex');
  private seq = 0;
  private readonly pending = new Map<string, PendingCall>();
  private buffer: ItemInput[] = [];
  private flushScheduled = false;
  private forgetBuffer: string[] = [];
  private forgetTimer: NodeJS.Timeout | undefined;
  private sub: RedisClient | undefined;
  private started: Promise<void> | undefined;
  private closed = false;
  private readyOnce = false;

  constructor(
    private readonly queue: BatchQueue,
    private readonly redis: RedisClient,
    private readonly defaults: CallOptions = {},
  ) {}

  /** Calls in flight. */
  get inFlight(): number {
    return this.pending.size;
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
    if (json === undefined || Buffer.byteLength(json) > MAX_PAYLOAD_BYTES - 64) {
      return Promise.reject(new TaskBatchError('Usage', `arguments of ${fn}() must be JSON of at most ${MAX_PAYLOAD_BYTES - 64} bytes`));
    }
    const timeoutMs = options.timeoutMs ?? this.defaults.timeoutMs ?? 30_000;
    const signal = options.signal ?? this.defaults.signal;
    if (signal?.aborted) return Promise.reject(signal.reason);
    const id = `${CALL_ID_PREFIX}${this.clientId}:${++this.seq}`;
    return new Promise((resolve, reject) => {
      const p: PendingCall = {
        fn,
        resolve,
        reject,
        timer: setTimeout(() => void this.onTimeout(id, timeoutMs), timeoutMs),
      };
      if (signal) {
        p.signal = signal;
        p.onAbort = () => {
          this.settle(id);
          reject(signal.reason);
        };
        signal.addEventListener('abort', p.onAbort, { once: true });
      }
      this.pending.set(id, p);
      this.buffer.push({ id, data: { fn, args } });
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
      const onMessage = (ch: string, message: string): void => {
        if (ch === channel) this.onReplies(parseCallReplies(message));
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

  private onReplies(replies: CallReply[]): void {
    for (const r of replies) {
      this.forget(r.id);
      const p = this.pending.get(r.id);
      if (!p) continue; // timed out or aborted earlier
      this.settle(r.id);
      if (r.kind === 'result') {
        let value: unknown;
        try {
          value = r.json === '' ? undefined : JSON.parse(r.json);
        } catch (err) {
          p.reject(err);
          continue;
        }
        p.resolve(value);
      } else {
        const e = r.record.error;
        p.reject(new RemoteCallError(e.name, e.message, p.fn, r.id, r.record.attempts, e.stack));
      }
    }
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
      if (found.length > 0) {
        this.onReplies(found);
        return;
      }
    } catch {
      // fall through to the timeout
    }
    if (!this.pending.has(id)) return;
    this.settle(id);
    p.reject(
      new CallTimeoutError(
        `call ${p.fn}() on batch ${batchId(this.queue.ref)} got no answer within ${timeoutMs} ms; it may still run later (at-least-once). Is a worker running (kubectl get taskbatch ${this.queue.ref.name} -n ${this.queue.ref.namespace}), and does the batch use handler dispatch: fn?`,
        id,
        p.fn,
      ),
    );
  }

  /** Outcomes stored in Redis for the given call ids (results, dead letters). */
  private async lookup(ids: readonly string[]): Promise<CallReply[]> {
    const out: CallReply[] = [];
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
        if (r != null) out.push({ kind: 'result', id, json: r });
        else if (d != null) out.push({ kind: 'error', id, record: JSON.parse(d) as Extract<CallReply, { kind: 'error' }>['record'] });
      });
    }
    return out;
  }

  private async recover(): Promise<void> {
    if (this.closed || this.pending.size === 0) return;
    try {
      this.onReplies(await this.lookup([...this.pending.keys()]));
    } catch {
      // the next reconnection or the calls' timeouts try again
    }
  }

  private forget(id: string): void {
    this.forgetBuffer.push(id);
    if (this.forgetBuffer.length >= 500) void this.flushForget();
    else this.forgetTimer ??= setTimeout(() => void this.flushForget(), FORGET_DELAY_MS);
  }

  private async flushForget(): Promise<void> {
    if (this.forgetTimer) clearTimeout(this.forgetTimer);
    this.forgetTimer = undefined;
    const ids = this.forgetBuffer;
    this.forgetBuffer = [];
    if (ids.length === 0) return;
    try {
      await this.queue.forgetCalls(ids);
    } catch {
      // best effort: leftovers expire with the batch's result TTL
    }
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
