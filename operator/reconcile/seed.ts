import type { BatchQueue, ItemInput } from '../../queue/index.js';
import type { TaskBatchSpec } from '../api/taskbatch.js';

/** Source of a batch's items, read from its index `cursor` on. */
export interface ItemSource {
  /** Total number of items, when known up front. */
  total: number;
  /** Items from `start` (inclusive), at most `count`, each with a deterministic id. */
  slice(start: number, count: number): ItemInput[];
}

/**
 * Ids are derived from the item's position in the spec ("i<index>"), so seeding is
 * idempotent: an operator that restarts mid-seed re-enqueues a chunk at most, and the
 * queue drops the duplicates.
 */
export function itemSource(spec: TaskBatchSpec, configMapData?: string): ItemSource | undefined {
  if (spec.items) {
    const items = spec.items;
    return { total: items.length, slice: (s, n) => items.slice(s, s + n).map((data, k) => ({ id: `i${s + k}`, data })) };
  }
  if (spec.range) {
    const start = spec.range.start ?? 0;
    const step = spec.range.step ?? 1;
    const total = Math.max(0, Math.ceil((spec.range.end - start) / step));
    return {
      total,
      slice: (s, n) => Array.from({ length: Math.max(0, Math.min(n, total - s)) }, (_, k) => ({ id: `i${s + k}`, data: { i: start + (s + k) * step } })),
    };
  }
  if (spec.itemsFrom && configMapData !== undefined) {
    const lines = configMapData.split('\n').map((l) => l.trim()).filter((l) => l.length > 0);
    return {
      total: lines.length,
      slice: (s, n) =>
        lines.slice(s, s + n).map((line, k) => {
          try {
            return { id: `i${s + k}`, data: JSON.parse(line) as unknown };
          } catch (err) {
            throw new SeedError(`line ${s + k + 1} of ConfigMap ${spec.itemsFrom!.configMapKeyRef.name} key ${spec.itemsFrom!.configMapKeyRef.key} is not valid JSON: ${(err as Error).message}`);
          }
        }),
    };
  }
  return undefined;
}

export class SeedError extends Error {
  override name = 'SeedError';
}

export interface SeedSlice {
  /** Items added (duplicates of an earlier, interrupted slice are not counted). */
  added: number;
  /** The seed cursor after this slice: the index of the next item to enqueue. */
  cursor: number;
  /** Every item of the source is enqueued. */
  done: boolean;
}

/**
 * Enqueues at most `maxItems` items from the queue's recorded seed cursor on, in chunks; each
 * chunk records the new cursor atomically with its items. One slice per reconcile keeps a huge
 * batch from holding a reconcile worker (and so every other batch) for minutes, and lets a
 * suspend, a delete or a lost leadership stop seeding within one slice.
 */
export async function seedSlice(queue: BatchQueue, source: ItemSource, fromCursor: number, maxItems: number, chunkSize = 5000): Promise<SeedSlice> {
  let added = 0;
  let cursor = fromCursor;
  const stop = Math.min(source.total, fromCursor + maxItems);
  while (cursor < stop) {
    const items = source.slice(cursor, Math.min(chunkSize, stop - cursor));
    if (items.length === 0) break;
    const end = cursor + items.length;
    added += (await queue.enqueueMany(items, { cursor: String(end) })).added;
    cursor = end;
  }
  return { added, cursor, done: cursor >= source.total };
}
