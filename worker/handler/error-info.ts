import { isNonRetryable } from './api.js';

/**
 * Turning whatever a handler threw into the plain {name, message, stack?} record an item
 * failure carries. Total: a handler may throw anything (null, a symbol, a BigInt, an object
 * without a prototype, a Proxy that throws on every trap, an error whose getters throw), and
 * every executor mode calls this on its way to the queue, so an exception here would escape
 * the executor (async mode: a slot leaked and the item released without an attempt).
 */

export interface ErrorInfo {
  name: string;
  message: string;
  stack?: string;
}

/** Bounds in UTF-16 code units: an error record must stay small whatever was thrown. */
export const ERROR_NAME_MAX = 256;
export const ERROR_MESSAGE_MAX = 16_384;
export const ERROR_STACK_MAX = 16_384;

export function toErrorInfo(err: unknown): ErrorInfo {
  try {
    return describe(err);
  } catch {
    // describe() guards each step; this is the last line should a guard miss a case.
    return { name: 'Error', message: 'non-error value thrown: [unprintable]' };
  }
}

/** Whether a failure may be retried: true unless the thrown value says `retryable: false` (read safely). */
export function retryableOf(err: unknown): boolean {
  try {
    return !isNonRetryable(err);
  } catch {
    return true;
  }
}

function describe(err: unknown): ErrorInfo {
  if (typeof err === 'string') return { name: 'Error', message: bound(err, ERROR_MESSAGE_MAX) };
  if ((typeof err === 'object' && err !== null) || typeof err === 'function') {
    const obj = err as object;
    if (attempt(() => err instanceof Error) || attempt(() => 'message' in obj)) {
      const name = read(obj, 'name');
      const message = read(obj, 'message');
      const stack = read(obj, 'stack');
      const info: ErrorInfo = {
        name: typeof name === 'string' && name ? bound(name, ERROR_NAME_MAX) : 'Error',
        message: bound(typeof message === 'string' ? message : message === undefined || message === null ? '' : printable(message), ERROR_MESSAGE_MAX),
      };
      if (typeof stack === 'string') info.stack = bound(stack, ERROR_STACK_MAX);
      return info;
    }
  }
  return { name: 'Error', message: bound(`non-error value thrown: ${printable(err)}`, ERROR_MESSAGE_MAX) };
}

/** A short text for any value; never throws. */
function printable(v: unknown): string {
  switch (typeof v) {
    case 'string':
      return JSON.stringify(v);
    case 'symbol':
      return attemptText(() => v.toString()) ?? 'Symbol()';
    case 'bigint':
      return `${v}n`;
    case 'undefined':
      return 'undefined';
    case 'number':
    case 'boolean':
      return String(v);
    default:
      // Objects and functions: JSON when it works (cycles, BigInts, throwing toJSON/getters
      // do not), then String() (fails without a prototype or with a throwing toString).
      return attemptText(() => JSON.stringify(v)) ?? attemptText(() => String(v)) ?? attemptText(() => Object.prototype.toString.call(v)) ?? '[unprintable]';
  }
}

function read(obj: object, key: string): unknown {
  try {
    return (obj as Record<string, unknown>)[key];
  } catch {
    return undefined;
  }
}

function attempt(f: () => boolean): boolean {
  try {
    return f();
  } catch {
    return false;
  }
}

function attemptText(f: () => string | undefined): string | undefined {
  try {
    const s = f();
    return typeof s === 'string' ? s : undefined;
  } catch {
    return undefined;
  }
}

const TRUNCATED = '… [truncated]';

/** At most `max` code units, without splitting a surrogate pair. */
function bound(s: string, max: number): string {
  if (s.length <= max) return s;
  let cut = max - TRUNCATED.length;
  const last = s.charCodeAt(cut - 1);
  if (last >= 0xd800 && last <= 0xdbff) cut--;
  return s.slice(0, cut) + TRUNCATED;
}
