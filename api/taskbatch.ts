import type { KubeObject } from '../kube/client.js';
import type { TaskBatchSpec, TaskBatchStatus } from './types.generated.js';

export type { TaskBatchSpec, TaskBatchStatus } from './types.generated.js';

export const GROUP = 'taskbatch.dev';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;
export const KIND = 'TaskBatch';
const PLURAL = 'taskbatches';

/** Label on worker pods naming their batch; also the /scale selector. */
export const BATCH_LABEL = 'taskbatch.dev/batch';
/** Annotation on worker pods: the queue epoch they were started for. */
export const EPOCH_ANNOTATION = 'taskbatch.dev/queue-epoch';
/** Finalizer that deletes the batch's Redis keys before the TaskBatch goes away. */
export const FINALIZER = 'taskbatch.dev/redis-cleanup';

export interface TaskBatch extends KubeObject {
  spec: TaskBatchSpec;
  status?: TaskBatchStatus;
}

export type Condition = NonNullable<TaskBatchStatus['conditions']>[number];

export type ConditionType = 'Complete' | 'Failed' | 'Suspended' | 'Progressing' | 'Degraded' | 'RedisUnavailable' | 'RedisMisconfigured' | 'QueueStateLost' | 'QuotaExceeded' | 'CleanupBlocked';

export function batchPath(namespace: string, name?: string): string {
  const base = `/apis/${GROUP}/${VERSION}/namespaces/${namespace}/${PLURAL}`;
  return name ? `${base}/${name}` : base;
}

export const ALL_BATCHES_PATH = `/apis/${GROUP}/${VERSION}/${PLURAL}`;

export function findCondition(status: TaskBatchStatus | undefined, type: ConditionType): Condition | undefined {
  return status?.conditions?.find((c) => c.type === type);
}

function isTrue(status: TaskBatchStatus | undefined, type: ConditionType): boolean {
  return findCondition(status, type)?.status === 'True';
}

export function isFinished(status: TaskBatchStatus | undefined): boolean {
  return isTrue(status, 'Complete') || isTrue(status, 'Failed');
}

/**
 * Failure reasons after which replayed items reopen a finished batch: the batch itself is sound,
 * only items failed. After any other failure (a deadline, crash-looping workers, a spec error,
 * lost state of an open batch) replayed items would wait for workers that never come back.
 */
const REOPENABLE_FAILURES: ReadonlySet<string> = new Set(['FailurePolicyExceeded']);

/** Whether items queued again (taskbatch replay) bring this batch back to Running. */
export function canReopen(status: TaskBatchStatus | undefined): boolean {
  const failed = findCondition(status, 'Failed');
  return failed?.status !== 'True' || REOPENABLE_FAILURES.has(failed.reason);
}
