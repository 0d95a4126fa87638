import type { LogLevel } from '../handler/api.js';
import type { ErrorInfo, InvokeResult, TaskInput } from '../handler/invoke.js';
import type { LogRate } from '../handler/log-budget.js';
import type { HandlerSpec } from '../handler/spec.js';

/** Messages between the pool (worker main thread) and one thread/child process. */

export interface ExecutorInit {
  handler: HandlerSpec;
  /** How the executor measures its memory after items: 'rss' (process), 'heap' (thread), 'none'. */
  memory: 'rss' | 'heap' | 'none';
  /** Which executor this is: named in a ResultTooLarge error. */
  kind: 'thread' | 'process';
  /** Results whose JSON is larger fail here, before they are posted (see result-limit.ts). */
  maxResultBytes: number;
  /** Per-item budget of handler log lines; those over it are dropped here and counted. */
  logRate: LogRate;
}

export interface WireTask extends TaskInput {
  seq: number;
  /** The item's timeout, passed on to stdio handlers (the pool enforces it either way). */
  timeoutMs?: number;
}

export type ToExecutor =
  /** Append to the executor's local FIFO; it runs them one at a time. */
  | { t: 'run'; tasks: WireTask[] }
  /** Stop this item: drop it if queued (reply 'cancelled'), fire its signal if running. */
  | { t: 'abort'; seq: number; reason: ErrorInfo }
  /** Give back these items if not started yet (reply 'cancelled' with those removed). */
  | { t: 'cancel'; seqs: number[] }
  /** Exit once idle. */
  | { t: 'stop' };

export type FromExecutor =
  | { t: 'ready' }
  | { t: 'startFailed'; error: ErrorInfo }
  /** `logsDropped`: handler log lines of this item refused by its budget (absent when none). */
  | { t: 'done'; seq: number; result: InvokeResult; memMiB?: number; logsDropped?: number }
  | { t: 'cancelled'; seqs: number[] }
  | { t: 'progress'; seq: number; value: number }
  | { t: 'log'; seq: number; level: LogLevel; message: string; fields?: Record<string, unknown> }
  /** An uncaught error outside the handler's promise chain; the executor exits next. */
  | { t: 'fatal'; error: ErrorInfo }
  /** Sent last before a child process exits on its own (flushes every earlier message). */
  | { t: 'bye' };
