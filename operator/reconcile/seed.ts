import type { BatchQueue } from '../../queue/index.js';
import type { ItemSource } from '../../api/items.js';

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
