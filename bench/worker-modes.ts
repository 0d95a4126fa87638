// Worker pool modes, side by side with BullMQ, through the real worker:
//   npm run build && node dist/bench/worker-modes.js [--quick]
// 1. No-op items/s per mode (thread, process, async) at pool size 2 and 8, against BullMQ's
//    equivalents in the same run: sandboxed processor in child processes, the same with
//    useWorkerThreads, and plain concurrency. Each measurement is a fresh process
//    (dist/bench/worker-bench-run.js); the best of REPEATS runs is kept.
// 2. CPU-bound scaling: a fixed batch of `primes` items with pool size 1 vs 2 in thread and
//    process mode; efficiency = T1 / (2 x T2).
// Prints Markdown tables (paste into bench/worker.md). Flags: --quick, --noop-only, --cpu-only.
import { execFileSync } from 'node:child_process';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { startRedisServer } from '../localcluster/redis-server.js';

const quick = process.argv.includes('--quick');
const noopPart = !process.argv.includes('--cpu-only');
const cpuPart = !process.argv.includes('--noop-only');
const REPEATS = quick ? 1 : 3;
const RUNNER = fileURLToPath(new URL('./worker-bench-run.js', import.meta.url));
const N_TASKBATCH = quick ? 20_000 : 100_000;
const N_BULLMQ = quick ? 5_000 : 20_000;
const CPU_ITEMS = quick ? 16 : 40;
const CPU_N = 1_500_000; // ~90-100 ms of trial division per item on this machine

interface Run {
  system: string;
  mode: string;
  size: number;
  items: number;
  seconds: number;
  itemsPerSec: number;
}

function once(args: string[]): Run {
  const out = execFileSync(process.execPath, [RUNNER, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 20 });
  return JSON.parse(out.trim().split('\n').pop() as string) as Run;
}

function best(args: string[]): Run {
  let top: Run | undefined;
  for (let i = 0; i < REPEATS; i++) {
    const r = once(args);
    if (!top || r.itemsPerSec > top.itemsPerSec) top = r;
  }
  return top as Run;
}

const server = await startRedisServer();
const url = server.url;
const machine = `${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, Node ${process.version}, load average at start ${loadavg()
  .map((l) => l.toFixed(2))
  .join(' ')}`;
console.log(`# worker-modes benchmark\n\n${machine}\n`);
try {
  if (noopPart) {
    console.log('## No-op items per second (best of %d; taskbatch %d items, BullMQ %d jobs per run)\n', REPEATS, N_TASKBATCH, N_BULLMQ);
    console.log('| mode | size | taskbatch items/s | BullMQ equivalent | BullMQ jobs/s | ratio |');
    console.log('|---|---:|---:|---|---:|---:|');
    const bullName: Record<string, string> = { thread: 'sandboxed, useWorkerThreads', process: 'sandboxed (child processes)', async: 'plain concurrency' };
    for (const mode of ['thread', 'process', 'async']) {
      for (const size of [2, 8]) {
        const ours = best(['taskbatch', mode, String(size), String(N_TASKBATCH), url]);
        const theirs = best(['bullmq', mode, String(size), String(N_BULLMQ), url]);
        console.log(
          `| ${mode} | ${size} | ${ours.itemsPerSec.toLocaleString('en')} | ${bullName[mode]} | ${theirs.itemsPerSec.toLocaleString('en')} | ${(ours.itemsPerSec / theirs.itemsPerSec).toFixed(1)}x |`,
        );
      }
    }
  }

  if (cpuPart) {
    console.log(`\n## CPU-bound scaling: ${CPU_ITEMS} primes items (n = ${CPU_N.toLocaleString('en')}), pool size 1 vs 2 (best of ${REPEATS}, runs interleaved)\n`);
    console.log('| mode | T1 (size 1) | T2 (size 2) | efficiency T1/(2 x T2) |');
    console.log('|---|---:|---:|---:|');
    for (const mode of ['thread', 'process']) {
      const item = JSON.stringify(CPU_N);
      let t1 = Infinity;
      let t2 = Infinity;
      // Interleaved, so a burst of load from elsewhere hits both sizes alike.
      for (let i = 0; i < REPEATS; i++) {
        t1 = Math.min(t1, once(['taskbatch', mode, '1', String(CPU_ITEMS), url, 'primes', item]).seconds);
        t2 = Math.min(t2, once(['taskbatch', mode, '2', String(CPU_ITEMS), url, 'primes', item]).seconds);
      }
      console.log(`| ${mode} | ${t1.toFixed(2)} s | ${t2.toFixed(2)} s | ${(t1 / (2 * t2)).toFixed(2)} |`);
    }
  }
  console.log(
    `\nload average at end ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );
} finally {
  await server.stop();
}
