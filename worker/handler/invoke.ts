import type { Handler, HandlerContext, HandlerLog, LogLevel } from './api.js';
import { retryableOf, toErrorInfo, type ErrorInfo } from './error-info.js';

// Executors import these from here too; the conversion itself lives in error-info.ts.
export { toErrorInfo, type ErrorInfo };

/** What an executor needs to run one item. */
export interface TaskInput {
  id: string;
  attempt: number;
  /** The item's JSON as enqueued. */
  payload: string;
}

/** A handler call's result: the value as JSON (undefined = no result), or its error. */
export type InvokeResult = { ok: true; json: string | undefined; ms: number } | { ok: false; error: ErrorInfo; retryable: boolean; ms: number };

export interface InvokeHooks {
  progress(value: number): void;
  log(level: LogLevel, message: string, fields: Record<string, unknown> | undefined): void;
}

/**
 * The context of one call. The AbortController is created on first use of `signal` (or on
 * abort), which keeps trivial handlers cheap.
 */
export class ItemContext implements HandlerContext {
  private controller: AbortController | undefined;
  readonly log: HandlerLog;

  constructor(
    readonly id: string,
    readonly attempt: number,
    private readonly hooks: InvokeHooks,
  ) {
    this.log = {
      debug: (m, f) => hooks.log('debug', m, f),
      info: (m, f) => hooks.log('info', m, f),
      warn: (m, f) => hooks.log('warn', m, f),
      error: (m, f) => hooks.log('error', m, f),
    };
  }

  get signal(): AbortSignal {
    this.controller ??= new AbortController();
    return this.controller.signal;
  }

  progress(value: number): void {
    if (typeof value === 'number' && Number.isFinite(value)) this.hooks.progress(value);
  }

  abort(reason: unknown): void {
    this.controller ??= new AbortController();
    if (!this.controller.signal.aborted) this.controller.abort(reason);
  }
}

/**
 * Runs one item; synchronous handlers settle without a microtask hop. Never throws and never
 * rejects, whatever the handler throws or returns (a `then` getter that throws included):
 * executors rely on it to count the attempt and give the slot back.
 */
export function invoke(handler: Handler, task: TaskInput, ctx: ItemContext): InvokeResult | Promise<InvokeResult> {
  const t0 = performance.now();
  try {
    const out: unknown = handler(JSON.parse(task.payload), ctx);
    if (out !== null && (typeof out === 'object' || typeof out === 'function') && typeof (out as PromiseLike<unknown>).then === 'function') {
      return Promise.resolve(out as PromiseLike<unknown>).then(
        (value) => success(value, t0),
        (err: unknown) => failure(err, t0),
      );
    }
    return success(out, t0);
  } catch (err) {
    return failure(err, t0);
  }
}

function success(value: unknown, t0: number): InvokeResult {
  if (value === undefined) return { ok: true, json: undefined, ms: performance.now() - t0 };
  let json: string | undefined;
  try {
    json = JSON.stringify(value);
  } catch (err) {
    // Through toErrorInfo again: the cause's message is bounded, but not with the prefix.
    const error = toErrorInfo({ name: 'ResultNotSerializable', message: `the handler's result is not JSON-serializable: ${toErrorInfo(err).message}` });
    return { ok: false, error, retryable: false, ms: performance.now() - t0 };
  }
  if (json === undefined) {
    return { ok: false, error: { name: 'ResultNotSerializable', message: `the handler returned a ${typeof value}, which is not JSON-serializable` }, retryable: false, ms: performance.now() - t0 };
  }
  return { ok: true, json, ms: performance.now() - t0 };
}

function failure(err: unknown, t0: number): InvokeResult {
  return { ok: false, error: toErrorInfo(err), retryable: retryableOf(err), ms: performance.now() - t0 };
}
