import type { LogLevel } from '../handler/api.js';
import type { ErrorInfo, TaskInput } from '../handler/invoke.js';
import type { LogRate } from '../handler/log-budget.js';
import type { HandlerSpec } from '../handler/spec.js';

export type PoolMode = 'thread' | 'process' | 'async';
export const POOL_MODES: readonly PoolMode[] = ['thread', 'process', 'async'];

/** Why an executor (thread or child process) was replaced. Used as a metric label. */
export type RestartReason = 'crashed' | 'timeout' | 'aborted' | 'max_items' | 'max_memory' | 'start_failed';

export interface ExecutorHooks {
  onRestart?(reason: RestartReason, detail: string): void;
  onLog?(task: TaskInput, level: LogLevel, message: string, fields: Record<string, unknown> | undefined): void;
  /** An item ended after its handler log budget refused `dropped` lines (reported once per item). */
  onLogsDropped?(task: TaskInput, dropped: number): void;
  onProgress?(task: TaskInput, value: number): void;
  /** Executors failed to start `maxStartFailures` times in a row: the pool gave up. */
  onBroken?(error: ExecutorStartError): void;
  /** Async mode: a handler ignored its abort signal past the grace; its slot was given back. */
  onAbandoned?(task: TaskInput): void;
}

export interface ExecutorOptions {
  handler: HandlerSpec;
  /** Threads, child processes, or concurrent async calls. */
  size: number;
  /** Replace a thread/process after this many items (0 = never). */
  maxItemsPerExecutor?: number;
  /**
   * Replace a thread/process after an item when its memory is above this (process: RSS;
   * thread: V8 heap in use). Its V8 heap is also capped at twice this, so an item that
   * allocates without bound kills only its executor (0 = no limit).
   */
  maxMemoryMiB?: number;
  /** After an abort or timeout, how long user code may take to stop before it is killed. */
  abortGraceMs?: number;
  /**
   * A result whose JSON is larger fails its item (ResultTooLarge, not retried), checked where
   * the handler ran, before the result is posted to this thread. Default: the queue's 1 MiB.
   */
  maxResultBytes?: number;
  /** Per-item budget of handler log lines (ctx.log); lines over it are dropped. Default: no limit. */
  handlerLog?: LogRate;
  /** How long a thread/process may take to load the handler. */
  startTimeoutMs?: number;
  /** Give up after this many consecutive failed starts (after start() succeeded). */
  maxStartFailures?: number;
  /** How often deadlines are checked (a timeout fires at most this late). */
  sweepIntervalMs?: number;
  hooks?: ExecutorHooks;
}

export interface RunOptions {
  /** Hard in thread/process mode; cooperative (signal) in async mode. */
  timeoutMs: number;
  /** Aborting stops the item: unstarted items are dropped, running ones stopped. */
  signal?: AbortSignal;
  /** Called when the item starts running (leaves the executor's queue). */
  onStart?(): void;
}

/** What happened to one item. run() resolves with it; it never rejects for item failures. */
export type Outcome =
  | { status: 'succeeded'; json: string | undefined; durationMs: number }
  | { status: 'failed'; error: ErrorInfo; retryable: boolean; durationMs: number }
  | { status: 'timedOut'; error: ErrorInfo; durationMs: number }
  | { status: 'crashed'; error: ErrorInfo; durationMs: number }
  | { status: 'aborted'; reason: unknown; started: boolean };

export interface ExecutorStats {
  /** Items running now. */
  running: number;
  /** Items waiting in the executor (including those handed to an executor's local queue). */
  queued: number;
  /** Live threads/processes (async: the pool size). */
  executors: number;
  restarts: number;
}

/**
 * One interface over three backends. run() queues without bound (the caller bounds what it
 * hands over); close() stops accepting and resolves once everything queued and running has
 * finished; destroy() aborts everything (outcomes resolve as 'aborted') and kills executors.
 */
export interface Executor {
  readonly mode: PoolMode;
  readonly size: number;
  /**
   * Items it holds usefully at once: running, plus pipelined to an executor (async: the pool
   * size; thread/process: size x the current pipeline depth, 2 for items of 1 ms or more).
   */
  readonly pipelineCapacity: number;
  /** Starts every executor and loads the handler; rejects with ExecutorStartError. */
  start(): Promise<void>;
  run(task: TaskInput, options: RunOptions): Promise<Outcome>;
  stats(): ExecutorStats;
  close(): Promise<void>;
  destroy(reason?: unknown): Promise<void>;
}

export class ExecutorStartError extends Error {
  override name = 'ExecutorStartError';
}

export class ExecutorClosedError extends Error {
  override name = 'ExecutorClosedError';
}

/** Validates pool options eagerly, naming the option. */
export function validateExecutorOptions(mode: string, o: ExecutorOptions): void {
  if (!(POOL_MODES as readonly string[]).includes(mode)) throw new RangeError(`pool mode must be one of ${POOL_MODES.join(', ')}, got ${JSON.stringify(mode)}`);
  const int = (name: string, v: unknown, min: number, max: number): void => {
    if (v !== undefined && (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max))
      throw new RangeError(`options.${name} must be an integer between ${min} and ${max}, got ${JSON.stringify(v)}`);
  };
  int('size', o.size, 1, 10_000);
  if (o.size === undefined) throw new RangeError('options.size must be a positive integer');
  int('maxItemsPerExecutor', o.maxItemsPerExecutor, 0, Number.MAX_SAFE_INTEGER);
  int('maxMemoryMiB', o.maxMemoryMiB, 0, 1024 * 1024);
  if (o.maxMemoryMiB && o.maxMemoryMiB < 16) throw new RangeError('options.maxMemoryMiB must be 0 (no limit) or at least 16');
  int('abortGraceMs', o.abortGraceMs, 0, 3_600_000);
  int('maxResultBytes', o.maxResultBytes, 1, 1024 * 1024 * 1024);
  int('handlerLog.linesPerSecond', o.handlerLog?.linesPerSecond, 0, 1_000_000_000);
  int('handlerLog.burst', o.handlerLog?.burst, 1, 1_000_000_000);
  int('startTimeoutMs', o.startTimeoutMs, 1, 3_600_000);
  int('maxStartFailures', o.maxStartFailures, 1, 1000);
  int('sweepIntervalMs', o.sweepIntervalMs, 1, 60_000);
}
