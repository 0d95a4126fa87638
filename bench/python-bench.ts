// Python handlers (issue 15): the same Python functions (a no-op and a 1 ms busy loop, in
// bench/python_bench_tasks.py) run by the taskbatch worker as a stdio handler, by Celery (prefork
// and threads pools) and by multiprocessing.Pool alone, all with 2 processes or threads, on one
// redis-server, runs alternating between systems, best of 2 (1 with --quick).
//   npx tsc -b && node dist/bench/python-bench.js [--quick] [--noop-items N] [--cpu-items N] [--celery-threads-items N]
// taskbatch: seeded batch, one `node dist/worker/main.js` with the stdio handler, timed from its
// "Started worker" line (executors up) to its "Batch is complete" line. Celery and
// multiprocessing.Pool run in bench/python_peers.py, which says what it times.
// Python is /usr/bin/python3 for all three; Celery is Debian's python3-celery (apt-get installed
// when missing).
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { BatchQueue } from '../queue/index.js';
import { spawnWorker } from '../test/support/worker-harness.js';
import { intOption, log, machineLine, startBenchRedis } from './queue-lib.js';

const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const PYTHON = '/usr/bin/python3';
const APT_GET = '/usr/bin/apt-get';
const POOL_SIZE = 2;
const ROUNDS = quick ? 1 : 2;
const TASKS_FILE = fileURLToPath(new URL('../../bench/python_bench_tasks.py', import.meta.url));
const PEERS_FILE = fileURLToPath(new URL('../../bench/python_peers.py', import.meta.url));
const FUNCTIONS = ['noop', 'cpu_1ms'] as const;
type Fn = (typeof FUNCTIONS)[number];
const ITEMS: Record<Fn, number> = {
  noop: intOption(argv, 'noop-items', 'BENCH_PY_NOOP_ITEMS', quick ? 4_000 : 20_000),
  cpu_1ms: intOption(argv, 'cpu-items', 'BENCH_PY_CPU_ITEMS', quick ? 1_000 : 4_000),
};
// Celery's threads pool drains Redis at well under 100 tasks/s here (see bench/worker.md), so it
// gets fewer items to keep the run short; its items/s is what the table compares.
const CELERY_THREADS_ITEMS = intOption(argv, 'celery-threads-items', 'BENCH_PY_CELERY_THREADS_ITEMS', quick ? 100 : 300);
const SYSTEMS = ['taskbatch stdio', 'Celery prefork', 'Celery threads', 'multiprocessing.Pool'] as const;
type System = (typeof SYSTEMS)[number];

interface Run {
  fn: Fn;
  system: System;
  items: number;
  seconds: number;
}

/** Debian's python3-celery and python3-redis for /usr/bin/python3, installed once. */
function ensureCelery(): void {
  if (spawnSync(PYTHON, ['-c', 'import celery, redis'], { stdio: 'ignore' }).status === 0) return;
  log('installing python3-celery python3-redis with apt-get');
  const r = spawnSync(APT_GET, ['install', '-y', 'python3-celery', 'python3-redis'], { stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.status !== 0) throw new Error(`apt-get install python3-celery python3-redis failed (exit ${r.status}); install them for ${PYTHON} (as root) and rerun`);
}

async function runTaskbatch(url: string, fn: Fn, items: number): Promise<number> {
  const name = `py-${fn.replace(/_/g, '-')}-${Date.now()}`;
  const redis = new Redis(url);
  const queue = new BatchQueue(redis, { namespace: 'bench', name });
  await queue.create({ maxAttempts: 1 });
  for (let i = 0; i < items; i += 10_000) await queue.enqueueMany(Array.from({ length: Math.min(10_000, items - i) }, (_, j) => ({ data: { fn, args: [i + j] } })));
  await queue.close();
  const worker = spawnWorker({
    TASKBATCH_REDIS_URL: url,
    TASKBATCH_NAMESPACE: 'bench',
    TASKBATCH_BATCH: name,
    TASKBATCH_HANDLER: JSON.stringify({ command: [PYTHON, '-u', TASKS_FILE], protocol: 'stdio' }),
    TASKBATCH_POOL_MODE: 'process',
    TASKBATCH_POOL_SIZE: String(POOL_SIZE),
    TASKBATCH_METRICS_PORT: 'off',
    TASKBATCH_HEARTBEAT_SECONDS: '5',
    TASKBATCH_PRESENCE_STALE_SECONDS: '30',
    // No __pycache__ left in handlers/python by a benchmark run.
    PYTHONDONTWRITEBYTECODE: '1',
  });
  try {
    await worker.waitForLog((l) => l.msg === 'Started worker', 60_000);
    const t0 = performance.now();
    await worker.waitForLog((l) => l.msg === 'Batch is complete', 600_000);
    const seconds = (performance.now() - t0) / 1000;
    const snap = await queue.snapshot();
    if (snap.succeeded !== items) throw new Error(`taskbatch ${fn}: batch ${name} completed with ${snap.succeeded} succeeded, ${snap.failed} failed of ${items}`);
    return seconds;
  } finally {
    worker.kill();
    await worker.exited;
    await queue.purge();
    redis.disconnect();
  }
}

function runPeer(args: string[]): number {
  const out = execFileSync(PYTHON, [PEERS_FILE, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 20 });
  const parsed = JSON.parse(out.trim().split('\n').pop() ?? '{}') as { seconds?: number };
  if (typeof parsed.seconds !== 'number') throw new Error(`python_peers.py ${args.join(' ')} printed no seconds: ${out}`);
  return parsed.seconds;
}

async function runOne(address: string, fn: Fn, system: System): Promise<Run> {
  const items = system === 'Celery threads' ? Math.min(CELERY_THREADS_ITEMS, ITEMS[fn]) : ITEMS[fn];
  let seconds: number;
  if (system === 'taskbatch stdio') seconds = await runTaskbatch(`redis://${address}`, fn, items);
  else if (system === 'multiprocessing.Pool') seconds = runPeer(['pool', fn, String(items), String(POOL_SIZE)]);
  else seconds = runPeer(['celery', fn, String(items), system === 'Celery prefork' ? 'prefork' : 'threads', String(POOL_SIZE), address]);
  log(`${fn} ${system}: ${items} items in ${seconds.toFixed(3)} s (${Math.round(items / seconds)}/s)`);
  return { fn, system, items, seconds };
}

function rate(r: Run | undefined): number {
  return r ? r.items / r.seconds : Number.NaN;
}

function printResults(best: readonly Run[]): void {
  const ratio = (n: number): string => (Number.isFinite(n) ? `${n >= 10 ? n.toFixed(0) : n >= 0.1 ? n.toFixed(2) : n.toPrecision(2)}x` : 'n/a');
  console.log('| function | system | items | seconds | items/s | vs Celery prefork | vs multiprocessing.Pool |');
  console.log('|---|---|---:|---:|---:|---:|---:|');
  for (const r of best) {
    const prefork = rate(best.find((b) => b.fn === r.fn && b.system === 'Celery prefork'));
    const pool = rate(best.find((b) => b.fn === r.fn && b.system === 'multiprocessing.Pool'));
    console.log(
      `| ${r.fn} | ${r.system} | ${r.items.toLocaleString('en-US')} | ${r.seconds.toFixed(3)} | ${Math.round(rate(r)).toLocaleString('en-US')} | ${ratio(rate(r) / prefork)} | ${ratio(rate(r) / pool)} |`,
    );
  }
  const find = (fn: Fn, system: System): number => rate(best.find((b) => b.fn === fn && b.system === system));
  const noopVsCelery = find('noop', 'taskbatch stdio') / find('noop', 'Celery prefork');
  const cpuVsPool = find('cpu_1ms', 'taskbatch stdio') / find('cpu_1ms', 'multiprocessing.Pool');
  console.log('');
  console.log(`Target 1, no-op throughput >= 20x Celery prefork (pool 2): ${ratio(noopVsCelery)}, ${noopVsCelery >= 20 ? 'met' : 'NOT met'}`);
  console.log(`Target 2, 1 ms function >= 0.9 of multiprocessing.Pool (2 processes): ${cpuVsPool.toFixed(2)}, ${cpuVsPool >= 0.9 ? 'met' : 'NOT met'}`);
}

async function main(): Promise<void> {
  ensureCelery();
  const celeryVersion = execFileSync(PYTHON, ['-c', 'import celery, sys; print(celery.__version__, sys.version.split()[0])'], { encoding: 'utf8' }).trim();
  const redis = await startBenchRedis();
  const address = `${redis.server.host}:${redis.server.port}`;
  log(`redis-server ${redis.version} on ${address}; celery and python ${celeryVersion}; ${machineLine()}`);
  const runs: Run[] = [];
  try {
    for (let round = 0; round < ROUNDS; round++) {
      for (const fn of FUNCTIONS) for (const system of SYSTEMS) runs.push(await runOne(address, fn, system));
    }
  } finally {
    await redis.stop();
  }
  const best = FUNCTIONS.flatMap((fn) => SYSTEMS.map((system) => runs.filter((r) => r.fn === fn && r.system === system).reduce((a, b) => (b.items / b.seconds > a.items / a.seconds ? b : a))));
  console.log(`Best of ${ROUNDS} run(s) each, pool size ${POOL_SIZE}; celery and python ${celeryVersion}; redis-server ${redis.version}; ${machineLine()}\n`);
  printResults(best);
}

await main();
