import type { ItemInput } from '../queue/index.js';
import { SPEC_DEFAULTS, type TaskBatchSpec } from './types.generated.js';

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
    const start = spec.range.start ?? SPEC_DEFAULTS['range.start'];
    const step = spec.range.step ?? SPEC_DEFAULTS['range.step'];
    const total = Math.max(0, Math.ceil((spec.range.end - start) / step));
    return {
      total,
      slice: (s, n) => Array.from({ length: Math.max(0, Math.min(n, total - s)) }, (_, k) => ({ id: `i${s + k}`, data: { i: start + (s + k) * step } })),
    };
  }
  if (spec.itemsFrom && configMapData !== undefined) {
    const lines = configMapData
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l.length > 0);
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

/** The spec field holding the batch's items, for messages. */
export function itemsField(spec: TaskBatchSpec): string {
  return spec.range ? 'spec.range' : spec.items ? 'spec.items' : spec.itemsFrom ? 'spec.itemsFrom' : 'spec.open';
}
