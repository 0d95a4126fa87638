import { SPEC_DEFAULTS, type TaskBatchSpec } from './types.generated.js';

/**
 * The worker settings a TaskBatch spec implies, as the worker's environment (worker/config.ts
 * reads them): what a worker pod gets from the operator and what `taskbatch run` gives its local
 * worker. Defaults are the CRD's, for specs that did not pass the API server.
 */
export function workerSettingsEnv(spec: TaskBatchSpec): Record<string, string> {
  const pool = spec.pool ?? {};
  return {
    TASKBATCH_HANDLER: JSON.stringify(spec.handler),
    TASKBATCH_POOL_MODE: pool.mode ?? SPEC_DEFAULTS['pool.mode'],
    TASKBATCH_POOL_SIZE: String(pool.size ?? SPEC_DEFAULTS['pool.size']),
    TASKBATCH_ITEM_TIMEOUT_SECONDS: String(spec.itemTimeoutSeconds ?? SPEC_DEFAULTS.itemTimeoutSeconds),
    TASKBATCH_LEASE_SECONDS: String(spec.leaseSeconds ?? SPEC_DEFAULTS.leaseSeconds),
    ...(pool.maxItemsPerExecutor ? { TASKBATCH_MAX_ITEMS_PER_EXECUTOR: String(pool.maxItemsPerExecutor) } : {}),
    ...(pool.maxMemoryMiB ? { TASKBATCH_MAX_MEMORY_MIB: String(pool.maxMemoryMiB) } : {}),
  };
}
