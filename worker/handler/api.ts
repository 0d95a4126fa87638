/**
 * The handler API: what a user's module exports and what it receives. This file has no
 * dependencies so that it is cheap to load in every executor thread and child process.
 */

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface HandlerLog {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

export interface HandlerContext {
  /** The item's id in the batch. */
  readonly id: string;
  /** 1 for the first run, 2 for the first retry, ... */
  readonly attempt: number;
  /**
   * Fires when the item must stop: its timeout passed (reason a TimeoutError), its lease
   * was lost, or the worker is shutting down. In thread and process mode the executor is
   * killed shortly after if the handler has not returned; in async mode stopping is up to
   * the handler.
   */
  readonly signal: AbortSignal;
  /** Reports progress (any number the handler chooses, e.g. a fraction or a percentage). */
  progress(value: number): void;
  /** Structured log lines, tagged with the item's id and attempt. */
  readonly log: HandlerLog;
}

/** A handler: returns (or resolves to) the item's result, which must be JSON-serializable. */
export type Handler<Item = unknown, Result = unknown> = (item: Item, ctx: HandlerContext) => Result | Promise<Result>;

/**
 * Throw this (or any error with `retryable = false`) to fail an item permanently: it goes
 * to the dead-letter set without further attempts. Detection is by the `retryable`
 * property, not by class identity, so errors from other copies of this module work too.
 */
export class NonRetryableError extends Error {
  readonly retryable = false;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'NonRetryableError';
  }
}

/** Whether an error thrown by a handler asks not to be retried. */
export function isNonRetryable(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { retryable?: unknown }).retryable === false;
}
