// Tasks for bench/worker-pool-vs-piscina.ts (piscina's worker file).
import { countPrimesBelow } from '../worker/handler/builtins/primes.js';

export function noop(): undefined {
  return undefined;
}

export function primes(n: number): { n: number; count: number } {
  return { n, count: countPrimesBelow(n) };
}
