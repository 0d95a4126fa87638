import { DEFAULT_LIMITS } from '../../queue/options.js';
import type { ErrorInfo, TaskInput } from '../handler/invoke.js';
import { UNLIMITED_LOGS } from '../handler/log-budget.js';
import { describeHandler, isStdioSpec } from '../handler/spec.js';
import { Deque, formatMs, outcomeOf, timeoutError } from './common.js';
import type { ExecutorInit, FromExecutor, WireTask } from './protocol.js';
import { spawnStdio } from './stdio-transport.js';
import { spawnProcess, spawnThread, type ExitInfo, type Transport } from './transport.js';
import {
  ExecutorClosedError,
  ExecutorStartError,
  validateExecutorOptions,
  type Executor,
  type ExecutorOptions,
  type ExecutorStats,
  type Outcome,
  type RestartReason,
  type RunOptions,
} from './types.js';

interface Pending {
  seq: number;
  task: TaskInput;
  timeoutMs: number;
  resolve: (outcome: Outcome) => void;
  onStart: (() => void) | undefined;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  /** The outcome was delivered (the child may still be running it: see killAt). */
  settled: boolean;
  slot: Slot | undefined;
  /** When it became the head of its slot's FIFO (0 = not started). */
  startedAt: number;
  deadline: number;
  /** Kill the slot at this time if this item is still its head (0 = no). */
  killAt: number;
  /** A 'cancel' for it is on its way (work stealing). */
  stealing: boolean;
  /** It timed out (as opposed to being aborted) while running. */
  timedOut: boolean;
}

interface Slot {
  id: number;
  transport: Transport;
  state: 'starting' | 'ready' | 'stopping' | 'dead';
  /** In the child's order; [0] is running (or about to). */
  assigned: Pending[];
  assignedTotal: number;
  /** Set once it must be replaced after its current items. */
  retiring: RestartReason | undefined;
  /** Why we killed it, if we did. */
  killing: RestartReason | undefined;
  /** It reported a fatal error and exits next: it gets no more items. */
  failing: boolean;
  startTimer: NodeJS.Timeout | undefined;
  startError: ErrorInfo | undefined;
  ready: { resolve: () => void; reject: (err: Error) => void } | undefined;
}

const DEFAULTS = { abortGraceMs: 1000, startTimeoutMs: 30_000, maxStartFailures: 3, sweepIntervalMs: 25 };
const MAX_DEPTH = 32;
const STOP_TIMEOUT_MS = 5000;

/**
 * A pool of long-lived executors (worker threads or child processes) speaking the
 * protocol in protocol.ts. Each executor has a small local FIFO (pipelining hides the
 * message round trip for short items; idle executors steal queued items back), runs one
 * item at a time, and is replaced when it crashes, times out, is aborted past the grace,
 * or reaches maxItemsPerExecutor / maxMemoryMiB.
 */
export class RemotePool implements Executor {
  readonly size: number;
  private readonly o: Required<Omit<ExecutorOptions, 'hooks'>> & Pick<ExecutorOptions, 'hooks'>;
  private readonly init: ExecutorInit;
  private readonly queue = new Deque<Pending>();
  private readonly slots = new Set<Slot>();
  private state: 'new' | 'starting' | 'running' | 'closing' | 'closed' | 'destroyed' | 'broken' = 'new';
  private nextSeq = 1;
  private nextSlotId = 1;
  private running = 0;
  private restarts = 0;
  private startFailures = 0;
  private avgMs = 1;
  private depth = 2;
  private sweepTimer: NodeJS.Timeout | undefined;
  private respawnTimer: NodeJS.Timeout | undefined;
  private idleWaiters: (() => void)[] = [];
  private exitWaiters = new Map<Slot, () => void>();

  constructor(
    readonly mode: 'thread' | 'process',
    options: ExecutorOptions,
  ) {
    validateExecutorOptions(mode, options);
    if (isStdioSpec(options.handler) && mode !== 'process') {
      throw new RangeError(`a stdio handler (${describeHandler(options.handler)}) runs in process pool mode only, got ${JSON.stringify(mode)}: set TASKBATCH_POOL_MODE=process (or leave it unset)`);
    }
    this.size = options.size;
    this.o = {
      handler: options.handler,
      size: options.size,
      maxItemsPerExecutor: options.maxItemsPerExecutor ?? 0,
      maxMemoryMiB: options.maxMemoryMiB ?? 0,
      abortGraceMs: options.abortGraceMs ?? DEFAULTS.abortGraceMs,
      maxResultBytes: options.maxResultBytes ?? DEFAULT_LIMITS.maxResultBytes,
      handlerLog: options.handlerLog ?? UNLIMITED_LOGS,
      startTimeoutMs: options.startTimeoutMs ?? DEFAULTS.startTimeoutMs,
      maxStartFailures: options.maxStartFailures ?? DEFAULTS.maxStartFailures,
      sweepIntervalMs: options.sweepIntervalMs ?? DEFAULTS.sweepIntervalMs,
      hooks: options.hooks,
    };
    this.init = {
      handler: options.handler,
      memory: this.o.maxMemoryMiB > 0 ? (mode === 'process' ? 'rss' : 'heap') : 'none',
      kind: mode,
      maxResultBytes: this.o.maxResultBytes,
      logRate: this.o.handlerLog,
    };
  }

  async start(): Promise<void> {
    if (this.state !== 'new') throw new ExecutorClosedError(`the ${this.mode} pool was already started`);
    this.state = 'starting';
    const ready: Promise<void>[] = [];
    for (let i = 0; i < this.size; i++) ready.push(this.spawn());
    try {
      await Promise.all(ready);
    } catch (err) {
      await this.destroy(err);
      throw err;
    }
    if (this.state !== 'starting') throw new ExecutorClosedError(`the ${this.mode} pool was destroyed while starting`);
    this.state = 'running';
    this.dispatch();
  }

  run(task: TaskInput, options: RunOptions): Promise<Outcome> {
    if (this.state !== 'running' && this.state !== 'starting') {
      return Promise.reject(new ExecutorClosedError(`the ${this.mode} pool is ${this.state}: it accepts no more items`));
    }
    return new Promise<Outcome>((resolve) => {
      const p: Pending = {
        seq: this.nextSeq++,
        task,
        timeoutMs: options.timeoutMs,
        resolve,
        onStart: options.onStart,
        signal: options.signal,
        onAbort: undefined,
        settled: false,
        slot: undefined,
        startedAt: 0,
        deadline: 0,
        killAt: 0,
        stealing: false,
        timedOut: false,
      };
      if (options.signal) {
        if (options.signal.aborted) return resolve({ status: 'aborted', reason: options.signal.reason, started: false });
        p.onAbort = () => this.abort(p);
        options.signal.addEventListener('abort', p.onAbort, { once: true });
      }
      this.queue.push(p);
      this.scheduleDispatch();
    });
  }

  stats(): ExecutorStats {
    let queued = this.queue.length;
    for (const s of this.slots) queued += Math.max(0, s.assigned.length - 1);
    return { running: this.running, queued, executors: this.slots.size, restarts: this.restarts };
  }

  async close(): Promise<void> {
    if (this.state === 'closed' || this.state === 'destroyed' || this.state === 'broken') return;
    if (this.state === 'new') {
      this.state = 'closed';
      return;
    }
    this.state = 'closing';
    await new Promise<void>((resolve) => {
      this.idleWaiters.push(resolve);
      this.checkIdle();
    });
    if (this.state !== 'closing') return;
    this.state = 'closed';
    await this.stopAll();
  }

  async destroy(reason: unknown = new ExecutorClosedError('executor destroyed')): Promise<void> {
    if (this.state === 'destroyed') return;
    this.state = 'destroyed';
    for (const p of this.queue.drain()) this.settle(p, { status: 'aborted', reason, started: false });
    for (const s of this.slots) {
      s.assigned.forEach((p, i) => {
        if (!p.settled) this.settle(p, { status: 'aborted', reason, started: i === 0 && p.startedAt > 0 });
      });
      s.ready?.reject(new ExecutorStartError(`the ${this.mode} pool was destroyed while starting`));
    }
    await this.killAll();
    this.wakeIdle();
  }

  // ---- executors ----

  /** Starts one executor; resolves when it has loaded the handler. */
  private spawn(): Promise<void> {
    const handler = this.o.handler;
    const transport =
      this.mode === 'thread'
        ? spawnThread(this.init, { heapLimitMiB: 2 * this.o.maxMemoryMiB })
        : isStdioSpec(handler)
          ? spawnStdio(handler, this.init, { heapLimitMiB: 0, killGraceMs: this.o.abortGraceMs })
          : spawnProcess(this.init, { heapLimitMiB: 2 * this.o.maxMemoryMiB, killGraceMs: this.o.abortGraceMs });
    const slot: Slot = {
      id: this.nextSlotId++,
      transport,
      state: 'starting',
      assigned: [],
      assignedTotal: 0,
      retiring: undefined,
      killing: undefined,
      failing: false,
      startTimer: undefined,
      startError: undefined,
      ready: undefined,
    };
    this.slots.add(slot);
    transport.onMessage = (m) => this.onMessage(slot, m);
    transport.onExit = (info) => this.onExit(slot, info);
    const ready = new Promise<void>((resolve, reject) => {
      slot.ready = { resolve, reject };
    });
    slot.startTimer = setTimeout(() => {
      slot.startError = { name: 'ExecutorStartTimeout', message: `did not load the handler within ${formatMs(this.o.startTimeoutMs)}` };
      transport.kill();
    }, this.o.startTimeoutMs);
    slot.startTimer.unref();
    return ready;
  }

  private onMessage(slot: Slot, m: FromExecutor): void {
    switch (m.t) {
      case 'ready':
        if (slot.state !== 'starting') return;
        clearTimeout(slot.startTimer);
        slot.state = 'ready';
        this.startFailures = 0;
        slot.ready?.resolve();
        slot.ready = undefined;
        this.dispatch();
        return;
      case 'startFailed':
        slot.startError = m.error;
        return;
      case 'done':
        this.onDone(slot, m.seq, m);
        return;
      case 'cancelled':
        this.onCancelled(slot, m.seqs);
        return;
      case 'progress': {
        const p = slot.assigned.find((x) => x.seq === m.seq);
        if (p && !p.settled) this.o.hooks?.onProgress?.(p.task, m.value);
        return;
      }
      case 'log': {
        const p = slot.assigned.find((x) => x.seq === m.seq);
        if (p) this.o.hooks?.onLog?.(p.task, m.level, m.message, m.fields);
        return;
      }
      case 'fatal':
        slot.failing = true;
        return;
      case 'bye':
        return;
    }
  }

  get pipelineCapacity(): number {
    return this.size * this.depth;
  }

  private onDone(slot: Slot, seq: number, m: Extract<FromExecutor, { t: 'done' }>): void {
    const i = slot.assigned.findIndex((x) => x.seq === seq);
    if (i < 0) return;
    const p = slot.assigned[i] as Pending;
    slot.assigned.splice(i, 1);
    if (i === 0) this.advanceHead(slot);
    this.avgMs = this.avgMs * 0.9 + m.result.ms * 0.1;
    this.depth = Math.max(2, Math.min(MAX_DEPTH, Math.ceil(1 / Math.max(this.avgMs, 1e-3))));
    if (m.logsDropped) this.o.hooks?.onLogsDropped?.(p.task, m.logsDropped);
    if (!p.settled) this.settle(p, outcomeOf(m.result));
    if (m.memMiB !== undefined && this.o.maxMemoryMiB > 0 && m.memMiB > this.o.maxMemoryMiB && !slot.retiring) {
      slot.retiring = 'max_memory';
      this.restart('max_memory', `${slot.transport.label} uses ${Math.round(m.memMiB)} MiB (${this.mode === 'process' ? 'RSS' : 'heap'}), over maxMemoryMiB ${this.o.maxMemoryMiB}`);
    }
    this.afterChange(slot);
  }

  private onCancelled(slot: Slot, seqs: number[]): void {
    const back: Pending[] = [];
    for (const seq of seqs) {
      const i = slot.assigned.findIndex((x) => x.seq === seq);
      if (i < 0) continue;
      const p = slot.assigned[i] as Pending;
      slot.assigned.splice(i, 1);
      if (i === 0) this.advanceHead(slot);
      if (!p.settled) {
        p.slot = undefined;
        p.startedAt = 0;
        p.stealing = false;
        back.push(p);
      }
    }
    this.queue.unshiftMany(back);
    this.afterChange(slot);
  }

  /** The slot's previous head finished: the next item has started (as far as we know). */
  private advanceHead(slot: Slot): void {
    const head = slot.assigned[0];
    if (!head || head.startedAt > 0) return;
    this.markStarted(head);
    // An item aborted while queued may have been started by the child before the abort
    // arrived: make sure it stops.
    if (head.settled && head.killAt === 0) head.killAt = head.startedAt + this.o.abortGraceMs;
  }

  private markStarted(p: Pending): void {
    p.startedAt = Date.now();
    p.deadline = p.startedAt + p.timeoutMs;
    if (!p.settled) {
      this.running++;
      p.onStart?.();
    }
  }

  private afterChange(slot: Slot): void {
    if (slot.retiring && slot.assigned.length === 0 && slot.state === 'ready') this.stopSlot(slot);
    this.scheduleDispatch();
    this.checkIdle();
  }

  private onExit(slot: Slot, info: ExitInfo): void {
    const wasStarting = slot.state === 'starting';
    const expected = slot.state === 'stopping';
    slot.state = 'dead';
    clearTimeout(slot.startTimer);
    this.slots.delete(slot);
    this.exitWaiters.get(slot)?.();
    this.exitWaiters.delete(slot);
    const how = describeExit(slot.transport, info);

    if (wasStarting) {
      const err = new ExecutorStartError(
        `${slot.transport.label} failed to start the handler (${describeHandler(this.o.handler)}): ${slot.startError ? `${slot.startError.name}: ${slot.startError.message}` : how}`,
      );
      if (slot.ready) {
        slot.ready.reject(err);
        slot.ready = undefined;
      }
      if (this.state === 'running' || this.state === 'closing') {
        this.restarts++;
        this.o.hooks?.onRestart?.('start_failed', err.message);
        if (++this.startFailures >= this.o.maxStartFailures) return this.giveUp(err);
        this.scheduleRespawn(Math.min(5000, 100 * 2 ** this.startFailures));
      }
      return;
    }

    const back: Pending[] = [];
    slot.assigned.forEach((p, i) => {
      if (p.settled) return;
      if (i === 0 && p.startedAt > 0) {
        const name = info.oom ? 'OutOfMemory' : 'ExecutorCrashed';
        this.settle(p, { status: 'crashed', error: { name, message: `the ${noun(slot.transport)} running this item ${how}; it was replaced` }, durationMs: Date.now() - p.startedAt });
      } else {
        p.slot = undefined;
        p.startedAt = 0;
        p.stealing = false;
        back.push(p);
      }
    });
    slot.assigned = [];
    this.queue.unshiftMany(back);
    if (!expected && !slot.killing && !slot.retiring) {
      this.restarts++;
      this.o.hooks?.onRestart?.('crashed', `${slot.transport.label} ${how}`);
    }
    if ((this.state === 'running' || this.state === 'closing') && !slot.retiring) this.replace();
    this.dispatch();
    this.checkIdle();
  }

  /** Spawns a replacement when the pool is below size (retired slots are replaced when retired). */
  private replace(): void {
    let live = 0;
    for (const s of this.slots) if (s.state !== 'stopping' && !s.retiring) live++;
    for (; live < this.size; live++) this.spawn().catch(() => undefined);
  }

  private scheduleRespawn(ms: number): void {
    if (this.respawnTimer) return;
    this.respawnTimer = setTimeout(() => {
      this.respawnTimer = undefined;
      if (this.state === 'running' || this.state === 'closing') this.replace();
    }, ms);
    this.respawnTimer.unref();
  }

  private giveUp(err: ExecutorStartError): void {
    this.state = 'broken';
    for (const p of this.queue.drain()) this.settle(p, { status: 'aborted', reason: err, started: false });
    for (const s of this.slots) {
      s.assigned.forEach((p, i) => {
        if (!p.settled) this.settle(p, { status: 'aborted', reason: err, started: i === 0 && p.startedAt > 0 });
      });
    }
    void this.killAll();
    this.o.hooks?.onBroken?.(err);
    this.wakeIdle();
  }

  /** Start a replacement for a retiring slot (max items / memory); the retiring slot stops once its current items finish. */
  private restart(reason: RestartReason, detail: string): void {
    this.restarts++;
    this.o.hooks?.onRestart?.(reason, detail);
    if (this.state === 'running' || this.state === 'closing') this.spawn().catch(() => undefined);
  }

  private stopSlot(slot: Slot): void {
    slot.state = 'stopping';
    slot.transport.send({ t: 'stop' });
    const timer = setTimeout(() => slot.transport.kill(), STOP_TIMEOUT_MS);
    timer.unref();
  }

  private kill(slot: Slot, reason: RestartReason, detail: string): void {
    if (slot.killing || slot.state === 'dead') return;
    slot.killing = reason;
    this.restarts++;
    this.o.hooks?.onRestart?.(reason, detail);
    slot.transport.kill();
  }

  private async stopAll(): Promise<void> {
    const exits: Promise<void>[] = [];
    for (const s of this.slots) {
      exits.push(new Promise((resolve) => this.exitWaiters.set(s, resolve)));
      if (s.state === 'ready') this.stopSlot(s);
      else s.transport.kill();
    }
    await Promise.all(exits);
    clearInterval(this.sweepTimer);
    clearTimeout(this.respawnTimer);
  }

  private async killAll(): Promise<void> {
    clearInterval(this.sweepTimer);
    clearTimeout(this.respawnTimer);
    const exits: Promise<void>[] = [];
    for (const s of this.slots) {
      exits.push(new Promise((resolve) => this.exitWaiters.set(s, resolve)));
      s.state = 'stopping';
      s.transport.kill();
    }
    await Promise.all(exits);
  }

  // ---- scheduling ----

  private dispatchQueued = false;

  /** Items handed over in one synchronous burst travel to executors in one message each. */
  private scheduleDispatch(): void {
    if (this.dispatchQueued) return;
    this.dispatchQueued = true;
    queueMicrotask(() => {
      this.dispatchQueued = false;
      this.dispatch();
    });
  }

  private dispatch(): void {
    if (this.state !== 'running' && this.state !== 'closing') return;
    if (this.queue.length > 0) {
      const batches = new Map<Slot, WireTask[]>();
      const refill = Math.max(1, Math.floor(this.depth / 2));
      while (this.queue.length > 0) {
        let best: Slot | undefined;
        for (const s of this.slots) {
          if (s.state !== 'ready' || s.retiring || s.killing || s.failing) continue;
          const n = s.assigned.length;
          if (n >= this.depth) continue;
          // Top up executors that are running low, so tasks travel in batches.
          if (n > 0 && n > this.depth - refill && !batches.has(s)) continue;
          if (!best || n < best.assigned.length) best = s;
        }
        if (!best) break;
        const p = this.queue.shift() as Pending;
        p.slot = best;
        best.assigned.push(p);
        this.armSweep();
        best.assignedTotal++;
        if (this.o.maxItemsPerExecutor > 0 && best.assignedTotal >= this.o.maxItemsPerExecutor) {
          best.retiring = 'max_items';
          this.restart('max_items', `${best.transport.label} reached maxItemsPerExecutor ${this.o.maxItemsPerExecutor}`);
        }
        if (best.assigned.length === 1) this.markStarted(p);
        let batch = batches.get(best);
        if (!batch) {
          batch = [];
          batches.set(best, batch);
        }
        batch.push({ seq: p.seq, id: p.task.id, attempt: p.task.attempt, payload: p.task.payload, timeoutMs: p.timeoutMs });
      }
      for (const [s, tasks] of batches) s.transport.send({ t: 'run', tasks });
    }
    if (this.queue.length === 0) this.steal();
  }

  /** An idle executor takes queued-but-unstarted items back from the busiest one. */
  private steal(): void {
    let idle = 0;
    let victim: Slot | undefined;
    for (const s of this.slots) {
      if (s.state !== 'ready') continue;
      if (s.assigned.length === 0 && !s.retiring && !s.killing && !s.failing) idle++;
      else if (s.assigned.length > 1 && (!victim || s.assigned.length > victim.assigned.length)) victim = s;
    }
    if (idle === 0 || !victim) return;
    const seqs: number[] = [];
    for (let i = victim.assigned.length - 1; i >= 1 && seqs.length < idle; i--) {
      const p = victim.assigned[i] as Pending;
      if (p.settled || p.stealing) continue;
      p.stealing = true;
      seqs.push(p.seq);
    }
    if (seqs.length > 0) victim.transport.send({ t: 'cancel', seqs });
  }

  private abort(p: Pending): void {
    if (p.settled) return;
    const reason = p.signal?.reason;
    const slot = p.slot;
    if (!slot) {
      this.queue.remove(p);
      this.settle(p, { status: 'aborted', reason, started: false });
      this.checkIdle();
      return;
    }
    const started = slot.assigned[0] === p && p.startedAt > 0;
    this.settle(p, { status: 'aborted', reason, started });
    slot.transport.send({ t: 'abort', seq: p.seq, reason: reasonInfo(reason) });
    if (started) p.killAt = Date.now() + this.o.abortGraceMs;
    if (started && this.o.abortGraceMs === 0) this.kill(slot, 'aborted', `${slot.transport.label} was stopped: its item was aborted`);
  }

  /** Deadlines are checked only while items are assigned: an idle pool wakes nobody. */
  private armSweep(): void {
    if (this.sweepTimer || this.state === 'destroyed') return;
    this.sweepTimer = setInterval(() => this.sweep(), this.o.sweepIntervalMs);
    this.sweepTimer.unref();
  }

  /** Deadlines: time out running items, then kill executors that did not stop in time. */
  private sweep(): void {
    if ([...this.slots].every((s) => s.assigned.length === 0)) {
      clearInterval(this.sweepTimer);
      this.sweepTimer = undefined;
      return;
    }
    const now = Date.now();
    for (const s of this.slots) {
      const head = s.assigned[0];
      if (!head || head.startedAt === 0 || s.killing) continue;
      if (!head.settled && now >= head.deadline) {
        this.settle(head, { status: 'timedOut', error: timeoutError(head.timeoutMs, `its ${noun(s.transport)} was stopped and replaced`), durationMs: now - head.startedAt });
        s.transport.send({ t: 'abort', seq: head.seq, reason: { name: 'TimeoutError', message: `item timed out after ${formatMs(head.timeoutMs)}` } });
        head.killAt = now + this.o.abortGraceMs;
        head.timedOut = true;
      }
      if (head.killAt > 0 && now >= head.killAt) {
        this.kill(s, head.timedOut ? 'timeout' : 'aborted', `${s.transport.label} ${head.timedOut ? 'timed out' : 'was aborted'} on an item and did not stop within ${formatMs(this.o.abortGraceMs)}`);
      }
    }
  }

  private settle(p: Pending, outcome: Outcome): void {
    if (p.settled) return;
    p.settled = true;
    if (p.startedAt > 0 && p.slot) this.running--;
    if (p.onAbort) p.signal?.removeEventListener('abort', p.onAbort);
    p.resolve(outcome);
  }

  private checkIdle(): void {
    if (this.idleWaiters.length === 0) return;
    if (this.queue.length > 0) return;
    for (const s of this.slots) if (s.assigned.length > 0) return;
    this.wakeIdle();
  }

  private wakeIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }
}

function reasonInfo(reason: unknown): ErrorInfo {
  if (reason && typeof reason === 'object' && 'message' in reason) {
    const r = reason as { name?: unknown; message?: unknown };
    return { name: typeof r.name === 'string' ? r.name : 'AbortError', message: String(r.message) };
  }
  return { name: 'AbortError', message: reason === undefined ? 'the item was aborted' : String(reason) };
}

/** What runs items in a transport, for messages. */
function noun(t: Transport): string {
  return t.kind === 'stdio' ? 'handler process' : t.kind;
}

function describeExit(t: Transport, info: ExitInfo): string {
  if (info.oom) return 'ran out of memory (V8 heap limit reached)';
  if (info.error) return `failed with an uncaught ${info.error.name}: ${info.error.message}`;
  const tail = info.stderrTail ? `; stderr: ${info.stderrTail.trim().split('\n').slice(-3).join(' | ').slice(-500)}` : '';
  if (info.signal) return `was killed by ${info.signal}${info.signal === 'SIGKILL' ? ' (possibly the kernel OOM killer)' : ''}${tail}`;
  return `exited with code ${info.code}${t.kind === 'thread' ? ' (process.exit in the thread)' : ''}${tail}`;
}
