// A module of several functions, served as remote calls by one long-lived open TaskBatch
// (examples/math-service.yaml: handler {module: …/math.js, dispatch: fn}). Call it with the SDK:
//
//   import { connect } from 'taskbatch/sdk';
//   const client = await connect();
//   const math = client.proxy<typeof import('./math.js')>('math-service');
//   await math.square(4);        // 16, computed on a worker pod
//   await math.divide(1, 0);     // rejects: RangeError: division by zero
//
// Each call is an item {"fn": "square", "args": [4]}; the worker calls square(4, ctx).
// Arguments and results travel as JSON. Exports starting with "_" cannot be called.
import type { HandlerContext } from '../../worker/handler/api.js';

export function square(x: number): number {
  return x * x;
}

export function add(a: number, b: number): number {
  return a + b;
}

export function divide(a: number, b: number): number {
  if (b === 0) throw new RangeError('division by zero');
  return a / b;
}

/** Sum of the primes below n, the slow way: something worth sending to a worker. */
export function sumPrimesBelow(n: number, ctx: HandlerContext): number {
  let sum = 0;
  for (let i = 2; i < n; i++) {
    if (i % 10_000 === 0 && ctx.signal.aborted) throw new Error('aborted');
    let prime = true;
    for (let d = 2; d * d <= i; d++) {
      if (i % d === 0) {
        prime = false;
        break;
      }
    }
    if (prime) sum += i;
  }
  return sum;
}

export async function stats(values: number[]): Promise<{ count: number; mean: number; min: number; max: number }> {
  if (!Array.isArray(values) || values.length === 0) throw new TypeError('stats() needs a non-empty array of numbers');
  const count = values.length;
  const mean = values.reduce((a, b) => a + b, 0) / count;
  return { count, mean, min: Math.min(...values), max: Math.max(...values) };
}
