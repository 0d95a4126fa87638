import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { jest } from '@jest/globals';
import { BatchQueue, connectRedis, ReplicaNotAcknowledgedError, type Durability, type RedisClient } from '../../queue/index.js';
import { connect } from '../../sdk/index.js';
import { checkItems, emptyFaultLog, formatReport, type ItemCheckReport } from '../support/item-checker.js';
import { startSentinelGroup, type SentinelGroup } from '../support/redis-sentinel.js';
import { soakItems } from '../support/soak-run.js';
import { spawnWorker, uniqueName, workerEnv, type SpawnedWorker } from '../support/worker-harness.js';

// Durability across a failover: a primary, one replica and three sentinels (real processes on
// loopback); real worker processes find the primary through the sentinels. Mid-batch the primary
// is SIGKILLed; the sentinels promote the replica, the workers follow it, the old primary comes
// back empty and is made a replica of the new one. Then every item is classified from the
// execution journal and Redis's final state (test/support/item-checker.ts).

jest.setTimeout(240_000);

const JOURNALED = fileURLToPath(new URL('../fixtures/journaled-handler.js', import.meta.url));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let group: SentinelGroup;
beforeAll(async () => {
  group = await startSentinelGroup();
});
afterAll(async () => {
  await group?.stop();
});

function sentinelClient(g: SentinelGroup): RedisClient {
  const redis = connectRedis({
    url: `redis://${g.masterName}`,
    sentinel: { addresses: g.sentinels, masterName: g.masterName },
    redisOptions: { retryStrategy: () => 100 },
  });
  redis.on('error', () => undefined);
  return redis;
}

interface FailoverRun {
  report: ItemCheckReport;
  completed: boolean;
  oldPort: number;
  newPort: number;
  acknowledgedBeforeKill: number;
}

async function runFailover(g: SentinelGroup, durability: Durability, items: number): Promise<FailoverRun> {
  const redis = sentinelClient(g);
  const journalDir = mkdtempSync(join(tmpdir(), 'tb-failover-journal-'));
  const fleet: SpawnedWorker[] = [];
  const faults = emptyFaultLog();
  try {
    const name = uniqueName('failover');
    const queue = new BatchQueue(redis, { namespace: 'test', name }, { durability });
    await queue.create({ maxAttempts: 20, backoff: { initialMs: 10, factor: 1, maxMs: 10, jitter: 0 } });
    const inputs = soakItems({ items, itemMs: [5, 40] });
    await queue.enqueueMany(inputs);
    await queue.close();
    const started = Date.now();
    for (let i = 0; i < 3; i++) {
      const id = uniqueName('fo');
      fleet.push(
        spawnWorker(
          workerEnv('', name, JSON.stringify({ module: JOURNALED, export: 'journaled' }), {
            TASKBATCH_REDIS_SENTINELS: g.sentinels.map((s) => `${s.host}:${s.port}`).join(','),
            TASKBATCH_REDIS_SENTINEL_MASTER: g.masterName,
            TASKBATCH_REDIS_DURABILITY: durability,
            TASKBATCH_WORKER_ID: id,
            TASKBATCH_POOL_MODE: 'async',
            TASKBATCH_POOL_SIZE: '16',
            TASKBATCH_LEASE_SECONDS: '3',
            TASKBATCH_METRICS_PORT: 'off',
            SOAK_JOURNAL_DIR: journalDir,
          }),
        ),
      );
    }

    // A third of the batch committed, then the primary dies.
    let acknowledgedBeforeKill = 0;
    for (;;) {
      const s = await queue.snapshot();
      if (s.succeeded >= items / 3) {
        acknowledgedBeforeKill = s.succeeded;
        break;
      }
      if (Date.now() - started > 60_000) throw new Error(`the batch did not get a third done in 60 s: ${JSON.stringify(s)}`);
      await sleep(20);
    }
    const old = await g.primary();
    const from = Date.now();
    await old.kill();
    const newPort = await g.waitForFailover(old.port);
    // Back empty (no persistence); the sentinels make it a replica of the new primary, which
    // replicated writes need (no replica: every WAIT fails, and the workers wait and retry).
    await g.rejoin(old);
    await g.waitForReplicas(1, 60_000);
    faults.restarts.push({ from, to: Date.now() });
    process.stdout.write(`[failover] ${durability}: killed primary ${old.port} at ${acknowledgedBeforeKill} committed; ${newPort} promoted; old one a replica after ${Date.now() - from} ms\n`);

    let completed = false;
    let lastShown = 0;
    while (Date.now() - started < 150_000) {
      const s = await queue.snapshot().catch((err: Error) => err.message);
      if (typeof s === 'object' && s.complete) {
        completed = true;
        break;
      }
      if (Date.now() - lastShown > 5000) {
        lastShown = Date.now();
        process.stdout.write(`[failover] ${durability}: ${JSON.stringify(s)} (client ${redis.status})\n`);
      }
      await sleep(200);
    }
    if (!completed) {
      // What the workers said, for the post-mortem: each warning or error once, with a count.
      const said = new Map<string, number>();
      for (const w of fleet)
        for (const l of w.logs)
          if (l.level === 'warn' || l.level === 'error') said.set(`${l.level} ${l.msg} ${String(l.error ?? '')}`, (said.get(`${l.level} ${l.msg} ${String(l.error ?? '')}`) ?? 0) + 1);
      process.stdout.write(`[failover] the batch did not complete; worker warnings:\n${[...said].map(([m, n]) => `  ${n} x ${m}`).join('\n')}\n`);
    }
    const elapsedMs = Date.now() - started;
    const until = Date.now() + 15_000;
    while (fleet.some((w) => w.proc.exitCode === null && w.proc.signalCode === null) && Date.now() < until) await sleep(100);
    for (const w of fleet) {
      if (w.proc.exitCode === null && w.proc.signalCode === null) {
        w.kill('SIGKILL');
        await w.exited;
      }
      for (const l of w.logs) {
        if (l.msg === 'Lost the lease of an item; stopped it') faults.leaseLost.push({ worker: String(l.worker), item: String(l.item), attempt: Number(l.attempt) });
        else if (l.msg === 'Discarded results of items whose lease was lost' && Array.isArray(l.items))
          for (const item of l.items) faults.leaseLost.push({ worker: String(l.worker), item: String(item) });
      }
    }
    const report = await checkItems({ queue, itemIds: inputs.map((i) => i.id as string), journalDir, faults, elapsedMs });
    return { report, completed, oldPort: old.port, newPort, acknowledgedBeforeKill };
  } finally {
    for (const w of fleet) w.kill('SIGKILL');
    redis.disconnect();
    rmSync(journalDir, { recursive: true, force: true });
  }
}

test("durability 'replicated' through Sentinel: the primary SIGKILLed mid-batch, the replica promoted; no acknowledged item lost, none committed twice", async () => {
  const run = await runFailover(group, 'replicated', 3000);
  console.log(`${formatReport(run.report)}\n\nfailover: primary ${run.oldPort} killed at ${run.acknowledgedBeforeKill} committed, ${run.newPort} promoted`);
  expect(run.newPort).not.toBe(run.oldPort);
  expect(run.completed).toBe(true);
  expect(run.report.lost).toEqual([]);
  expect(run.report.committedTwiceDetail).toEqual([]);
  expect(run.report.phantomCommits).toEqual([]);
  expect(run.report.staleCommits).toEqual([]);
  expect(run.report).toMatchObject({ items: 3000, lostCount: 0, committedTwice: 0, unfinished: 0, deadLettered: 0 });
  expect(run.report.counters).toMatchObject({ total: 3000, succeeded: 3000, results: 3000 });
});

test("durability 'replicated' fails a state change that no replica acknowledges, naming the setting; the change stays on the primary and a retry is safe", async () => {
  const redis = sentinelClient(group);
  const primary = await group.primary();
  const replica = group.nodes.find((n) => n !== primary);
  try {
    const queue = new BatchQueue(redis, { namespace: 'test', name: uniqueName('noreplica') }, { durability: 'replicated', replicaTimeoutMs: 200 });
    await queue.create();
    await queue.enqueue({ id: 'a', data: 1 });
    // The replica stops taking the stream: the primary has no one to wait for.
    await replica?.kill();
    const err = await queue.enqueue({ id: 'b', data: 2 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ReplicaNotAcknowledgedError);
    expect((err as Error).message).toContain("durability 'replicated'");
    expect((err as Error).message).toContain('enqueue');
    // Applied on the primary nonetheless; a 'local' client sees it, and retrying adds nothing.
    const local = new BatchQueue(redis, queue.ref);
    expect((await local.snapshot()).total).toBe(2);
    if (replica) await group.rejoin(replica);
    await group.waitForReplicas(1, 60_000);
    expect(await queue.enqueue({ id: 'b', data: 2 })).toMatchObject({ added: 0, duplicates: 1 });
  } finally {
    redis.disconnect();
  }
});

test('the SDK finds the primary through the sentinels, and its durability option reaches the queue: a submit no replica acknowledges fails', async () => {
  const client = await connect({ redis: { sentinel: { addresses: group.sentinels, masterName: group.masterName } }, namespace: 'test', durability: 'replicated', replicaTimeoutMs: 200 });
  const primary = await group.primary();
  const replica = group.nodes.find((n) => n !== primary);
  try {
    const b = client.batch(uniqueName('sdk'));
    await b.create();
    expect(await b.submit({ n: 1 }, { id: 'a' })).toEqual({ id: 'a', duplicate: false });
    await replica?.kill();
    await expect(b.submit({ n: 2 }, { id: 'b' })).rejects.toThrow(ReplicaNotAcknowledgedError);
    if (replica) await group.rejoin(replica);
    await group.waitForReplicas(1, 60_000);
    expect(await b.submit({ n: 2 }, { id: 'b' })).toEqual({ id: 'b', duplicate: true });
    expect((await b.status()).counts).toMatchObject({ total: 2, pending: 2 });
  } finally {
    await client.close();
  }
});
