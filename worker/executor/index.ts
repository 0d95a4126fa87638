import { AsyncExecutor } from './async.js';
import { RemotePool } from './remote.js';
import type { Executor, ExecutorOptions, PoolMode } from './types.js';

export * from './types.js';
export { AsyncExecutor } from './async.js';
export { RemotePool } from './remote.js';

/** The executor for a pool mode: worker threads, child processes, or async calls in this thread. */
export function createExecutor(mode: PoolMode, options: ExecutorOptions): Executor {
  return mode === 'async' ? new AsyncExecutor(options) : new RemotePool(mode, options);
}
