// Remote calls through the SDK's typed proxy, against Pyro5 and BullMQ in the same run: calls/s
// and round-trip latency (p50/p99) end to end — caller → Redis (enqueue) → a real worker process
// (claim, run, batched acknowledgement) → Redis (complete.lua announces the result) → caller —
// plus an idle worker's CPU and how soon an item added to an idle batch starts.
//   npm run build && node dist/bench/sdk-calls.js [--quick] [--idle-poll-ms N] [--pool-size 256]
//                                                 [--no-pyro5] [--no-bullmq]
// Prints Markdown tables (paste into bench/sdk.md). One redis-server and one worker process,
// started here; the client runs in this process. CPU is read from /proc.
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { connect } from '../sdk/index.js';
import { startRedisServer } from '../localcluster/redis-server.js';
import { spawnWorker } from '../test/support/worker-harness.js';
import { log, sleep, statCpuUs } from './queue-lib.js';
import { callersLabel, closedLoop, idleCpu, measureCalls, START_LATENCY_SCENARIO, startLatency, type CallRow, type IdleRow, type System } from './sdk-bench-lib.js';
import type * as BenchHandlers from './sdk-handlers.js';
import { ensurePyro5Venv, runBullmq, runPyro5, type PeerPlan, type PeerResult } from './sdk-peers.js';

const args = process.argv.slice(2);
const flag = (name: string): string | undefined => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const quick = args.includes('--quick');
/** Unset by default: the worker's own default (TASKBATCH_IDLE_POLL_MS: the longest an idle worker waits). */
const IDLE_POLL_MS = flag('idle-poll-ms');
const POOL_SIZE = Number(flag('pool-size') ?? 256);
const PLAN: PeerPlan = { callers: [1, 10, 100, 1000], seconds: quick ? 2 : 5, startReps: quick ? 100 : 200, idleSeconds: quick ? 3 : 10 };
const HANDLERS = fileURLToPath(new URL('./sdk-handlers.js', import.meta.url));

interface TaskbatchResult {
  rows: CallRow[];
  idle: IdleRow[];
  redisUrl: string;
  redisPid: number;
  redisVersion: string;
  stopRedis: () => Promise<void>;
}

async function runTaskbatch(): Promise<TaskbatchResult> {
  const server = await startRedisServer();
  const admin = new Redis(server.port, server.host);
  const info = await admin.info('server');
  const redisPid = Number(/process_id:(\d+)/.exec(info)?.[1]);
  const redisVersion = /redis_version:(\S+)/.exec(info)?.[1] ?? '?';
  const client = await connect({ redis: server.url, namespace: 'bench' });
  const name = 'math-service';
  await client.batch(name).create({ maxAttempts: 1 });
  // '' leaves a setting to the worker's default.
  const worker = spawnWorker({
    TASKBATCH_REDIS_URL: server.url,
    TASKBATCH_NAMESPACE: 'bench',
    TASKBATCH_BATCH: name,
    TASKBATCH_HANDLER: JSON.stringify({ module: HANDLERS, dispatch: 'fn' }),
    TASKBATCH_POOL_MODE: 'async',
    TASKBATCH_POOL_SIZE: String(POOL_SIZE),
    TASKBATCH_IDLE_POLL_MS: IDLE_POLL_MS ?? '',
    TASKBATCH_METRICS_PORT: 'off',
    TASKBATCH_LOG_LEVEL: 'warn',
    TASKBATCH_HEARTBEAT_SECONDS: '',
    TASKBATCH_PRESENCE_STALE_SECONDS: '',
  });
  const svc = client.proxy<typeof BenchHandlers>(name, { timeoutMs: 60_000 });
  const probe = { client: () => process.cpuUsage().user + process.cpuUsage().system, server: () => statCpuUs(worker.pid), redis: () => statCpuUs(redisPid) };
  const rows: CallRow[] = [];
  let idle: IdleRow[] = [];
  try {
    // Warm up: executors, JIT, connections.
    await Promise.all(Array.from({ length: 2000 }, (_, i) => svc.square(i)));
    // The floor: one Redis round trip from this process.
    rows.push(
      await measureCalls('taskbatch', 'Redis PING (floor: one round trip)', undefined, async (lat) => {
        const until = performance.now() + 1000;
        let n = 0;
        while (performance.now() < until) {
          const t = performance.now();
          await admin.ping();
          lat.push(performance.now() - t);
          n++;
        }
        return n;
      }),
    );
    for (const c of PLAN.callers)
      rows.push(
        await measureCalls(
          'taskbatch',
          callersLabel(c),
          probe,
          closedLoop((i) => svc.square(i), c, PLAN.seconds),
        ),
      );
    for (const n of [1000, 10_000]) {
      rows.push(
        await measureCalls('taskbatch', `burst: ${n.toLocaleString('en-US')} calls at once`, probe, async (lat) => {
          const t0 = performance.now();
          await Promise.all(Array.from({ length: n }, (_, i) => svc.square(i).then(() => lat.push(performance.now() - t0))));
          return n;
        }),
      );
    }
    // Let the last acknowledgements and the background clean-up of delivered calls finish.
    await sleep(1000);
    idle = await idleCpu('taskbatch', { 'taskbatch worker': worker.pid, 'redis-server': redisPid }, PLAN.idleSeconds);
    rows.push(
      await measureCalls(
        'taskbatch',
        START_LATENCY_SCENARIO,
        probe,
        startLatency(() => svc.startedAtNs(), PLAN.startReps),
      ),
    );
    // A longer quiet: the first call after 300 ms without any.
    const reps = quick ? 10 : 30;
    rows.push(
      await measureCalls('taskbatch', 'idle service: one call after 300 ms of quiet', probe, async (lat) => {
        for (let i = 0; i < reps; i++) {
          await sleep(300);
          const t = performance.now();
          await svc.square(i);
          lat.push(performance.now() - t);
        }
        return reps;
      }),
    );
  } finally {
    await client.close();
    worker.kill('SIGTERM');
    await worker.exited;
    admin.disconnect();
  }
  return { rows, idle, redisUrl: server.url, redisPid, redisVersion, stopRedis: () => server.stop() };
}

const f = (n: number | undefined, d = 2): string => (n !== undefined && Number.isFinite(n) ? n.toFixed(d) : '-');
const int = (n: number): string => Math.round(n).toLocaleString('en-US');

function printCallTable(rows: readonly CallRow[]): void {
  console.log('| scenario | system | calls | calls/s | p50 ms | p90 ms | p99 ms | max ms | CPU µs/call client / worker / redis |');
  console.log('|---|---|---:|---:|---:|---:|---:|---:|---|');
  // Grouped by scenario, in the order the scenarios first appear.
  const scenarios = [...new Set(rows.map((r) => r.scenario))];
  for (const s of scenarios) {
    for (const r of rows.filter((x) => x.scenario === s)) {
      console.log(`| ${r.scenario} | ${r.system} | ${int(r.calls)} | ${int(r.calls / r.seconds)} | ${f(r.p50)} | ${f(r.p90)} | ${f(r.p99)} | ${f(r.max, 1)} | ${r.cpu} |`);
    }
  }
}

interface Target {
  what: string;
  /** The figure of one system, or undefined when it was not measured. */
  figure: (s: System) => number | undefined;
  unit: string;
  met: (x: number) => boolean;
}

function printSummary(rows: readonly CallRow[], idle: readonly IdleRow[]): void {
  const row = (s: System, scenario: string): CallRow | undefined => rows.find((r) => r.system === s && r.scenario === scenario);
  const one = callersLabel(1);
  const many = callersLabel(1000);
  const workerIdle = (s: System): number | undefined => idle.find((r) => r.system === s && r.process !== 'redis-server')?.percentOfCore;
  const targets: Target[] = [
    { what: '1 caller, p50 ≤ 0.3 ms', figure: (s) => row(s, one)?.p50, unit: 'ms', met: (x) => x <= 0.3 },
    { what: '1 caller, p99 ≤ 1 ms', figure: (s) => row(s, one)?.p99, unit: 'ms', met: (x) => x <= 1 },
    { what: '1,000 callers, ≥ 100,000 calls/s', figure: (s) => ((r) => r && r.calls / r.seconds)(row(s, many)), unit: 'calls/s', met: (x) => x >= 100_000 },
    { what: '1,000 callers, p99 ≤ 20 ms', figure: (s) => row(s, many)?.p99, unit: 'ms', met: (x) => x <= 20 },
    { what: `idle worker (${PLAN.idleSeconds} s), < 1 % of a core`, figure: workerIdle, unit: '% of a core', met: (x) => x < 1 },
    { what: 'start latency on an idle worker, p50 ≤ 1 ms', figure: (s) => row(s, START_LATENCY_SCENARIO)?.p50, unit: 'ms', met: (x) => x <= 1 },
  ];
  const show = (x: number | undefined, unit: string): string => (x === undefined ? '-' : unit === 'calls/s' ? int(x) : f(x, unit === 'ms' ? 2 : 3));
  const ratio = (a: number | undefined, b: number | undefined): string => (a === undefined || b === undefined || b === 0 ? '-' : `${f(a / b)}×`);
  console.log('| target | unit | taskbatch | Pyro5 | BullMQ | taskbatch / Pyro5 | taskbatch / BullMQ | taskbatch meets it |');
  console.log('|---|---|---:|---:|---:|---:|---:|---|');
  for (const t of targets) {
    const tb = t.figure('taskbatch');
    const py = t.figure('Pyro5');
    const bm = t.figure('BullMQ');
    console.log(
      `| ${t.what} | ${t.unit} | ${show(tb, t.unit)} | ${show(py, t.unit)} | ${show(bm, t.unit)} | ${ratio(tb, py)} | ${ratio(tb, bm)} | ${tb === undefined ? '-' : t.met(tb) ? 'yes' : '**no**'} |`,
    );
  }
}

async function main(): Promise<void> {
  const t0 = performance.now();
  const loadBefore = loadavg();
  // Before anything is measured: creating the venv and installing Pyro5 (first run only) is heavy.
  const python = args.includes('--no-pyro5') ? undefined : ensurePyro5Venv();
  const tb = await runTaskbatch();
  const peers: PeerResult[] = [];
  try {
    if (!args.includes('--no-bullmq')) peers.push(await runBullmq(tb.redisUrl, tb.redisPid, POOL_SIZE, PLAN));
  } finally {
    await tb.stopRedis();
  }
  if (python) peers.push(await runPyro5(python, PLAN));
  const rows = [...tb.rows, ...peers.flatMap((p) => p.rows)];
  const idle = [...tb.idle, ...peers.flatMap((p) => p.idle)];
  log(`done in ${((performance.now() - t0) / 1000).toFixed(0)} s`);

  const loadAfter = loadavg();
  console.log(
    `\nMachine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}; Node ${process.version}; Redis ${tb.redisVersion}; loadavg (1/5/15 min) before ${loadBefore.map((x) => x.toFixed(2)).join(' ')}, after ${loadAfter.map((x) => x.toFixed(2)).join(' ')}`,
  );
  console.log(
    `taskbatch: 1 worker process, async pool ${POOL_SIZE}, TASKBATCH_IDLE_POLL_MS ${IDLE_POLL_MS ?? 'unset (worker default)'}, acks batched (100 items / 5 ms); handler bench/sdk-handlers.ts (square() of examples/handlers/math.ts); callers: the SDK proxy in the benchmark's process. ${PLAN.seconds} s per closed-loop run; start latency ${PLAN.startReps} items.`,
  );
  for (const p of peers) console.log(p.note);
  console.log('');
  printCallTable(rows);
  console.log('\nBurst rows: latency = time from the burst start until each call resolved. Start latency: from just before the call until the handler started, both read from CLOCK_MONOTONIC.\n');
  console.log('| idle for | system | process | % of one core |');
  console.log('|---:|---|---|---:|');
  for (const r of idle) console.log(`| ${f(r.seconds, 1)} s | ${r.system} | ${r.process} | ${f(r.percentOfCore, 3)} |`);
  console.log('');
  printSummary(rows, idle);
  console.log('\nRatios: taskbatch figure / peer figure (for latency and CPU, below 1 is better for taskbatch; for calls/s, above 1).');
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
