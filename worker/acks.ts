import type { BatchQueue, CompleteInput, FailInput } from '../queue/index.js';
import { Backoff, delay, withTimeout } from './backoff.js';

export type AckKind = 'complete' | 'fail' | 'release';

export interface AckOptions {
  /** Flush as soon as this many acknowledgements are waiting. */
  maxItems: number;
  /**
   * Flush at most this long after the first acknowledgement arrived. 0: at the end of the
   * current turn of the event loop (outcomes that arrive together go together).
   */
  maxDelayMs: number;
}

export interface AckHooks {
  /** These tokens need no more lease renewals: recorded, rejected, or released. */
  onSettled(tokens: readonly string[]): void;
  onRejected(kind: AckKind, tokens: readonly string[]): void;
  /** A flush failed and will be retried (Redis unreachable). */
  onError(kind: AckKind, err: unknown): void;
  /** Round trips made, and items recorded per kind. */
  onFlushed(kind: AckKind, items: number): void;
  /** A typed queue error (state lost, protocol mismatch): nothing more can be recorded. */
  onQueueError(err: unknown): void;
}

/** Lua scripts unpack arguments; keep each call well below Lua's stack limit. */
const CHUNK = 500;

/**
 * Batches completions, failures and releases: at most one flush in flight (unless the worker
 * asks for sendNow() before it starts items); whatever arrives meanwhile goes in the next one (so batches grow with load, and latency stays
 * around one round trip). A flush that fails is retried with capped backoff; its items
 * stay leased (and renewed) until it lands.
 *
 * On a crash, acknowledgements not yet flushed are lost: those items' leases lapse and
 * they run again (at-least-once). At most maxItems + one flush in flight are exposed.
 */
export class AckBatcher {
  private completes: CompleteInput[] = [];
  private fails: FailInput[] = [];
  private releases: { token: string }[] = [];
  private flushing: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;
  private readonly backoff = new Backoff(100, 5000);
  private retryTimer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    /** The queue to write through (a getter: the worker re-creates it to pin the epoch). */
    private readonly queue: () => BatchQueue,
    private readonly options: AckOptions,
    private readonly hooks: AckHooks,
  ) {}

  get pending(): number {
    return this.completes.length + this.fails.length + this.releases.length;
  }

  get busy(): boolean {
    return this.pending > 0 || this.flushing !== undefined;
  }

  complete(entry: CompleteInput): void {
    this.completes.push(entry);
    this.schedule();
  }

  fail(entry: FailInput): void {
    this.fails.push(entry);
    this.schedule();
  }

  release(token: string): void {
    this.releases.push({ token });
    this.schedule();
  }

  /** Forgets a waiting acknowledgement (its lease was lost). Returns whether it was waiting. */
  drop(token: string): boolean {
    const before = this.pending;
    this.completes = this.completes.filter((e) => e.claim.token !== token);
    this.fails = this.fails.filter((e) => e.claim.token !== token);
    this.releases = this.releases.filter((e) => e.token !== token);
    return this.pending < before;
  }

  /** Drops everything waiting (the batch's state is gone). Returns the dropped tokens. */
  clear(): string[] {
    const tokens = [...this.completes.map((e) => e.claim.token), ...this.fails.map((e) => e.claim.token), ...this.releases.map((e) => e.token)];
    this.completes = [];
    this.fails = [];
    this.releases = [];
    return tokens;
  }

  /** Flushes everything now; resolves when nothing is waiting or `deadlineMs` passed. */
  async flush(deadlineMs = Infinity): Promise<boolean> {
    const until = Date.now() + deadlineMs;
    while (this.busy && !this.stopped) {
      if (Date.now() >= until) return false;
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
      if (!this.flushing && this.pending > 0) this.start();
      const inFlight = this.flushing;
      if (inFlight) await withTimeout(inFlight, Math.max(1, until - Date.now()), undefined);
      if (this.pending > 0 && !this.flushing && this.backoff.failures > 0) await delay(Math.min(200, Math.max(1, until - Date.now())));
    }
    return !this.busy;
  }

  /**
   * Writes what is waiting now, even while another write is in flight, so that it reaches Redis
   * before whatever the caller sends next on the same connection (Redis runs one connection's
   * commands in order). The worker calls it before a call that starts items, so an item that
   * finished is recorded before the next one can run: a worker killed by that next item is not
   * charged for the one before.
   */
  sendNow(): void {
    if (this.pending === 0 || this.stopped || this.retryTimer) return;
    this.start();
  }

  stop(): void {
    this.stopped = true;
    this.clearTimer();
    clearTimeout(this.retryTimer);
  }

  private clearTimer(): void {
    clearTimeout(this.timer);
    clearImmediate(this.immediate);
    this.timer = undefined;
    this.immediate = undefined;
  }

  private schedule(): void {
    if (this.flushing || this.retryTimer || this.stopped) return;
    if (this.pending >= this.options.maxItems) {
      this.clearTimer();
      this.start();
    } else if (!this.timer && !this.immediate) {
      const fire = (): void => {
        this.clearTimer();
        if (!this.flushing && !this.retryTimer) this.start();
      };
      if (this.options.maxDelayMs === 0) this.immediate = setImmediate(fire);
      else this.timer = setTimeout(fire, this.options.maxDelayMs);
    }
  }

  private start(): void {
    if (this.pending === 0 || this.stopped) return;
    this.clearTimer();
    const completes = this.completes;
    const fails = this.fails;
    const releases = this.releases;
    this.completes = [];
    this.fails = [];
    this.releases = [];
    const sent = this.send(completes, fails, releases);
    // With sendNow() two writes may be in flight: `flushing` settles after all of them.
    const all = this.flushing ? Promise.all([this.flushing, sent]).then(() => undefined) : sent;
    const tracked: Promise<void> = all.finally(() => {
      if (this.flushing !== tracked) return;
      this.flushing = undefined;
      if (this.pending > 0 && !this.retryTimer) this.start();
    });
    this.flushing = tracked;
  }

  private async send(completes: CompleteInput[], fails: FailInput[], releases: { token: string }[]): Promise<void> {
    const calls: Promise<boolean>[] = [];
    for (let i = 0; i < completes.length; i += CHUNK) {
      const chunk = completes.slice(i, i + CHUNK);
      calls.push(
        this.call(
          'complete',
          chunk,
          chunk.map((e) => e.claim.token),
          async () => (await this.queue().complete(chunk)).rejected,
          () => this.completes.unshift(...chunk),
        ),
      );
    }
    for (let i = 0; i < fails.length; i += CHUNK) {
      const chunk = fails.slice(i, i + CHUNK);
      calls.push(
        this.call(
          'fail',
          chunk,
          chunk.map((e) => e.claim.token),
          async () => (await this.queue().fail(chunk)).rejected,
          () => this.fails.unshift(...chunk),
        ),
      );
    }
    for (let i = 0; i < releases.length; i += CHUNK) {
      const chunk = releases.slice(i, i + CHUNK);
      calls.push(
        this.call(
          'release',
          chunk,
          chunk.map((e) => e.token),
          async () => (await this.queue().release(chunk)).lost,
          () => this.releases.unshift(...chunk),
        ),
      );
    }
    const ok = await Promise.all(calls);
    if (ok.every(Boolean)) {
      this.backoff.reset();
    } else if (!this.stopped && this.pending > 0) {
      this.retryTimer = setTimeout(() => {
        this.retryTimer = undefined;
        this.start();
      }, this.backoff.next());
    }
  }

  /** One script call; on failure puts its entries back. Returns whether it landed. */
  private async call(kind: AckKind, entries: readonly unknown[], tokens: string[], send: () => Promise<string[]>, putBack: () => void): Promise<boolean> {
    try {
      const rejected = await send();
      this.hooks.onFlushed(kind, entries.length - rejected.length);
      if (rejected.length > 0) this.hooks.onRejected(kind, rejected);
      this.hooks.onSettled(tokens);
      return true;
    } catch (err) {
      if (isQueueError(err)) {
        // Not retryable: stop renewing these (their leases lapse) and let the worker react.
        this.hooks.onSettled(tokens);
        this.hooks.onQueueError(err);
        return true;
      }
      putBack();
      this.hooks.onError(kind, err);
      return false;
    }
  }
}

function isQueueError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'BatchStateLost' || code === 'ProtocolVersionMismatch' || code === 'InvalidArgument' || code === 'PayloadTooLarge';
}
