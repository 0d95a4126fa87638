import type { InvokeResult } from './invoke.js';

/** Where a result's size was checked: named in the error, so an operator can tell. */
export type ResultCheckSite = 'thread executor' | 'process executor' | 'stdio executor' | 'async executor' | 'worker';

/** The setting that raises the limit (worker/config.ts), named in the error. */
const MAX_RESULT_SETTING = 'TASKBATCH_MAX_RESULT_BYTES';

/**
 * Turns a success whose JSON is over `maxBytes` into a non-retryable ResultTooLarge failure.
 * Executors call it before a result leaves the thread or child process that produced it, so an
 * oversized result is never copied to the worker's main thread. The byte count is taken only
 * when the length could exceed the limit (UTF-8 is 1 to 3 bytes per UTF-16 code unit).
 */
export function limitResult(result: InvokeResult, itemId: string, maxBytes: number, site: ResultCheckSite): InvokeResult {
  if (!result.ok || result.json === undefined || result.json.length * 3 <= maxBytes) return result;
  const bytes = Buffer.byteLength(result.json);
  if (bytes <= maxBytes) return result;
  return {
    ok: false,
    error: {
      name: 'ResultTooLarge',
      message: `item ${JSON.stringify(itemId)}: its result is ${bytes} bytes of JSON, over the limit of ${maxBytes} bytes (${MAX_RESULT_SETTING}); refused in the ${site} before it was sent on. Store large results elsewhere and return a reference, or raise ${MAX_RESULT_SETTING}`,
    },
    retryable: false,
    ms: result.ms,
  };
}
