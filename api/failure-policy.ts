import type { TaskBatchSpec } from './types.generated.js';

/**
 * How many items may fail permanently before the batch fails (spec.failurePolicy): the lower of
 * maxFailedItems and maxFailedPercent of the total; none when neither is set.
 */
export function allowedFailures(spec: TaskBatchSpec, total: number): number {
  const p = spec.failurePolicy;
  if (!p || (p.maxFailedItems === undefined && p.maxFailedPercent === undefined)) return 0;
  const byCount = p.maxFailedItems ?? Number.POSITIVE_INFINITY;
  const byPercent = p.maxFailedPercent !== undefined ? Math.floor((total * p.maxFailedPercent) / 100) : Number.POSITIVE_INFINITY;
  return Math.min(byCount, byPercent);
}
