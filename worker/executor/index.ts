import { AsyncExecutor } from './async.js';
import { RemotePool } from './remote.js';
import { describeHandler, isStdioSpec } from '../handler/spec.js';
import type { Executor, ExecutorOptions, PoolMode } from './types.js';

export * from './types.js';
export { AsyncExecutor } from './async.js';
export { RemotePool } from './remote.js';

/** The executor for a pool mode: worker threads, child processes, or async calls in this thread. */
export function createExecutor(mode: PoolMode, options: ExecutorOptions): Executor {
  if (mode === 'async' && isStdioSpec(options.handler)) {
    throw new RangeError(`a stdio handler (${describeHandler(options.handler)}) runs in process pool mode only, got "async": set TASKBATCH_POOL_MODE=process (or leave it unset)`);
  }
  return mode === 'async' ? new AsyncExecutor(options) : new RemotePool(mode, options);
}
