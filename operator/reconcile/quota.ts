/**
 * The per-namespace quota of items held in Redis: one tenant's batches cannot fill the Redis every
 * tenant shares. Pure functions of the batches the operator sees, table-tested.
 */

/** What one batch of the namespace holds in Redis, as the operator last saw it. */
export interface HeldBatch {
  name: string;
  finished: boolean;
  /** Items the batch has or will have (its spec's total when known, else what was seeded). */
  total: number;
  /** Items finished (succeeded + failed): no longer held as work. */
  done: number;
}

/** Items the other unfinished batches of the namespace hold or are about to hold. */
export function itemsHeldByOthers(batches: readonly HeldBatch[], self: string): number {
  let held = 0;
  for (const b of batches) if (b.name !== self && !b.finished) held += Math.max(0, b.total - b.done);
  return held;
}

export type QuotaDecision = { kind: 'fits' } | { kind: 'never'; message: string } | { kind: 'wait'; message: string };

/**
 * Whether a batch needing `need` more items (its total less those finished) may seed now. A batch
 * larger than the whole quota can never fit (terminal); one that does not fit beside the others
 * waits until they finish. `quota` 0 means no quota.
 */
export function quotaDecision(quota: number, namespace: string, field: string, total: number, need: number, heldByOthers: number): QuotaDecision {
  if (quota <= 0) return { kind: 'fits' };
  if (total > quota) {
    return {
      kind: 'never',
      message: `${field}: ${total} items exceed namespace ${namespace}'s quota of ${quota} items held in Redis (operator setting TASKBATCH_NAMESPACE_ITEM_QUOTA); split the work or ask the installer to raise the quota`,
    };
  }
  if (heldByOthers + need > quota) {
    return {
      kind: 'wait',
      message: `Waiting to seed: namespace ${namespace}'s other batches hold ${heldByOthers} items and this one needs ${need}, over the quota of ${quota} items held in Redis (TASKBATCH_NAMESPACE_ITEM_QUOTA); seeding starts when enough of them finish`,
    };
  }
  return { kind: 'fits' };
}
