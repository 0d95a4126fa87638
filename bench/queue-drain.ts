// Queue-protocol throughput: taskbatch's BatchQueue vs BullMQ on the same redis-server, in the same run.
//
//   node --expose-gc dist/bench/queue-drain.js [--n 100000] [--rounds 5] [--modes serial,split,prefetch] [--no-bullmq] [--profile]
//   (env: BENCH_N, BENCH_ROUNDS, BENCH_MODES, BENCH_SKIP_BULLMQ=1, BENCH_PROFILE=1)
//   --profile adds INFO commandstats (per Redis command, incl. those run inside scripts) of the last round's drains.
//
// Enqueue: taskbatch enqueueMany(N) (500 items per Lua script, pipelined) with and without caller ids,
//   vs BullMQ addBulk in chunks of 500 (awaited one after another, and all issued at once), with and without jobId.
// Drain: N no-op items enqueued beforehand, wall time from the first claim to the last ack.
//   taskbatch modes (claim lease 30 s, every payload JSON.parse'd and passed to an async no-op handler,
//   one complete() per claimed batch):
//     serial   1 consumer: claim(100) -> run the batch -> complete(batch) -> claim ... (<= 100 leased)
//     split    2 consumers on the one connection, each claim(50) -> run -> complete  (<= 100 leased)
//     prefetch 1 consumer, claim(100) with the next claim sent before the current batch's complete (<= 200 leased)
//   BullMQ: one Worker, concurrency 100, in-process async no-op processor, removeOnComplete {count: 0}
//     (= removeOnComplete: true: completed jobs are deleted, so memory stays bounded like ours), other options default.
// CPU: this Node process from process.cpuUsage() (utime+stime, all threads), redis-server from /proc/<pid>/task/*/schedstat.
// Rounds alternate which system goes first; figures are medians over rounds, ratios are medians of per-round ratios.
import { Queue, Worker } from 'bullmq';
import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { BatchQueue, connectRedis, type Claim, type ItemInput, type RedisClient } from '../queue/index.js';
import {
  boolOption,
  fmt1,
  fmtInt,
  fmtRatio,
  intOption,
  log,
  machineBusyUs,
  machineLine,
  measure,
  median,
  parseInfo,
  printTable,
  procCpuUs,
  startBenchRedis,
  type BenchRedis,
  type Measured,
} from './queue-lib.js';

const argv = process.argv.slice(2);
const N = intOption(argv, 'n', 'BENCH_N', 100_000);
const ROUNDS = Math.max(1, intOption(argv, 'rounds', 'BENCH_ROUNDS', 5));
const WARMUP_N = Math.min(N, 5_000);
const LEASE_MS = 30_000;
const IN_FLIGHT = 100;
const ENQUEUE_CHUNK = 500;
const ALL_MODES = ['serial', 'split', 'prefetch'] as const;
type Mode = (typeof ALL_MODES)[number];
const modesArg = (() => {
  const i = argv.findIndex((a) => a === '--modes' || a.startsWith('--modes='));
  if (i < 0) return process.env.BENCH_MODES;
  const a = argv[i] as string;
  return a.includes('=') ? a.slice(8) : argv[i + 1];
})();
const MODES: Mode[] = modesArg ? (modesArg.split(',').map((m) => m.trim()) as Mode[]) : [...ALL_MODES];
for (const m of MODES) if (!ALL_MODES.includes(m)) throw new Error(`unknown mode ${m}; use ${ALL_MODES.join(',')}`);
const WITH_BULLMQ = !argv.includes('--no-bullmq') && !boolOption(argv, 'skip-bullmq', 'BENCH_SKIP_BULLMQ');
const HEADLINE: Mode = MODES.includes('serial') ? 'serial' : (MODES[0] as Mode);
const PROFILE = boolOption(argv, 'profile', 'BENCH_PROFILE');

interface Sample {
  label: string;
  items: number;
  m: Measured<unknown>;
}

async function sampled<T>(redis: BenchRedis, label: string, items: number, fn: () => Promise<T>): Promise<{ s: Sample; value: T }> {
  const m = await measure(redis.pid, fn);
  return { s: { label, items, m }, value: m.value as T };
}

// ---------------------------------------------------------------- taskbatch

function tbItems(n: number, ids: boolean): ItemInput[] {
  const out: ItemInput[] = new Array(n);
  for (let i = 0; i < n; i++) out[i] = ids ? { id: `item-${i}`, data: { i } } : { data: { i } };
  return out;
}

let batchSeq = 0;
async function tbBatch(client: RedisClient): Promise<BatchQueue> {
  const q = new BatchQueue(client, { namespace: 'bench', name: `drain-${++batchSeq}` });
  await q.create();
  return q;
}

const noop = async (_data: unknown): Promise<void> => {};

async function runBatch(items: readonly Claim[]): Promise<void> {
  await Promise.all(items.map((c) => noop(JSON.parse(c.payload))));
}

async function tbDrain(q: BatchQueue, mode: Mode): Promise<number> {
  let done = 0;
  const consumer = async (count: number): Promise<void> => {
    for (;;) {
      const { items } = await q.claim(count, LEASE_MS);
      if (items.length === 0) return;
      await runBatch(items);
      const r = await q.complete(items.map((claim) => ({ claim })));
      done += r.completed;
    }
  };
  if (mode === 'serial') await consumer(IN_FLIGHT);
  else if (mode === 'split') await Promise.all([consumer(IN_FLIGHT / 2), consumer(IN_FLIGHT / 2)]);
  else {
    let next = q.claim(IN_FLIGHT, LEASE_MS);
    for (;;) {
      const { items } = await next;
      if (items.length === 0) break;
      next = q.claim(IN_FLIGHT, LEASE_MS); // one batch ahead: sent before this batch is acked
      await runBatch(items);
      const r = await q.complete(items.map((claim) => ({ claim })));
      done += r.completed;
    }
  }
  return done;
}

// ---------------------------------------------------------------- BullMQ

type BullJob = { name: string; data: { i: number }; opts?: { jobId: string } };

function bullJobs(n: number, ids: boolean): BullJob[] {
  const out: BullJob[] = new Array(n);
  for (let i = 0; i < n; i++) out[i] = ids ? { name: 'noop', data: { i }, opts: { jobId: `item-${i}` } } : { name: 'noop', data: { i } };
  return out;
}

async function bullAdd(queue: Queue, jobs: readonly BullJob[], concurrent: boolean): Promise<number> {
  const chunks: BullJob[][] = [];
  for (let i = 0; i < jobs.length; i += ENQUEUE_CHUNK) chunks.push(jobs.slice(i, i + ENQUEUE_CHUNK));
  if (concurrent) return (await Promise.all(chunks.map((c) => queue.addBulk(c)))).reduce((a, r) => a + r.length, 0);
  let added = 0;
  for (const c of chunks) added += (await queue.addBulk(c)).length;
  return added;
}

let bullSeq = 0;
function bullConnection(redis: BenchRedis): { host: string; port: number; maxRetriesPerRequest: null } {
  return { host: redis.server.host, port: redis.server.port, maxRetriesPerRequest: null };
}

async function bullDrainPrepared(redis: BenchRedis, name: string, n: number): Promise<{ run: () => Promise<number>; close: () => Promise<void> }> {
  const worker = new Worker(name, async () => undefined, {
    connection: bullConnection(redis),
    concurrency: IN_FLIGHT,
    removeOnComplete: { count: 0 },
    autorun: false,
  });
  let failed = 0;
  worker.on('failed', () => failed++);
  worker.on('error', (e) => log(`bullmq worker error: ${e.message}`));
  await worker.waitUntilReady();
  return {
    run: async () => {
      let done = 0;
      const finished = new Promise<void>((resolve) => {
        worker.on('completed', () => {
          if (++done === n) resolve();
        });
      });
      void worker.run();
      await finished;
      if (failed) throw new Error(`bullmq: ${failed} jobs failed`);
      return done;
    },
    close: () => worker.close(),
  };
}

// ---------------------------------------------------------------- rounds

/** INFO commandstats of the last round's drains (--profile): where redis-server's time goes. */
const profiles = new Map<string, { n: number; stats: Record<string, string> }>();

function printProfiles(): void {
  for (const [label, { n, stats }] of profiles) {
    const rows = Object.entries(stats)
      .map(([k, v]) => {
        const m = /calls=(\d+),usec=(\d+)/.exec(v);
        return { cmd: k.replace(/^cmdstat_/, ''), calls: Number(m?.[1] ?? 0), usec: Number(m?.[2] ?? 0) };
      })
      .filter((r) => r.cmd !== 'config|resetstat' && r.cmd !== 'info')
      .sort((x, y) => y.usec - x.usec);
    console.log(`\n${label}: INFO commandstats for ${fmtInt(n)} items (commands run inside scripts are listed too, and are part of evalsha's time)\n`);
    printTable(
      ['command', 'calls', 'calls/item', 'usec', 'usec/call', 'usec/item'],
      rows.map((r) => [r.cmd, fmtInt(r.calls), (r.calls / n).toFixed(3), fmtInt(r.usec), (r.usec / Math.max(1, r.calls)).toFixed(2), (r.usec / n).toFixed(3)]),
    );
  }
}

interface RoundResult {
  enqueue: Map<string, Sample>;
  drain: Map<string, Sample>;
}

async function tbRound(redis: BenchRedis, client: RedisClient, n: number, r: RoundResult): Promise<void> {
  for (const mode of MODES) {
    const q = await tbBatch(client);
    const items = tbItems(n, false);
    const e = await sampled(redis, 'taskbatch enqueueMany, generated ids', n, () => q.enqueueMany(items));
    if (e.value.added !== n) throw new Error(`taskbatch enqueued ${e.value.added} of ${n}`);
    if (!r.enqueue.has(e.s.label)) r.enqueue.set(e.s.label, e.s);
    if (PROFILE) await redis.admin.config('RESETSTAT');
    const d = await sampled(redis, `taskbatch ${mode}`, n, () => tbDrain(q, mode));
    if (PROFILE) profiles.set(`taskbatch ${mode}`, { n, stats: parseInfo(await redis.admin.info('commandstats')) });
    const snap = await q.snapshot();
    if (d.value !== n || snap.succeeded !== n || snap.pending + snap.running !== 0) {
      throw new Error(`taskbatch ${mode}: completed ${d.value}, snapshot ${JSON.stringify(snap)}`);
    }
    r.drain.set(d.s.label, d.s);
    await redis.admin.flushall('SYNC');
  }
  const q = await tbBatch(client);
  const items = tbItems(n, true);
  const e = await sampled(redis, 'taskbatch enqueueMany, caller ids', n, () => q.enqueueMany(items));
  if (e.value.added !== n) throw new Error(`taskbatch enqueued ${e.value.added} of ${n}`);
  r.enqueue.set(e.s.label, e.s);
  await redis.admin.flushall('SYNC');
}

async function bullRound(redis: BenchRedis, n: number, r: RoundResult): Promise<void> {
  const variants: [label: string, ids: boolean, concurrent: boolean, drain: boolean][] = [
    ['BullMQ addBulk 500/call, sequential', false, false, true],
    ['BullMQ addBulk 500/call, all at once', false, true, false],
    ['BullMQ addBulk 500/call, seq., jobId', true, false, false],
  ];
  for (const [label, ids, concurrent, drain] of variants) {
    const name = `bench-${++bullSeq}`;
    const queue = new Queue(name, { connection: bullConnection(redis) });
    await queue.waitUntilReady();
    const jobs = bullJobs(n, ids);
    const e = await sampled(redis, label, n, () => bullAdd(queue, jobs, concurrent));
    if (e.value !== n) throw new Error(`bullmq added ${e.value} of ${n}`);
    r.enqueue.set(label, e.s);
    if (drain) {
      const w = await bullDrainPrepared(redis, name, n);
      if (PROFILE) await redis.admin.config('RESETSTAT');
      const d = await sampled(redis, 'BullMQ Worker c=100', n, w.run);
      if (PROFILE) profiles.set('BullMQ Worker c=100', { n, stats: parseInfo(await redis.admin.info('commandstats')) });
      await w.close();
      const counts = await queue.getJobCounts('waiting', 'active', 'delayed', 'failed', 'completed');
      if (Object.values(counts).some((c) => c !== 0)) throw new Error(`bullmq left jobs behind: ${JSON.stringify(counts)}`);
      r.drain.set(d.s.label, d.s);
    }
    await queue.close();
    await redis.admin.flushall('SYNC');
  }
}

function perItem(s: Sample): { rate: number; node: number; redis: number; total: number } {
  const node = s.m.nodeCpuUs / s.items;
  const red = s.m.redisCpuUs / s.items;
  return { rate: s.items / (s.m.wallMs / 1000), node, redis: red, total: node + red };
}

function summarize(rounds: RoundResult[], kind: 'enqueue' | 'drain'): Map<string, { rate: number; node: number; redis: number; total: number; rates: number[] }> {
  const out = new Map<string, { rate: number; node: number; redis: number; total: number; rates: number[] }>();
  const labels = [...new Set(rounds.flatMap((r) => [...r[kind].keys()]))];
  for (const label of labels) {
    const ss = rounds.map((r) => r[kind].get(label)).filter((s): s is Sample => s !== undefined);
    const p = ss.map(perItem);
    out.set(label, {
      rate: median(p.map((x) => x.rate)),
      node: median(p.map((x) => x.node)),
      redis: median(p.map((x) => x.redis)),
      total: median(p.map((x) => x.total)),
      rates: p.map((x) => x.rate),
    });
  }
  return out;
}

/** Median over rounds of (a / b) for a per-item metric, pairing the samples of the same round. */
function pairedRatio(rounds: RoundResult[], kind: 'enqueue' | 'drain', a: string, b: string, metric: (s: Sample) => number): number {
  const rs: number[] = [];
  for (const r of rounds) {
    const sa = r[kind].get(a);
    const sb = r[kind].get(b);
    if (sa && sb) rs.push(metric(sa) / metric(sb));
  }
  return rs.length ? median(rs) : NaN;
}

async function main(): Promise<void> {
  const startedAt = new Date();
  console.log(`# Queue protocol benchmark: drain and enqueue, taskbatch vs BullMQ (${startedAt.toISOString()})`);
  console.log(`machine at start: ${machineLine()}`);
  const redis = await startBenchRedis();
  const bullVersion = (JSON.parse(readFileSync(new URL('../../node_modules/bullmq/package.json', import.meta.url), 'utf8')) as { version: string }).version;
  console.log(`redis-server ${redis.version} pid ${redis.pid} on ${redis.server.url} (no persistence); bullmq ${bullVersion}`);
  console.log(`N=${fmtInt(N)} items per run, ${ROUNDS} round(s), ${IN_FLIGHT} in flight, taskbatch modes: ${MODES.join(', ')}${WITH_BULLMQ ? '' : ' (BullMQ skipped)'}`);
  const client = connectRedis({ url: redis.server.url });
  try {
    log(`warm-up with ${WARMUP_N} items (not reported)`);
    const warm: RoundResult = { enqueue: new Map(), drain: new Map() };
    await tbRound(redis, client, WARMUP_N, warm);
    if (WITH_BULLMQ) await bullRound(redis, WARMUP_N, warm);

    const rounds: RoundResult[] = [];
    const roundLines: string[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const r: RoundResult = { enqueue: new Map(), drain: new Map() };
      const t0 = Date.now();
      const b0 = machineBusyUs();
      const own0 = process.cpuUsage();
      const redis0 = procCpuUs(redis.pid);
      profiles.clear(); // --profile prints the last round's
      if (i % 2 === 0 || !WITH_BULLMQ) {
        await tbRound(redis, client, N, r);
        if (WITH_BULLMQ) await bullRound(redis, N, r);
      } else {
        await bullRound(redis, N, r);
        await tbRound(redis, client, N, r);
      }
      rounds.push(r);
      const busy = machineBusyUs() - b0;
      const own = process.cpuUsage(own0);
      const ownCpu = own.user + own.system + procCpuUs(redis.pid) - redis0;
      const wall = Date.now() - t0;
      const others = Math.max(0, (100 * (busy - ownCpu)) / (wall * 1000 * cpus().length));
      const line = [...r.drain.entries()].map(([l, s]) => `${l.replace('taskbatch ', 'tb ').replace('BullMQ Worker c=100', 'BullMQ')} ${fmtInt(perItem(s).rate / 1000)}k/s`).join(', ');
      roundLines.push(
        `round ${i + 1}: ${i % 2 === 0 || !WITH_BULLMQ ? 'taskbatch first' : 'BullMQ first'}, ${(wall / 1000).toFixed(1)} s, ` +
          `other processes used ~${others.toFixed(0)}% of the machine (whole round), loadavg ${loadavg()
            .map((x) => x.toFixed(2))
            .join(' ')}; drain: ${line}`,
      );
      log(`round ${i + 1}/${ROUNDS} done in ${(wall / 1000).toFixed(1)} s`);
    }

    const drain = summarize(rounds, 'drain');
    const enq = summarize(rounds, 'enqueue');
    const bull = 'BullMQ Worker c=100';

    console.log('');
    for (const l of roundLines) console.log(l);
    console.log(`\n## Drain: ${fmtInt(N)} no-op items, ~${IN_FLIGHT} in flight (median of ${ROUNDS} round(s))\n`);
    printTable(
      ['system / mode', 'items/s', 'per round', 'node CPU-µs/item', 'redis CPU-µs/item', 'total CPU-µs/item'],
      [...drain.entries()].map(([label, v]) => [label, fmtInt(v.rate), v.rates.map((x) => fmtInt(x / 1000) + 'k').join(' '), fmt1(v.node), fmt1(v.redis), fmt1(v.total)]),
    );
    if (WITH_BULLMQ && drain.has(bull)) {
      console.log(`\nRatios vs BullMQ (median of per-round ratios; throughput: higher is better, CPU: BullMQ / taskbatch):\n`);
      const rows: string[][] = [];
      for (const mode of MODES) {
        const tb = `taskbatch ${mode}`;
        rows.push([
          tb + (mode === HEADLINE ? ' (headline)' : ''),
          fmtRatio(pairedRatio(rounds, 'drain', tb, bull, (s) => perItem(s).rate)),
          fmtRatio(pairedRatio(rounds, 'drain', bull, tb, (s) => perItem(s).node)),
          fmtRatio(pairedRatio(rounds, 'drain', bull, tb, (s) => perItem(s).redis)),
          fmtRatio(pairedRatio(rounds, 'drain', bull, tb, (s) => perItem(s).total)),
        ]);
      }
      printTable(['taskbatch mode', 'items/s ratio', 'node CPU ratio', 'redis CPU ratio', 'total CPU ratio'], rows);
      const thr = pairedRatio(rounds, 'drain', `taskbatch ${HEADLINE}`, bull, (s) => perItem(s).rate);
      const cpu = pairedRatio(rounds, 'drain', bull, `taskbatch ${HEADLINE}`, (s) => perItem(s).total);
      console.log(
        `\nTargets (headline mode "${HEADLINE}", <= ${IN_FLIGHT} leased): throughput >= 3x BullMQ: ${thr >= 3 ? 'MET' : 'MISSED'} (${fmtRatio(thr)}); ` +
          `CPU per item <= 1/4 of BullMQ's: ${cpu >= 4 ? 'MET' : 'MISSED'} (BullMQ uses ${fmtRatio(cpu)} as much)`,
      );
    }

    console.log(`\n## Enqueue (bulk): ${fmtInt(N)} items of {"i":n} (median of ${ROUNDS} round(s))\n`);
    printTable(
      ['system / call', 'items/s', 'per round', 'node CPU-µs/item', 'redis CPU-µs/item', 'total CPU-µs/item'],
      [...enq.entries()].map(([label, v]) => [label, fmtInt(v.rate), v.rates.map((x) => fmtInt(x / 1000) + 'k').join(' '), fmt1(v.node), fmt1(v.redis), fmt1(v.total)]),
    );
    if (WITH_BULLMQ) {
      const pairs: [string, string][] = [
        ['taskbatch enqueueMany, generated ids', 'BullMQ addBulk 500/call, sequential'],
        ['taskbatch enqueueMany, generated ids', 'BullMQ addBulk 500/call, all at once'],
        ['taskbatch enqueueMany, caller ids', 'BullMQ addBulk 500/call, seq., jobId'],
      ];
      console.log('');
      printTable(
        ['taskbatch vs BullMQ', 'items/s ratio', 'total CPU ratio'],
        pairs.map(([a, b]) => [
          `${a.replace('taskbatch enqueueMany, ', '')} vs ${b.replace('BullMQ addBulk 500/call, ', '')}`,
          fmtRatio(pairedRatio(rounds, 'enqueue', a, b, (s) => perItem(s).rate)),
          fmtRatio(pairedRatio(rounds, 'enqueue', b, a, (s) => perItem(s).total)),
        ]),
      );
    }
    if (PROFILE) printProfiles();
    console.log(`\nmachine at end: ${machineLine()}`);
  } finally {
    client.disconnect();
    await redis.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
