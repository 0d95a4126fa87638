// Queue-protocol memory: Redis bytes per queued item (taskbatch vs BullMQ), that a drained batch
// gives its payloads back, and that results live only within their TTL.
//
//   node --expose-gc dist/bench/queue-memory.js [--n 1000000] [--bull-n 1000000] [--results 10000]
//   (env: BENCH_MEM_N, BENCH_BULL_MEM_N, BENCH_RESULTS_N; --bull-n 0 skips BullMQ)
//
// Memory is INFO memory used_memory (bytes allocated by Redis, incl. allocator rounding; not RSS)
// on a private redis-server that holds nothing else, measured after the scripts are loaded.
import { Queue } from 'bullmq';
import { BatchQueue, connectRedis, type ItemInput, type RedisClient } from '../queue/index.js';
import { fmt1, fmtBytes, fmtInt, intOption, log, machineLine, printTable, sleep, startBenchRedis, usedMemory, type BenchRedis } from './queue-lib.js';

const argv = process.argv.slice(2);
const N = intOption(argv, 'n', 'BENCH_MEM_N', 1_000_000);
const BULL_N = intOption(argv, 'bull-n', 'BENCH_BULL_MEM_N', N);
const RESULTS_N = intOption(argv, 'results', 'BENCH_RESULTS_N', 10_000);
const SLICE = 100_000; // items per enqueueMany / addBulk loop step, to bound this process's memory
const LEASE_MS = 30_000;

let seq = 0;
async function newBatch(client: RedisClient, resultTtlSeconds?: number): Promise<BatchQueue> {
  const q = new BatchQueue(client, { namespace: 'bench', name: `mem-${++seq}` });
  await q.create(resultTtlSeconds === undefined ? {} : { resultTtlSeconds });
  return q;
}

async function fill(q: BatchQueue, n: number, ids: boolean): Promise<void> {
  for (let start = 0; start < n; start += SLICE) {
    const items: ItemInput[] = [];
    for (let i = start; i < Math.min(n, start + SLICE); i++) items.push(ids ? { id: `item-${i}`, data: { i } } : { data: { i } });
    const r = await q.enqueueMany(items);
    if (r.added !== items.length) throw new Error(`enqueued ${r.added} of ${items.length}`);
  }
}

/** Claims 100 at a time and completes each batch (optionally with a result per item); returns items done. */
async function drain(q: BatchQueue, limit = Infinity, result?: (id: string) => unknown): Promise<number> {
  let done = 0;
  while (done < limit) {
    const { items } = await q.claim(Math.min(100, limit - done), LEASE_MS);
    if (items.length === 0) break;
    const r = await q.complete(items.map((claim) => (result ? { claim, result: result(claim.id) } : { claim })));
    done += r.completed;
  }
  return done;
}

interface KeyStat {
  key: string;
  type: string;
  len: number;
}

async function keyStats(redis: BenchRedis, q: BatchQueue): Promise<KeyStat[]> {
  const out: KeyStat[] = [];
  for (const key of Object.values(q.keys)) {
    const type = await redis.admin.type(key);
    if (type === 'none') continue;
    const len =
      type === 'hash'
        ? await redis.admin.hlen(key)
        : type === 'list'
          ? await redis.admin.llen(key)
          : type === 'set'
            ? await redis.admin.scard(key)
            : type === 'zset'
              ? await redis.admin.zcard(key)
              : 1;
    out.push({ key: key.slice(key.lastIndexOf(':') + 1), type, len });
  }
  return out;
}

function keysLine(ks: KeyStat[]): string {
  return ks.map((k) => `${k.key}(${k.type})=${fmtInt(k.len)}`).join(' ');
}

async function main(): Promise<void> {
  console.log(`# Queue protocol benchmark: Redis memory (${new Date().toISOString()})`);
  console.log(`machine at start: ${machineLine()}`);
  const redis = await startBenchRedis();
  console.log(`redis-server ${redis.version} pid ${redis.pid} on ${redis.server.url} (no persistence); used_memory = INFO memory, after lazy frees`);
  const client = connectRedis({ url: redis.server.url });
  const rows: string[][] = [];
  try {
    // Load every script once, then start from an empty keyspace.
    {
      const q = await newBatch(client);
      await fill(q, 1000, true);
      await drain(q, Infinity, (id) => ({ id }));
      await redis.admin.flushall('SYNC');
    }

    // ------------------------------------------------------------ taskbatch, N queued items
    for (const ids of [false, true]) {
      const label = ids ? 'taskbatch, caller ids "item-<n>"' : 'taskbatch, generated ids';
      log(`${label}: enqueue ${fmtInt(N)}`);
      const q = await newBatch(client);
      const base = await usedMemory(redis.admin);
      const t0 = Date.now();
      await fill(q, N, ids);
      const fillS = (Date.now() - t0) / 1000;
      const full = await usedMemory(redis.admin);
      const fullKeys = await keyStats(redis, q);
      log(`${label}: drain ${fmtInt(N)}`);
      const t1 = Date.now();
      const done = await drain(q);
      const drainS = (Date.now() - t1) / 1000;
      if (done !== N) throw new Error(`drained ${done} of ${N}`);
      const after = await usedMemory(redis.admin);
      const afterKeys = await keyStats(redis, q);
      rows.push([label, fmtInt(N), fmtBytes(full - base), fmt1((full - base) / N), fmtBytes(after - base), fmt1((after - base) / N), `${fmt1(fillS)} s / ${fmt1(drainS)} s`]);
      console.log(`\n${label}:\n  queued:  ${keysLine(fullKeys)}\n  drained: ${keysLine(afterKeys)}`);
      await redis.admin.flushall('SYNC');
    }

    // ------------------------------------------------------------ BullMQ, BULL_N waiting jobs
    if (BULL_N > 0) {
      log(`BullMQ: addBulk ${fmtInt(BULL_N)}`);
      const queue = new Queue('mem', { connection: { host: redis.server.host, port: redis.server.port, maxRetriesPerRequest: null } });
      await queue.waitUntilReady();
      await queue.addBulk([{ name: 'noop', data: { i: -1 } }]); // load its scripts and create its meta keys
      await queue.drain();
      const base = await usedMemory(redis.admin);
      const t0 = Date.now();
      for (let start = 0; start < BULL_N; start += SLICE) {
        const end = Math.min(BULL_N, start + SLICE);
        for (let c = start; c < end; c += 500) {
          const jobs = [];
          for (let i = c; i < Math.min(end, c + 500); i++) jobs.push({ name: 'noop', data: { i } });
          await queue.addBulk(jobs);
        }
      }
      const fillS = (Date.now() - t0) / 1000;
      const full = await usedMemory(redis.admin);
      const waiting = await queue.getWaitingCount();
      rows.push([`BullMQ addBulk (waiting jobs)`, fmtInt(BULL_N), fmtBytes(full - base), fmt1((full - base) / BULL_N), 'not drained', '', `${fmt1(fillS)} s / -`]);
      console.log(`\nBullMQ: ${fmtInt(waiting)} waiting jobs; DBSIZE ${fmtInt(await redis.admin.dbsize())} (one hash per job)`);
      await queue.close();
      await redis.admin.flushall('SYNC');
    }

    console.log(`\n## Redis memory per queued item ({"i":n} payloads; used_memory delta from an empty batch)\n`);
    printTable(['queue', 'items', 'queued', 'bytes/item', 'left after drain', 'bytes/item left', 'fill / drain time'], rows);

    // ------------------------------------------------------------ results: stored only when given, kept only for their TTL
    console.log(`\n## Results store: only when given, trimmed after resultTtlSeconds\n`);
    const ttlS = 1;
    const q = await newBatch(client, ttlS);
    await fill(q, RESULTS_N * 3, false);
    const resultLines: string[][] = [];
    const state = async (step: string): Promise<void> => {
      const cutoff = Date.now() - ttlS * 1000;
      const [h, z, expired, items, bytesH, bytesZ] = await Promise.all([
        redis.admin.hlen(q.keys.results),
        redis.admin.zcard(q.keys.resultsIdx),
        redis.admin.zcount(q.keys.resultsIdx, '-inf', cutoff),
        redis.admin.hlen(q.keys.items),
        redis.admin.memory('USAGE', q.keys.results, 'SAMPLES', 0),
        redis.admin.memory('USAGE', q.keys.resultsIdx, 'SAMPLES', 0),
      ]);
      const listed = (await q.results(0, RESULTS_N * 3)).length;
      resultLines.push([step, fmtInt(h), fmtInt(z), fmtInt(expired), fmtInt(listed), fmtBytes(Number(bytesH ?? 0) + Number(bytesZ ?? 0)), fmtInt(items)]);
    };
    await state(`enqueued ${fmtInt(RESULTS_N * 3)} items (resultTtlSeconds=${ttlS})`);
    await drain(q, RESULTS_N);
    await state(`completed ${fmtInt(RESULTS_N)} without a result`);
    await drain(q, RESULTS_N, (id) => ({ id, ok: true }));
    await state(`completed ${fmtInt(RESULTS_N)} with a result ({"id","ok"})`);
    await sleep(ttlS * 1000 + 200);
    await state(`waited ${ttlS * 1000 + 200} ms (past the TTL), nothing else done`);
    await drain(q, 100, (id) => ({ id, ok: true }));
    await state('completed 100 more with a result (1 call)');
    const rest = RESULTS_N - 100;
    await drain(q, rest, (id) => ({ id, ok: true }));
    await state(`completed ${fmtInt(rest)} more with a result (${Math.ceil(rest / 100)} calls)`);
    await sleep(ttlS * 1000 + 200);
    await state(`waited ${ttlS * 1000 + 200} ms again; batch finished, no more completes`);
    const snap = await q.snapshot();
    printTable(['step', 'results', 'results-idx', 'older than TTL', 'listed by results()', 'MEMORY USAGE results+idx', 'payloads left'], resultLines);
    console.log(`\nbatch counters: total ${fmtInt(snap.total)}, succeeded ${fmtInt(snap.succeeded)}, pending ${snap.pending}, running ${snap.running}`);
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
