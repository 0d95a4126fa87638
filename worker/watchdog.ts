import { Worker } from 'node:worker_threads';

export interface Watchdog {
  stop(): void;
}

export interface WatchdogOptions {
  /** Kill the process when its event loop has been blocked this long. */
  limitMs: number;
  /** Written to stderr (one JSON line) before the kill. */
  context?: Record<string, unknown>;
}

/**
 * A small thread that SIGKILLs this process when its main event loop stops turning for
 * longer than `limitMs` (a handler blocking the loop in async mode, or a wedged worker).
 * The main thread stamps a shared clock every limit/20 (at most 1 s); the watchdog thread checks it. After
 * the kill the worker's leases lapse and other workers reclaim its items.
 */
export function startWatchdog(options: WatchdogOptions): Watchdog {
  const clock = new BigInt64Array(new SharedArrayBuffer(8));
  const stamp = (): void => {
    Atomics.store(clock, 0, BigInt(Date.now()));
  };
  stamp();
  // A twentieth of the limit, at most a second: the kill comes within 5 % of the limit, and an
  // idle worker's two threads wake twice a second rather than twenty times.
  const beatMs = Math.max(10, Math.min(1000, Math.floor(options.limitMs / 20)));
  const beat = setInterval(stamp, beatMs);
  beat.unref();
  const thread = new Worker(new URL('./watchdog-thread.js', import.meta.url), {
    workerData: { clock, limitMs: options.limitMs, checkMs: beatMs, pid: process.pid, context: options.context ?? {} },
  });
  thread.unref();
  thread.on('error', () => undefined);
  return {
    stop: () => {
      clearInterval(beat);
      void thread.terminate();
    },
  };
}
