import { NonRetryableError, type Handler } from '../api.js';

/** Waits for the item's milliseconds (a number, or {ms}); stops early when aborted. */
export const sleep: Handler = (item, ctx) => {
  const ms = typeof item === 'number' ? item : (item as { ms?: unknown } | null)?.ms;
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) {
    throw new NonRetryableError(`sleep expects an item that is a number of ms or {"ms": number}, got ${JSON.stringify(item)}`);
  }
  return new Promise<{ sleptMs: number }>((resolve, reject) => {
    if (ctx.signal.aborted) return reject(ctx.signal.reason);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(ctx.signal.reason);
    };
    const timer = setTimeout(() => {
      ctx.signal.removeEventListener('abort', onAbort);
      resolve({ sleptMs: ms });
    }, ms);
    ctx.signal.addEventListener('abort', onAbort, { once: true });
  });
};
