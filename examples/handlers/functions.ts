// A module of several functions, called by name from each item (dispatch mode): the item
// {"fn": "wordCount", "args": ["to be or not to be"]} runs wordCount("to be or not to be", ctx).
// Local run:  node dist/worker/main.js --local --handler 'dist/examples/handlers/functions.js#*' \
//               --items examples/items/functions.jsonl
// In a TaskBatch: spec.handler: {module: /app/dist/examples/handlers/functions.js, dispatch: fn}
import type { HandlerContext } from '../../worker/handler/api.js';
import { countPrimesBelow } from '../../worker/handler/builtins/primes.js';

export function add(a: number, b: number): number {
  return a + b;
}

export function wordCount(text: string): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const w of text.toLowerCase().split(/\W+/).filter(Boolean)) counts[w] = (counts[w] ?? 0) + 1;
  return counts;
}

/** CPU-bound: run it in thread or process mode. Reports progress as it goes. */
export function primesInRanges(ranges: [number, number][], ctx: HandlerContext): number[] {
  return ranges.map(([from, to], i) => {
    const n = countPrimesBelow(to) - countPrimesBelow(from);
    ctx.progress((i + 1) / ranges.length);
    return n;
  });
}

/** Exports starting with "_" cannot be called from items. */
export function _internal(): string {
  return 'not callable by items';
}
