import { BatchQueue, type BatchRef, type Claim, type QueueOptions, type RedisClient } from '../queue/index.js';
import { heartbeat, leave, pruneWorkers } from '../queue/presence.js';
import { AckBatcher, type AckKind } from './acks.js';
import { Backoff, delay, withTimeout } from './backoff.js';
import { EXIT_CODES } from './exit-codes.js';
import { Deque, reasonError } from './executor/common.js';
import type { Executor, Outcome } from './executor/types.js';
import { limitResult } from './handler/result-limit.js';
import { errorFields, silentLogger, type Logger } from './log.js';
import type { WorkerMetrics } from './metrics.js';
import { WORKER_VERSION } from './version.js';

export interface BatchWorkerOptions {
  redis: RedisClient;
  /**
   * A second connection to the same Redis, for waiting: an idle worker blocks on it (BLPOP on
   * the batch's wake lists) until work arrives. It needs no command timeout shorter than
   * idlePollMs. The worker closes it when it finishes.
   */
  wakeRedis: RedisClient;
  batch: BatchRef;
  /** Expected epoch, key prefix, limits. Without an epoch, the worker pins the one it first sees. */
  queueOptions?: QueueOptions;
  executor: Executor;
  workerId: string;
  itemTimeoutMs: number;
  leaseMs: number;
  /** On SIGTERM: how long running items may take before they are released (a drain waits for them). */
  shutdownGraceMs: number;
  /** Most claimed-but-unstarted items held (the adaptive prefetch stays below it). */
  prefetchMax: number;
  ackMaxItems: number;
  ackMaxDelayMs: number;
  /**
   * Longest an idle worker stays blocked before it claims anyway (a safety net: writers wake
   * it as work arrives, and it wakes itself when a delayed item falls due or a lease expires).
   */
  idlePollMs: number;
  /** Byte budget of one claim reply (the queue's default, 8 MiB, when absent). */
  claimMaxBytes?: number;
  /**
   * Mark prefetched items started in Redis (queue.start) just before they run, so that if this
   * worker dies only what was running is charged an attempt. Costs a Redis round trip before each
   * wave of prefetched items; off: every claimed item is marked started when claimed.
   */
  chargeOnlyStarted?: boolean;
  heartbeatMs: number;
  /** Registry entries older than this are pruned (by any worker, and by the operator). */
  presenceStaleMs: number;
  /** Exit (code 4) once the batch's state has been missing from Redis this long. */
  stateLostExitMs: number;
  podIp?: string;
  logger?: Logger;
  metrics?: WorkerMetrics;
  /** Progress reported by a handler (local run display). */
  onProgress?(itemId: string, value: number): void;
}

export type StopReason = 'complete' | 'shutdown' | 'drain' | 'stateLost' | 'protocolMismatch' | 'handlerStart' | 'redisMisconfigured' | 'fatal';

export interface WorkerResult {
  reason: StopReason;
  exitCode: number;
  message: string;
}

const EXIT_BY_REASON: Record<StopReason, number> = {
  complete: EXIT_CODES.ok,
  shutdown: EXIT_CODES.ok,
  drain: EXIT_CODES.ok,
  stateLost: EXIT_CODES.stateLost,
  protocolMismatch: EXIT_CODES.protocolMismatch,
  handlerStart: EXIT_CODES.handlerStart,
  redisMisconfigured: EXIT_CODES.config,
  fatal: EXIT_CODES.internal,
};

/** A claimed item, from claim until Redis has recorded what happened to it. */
interface Held {
  id: string;
  attempt: number;
  payload: string;
  claim: Claim;
  ac: AbortController;
  state: 'queued' | 'running' | 'done';
  /** Handed to the executor. A prefetched item waits in the worker until it is marked started in Redis. */
  dispatched: boolean;
  abortReason: 'LeaseLost' | 'WorkerShutdown' | 'StateLost' | undefined;
}

const RENEW_CHUNK = 1000;
/** The queue's largest claim (queue.ts). */
const MAX_CLAIM = 10_000;
const FINALIZE_MS = 10_000;
/** How long past its own timeout a blocked claim may stay unanswered before its connection is dropped. */
const WAKE_GRACE_MS = 5000;
/** The poll interval while the wake connection is down (it reconnects on its own). */
const WAKE_DOWN_POLL_MS = 250;
const PRUNE_EVERY_BEATS = 6;

/**
 * The consumer loop of one worker: claims items in batches sized to the pool, runs them
 * in the executor, renews their leases from this (main) thread, batches acknowledgements,
 * heartbeats its presence, and stops on completion, SIGTERM, a drain request, or lost
 * batch state. See docs/worker.md.
 */
export class BatchWorker {
  private queue: BatchQueue;
  private readonly o: BatchWorkerOptions;
  private readonly log: Logger;
  private readonly metrics: WorkerMetrics | undefined;
  private readonly held = new Map<string, Held>();
  /** Prefetched items, in claim order, not yet marked started (queue.start) nor dispatched. */
  private readonly waiting = new Deque<Held>();
  /** A queue.start call is in flight. */
  private marking = false;
  /** Items in the in-flight queue.start call: taken from `waiting`, not yet dispatched. */
  private markingCount = 0;
  /** Executor slots promised to the items the in-flight claim marks started (its startNow). */
  private claimReserved = 0;
  /** After a failed queue.start: no new attempt before this time (ms since epoch). */
  private markPausedUntil = 0;
  private readonly markBackoff = new Backoff(100, 5000);
  private readonly acks: AckBatcher;
  private executing = 0;
  private running = 0;
  private started = false;
  private runCalled = false;
  private claiming = false;
  private stopping: 'shutdown' | 'drain' | undefined;
  private finishing: Promise<WorkerResult> | undefined;
  private lost: { since: number; error: unknown } | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  /** The last claim found nothing more to take: the next one waits for a wake-up. */
  private waitNext = false;
  /** A claim waiting for a wake-up is in flight on the wake connection. */
  private blocked = false;
  /** This worker pushed its own wake list to end that wait (once is enough). */
  private wokeSelf = false;
  /** When a delayed item falls due or a lease expires (a reclaim.lua sweep). */
  private sweepTimer: NodeJS.Timeout | undefined;
  private sweepAt = Infinity;
  private sweeping = false;
  private graceTimer: NodeJS.Timeout | undefined;
  private renewTimer: NodeJS.Timeout | undefined;
  private beatTimer: NodeJS.Timeout | undefined;
  private renewing = false;
  /** Since when lease renewals have been failing or timing out; the worker claims nothing meanwhile. */
  private renewFailingSince: number | undefined;
  private beating = false;
  private beats = 0;
  private readonly claimBackoff = new Backoff(100, 5000);
  private redisTrouble = false;
  private lastTick = Date.now();
  private claimRttMs = 1;
  private itemMs: number | undefined;
  private readonly startedAt = Date.now();
  private readonly stopController = new AbortController();
  private resolveDone!: (r: WorkerResult) => void;
  private readonly done = new Promise<WorkerResult>((resolve) => {
    this.resolveDone = resolve;
  });

  constructor(options: BatchWorkerOptions) {
    this.o = options;
    this.queue = new BatchQueue(options.redis, options.batch, options.queueOptions);
    this.log = options.logger ?? silentLogger;
    this.metrics = options.metrics;
    this.metrics?.poolSize.set(options.executor.size);
    this.acks = new AckBatcher(
      () => this.queue,
      { maxItems: options.ackMaxItems, maxDelayMs: options.ackMaxDelayMs },
      {
        onSettled: (tokens) => {
          for (const t of tokens) this.held.delete(t);
          this.afterChange();
        },
        onRejected: (kind, tokens) => this.onAckRejected(kind, tokens),
        onError: (kind, err) => this.onRedisError(`ack_${kind}`, err),
        onFlushed: (kind, n) => {
          this.metrics?.ackRoundTrips.inc();
          this.metrics?.acks.inc({ kind }, n);
          this.redisOk();
        },
        onQueueError: (err) => this.onQueueError('ack', err),
      },
    );
  }

  /** Connected to Redis, renewing leases, batch state present, executors started, not shutting down. */
  get ready(): boolean {
    return this.started && !this.lost && !this.finishing && this.renewFailingSince === undefined && this.o.redis.status === 'ready';
  }

  /** The loop has made progress recently (claims, renewals or heartbeats, even failed ones). */
  get healthy(): boolean {
    return Date.now() - this.lastTick < Math.max(60_000, 3 * this.o.leaseMs);
  }

  get epoch(): string {
    return this.queue.expectedEpoch;
  }

  status(): { inflight: number; running: number; buffered: number; awaitingAck: number; draining: boolean; ready: boolean } {
    return {
      inflight: this.executing,
      running: this.running,
      buffered: this.executing - this.running + this.waiting.length,
      awaitingAck: this.acks.pending,
      draining: this.stopping !== undefined,
      ready: this.ready,
    };
  }

  /** Runs until the batch is complete, a shutdown finishes, or a fatal condition. */
  async run(): Promise<WorkerResult> {
    if (this.runCalled) return this.done;
    this.runCalled = true;
    // Stopped before it ran (stopWith, e.g. an evicting Redis): nothing to start or to tear down twice.
    if (this.finishing) return this.done;
    void this.startUp().catch((err: unknown) => {
      this.log.error('Worker failed', { error: err });
      void this.finish('fatal', `internal error: ${(err as Error)?.message ?? String(err)}`);
    });
    return this.done;
  }

  /**
   * Graceful stop: stop claiming and hand back unstarted items. On SIGTERM ('shutdown') running
   * items may finish within the shutdown grace and are then released. A drain (scale-in) keeps
   * its promise never to interrupt an item: running items finish however long they take,
   * bounded by the item timeout (the executor enforces it); the pod's termination grace is set
   * from the item timeout, so deleting a draining pod does not cut them short either.
   */
  shutdown(reason: 'shutdown' | 'drain' = 'shutdown'): void {
    if (this.stopping || this.finishing) return;
    this.stopping = reason;
    this.stopController.abort();
    this.metrics?.draining.set(1);
    const budgetMs = this.stopBudgetMs;
    this.log.info(reason === 'drain' ? 'Began draining on request' : 'Began graceful shutdown', {
      running: this.running,
      buffered: this.executing - this.running + this.waiting.length,
      ...(reason === 'drain' ? { itemTimeoutMs: this.o.itemTimeoutMs } : { graceMs: this.o.shutdownGraceMs }),
    });
    clearTimeout(this.pollTimer);
    this.pollTimer = undefined;
    this.stopSweeps();
    // A claim blocked waiting for work returns now (and hands back what it got).
    if (this.blocked) this.wakeSelf();
    if (!this.started) return; // startUp() notices and finishes
    for (const h of this.held.values()) if (h.state === 'queued') this.abortHeld(h, 'WorkerShutdown');
    // For a drain only a backstop: an item past its own timeout should have ended already.
    this.graceTimer = setTimeout(() => {
      let n = 0;
      for (const h of this.held.values()) {
        if (h.state === 'running') {
          this.abortHeld(h, 'WorkerShutdown');
          n++;
        }
      }
      if (n > 0)
        this.log.info(
          reason === 'drain' ? 'Stopped items still running past the item timeout while draining; releasing them' : 'Stopped items still running after the shutdown grace; releasing them',
          { items: n },
        );
    }, budgetMs);
    void this.beat();
    this.checkDrained();
  }

  /**
   * How long a stop may keep running items: the shutdown grace, or for a drain the item
   * timeout plus that grace (a backstop past the executor's own timeout). The process's
   * last-resort exit timer (run.ts) is set above this.
   */
  get stopBudgetMs(): number {
    return this.stopping === 'drain' ? this.o.itemTimeoutMs + this.o.shutdownGraceMs : this.o.shutdownGraceMs;
  }

  /** Why the worker is stopping, if it is (a drain request or a signal). */
  get stopReason(): 'shutdown' | 'drain' | undefined {
    return this.stopping;
  }

  /** Stops at once for a fatal reason (e.g. the executors cannot start): items are released. */
  stopWith(reason: Exclude<StopReason, 'complete' | 'shutdown' | 'drain'>, message: string): void {
    void this.finish(reason, message);
  }

  // ---- start-up ----

  private async startUp(): Promise<void> {
    await waitForConnection(this.o.redis, 5000, this.stopController.signal);
    const backoff = new Backoff(200, 5000);
    let missingSince: number | undefined;
    let logged = false;
    for (;;) {
      if (this.finishing) return;
      if (this.stopping) return void this.finish(this.stopping, 'shut down before starting');
      try {
        const snap = await this.queue.snapshot();
        this.tick();
        this.redisOk();
        if (!this.queue.expectedEpoch) {
          this.queue = new BatchQueue(this.o.redis, this.o.batch, { ...this.o.queueOptions, expectedEpoch: snap.epoch });
        }
        break;
      } catch (err) {
        this.tick();
        const code = (err as { code?: string })?.code;
        if (code === 'ProtocolVersionMismatch') return void this.finish('protocolMismatch', (err as Error).message);
        if (code === 'BatchStateLost') {
          missingSince ??= Date.now();
          if (!logged) {
            this.log.warn('Waiting for the batch state in Redis', { error: (err as Error).message, exitAfterMs: this.o.stateLostExitMs });
            logged = true;
          }
          if (Date.now() - missingSince >= this.o.stateLostExitMs) return void this.finish('stateLost', (err as Error).message);
        } else this.onRedisError('snapshot', err);
        await delay(backoff.next(), this.stopController.signal);
      }
    }
    const ex = this.o.executor;
    try {
      await ex.start();
    } catch (err) {
      this.log.error('Failed to start the executors', { error: err, mode: ex.mode, size: ex.size });
      return void this.finish('handlerStart', (err as Error)?.message ?? String(err));
    }
    if (this.finishing) return; // stopped (stopWith) while the executors started: doFinish tears them down
    if (this.stopping) return void this.finish(this.stopping, 'shut down while starting');
    this.started = true;
    this.metrics?.ready.set(1);
    this.log.info('Started worker', { mode: ex.mode, size: ex.size, epoch: this.queue.expectedEpoch, leaseMs: this.o.leaseMs, itemTimeoutMs: this.o.itemTimeoutMs });
    this.renewTimer = setInterval(() => void this.renew(), this.renewIntervalMs);
    this.beatTimer = setInterval(() => void this.beat(), this.o.heartbeatMs);
    void this.beat();
    this.pump();
  }

  // ---- claiming ----

  private prefetch(): number {
    const size = this.o.executor.size;
    if (this.itemMs === undefined) return Math.min(size, this.o.prefetchMax);
    // Hold about two claim round trips' worth of work: enough that executors never wait
    // on Redis, little enough that slow items are not hoarded from other workers.
    const want = Math.ceil((2 * size * this.claimRttMs) / Math.max(this.itemMs, 0.01));
    return Math.max(1, Math.min(this.o.prefetchMax, want));
  }

  private pump(): void {
    this.startWaiting();
    // While leases cannot be renewed, new ones would lapse too: claim again once renewals succeed.
    if (!this.started || this.stopping || this.finishing || this.claiming || this.lost || this.pollTimer || this.renewFailingSince !== undefined) return;
    const prefetch = this.prefetch();
    const deficit = Math.min(MAX_CLAIM, this.o.executor.size + prefetch - this.executing - this.waiting.length - this.markingCount);
    if (deficit < Math.max(1, Math.ceil(Math.min(prefetch, MAX_CLAIM) / 2))) return;
    this.claiming = true;
    void this.claimOnce(deficit).finally(() => {
      this.claiming = false;
      this.checkDrained();
      this.pump();
    });
  }

  private async claimOnce(count: number): Promise<void> {
    const t0 = performance.now();
    let result;
    // Items that can start at once are marked started by the claim itself; the rest are prefetched.
    // Prefetched items go first; slots being filled by a start() call are not free.
    const free = this.o.chargeOnlyStarted ? Math.min(count, Math.max(0, this.freeSlots - this.waiting.length)) : count;
    this.claimReserved = free;
    // While the wake connection is down (it reconnects on its own), poll as before.
    const block = this.waitNext && this.o.wakeRedis.status === 'ready';
    const wait = block ? { client: this.o.wakeRedis, workerId: this.o.workerId, timeoutMs: this.o.idlePollMs } : undefined;
    this.blocked = block;
    // On the main connection, outcomes go first: what the claim marks started runs only after
    // the items that finished before it are recorded (see AckBatcher.sendNow).
    if (!block) this.acks.sendNow();
    try {
      const claim = this.queue.claim(count, this.o.leaseMs, { startNow: free, ...(this.o.claimMaxBytes === undefined ? {} : { maxBytes: this.o.claimMaxBytes }), ...(wait ? { wait } : {}) });
      // A blocked connection sends nothing until it is woken, so it has no socket timeout: a
      // hung one is found here, dropped and reopened.
      result = wait ? await withDeadline(claim, wait.timeoutMs + WAKE_GRACE_MS, 'claim waiting for a wake-up') : await claim;
    } catch (err) {
      this.tick();
      if (wait && (err as Error)?.name === 'TimeoutError') this.o.wakeRedis.disconnect(true);
      if (!this.onQueueError('claim', err)) this.onRedisError('claim', err);
      this.waitNext = false;
      if (!this.lost && !this.finishing) this.schedulePoll(this.claimBackoff.next());
      return;
    } finally {
      // The marked items are dispatched (or released) synchronously below.
      this.claimReserved = 0;
      this.blocked = false;
      this.wokeSelf = false;
    }
    const rtt = performance.now() - t0;
    this.tick();
    this.redisOk();
    this.claimBackoff.reset();
    // A blocked claim's time is mostly waiting, not a round trip.
    if (!block) {
      this.claimRttMs = this.claimRttMs * 0.8 + rtt * 0.2;
      this.metrics?.claimDuration.observe(rtt / 1000);
    }
    this.metrics?.claimRoundTrips.inc();
    this.armSweep(result.nextDueMs, result.nextExpiryMs);
    // Woken through its own list: a drain may have been requested (presence-drain.lua).
    if (result.wokenBy === 'worker' && !this.stopping) void this.beat();
    this.metrics?.claimedItems.inc(result.items.length);
    if (this.stopping || this.finishing || this.lost) {
      for (const c of result.items) this.acks.release(c.token);
      return;
    }
    result.items.forEach((claim, i) => {
      const h = this.hold(claim);
      if (i < free) this.dispatch(h);
      else this.waiting.push(h);
    });
    this.startWaiting();
    this.updateGauges();
    if (result.items.length === 0) {
      if (result.closed && this.executing === 0 && !this.acks.busy) {
        try {
          const snap = await this.queue.snapshot();
          if (snap.complete) {
            this.log.info('Batch is complete', { succeeded: snap.succeeded, failed: snap.failed, total: snap.total });
            void this.finish('complete', `batch complete: ${snap.succeeded} succeeded, ${snap.failed} failed of ${snap.total}`);
            return;
          }
        } catch (err) {
          if (!this.onQueueError('snapshot', err)) this.onRedisError('snapshot', err);
        }
      }
      this.idleAfter();
    } else if (result.items.length < count && result.leftByBudget === 0) {
      // The queue ran dry: the next claim waits to be woken (by the writer of the next item).
      this.idleAfter();
    } else this.waitNext = false;
  }

  /** Nothing more to claim: the next claim (pump() runs next) waits for a wake-up. */
  private idleAfter(): void {
    this.waitNext = true;
    // While the wake connection is down (it reconnects on its own), poll instead.
    if (this.o.wakeRedis.status !== 'ready') this.schedulePoll(Math.min(this.o.idlePollMs, WAKE_DOWN_POLL_MS));
  }

  /**
   * Arms a timer for the soonest of the given delays (ms, -1 = none): a delayed item falling
   * due or a lease expiring. It runs reclaim.lua, which promotes and reclaims and wakes as many
   * workers as items became pending: no worker polls for either.
   */
  private armSweep(...delays: number[]): void {
    const soonest = Math.min(...delays.filter((ms) => ms >= 0));
    if (!Number.isFinite(soonest) || this.stopping || this.finishing) return;
    const at = Date.now() + soonest;
    if (this.sweepTimer && this.sweepAt <= at) return;
    clearTimeout(this.sweepTimer);
    this.sweepAt = at;
    // +1: Redis's clock counts whole ms, and the item is due from its exact ms on.
    this.sweepTimer = setTimeout(() => {
      this.sweepTimer = undefined;
      this.sweepAt = Infinity;
      void this.sweep();
    }, soonest + 1);
  }

  private async sweep(): Promise<void> {
    if (this.sweeping || !this.started || this.stopping || this.finishing || this.lost) return;
    this.sweeping = true;
    try {
      const r = await this.queue.reclaimExpired();
      this.tick();
      if (r.reclaimed > 0) this.log.info('Reclaimed items whose lease expired', { items: r.reclaimed });
      this.armSweep(r.nextDueMs, r.nextExpiryMs);
    } catch (err) {
      this.tick();
      if (!this.onQueueError('reclaim', err)) this.onRedisError('reclaim', err);
      this.armSweep(this.claimBackoff.next());
    } finally {
      this.sweeping = false;
    }
  }

  private stopSweeps(): void {
    clearTimeout(this.sweepTimer);
    this.sweepTimer = undefined;
    this.sweepAt = Infinity;
  }

  private wakeSelf(): void {
    if (this.wokeSelf) return;
    this.wokeSelf = true;
    this.queue.wakeWorker(this.o.workerId).catch((err: unknown) => {
      // Unanswered, the blocked claim still returns within idlePollMs.
      this.log.debug('Could not wake the blocked claim', { error: errorFields(err) });
    });
  }

  private schedulePoll(ms: number): void {
    if (this.pollTimer || this.stopping || this.finishing) return;
    this.pollTimer = setTimeout(
      () => {
        this.pollTimer = undefined;
        this.pump();
      },
      Math.max(1, ms),
    );
  }

  /**
   * Room in the executors (running plus pipelined) nothing is on its way to fill: what may be
   * marked started. Pipelined items count as started, so a pool of fast items keeps its
   * pipelining, and a dead worker is charged at most its executors' pipelines.
   */
  private get freeSlots(): number {
    return this.o.executor.pipelineCapacity - this.executing - this.markingCount - this.claimReserved;
  }

  private hold(claim: Claim): Held {
    const h: Held = { id: claim.id, attempt: claim.attempt, payload: claim.payload, claim, ac: new AbortController(), state: 'queued', dispatched: false, abortReason: undefined };
    this.held.set(claim.token, h);
    return h;
  }

  /**
   * Prefetched items are marked started in Redis (one call for all the free slots) before they
   * are dispatched: should this worker die while running one, that item is charged an attempt,
   * and the others it held go back uncharged (tb_reclaim), so a poison item that kills its
   * worker cannot dead-letter its neighbours.
   */
  private startWaiting(): void {
    if (this.marking || this.waiting.length === 0 || !this.started || this.stopping || this.finishing || this.lost || Date.now() < this.markPausedUntil) return;
    const slots = this.freeSlots;
    if (slots <= 0) return;
    const batch: Held[] = [];
    while (batch.length < slots && this.waiting.length > 0) batch.push(this.waiting.shift()!);
    this.marking = true;
    this.markingCount = batch.length;
    this.acks.sendNow();
    void this.queue
      .start(batch.map((h) => h.claim))
      .then(
        ({ lost }) => {
          this.tick();
          this.markBackoff.reset();
          const gone = new Set(lost);
          for (const h of batch) {
            if (h.ac.signal.aborted) this.dropUndispatched(h);
            else if (gone.has(h.claim.token)) {
              this.metrics?.leasesLost.inc();
              this.log.warn('Lost the lease of an item before it started; dropped it', { item: h.id, attempt: h.attempt });
              this.dropUndispatched(h, 'LeaseLost');
            } else if (this.stopping || this.finishing || this.lost) this.dropUndispatched(h, 'WorkerShutdown');
            else this.dispatch(h);
          }
        },
        (err: unknown) => {
          this.tick();
          // Not marked: they must not run. Back to the front, and try again after a pause.
          this.waiting.unshiftMany(batch.filter((h) => !h.ac.signal.aborted));
          for (const h of batch) if (h.ac.signal.aborted) this.dropUndispatched(h);
          if (!this.onQueueError('start', err)) this.onRedisError('start', err);
          const pauseMs = this.markBackoff.next();
          this.markPausedUntil = Date.now() + pauseMs;
          setTimeout(() => this.afterChange(), pauseMs).unref();
        },
      )
      .finally(() => {
        this.marking = false;
        this.markingCount = 0;
        this.afterChange();
      });
  }

  /** An item that never reached the executor: released (shutdown), or forgotten (lease or state lost). */
  private dropUndispatched(h: Held, reason = h.abortReason): void {
    if (h.state === 'done') return;
    h.state = 'done';
    this.waiting.remove(h);
    const token = h.claim.token;
    if (reason === 'LeaseLost' || reason === 'StateLost' || this.lost) {
      (reason === 'LeaseLost' ? this.metrics?.items.lease_lost : this.metrics?.items.dropped)?.inc();
      this.held.delete(token);
    } else {
      this.metrics?.items.released.inc();
      this.acks.release(token);
    }
  }

  private dispatch(h: Held): void {
    h.dispatched = true;
    this.executing++;
    this.o.executor
      .run(h, {
        timeoutMs: this.o.itemTimeoutMs,
        signal: h.ac.signal,
        onStart: () => {
          h.state = 'running';
          this.running++;
          this.metrics?.inFlight.inc();
        },
      })
      .then(
        (outcome) => this.onOutcome(h, outcome),
        (err: unknown) => this.onOutcome(h, { status: 'aborted', reason: err, started: false }),
      );
  }

  // ---- outcomes ----

  private onOutcome(h: Held, o: Outcome): void {
    if (h.state === 'running') {
      this.running--;
      this.metrics?.inFlight.dec();
    }
    this.executing--;
    h.state = 'done';
    const m = this.metrics;
    const token = h.claim.token;
    switch (o.status) {
      case 'succeeded': {
        this.itemMs = this.itemMs === undefined ? o.durationMs : this.itemMs * 0.9 + o.durationMs * 0.1;
        m?.observeDuration('succeeded', o.durationMs);
        // The executors refuse oversized results where they ran; this backstop covers any other Executor.
        const checked = limitResult({ ok: true, json: o.json, ms: o.durationMs }, h.id, this.queue.limits.maxResultBytes, 'worker');
        if (!checked.ok) {
          m?.items.failed.inc();
          this.failItem(h, checked.error, false, 'failed');
        } else {
          m?.items.succeeded.inc();
          this.acks.complete({ claim: h.claim, result: o.json === undefined ? undefined : (JSON.parse(o.json) as unknown) });
          if (this.log.enabled('debug')) this.log.debug('Completed item', { item: h.id, attempt: h.attempt, durationMs: round(o.durationMs) });
        }
        break;
      }
      case 'failed':
        this.itemMs = this.itemMs === undefined ? o.durationMs : this.itemMs * 0.9 + o.durationMs * 0.1;
        m?.observeDuration('failed', o.durationMs);
        m?.items.failed.inc();
        this.failItem(h, o.error, o.retryable, 'failed');
        break;
      case 'timedOut':
        m?.items.timed_out.inc();
        this.failItem(h, o.error, true, 'timed_out');
        break;
      case 'crashed':
        m?.items.crashed.inc();
        this.failItem(h, o.error, true, 'crashed');
        break;
      case 'aborted':
        if (h.abortReason === 'LeaseLost' || h.abortReason === 'StateLost') {
          (h.abortReason === 'LeaseLost' ? m?.items.lease_lost : m?.items.dropped)?.inc();
          this.held.delete(token);
        } else {
          // Shutdown, or the executor gave up: give the item back without counting an attempt.
          m?.items.released.inc();
          if (this.lost) this.held.delete(token);
          else this.acks.release(token);
        }
        break;
    }
    this.afterChange();
  }

  private failItem(h: Held, error: { name: string; message: string; stack?: string }, retryable: boolean, outcome: string): void {
    this.acks.fail({ claim: h.claim, error, retryable });
    this.log.warn(outcome === 'failed' ? 'Item failed' : outcome === 'timed_out' ? 'Item timed out' : 'Item crashed its executor', {
      item: h.id,
      attempt: h.attempt,
      retryable,
      error: { name: error.name, message: error.message },
    });
  }

  private afterChange(): void {
    this.updateGauges();
    if (this.stopping || this.finishing) this.checkDrained();
    else this.pump();
  }

  private updateGauges(): void {
    this.metrics?.buffered.set(this.executing - this.running + this.waiting.length);
  }

  private abortHeld(h: Held, reason: NonNullable<Held['abortReason']>): void {
    if (h.state === 'done' || h.ac.signal.aborted) return;
    h.abortReason = reason;
    // Still waiting in the worker: nothing to stop. One being marked is dropped when the mark returns.
    if (!h.dispatched && this.waiting.remove(h)) {
      this.dropUndispatched(h, reason);
      h.ac.abort();
      return;
    }
    const message =
      reason === 'LeaseLost'
        ? "the item's lease was lost (it expired and was reclaimed, or finished elsewhere)"
        : reason === 'StateLost'
          ? "the batch's state was lost from Redis"
          : 'the worker is shutting down; the item is released for another worker';
    h.ac.abort(reasonError(reason === 'WorkerShutdown' ? 'WorkerShutdown' : reason, message));
  }

  private onAckRejected(kind: AckKind, tokens: readonly string[]): void {
    this.metrics?.acksRejected.inc({ kind }, tokens.length);
    this.log.warn(`Discarded ${kind === 'complete' ? 'results' : kind === 'fail' ? 'failures' : 'releases'} of items whose lease was lost`, {
      items: tokens.slice(0, 20).map((t) => t.slice(t.indexOf(':') + 1)),
      count: tokens.length,
    });
  }

  // ---- leases ----

  /**
   * Renews every held lease, with a deadline of one renewal interval: a renewal that does not
   * answer by then counts as failed (the connection may hang without closing), so the worker
   * turns not-ready and stops claiming well before the leases lapse, and resumes once a renewal
   * succeeds again.
   */
  private async renew(): Promise<void> {
    if (this.renewing || this.lost) return;
    if (this.held.size === 0) {
      this.tick();
      if (this.renewFailingSince === undefined) return;
    }
    this.renewing = true;
    const tokens = [...this.held.keys()];
    try {
      const calls: Promise<{ lost: string[] }>[] = [];
      for (let i = 0; i < tokens.length; i += RENEW_CHUNK)
        calls.push(
          this.queue.renew(
            tokens.slice(i, i + RENEW_CHUNK).map((token) => ({ token })),
            this.o.leaseMs,
          ),
        );
      // Nothing held, but renewals were failing: a round trip stands in for one, so claiming
      // resumes. Any answer will do (an ACL refusing PING still proves the connection works).
      if (calls.length === 0) calls.push(this.o.redis.ping().then(noneLost, (err: unknown) => (err instanceof Error && err.name === 'ReplyError' ? noneLost() : Promise.reject(err))));
      const replies = await withDeadline(Promise.all(calls), this.renewIntervalMs, `lease renewal (${tokens.length} items)`);
      if (tokens.length > 0) this.metrics?.leaseRenewals.inc(calls.length);
      this.tick();
      this.redisOk();
      this.renewsSucceed();
      for (const r of replies) for (const t of r.lost) this.onLeaseLost(t);
    } catch (err) {
      this.tick();
      this.metrics?.leaseRenewalErrors.inc();
      if (!this.onQueueError('renew', err)) {
        this.onRedisError('renew', err);
        this.renewsFail(err);
        // Retry soon: a short outage should not cost leases.
        setTimeout(() => void this.renew(), Math.min(1000, this.o.leaseMs / 6)).unref();
      }
    } finally {
      this.renewing = false;
    }
  }

  private get renewIntervalMs(): number {
    return Math.max(50, Math.floor(this.o.leaseMs / 3));
  }

  private renewsFail(err: unknown): void {
    if (this.renewFailingSince !== undefined || this.finishing) return;
    this.renewFailingSince = Date.now();
    this.metrics?.ready.set(0);
    // The wake connection goes the same way to Redis but has no socket timeout of its own (it is
    // quiet while blocked): drop it too, rather than find it hung at the end of a long wait.
    this.o.wakeRedis.disconnect(true);
    this.log.warn('Lease renewals failed; stopped claiming', {
      error: errorFields(err),
      held: this.held.size,
      running: this.running,
      leaseMs: this.o.leaseMs,
      deadlineMs: this.renewIntervalMs,
    });
  }

  private renewsSucceed(): void {
    if (this.renewFailingSince === undefined) return;
    const failedForMs = Date.now() - this.renewFailingSince;
    this.renewFailingSince = undefined;
    if (!this.lost && !this.finishing) this.metrics?.ready.set(1);
    this.log.info('Lease renewals succeeded again; resumed claiming', { failedForMs, held: this.held.size });
    this.pump();
  }

  private onLeaseLost(token: string): void {
    const h = this.held.get(token);
    if (!h) return;
    this.metrics?.leasesLost.inc();
    this.log.warn('Lost the lease of an item; stopped it', { item: h.id, attempt: h.attempt, state: h.state });
    if (h.state === 'done') {
      this.acks.drop(token);
      this.held.delete(token);
      this.afterChange();
    } else this.abortHeld(h, 'LeaseLost');
  }

  // ---- presence ----

  private async beat(): Promise<void> {
    if (this.beating || this.lost || this.finishing) return;
    this.beating = true;
    try {
      const r = await heartbeat(this.queue, this.o.workerId, {
        inflight: this.executing,
        running: this.running,
        capacity: this.o.executor.size,
        mode: this.o.executor.mode,
        draining: this.stopping !== undefined,
        startedAt: this.startedAt,
        version: WORKER_VERSION,
        ...(this.o.podIp ? { podIp: this.o.podIp } : {}),
      });
      this.tick();
      this.redisOk();
      if (r.drainRequested && !this.stopping) {
        this.log.info('Received a drain request', { worker: this.o.workerId });
        this.shutdown('drain');
      }
      if (++this.beats % PRUNE_EVERY_BEATS === 0) {
        const p = await pruneWorkers(this.queue, this.o.presenceStaleMs);
        if (p.removed > 0) this.log.info('Removed stale workers from the registry', { removed: p.removed });
      }
    } catch (err) {
      this.tick();
      if (!this.onQueueError('heartbeat', err)) this.onRedisError('heartbeat', err);
    } finally {
      this.beating = false;
    }
  }

  // ---- errors and state loss ----

  /** Handles typed queue errors; returns false for anything else (treated as a Redis error). */
  private onQueueError(op: string, err: unknown): boolean {
    const code = (err as { code?: string } | null)?.code;
    if (code === 'BatchStateLost') {
      this.enterStateLost(err);
      return true;
    }
    if (code === 'ProtocolVersionMismatch') {
      this.log.error('Redis holds the batch under another queue protocol version', { op, error: err });
      void this.finish('protocolMismatch', (err as Error).message);
      return true;
    }
    if (code === 'InvalidArgument' || code === 'PayloadTooLarge') {
      this.log.error('Redis rejected a call', { op, error: err });
      return true;
    }
    return false;
  }

  private onRedisError(op: string, err: unknown): void {
    this.metrics?.redisErrors.inc({ op });
    this.metrics?.redisUp.set(0);
    if (!this.redisTrouble) {
      this.redisTrouble = true;
      this.log.warn('Lost contact with Redis; retrying with backoff', { op, error: errorFields(err) });
    } else if (this.log.enabled('debug')) this.log.debug('Redis call failed', { op, error: errorFields(err) });
  }

  private redisOk(): void {
    this.metrics?.redisUp.set(1);
    if (this.redisTrouble) {
      this.redisTrouble = false;
      this.log.info('Reconnected to Redis');
    }
  }

  private enterStateLost(err: unknown): void {
    if (this.lost || this.finishing) return;
    this.lost = { since: Date.now(), error: err };
    this.metrics?.ready.set(0);
    this.log.error("Lost the batch's state in Redis: stopped claiming and dropped all items in hand", {
      error: (err as Error)?.message ?? String(err),
      epoch: this.queue.expectedEpoch,
      exitAfterMs: this.o.stateLostExitMs,
    });
    clearTimeout(this.pollTimer);
    this.pollTimer = undefined;
    this.stopSweeps();
    for (const h of this.held.values()) if (h.state !== 'done') this.abortHeld(h, 'StateLost');
    for (const t of this.acks.clear()) this.held.delete(t);
    void this.watchLostState();
  }

  /** While the state is lost: check now and then whether it is back; give up after the bound. */
  private async watchLostState(): Promise<void> {
    const backoff = new Backoff(500, 10_000);
    while (this.lost && !this.finishing) {
      if (Date.now() - this.lost.since >= this.o.stateLostExitMs) {
        void this.finish('stateLost', `the batch's state was missing from Redis for ${Math.round((Date.now() - this.lost.since) / 1000)}s: ${(this.lost.error as Error)?.message ?? ''}`);
        return;
      }
      await delay(Math.min(backoff.next(), Math.max(1, this.lost.since + this.o.stateLostExitMs - Date.now())), this.stopController.signal);
      if (this.stopping) {
        void this.finish(this.stopping, 'shut down while the batch state was lost');
        return;
      }
      try {
        await this.queue.snapshot();
        this.tick();
        this.log.info("The batch's state is back in Redis; resumed claiming");
        this.lost = undefined;
        if (this.renewFailingSince === undefined) this.metrics?.ready.set(1);
        this.pump();
        return;
      } catch (err) {
        this.tick();
        const code = (err as { code?: string })?.code;
        if (code === 'ProtocolVersionMismatch') return void this.onQueueError('snapshot', err);
        if (code !== 'BatchStateLost') this.onRedisError('snapshot', err);
      }
    }
  }

  // ---- stopping ----

  private checkDrained(): void {
    if (this.stopping && this.started && !this.finishing && this.executing === 0 && !this.claiming && !this.marking && this.waiting.length === 0)
      void this.finish(this.stopping, this.stopping === 'drain' ? 'drained on request' : 'graceful shutdown');
  }

  private finish(reason: StopReason, message: string): Promise<WorkerResult> {
    if (this.finishing) return this.finishing;
    this.finishing = this.doFinish(reason, message);
    return this.finishing;
  }

  private async doFinish(reason: StopReason, message: string): Promise<WorkerResult> {
    this.stopController.abort();
    this.metrics?.ready.set(0);
    clearTimeout(this.pollTimer);
    clearTimeout(this.graceTimer);
    this.stopSweeps();
    if (this.blocked) this.wakeSelf();
    const graceful = reason === 'complete' || reason === 'shutdown' || reason === 'drain';
    // Non-graceful stops: anything still running is stopped (released if we still can).
    for (const h of this.held.values()) if (h.state !== 'done') this.abortHeld(h, reason === 'stateLost' ? 'StateLost' : 'WorkerShutdown');
    const until = Date.now() + FINALIZE_MS;
    while ((this.executing > 0 || this.marking || this.blocked) && Date.now() < until) await delay(10);
    if (reason !== 'stateLost' && reason !== 'protocolMismatch') {
      const flushed = await this.acks.flush(Math.max(0, until - Date.now()));
      if (!flushed) this.log.warn('Could not record every outcome in Redis before exiting; those items will be retried after their leases lapse', { pending: this.acks.pending });
    }
    this.acks.stop();
    clearInterval(this.renewTimer);
    clearInterval(this.beatTimer);
    if (reason !== 'protocolMismatch') {
      await withTimeout(
        leave(this.queue, this.o.workerId).catch(() => false),
        1000,
        false,
      );
    }
    this.o.wakeRedis.disconnect();
    try {
      await withTimeout(this.o.executor.close(), 5000, undefined);
    } finally {
      await this.o.executor.destroy().catch(() => undefined);
    }
    const result: WorkerResult = { reason, exitCode: EXIT_BY_REASON[reason], message };
    (graceful ? this.log.info : this.log.error)('Stopped worker', { reason, exitCode: result.exitCode, detail: message });
    this.resolveDone(result);
    return result;
  }

  private tick(): void {
    this.lastTick = Date.now();
  }
}

/** Resolves once the client is ready, after `ms`, or when stopped (whichever comes first). */
function waitForConnection(redis: RedisClient, ms: number, signal: AbortSignal): Promise<void> {
  if (redis.status === 'ready') return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      redis.off('ready', done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    redis.once('ready', done);
    signal.addEventListener('abort', done, { once: true });
  });
}

function noneLost(): { lost: string[] } {
  return { lost: [] };
}

/** Rejects after `ms` unless `promise` settled first (its late outcome is ignored). */
function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  promise.catch(() => undefined);
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(Object.assign(new Error(`${what} got no answer within ${ms} ms`), { name: 'TimeoutError' })), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}
