// Throughput that grows with workers (issue 14): W separate worker processes (`node
// dist/worker/main.js`, W = 1, 2, 4, 8) in each pool mode drain one batch of no-op items on one
// redis-server; then three batches, two async workers each, first on one redis-server and then on
// a real 3-primary Redis Cluster with each batch's hash tag on its own primary.
//   npx tsc -b && node dist/bench/worker-scale.js [--items 1000000] [--quick] [--no-cluster] [--cluster-only] [--no-plot] [--plot-only]
// --quick: 100,000 items, W = 1 and 4 only. --plot-only reprints the table and redraws the PNG from the
// results file. Writes bench/worker-scale-results.json and
// bench/worker-scale.png (matplotlib, see bench/worker-scale-plot.ts), prints a Markdown table.
//
// Per run: wall time from the first worker's "Started worker" log line (its executors are ready
// and it claims next) to the bench seeing the batch complete (BatchQueue.snapshot() every 50 ms);
// CPU over that same window from /proc: each redis-server, the workers' process trees (executor
// child processes included), this process, and the rest of the machine (/proc/stat minus those).
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { BatchQueue, batchKeys, connectRedis, type RedisClient } from '../queue/index.js';
import { startRedisServer } from '../localcluster/redis-server.js';
import { startRedisCluster } from '../test/support/redis-cluster.js';
import { spawnWorker, type SpawnedWorker } from '../test/support/worker-harness.js';
import { ceilingOf, cpuShares, pct, sampleCpu, WorkerCpuTracker, type CpuShares } from './worker-scale-cpu.js';
import { plotWorkerScale } from './worker-scale-plot.js';
import { intOption, log, machineLine, parseInfo, sleep } from './queue-lib.js';

const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const ITEMS = intOption(argv, 'items', 'BENCH_SCALE_ITEMS', quick ? 100_000 : 1_000_000);
const WORKER_COUNTS = quick ? [1, 4] : [1, 2, 4, 8];
const MODES = ['async', 'thread', 'process'] as const;
type Mode = (typeof MODES)[number];
// The worker's own defaults (worker/config.ts): 16 concurrent calls in async mode, one thread or
// child process per CPU otherwise (2 here). Stated, not left implicit, so the table says what ran.
const POOL_SIZE: Record<Mode, number> = { async: 16, thread: 2, process: 2 };
const WORKERS_PER_BATCH_IN_THREE = 2;
const NAMESPACE = 'bench';
const RESULTS = fileURLToPath(new URL('../../bench/worker-scale-results.json', import.meta.url));
const PNG = fileURLToPath(new URL('../../bench/worker-scale.png', import.meta.url));
const PLOT_SCRIPT = fileURLToPath(new URL('../../bench/plot_worker_scale.py', import.meta.url));

type RunKind = 'single' | 'three-standalone' | 'three-cluster';

interface RunResult {
  kind: RunKind;
  mode: Mode;
  poolSize: number;
  workers: number;
  batches: number;
  items: number;
  /** From the first "Started worker" line to the batch(es) seen complete. */
  seconds: number;
  /** From spawning the workers (their start-up included) to complete. */
  secondsFromSpawn: number;
  itemsPerSec: number;
  redisUsPerItem: number[];
  workerUsPerItem: number;
  ceiling: string;
  cpu: CpuShares;
  loadavg: string;
}

interface Batch {
  queue: BatchQueue;
  name: string;
}

async function seed(client: RedisClient, name: string, items: number): Promise<Batch> {
  const queue = new BatchQueue(client, { namespace: NAMESPACE, name });
  await queue.purge();
  await queue.create({ maxAttempts: 1 });
  const chunk = 10_000;
  for (let i = 0; i < items; i += chunk) await queue.enqueueMany(Array.from({ length: Math.min(chunk, items - i) }, () => ({ data: null })));
  await queue.close();
  return { queue, name };
}

function startWorkers(url: string, cluster: boolean, batch: string, mode: Mode, count: number): SpawnedWorker[] {
  return Array.from({ length: count }, (_, i) =>
    spawnWorker({
      TASKBATCH_REDIS_URL: url,
      ...(cluster ? { TASKBATCH_REDIS_CLUSTER: 'true' } : {}),
      TASKBATCH_NAMESPACE: NAMESPACE,
      TASKBATCH_BATCH: batch,
      TASKBATCH_HANDLER: 'noop',
      TASKBATCH_POOL_MODE: mode,
      TASKBATCH_POOL_SIZE: String(POOL_SIZE[mode]),
      TASKBATCH_WORKER_ID: `${batch}-w${i}`,
      TASKBATCH_METRICS_PORT: 'off',
      // The worker's defaults, instead of the test harness's short test settings.
      TASKBATCH_HEARTBEAT_SECONDS: '5',
      TASKBATCH_PRESENCE_STALE_SECONDS: '30',
      TASKBATCH_IDLE_POLL_MS: '1000',
    }),
  );
}

/** Polls the batches' counts every 50 ms until all are complete, calling onPoll each time. */
async function allComplete(batches: readonly Batch[], items: number, onPoll: () => void): Promise<void> {
  const deadline = Date.now() + Math.max(300_000, items * 2);
  for (;;) {
    const snaps = await Promise.all(batches.map((b) => b.queue.snapshot()));
    if (snaps.every((s) => s.complete)) {
      const failed = snaps.reduce((n, s) => n + s.failed, 0);
      const succeeded = snaps.reduce((n, s) => n + s.succeeded, 0);
      if (failed > 0 || succeeded !== items) throw new Error(`batches ${batches.map((b) => b.name).join(', ')} completed with ${succeeded} succeeded and ${failed} failed of ${items}`);
      return;
    }
    if (Date.now() > deadline) throw new Error(`batches ${batches.map((b) => b.name).join(', ')} not complete after ${Math.round((deadline - Date.now()) / 1000)} s: ${JSON.stringify(snaps)}`);
    onPoll();
    await sleep(50);
  }
}

async function stopWorkers(workers: readonly SpawnedWorker[]): Promise<void> {
  const timer = setTimeout(() => {
    for (const w of workers) w.kill('SIGKILL');
  }, 60_000);
  const exits = await Promise.all(workers.map((w) => w.exited));
  clearTimeout(timer);
  exits.forEach((e, i) => {
    if (e.code !== 0) log(`worker ${i} exited with ${JSON.stringify(e)}: ${workers[i]?.stderr().slice(-500)}`);
  });
}

interface Scenario {
  kind: RunKind;
  mode: Mode;
  url: string;
  cluster: boolean;
  redisPids: number[];
  /** One entry per batch: the client that owns its slot (any client for a standalone Redis). */
  clients: RedisClient[];
  names: string[];
  itemsPerBatch: number;
  workersPerBatch: number;
}

async function run(s: Scenario): Promise<RunResult> {
  const items = s.itemsPerBatch * s.names.length;
  log(`${s.kind} ${s.mode} x${s.workersPerBatch * s.names.length}: seeding ${items} items`);
  const batches = await Promise.all(s.names.map((name, i) => seed(s.clients[i] as RedisClient, name, s.itemsPerBatch)));
  const spawnedAt = performance.now();
  const workers = s.names.flatMap((name) => startWorkers(s.url, s.cluster, name, s.mode, s.workersPerBatch));
  try {
    // The window opens when the first worker is ready to claim; CPU is sampled right then.
    await Promise.any(workers.map((w) => w.waitForLog((l) => l.msg === 'Started worker', 60_000)));
    const tracker = new WorkerCpuTracker(workers.map((w) => w.pid));
    const before = sampleCpu(s.redisPids, tracker);
    await allComplete(batches, items, () => tracker.refresh());
    const after = sampleCpu(s.redisPids, tracker);
    const cpu = cpuShares(before, after);
    const result: RunResult = {
      kind: s.kind,
      mode: s.mode,
      poolSize: POOL_SIZE[s.mode],
      workers: workers.length,
      batches: batches.length,
      items,
      seconds: +cpu.seconds.toFixed(3),
      secondsFromSpawn: +((after.atMs - spawnedAt) / 1000).toFixed(3),
      itemsPerSec: Math.round(items / cpu.seconds),
      redisUsPerItem: cpu.redisUsTotal.map((us) => +(us / items).toFixed(2)),
      workerUsPerItem: +(cpu.workerUsTotal / items).toFixed(2),
      ceiling: ceilingOf(cpu),
      cpu,
      loadavg: machineLine()
        .replace(/.*loadavg: /, '')
        .replace(/; node.*/, ''),
    };
    log(
      `${s.kind} ${s.mode} x${result.workers}: ${result.itemsPerSec} items/s in ${result.seconds} s; cores: redis ${cpu.redisCores.map((c) => c.toFixed(2)).join('/')}, workers ${cpu.workerCores.toFixed(2)}, bench ${cpu.benchCores.toFixed(2)}, other ${cpu.otherCores.toFixed(2)}; ${result.ceiling}`,
    );
    return result;
  } finally {
    await stopWorkers(workers);
    await Promise.all(batches.map((b) => b.queue.purge()));
  }
}

async function redisPid(client: Redis): Promise<number> {
  return Number(parseInfo(await client.info('server')).process_id);
}

/** Batch names whose hash tags land on three different primaries, checked with CLUSTER KEYSLOT and CLUSTER SLOTS. */
async function namesOnDistinctPrimaries(admin: Redis, primaries: number): Promise<{ names: string[]; ports: number[] }> {
  const slots = await admin.cluster('SLOTS');
  const portOf = (slot: number): number => {
    const owner = slots.find(([lo, hi]) => slot >= lo && slot <= hi)?.[2];
    if (!owner) throw new Error(`slot ${slot} has no owner in CLUSTER SLOTS`);
    return owner[1];
  };
  const names: string[] = [];
  const ports: number[] = [];
  for (let i = 0; names.length < primaries; i++) {
    const name = `scale-cluster-${i}`;
    const slot = Number(await admin.cluster('KEYSLOT', batchKeys({ namespace: NAMESPACE, name }).meta));
    const port = portOf(slot);
    if (!ports.includes(port)) {
      names.push(name);
      ports.push(port);
      log(`batch ${name}: slot ${slot} on the primary at port ${port}`);
    }
  }
  return { names, ports };
}

/**
 * Items/s at which the redis-server(s) would be at one core each, from the measured CPU per item:
 * the Redis ceiling on a machine with cores to spare. With one server per batch (the cluster),
 * each primary serves only its own batch's items.
 */
function redisBoundItemsPerSec(r: RunResult): number {
  const perServer = r.cpu.redisUsTotal.length === 1 ? r.items : r.items / r.cpu.redisUsTotal.length;
  return r.cpu.redisUsTotal.reduce((sum, us) => sum + (perServer * 1e6) / us, 0);
}

function row(r: RunResult): string {
  const c = r.cpu;
  const redis = c.redisCores.map(pct).join(' / ');
  const redisUs = r.redisUsPerItem.map((x) => x.toFixed(1)).join(' / ');
  const what = r.kind === 'single' ? '1 batch, 1 Redis' : r.kind === 'three-standalone' ? '3 batches, 1 Redis' : '3 batches, 3-primary Cluster';
  return `| ${what} | ${r.mode} (${r.poolSize}) | ${r.workers} | ${r.itemsPerSec.toLocaleString('en')} | ${r.seconds.toFixed(1)} s | ${redisUs} | ${r.workerUsPerItem.toFixed(1)} | ${redis} | ${c.workerCores.toFixed(2)} | ${c.otherCores.toFixed(2)} | ${c.machineBusyCores.toFixed(2)} / ${c.machineCores} | ${r.ceiling} | ${Math.round(redisBoundItemsPerSec(r) / 1000)}k |`;
}

async function main(): Promise<void> {
  if (argv.includes('--plot-only')) {
    report(JSON.parse(readFileSync(RESULTS, 'utf8')) as Results);
    plotWorkerScale(PLOT_SCRIPT, RESULTS, PNG);
    log(`wrote ${PNG} from ${RESULTS}`);
    return;
  }
  const machineAtStart = machineLine();
  log(machineAtStart);
  const runs: RunResult[] = [];
  const server = await startRedisServer();
  const admin = new Redis(server.port, server.host);
  try {
    const pid = await redisPid(admin);
    const standalone = { url: server.url, cluster: false, redisPids: [pid] };
    if (!argv.includes('--cluster-only')) {
      for (const workers of WORKER_COUNTS) {
        for (const mode of MODES) {
          runs.push(await run({ ...standalone, kind: 'single', mode, clients: [admin], names: [`scale-${mode}-${workers}`], itemsPerBatch: ITEMS, workersPerBatch: workers }));
        }
      }
    }
    if (!argv.includes('--no-cluster')) {
      const names = ['scale-three-0', 'scale-three-1', 'scale-three-2'];
      const perBatch = Math.round(ITEMS / 3);
      runs.push(await run({ ...standalone, kind: 'three-standalone', mode: 'async', clients: [admin, admin, admin], names, itemsPerBatch: perBatch, workersPerBatch: WORKERS_PER_BATCH_IN_THREE }));
    }
  } finally {
    admin.disconnect();
    await server.stop();
  }

  if (!argv.includes('--no-cluster')) {
    const cluster = await startRedisCluster(3);
    const nodeClients = cluster.nodes.map((n) => new Redis(n.port, n.host));
    const client = connectRedis({ url: cluster.seedUrl, cluster: true });
    try {
      const { names, ports } = await namesOnDistinctPrimaries(nodeClients[0] as Redis, 3);
      // redisPids in batch order, so "Redis CPU" column i is the primary that holds batch i.
      const pids = await Promise.all(ports.map((port) => redisPid(nodeClients[cluster.nodes.findIndex((n) => n.port === port)] as Redis)));
      runs.push(
        await run({
          kind: 'three-cluster',
          mode: 'async',
          url: cluster.seedUrl,
          cluster: true,
          redisPids: pids,
          clients: [client, client, client],
          names,
          itemsPerBatch: Math.round(ITEMS / 3),
          workersPerBatch: WORKERS_PER_BATCH_IN_THREE,
        }),
      );
    } finally {
      client.disconnect();
      for (const c of nodeClients) c.disconnect();
      await cluster.stop();
    }
  }

  const results: Results = {
    items: ITEMS,
    quick,
    machine: machineAtStart.replace(/; \/proc.*/, ''),
    machineCores: runs[0]?.cpu.machineCores ?? 0,
    machineAtStart,
    machineAtEnd: machineLine(),
    poolSizes: POOL_SIZE,
    runs,
  };
  writeFileSync(RESULTS, `${JSON.stringify(results, null, 2)}\n`);
  log(`wrote ${RESULTS}`);
  report(results);
  if (!argv.includes('--no-plot')) {
    plotWorkerScale(PLOT_SCRIPT, RESULTS, PNG);
    log(`wrote ${PNG}`);
  }
}

interface Results {
  items: number;
  quick: boolean;
  machine: string;
  machineCores: number;
  machineAtStart: string;
  machineAtEnd: string;
  poolSizes: Record<Mode, number>;
  runs: RunResult[];
}

function report(results: Results): void {
  console.log(`\n${results.machineAtStart}\n`);
  console.log(
    '| run | mode (pool size) | workers | items/s | time | Redis CPU µs/item | worker CPU µs/item | redis-server CPU | workers, cores | other load, cores | machine busy | ceiling | Redis-bound items/s |',
  );
  console.log('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|');
  for (const r of results.runs) console.log(row(r));
  console.log(`\n${results.machineAtEnd}`);
}

await main();
process.exit(0);
