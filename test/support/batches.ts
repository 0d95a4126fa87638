import { randomUUID } from 'node:crypto';
import type { BatchRef } from '../../queue/index.js';

/** A batch reference no other test uses. */
export function uniqueBatch(prefix = 'b'): BatchRef {
  return { namespace: 'test', name: `${prefix}-${randomUUID().slice(0, 12)}` };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls until `check` returns a truthy value or the deadline passes. */
export async function eventually<T>(check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await sleep(50);
  }
}
