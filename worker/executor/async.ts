import type { Handler, LogLevel } from '../handler/api.js';
import { invoke, ItemContext, toErrorInfo, type InvokeResult, type TaskInput } from '../handler/invoke.js';
import { loadHandler } from '../handler/load.js';
import { boundLogFields, boundLogMessage, LogBudget, UNLIMITED_LOGS } from '../handler/log-budget.js';
import { limitResult } from '../handler/result-limit.js';
import { DEFAULT_LIMITS } from '../../queue/options.js';
import { describeHandler } from '../handler/spec.js';
import { Deque, formatMs, outcomeOf, reasonError, timeoutError } from './common.js';
import { ExecutorClosedError, ExecutorStartError, validateExecutorOptions, type Executor, type ExecutorOptions, type ExecutorStats, type Outcome, type RunOptions } from './types.js';

interface Entry {
  task: TaskInput;
  timeoutMs: number;
  resolve: (outcome: Outcome) => void;
  onStart: (() => void) | undefined;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  ctx: ItemContext | undefined;
  logs: LogBudget | undefined;
  settled: boolean;
  startedAt: number;
  deadline: number;
  /** After a timeout or abort: the slot is given back at this time if the call has not settled. */
  releaseAt: number;
  /** The slot was given back (the call settled, or was abandoned). */
  released: boolean;
}

/**
 * Up to `size` handler calls in flight on this thread's event loop. Timeouts and aborts
 * are cooperative: the item's signal fires and its outcome is reported at once; the call
 * keeps its slot until it settles or `abortGraceMs` passes (then it is abandoned). A
 * handler that blocks the event loop cannot be stopped here: the worker's watchdog
 * thread kills the process instead (see worker/watchdog.ts).
 */
export class AsyncExecutor implements Executor {
  readonly mode = 'async' as const;
  readonly size: number;
  private handler: Handler | undefined;
  private readonly queue = new Deque<Entry>();
  private readonly active = new Set<Entry>();
  private state: 'new' | 'starting' | 'running' | 'closing' | 'closed' | 'destroyed' = 'new';
  private pumping = false;
  private running = 0;
  private sweepTimer: NodeJS.Timeout | undefined;
  private idleWaiters: (() => void)[] = [];
  private readonly abortGraceMs: number;

  /** No pipelining: a call is either running or waiting in this pool's queue. */
  get pipelineCapacity(): number {
    return this.size;
  }

  constructor(private readonly options: ExecutorOptions) {
    validateExecutorOptions('async', options);
    this.size = options.size;
    this.abortGraceMs = options.abortGraceMs ?? 1000;
  }

  async start(): Promise<void> {
    if (this.state !== 'new') throw new ExecutorClosedError('the async pool was already started');
    this.state = 'starting';
    try {
      this.handler = await loadHandler(this.options.handler);
    } catch (err) {
      this.state = 'destroyed';
      throw new ExecutorStartError(`failed to load the handler (${describeHandler(this.options.handler)}): ${(err as Error)?.message ?? String(err)}`, { cause: err });
    }
    if (this.state !== 'starting') throw new ExecutorClosedError('the async pool was destroyed while starting');
    this.state = 'running';
    this.pump();
  }

  run(task: TaskInput, options: RunOptions): Promise<Outcome> {
    if (this.state !== 'running' && this.state !== 'starting') {
      return Promise.reject(new ExecutorClosedError(`the async pool is ${this.state}: it accepts no more items`));
    }
    return new Promise<Outcome>((resolve) => {
      const e: Entry = {
        task,
        timeoutMs: options.timeoutMs,
        resolve,
        onStart: options.onStart,
        signal: options.signal,
        onAbort: undefined,
        ctx: undefined,
        logs: undefined,
        settled: false,
        startedAt: 0,
        deadline: 0,
        releaseAt: 0,
        released: false,
      };
      if (options.signal) {
        if (options.signal.aborted) return resolve({ status: 'aborted', reason: options.signal.reason, started: false });
        e.onAbort = () => this.abort(e);
        options.signal.addEventListener('abort', e.onAbort, { once: true });
      }
      this.queue.push(e);
      this.pump();
    });
  }

  stats(): ExecutorStats {
    return { running: this.running, queued: this.queue.length, executors: this.size, restarts: 0 };
  }

  async close(): Promise<void> {
    if (this.state === 'closed' || this.state === 'destroyed') return;
    if (this.state === 'new') {
      this.state = 'closed';
      return;
    }
    this.state = 'closing';
    await new Promise<void>((resolve) => {
      this.idleWaiters.push(resolve);
      this.checkIdle();
    });
    if (this.state === 'closing') this.state = 'closed';
    clearInterval(this.sweepTimer);
  }

  async destroy(reason: unknown = new ExecutorClosedError('executor destroyed')): Promise<void> {
    if (this.state === 'destroyed') return;
    this.state = 'destroyed';
    clearInterval(this.sweepTimer);
    for (const e of this.queue.drain()) this.settle(e, { status: 'aborted', reason, started: false });
    for (const e of this.active) {
      this.settle(e, { status: 'aborted', reason, started: true });
      e.ctx?.abort(reason);
    }
    this.active.clear();
    this.wakeIdle();
  }

  private pump(): void {
    if (this.pumping || this.state === 'new' || this.state === 'starting' || this.state === 'destroyed') return;
    this.pumping = true;
    try {
      while (this.active.size < this.size && this.queue.length > 0) this.begin(this.queue.shift() as Entry);
    } finally {
      this.pumping = false;
    }
    this.checkIdle();
  }

  private begin(e: Entry): void {
    const handler = this.handler as Handler;
    this.active.add(e);
    this.armSweep();
    this.running++;
    e.startedAt = Date.now();
    e.deadline = e.startedAt + e.timeoutMs;
    const hooks = this.options.hooks;
    const logs = new LogBudget(this.options.handlerLog ?? UNLIMITED_LOGS);
    e.logs = logs;
    e.ctx = new ItemContext(e.task.id, e.task.attempt, {
      progress: (value) => hooks?.onProgress?.(e.task, value),
      log: (level: LogLevel, message, fields) => {
        if (logs.take()) hooks?.onLog?.(e.task, level, boundLogMessage(String(message)), fields === undefined ? undefined : boundLogFields(fields, false));
      },
    });
    e.onStart?.();
    // invoke() never throws nor rejects; the guards keep that promise should it ever break,
    // since an escape here would leak the slot and hand the item back without an attempt.
    let r: InvokeResult | Promise<InvokeResult>;
    try {
      r = invoke(handler, e.task, e.ctx);
    } catch (err) {
      r = internalFailure(err, e.startedAt);
    }
    if (r instanceof Promise)
      void r.then(
        (result) => this.finish(e, result),
        (err: unknown) => this.finish(e, internalFailure(err, e.startedAt)),
      );
    else this.finish(e, r);
  }

  private finish(e: Entry, result: InvokeResult): void {
    if (e.logs && e.logs.dropped > 0) this.options.hooks?.onLogsDropped?.(e.task, e.logs.dropped);
    // The same check as in thread and process mode, so every mode fails an oversized result alike.
    if (!e.settled) this.settle(e, outcomeOf(limitResult(result, e.task.id, this.options.maxResultBytes ?? DEFAULT_LIMITS.maxResultBytes, 'async executor')));
    this.release(e);
  }

  /** Gives the slot back (once). */
  private release(e: Entry): void {
    if (e.released) return;
    e.released = true;
    this.active.delete(e);
    this.pump();
  }

  private abort(e: Entry): void {
    if (e.settled) return;
    const reason = e.signal?.reason;
    if (!this.active.has(e)) {
      this.queue.remove(e);
      this.settle(e, { status: 'aborted', reason, started: false });
      this.checkIdle();
      return;
    }
    this.settle(e, { status: 'aborted', reason, started: true });
    e.ctx?.abort(reason);
    e.releaseAt = Date.now() + this.abortGraceMs;
  }

  /** Deadlines are checked only while something runs: an idle pool wakes nobody. */
  private armSweep(): void {
    if (this.sweepTimer || this.state === 'destroyed') return;
    this.sweepTimer = setInterval(() => this.sweep(), this.options.sweepIntervalMs ?? 25);
    this.sweepTimer.unref();
  }

  private sweep(): void {
    if (this.active.size === 0) {
      clearInterval(this.sweepTimer);
      this.sweepTimer = undefined;
      return;
    }
    const now = Date.now();
    for (const e of this.active) {
      if (!e.settled && now >= e.deadline) {
        this.settle(e, { status: 'timedOut', error: timeoutError(e.timeoutMs, 'its signal was aborted (async mode: the handler must stop by itself)'), durationMs: now - e.startedAt });
        e.ctx?.abort(reasonError('TimeoutError', `item timed out after ${formatMs(e.timeoutMs)}`));
        e.releaseAt = now + this.abortGraceMs;
      }
      if (e.releaseAt > 0 && now >= e.releaseAt) {
        this.options.hooks?.onAbandoned?.(e.task);
        this.release(e);
      }
    }
  }

  private settle(e: Entry, outcome: Outcome): void {
    if (e.settled) return;
    e.settled = true;
    if (e.startedAt > 0) this.running--;
    if (e.onAbort) e.signal?.removeEventListener('abort', e.onAbort);
    e.resolve(outcome);
  }

  private checkIdle(): void {
    if (this.idleWaiters.length > 0 && this.queue.length === 0 && this.active.size === 0) this.wakeIdle();
  }

  private wakeIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }
}

function internalFailure(err: unknown, startedAt: number): InvokeResult {
  return { ok: false, error: toErrorInfo(err), retryable: true, ms: Date.now() - startedAt };
}
