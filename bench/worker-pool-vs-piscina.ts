// Why the thread pool is our own (worker/executor/remote.ts) and not piscina: the same
// no-op and CPU-bound tasks through both, executor level (no Redis):
//   node dist/bench/worker-pool-vs-piscina.js
// Beyond speed, piscina 5 lacks what the worker needs: replacing a thread after N items
// (maxItemsPerExecutor), per-item progress/log messages from a running task without a
// MessageChannel per task, and one code path shared with the child-process pool.
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { createExecutor } from '../worker/executor/index.js';

const N = 100_000;
const CPU_ITEMS = 24;
const CPU_N = 1_500_000;
const file = fileURLToPath(new URL('./worker-piscina-task.js', import.meta.url));

async function ours(size: number, handler: 'noop' | 'primes', count: number, payload: string): Promise<number> {
  const ex = createExecutor('thread', { handler: { builtin: handler }, size });
  await ex.start();
  const t0 = performance.now();
  await Promise.all(Array.from({ length: count }, (_, i) => ex.run({ id: String(i), attempt: 1, payload }, { timeoutMs: 60_000 })));
  const s = (performance.now() - t0) / 1000;
  await ex.close();
  return s;
}

async function theirs(size: number, name: 'noop' | 'primes', count: number, arg: unknown): Promise<number> {
  const pool = new Piscina({ filename: file, minThreads: size, maxThreads: size, idleTimeout: 60_000 });
  await Promise.all(Array.from({ length: size }, () => pool.run(null, { name: 'noop' }))); // warm up
  const t0 = performance.now();
  await Promise.all(Array.from({ length: count }, () => pool.run(arg, { name })));
  const s = (performance.now() - t0) / 1000;
  await pool.destroy();
  return s;
}

console.log('| pool | size | no-op tasks/s | CPU batch (s) |');
console.log('|---|---:|---:|---:|');
for (const size of [2, 8]) {
  const a = await ours(size, 'noop', N, 'null');
  const ac = await ours(size, 'primes', CPU_ITEMS, String(CPU_N));
  console.log(`| taskbatch thread pool | ${size} | ${Math.round(N / a).toLocaleString('en')} | ${ac.toFixed(2)} |`);
  const b = await theirs(size, 'noop', N, null);
  const bc = await theirs(size, 'primes', CPU_ITEMS, CPU_N);
  console.log(`| piscina 5 | ${size} | ${Math.round(N / b).toLocaleString('en')} | ${bc.toFixed(2)} |`);
}
