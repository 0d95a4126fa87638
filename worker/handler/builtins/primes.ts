import { NonRetryableError, type Handler } from '../api.js';

/**
 * CPU-bound example: counts primes below n (the item: a number, or {n}) by trial division.
 * Deliberately does not yield: it is what the benchmarks use to measure pool scaling, and
 * what shows that thread and process mode keep leases alive while the CPU is busy.
 */
export const primes: Handler = (item) => {
  const n = typeof item === 'number' ? item : (item as { n?: unknown } | null)?.n;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > 1e10) {
    throw new NonRetryableError(`primes expects an item that is an integer n or {"n": n} with 0 <= n <= 1e10, got ${JSON.stringify(item)}`);
  }
  return { n, count: countPrimesBelow(n) };
};

export function countPrimesBelow(n: number): number {
  if (n <= 2) return 0;
  let count = 1; // 2
  for (let k = 3; k < n; k += 2) {
    let prime = true;
    for (let d = 3; d * d <= k; d += 2) {
      if (k % d === 0) {
        prime = false;
        break;
      }
    }
    if (prime) count++;
  }
  return count;
}
