import { writeSync } from 'node:fs';
import { workerData } from 'node:worker_threads';

// The watchdog thread (see watchdog.ts). Runs outside the main event loop, so it keeps
// ticking while a handler blocks that loop.
const { clock, limitMs, checkMs, pid, context } = workerData as {
  clock: BigInt64Array;
  limitMs: number;
  checkMs: number;
  pid: number;
  context: Record<string, unknown>;
};

setInterval(() => {
  const blockedMs = Date.now() - Number(Atomics.load(clock, 0));
  if (blockedMs <= limitMs) return;
  const line = JSON.stringify({
    time: new Date().toISOString(),
    level: 'error',
    msg: 'Killed the worker: its event loop was blocked past the limit (a handler blocking in async mode?); its leases will lapse and other workers will retry its items',
    blockedMs,
    limitMs,
    ...context,
  });
  try {
    writeSync(2, `${line}\n`);
  } finally {
    process.kill(pid, 'SIGKILL');
  }
}, checkMs);
