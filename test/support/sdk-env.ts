import { fileURLToPath } from 'node:url';
import { spawnWorker, uniqueName, type SpawnedWorker } from './worker-harness.js';

/** The remote-call fixture module (compiled), served with handler dispatch: fn. */
export const MATH_FIXTURE = fileURLToPath(new URL('../fixtures/sdk/math.js', import.meta.url));

/** A unique batch name for SDK/CLI tests. */
export function sdkBatchName(prefix = 'sdk'): string {
  return uniqueName(prefix);
}

/**
 * A real worker process (node dist/worker/main.js) serving remote calls of the fixture module
 * on a batch: async pool, polling every 10 ms when idle (what a low-latency service sets).
 */
export function spawnCallWorker(redisUrl: string, namespace: string, batch: string, extra: Record<string, string> = {}): SpawnedWorker {
  return spawnWorker({
    TASKBATCH_REDIS_URL: redisUrl,
    TASKBATCH_NAMESPACE: namespace,
    TASKBATCH_BATCH: batch,
    TASKBATCH_HANDLER: JSON.stringify({ module: MATH_FIXTURE, dispatch: 'fn' }),
    TASKBATCH_POOL_MODE: 'async',
    TASKBATCH_POOL_SIZE: '64',
    TASKBATCH_METRICS_PORT: 'off',
    TASKBATCH_LOG_LEVEL: 'warn',
    ...extra,
  });
}

/** Stops a spawned worker (SIGTERM) and waits for it. */
export async function stopWorker(w: SpawnedWorker | undefined): Promise<void> {
  if (!w) return;
  w.kill('SIGTERM');
  const t = setTimeout(() => w.kill('SIGKILL'), 10_000);
  await w.exited;
  clearTimeout(t);
}
