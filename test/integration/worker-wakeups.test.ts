import { jest } from '@jest/globals';
import { Cluster, Redis } from 'ioredis';
import { BatchQueue, type RedisClient } from '../../queue/index.js';
import { listWorkers, requestDrain } from '../../queue/presence.js';
import { startRedisCluster, type RedisClusterFixture } from '../support/redis-cluster.js';
import { fixture, httpGet, metricValue, spawnWorker, uniqueName, useWorkerRedis, waitFor, workerEnv, type SpawnedWorker } from '../support/worker-harness.js';

// Idle workers sleep until work arrives (docs/worker.md, "Waiting for work"): they block on the
// batch's wake list and claim when a writer pushes a token. Every worker here has a safety net
// of 10 minutes (TASKBATCH_IDLE_POLL_MS), far past each test's timeout: an item that waited for
// a poll instead of a wake-up would fail its test by timing out. Real worker processes against
// a real redis-server, and a real 3-primary Redis Cluster.

jest.setTimeout(60_000);

const SAFETY_NET = { TASKBATCH_IDLE_POLL_MS: '600000' };
const ctx = useWorkerRedis();

async function openBatch(redis: RedisClient, name = uniqueName('wake'), maxAttempts = 3): Promise<BatchQueue> {
  const q = new BatchQueue(redis, { namespace: 'test', name });
  await q.create({ maxAttempts, backoff: { initialMs: 0, maxMs: 1, jitter: 0 } });
  return q;
}

function idleWorker(url: string, q: BatchQueue, handler = fixture('startedAt'), extra: Record<string, string> = {}): SpawnedWorker {
  return ctx.track(spawnWorker(workerEnv(url, q.ref.name, handler, { TASKBATCH_POOL_MODE: 'async', TASKBATCH_POOL_SIZE: '4', ...SAFETY_NET, ...extra })));
}

async function claimCalls(w: SpawnedWorker): Promise<number> {
  const text = (await httpGet(`${await w.httpUrl()}/metrics`)).body;
  return metricValue(text, 'taskbatch_worker_claim_round_trips_total') ?? 0;
}

/** Clients blocked in a BLPOP, over the given Redis nodes. */
async function blockedClients(urls: readonly string[]): Promise<number> {
  let n = 0;
  for (const url of urls) {
    const admin = new Redis(url);
    try {
      n += Number(/blocked_clients:(\d+)/.exec(await admin.info('clients'))?.[1] ?? 0);
    } finally {
      admin.disconnect();
    }
  }
  return n;
}

/** Until `n` workers have made their first (empty) claim and are blocked waiting for a wake-up. */
async function blocked(n: number, urls: readonly string[] = [ctx.server.url]): Promise<void> {
  await waitFor(`${n} workers to wait for a wake-up`, async () => (await blockedClients(urls)) >= n);
}

test('an item added to an open batch runs at once on an idle worker, which makes no claim while it waits', async () => {
  const q = await openBatch(ctx.redis);
  const w = idleWorker(ctx.server.url, q);
  await blocked(1);
  const before = await claimCalls(w);
  await new Promise((r) => setTimeout(r, 1500));
  // Polling would have claimed again by now; a blocked worker has not.
  expect(await claimCalls(w)).toBe(before);
  for (let i = 0; i < 3; i++) {
    await q.enqueue({ id: `call-${i}`, data: {} });
    await waitFor(`item ${i} to succeed`, async () => (await q.snapshot()).succeeded === i + 1, 10_000);
  }
});

test('a delayed item starts when it falls due, never before, with every worker blocked', async () => {
  const q = await openBatch(ctx.redis);
  idleWorker(ctx.server.url, q);
  await blocked(1);
  const enqueuedAt = Date.now();
  await q.enqueue({ id: 'later', data: {}, delayMs: 1500 });
  await waitFor('the delayed item to succeed', async () => (await q.snapshot()).succeeded === 1, 15_000);
  const { at } = (await q.result('later'))!.result as { at: number };
  expect(at).toBeGreaterThanOrEqual(enqueuedAt + 1500);
});

test('a retry with backoff is run when due by a worker that was blocked', async () => {
  const q = new BatchQueue(ctx.redis, { namespace: 'test', name: uniqueName('retry') });
  await q.create({ maxAttempts: 3, backoff: { initialMs: 800, maxMs: 800, factor: 1, jitter: 0 } });
  idleWorker(ctx.server.url, q, fixture('failsUntilAttempt'));
  await q.enqueue({ id: 'flaky', data: { okOnAttempt: 2 } });
  await waitFor('the retried item to succeed', async () => (await q.snapshot()).succeeded === 1, 15_000);
  expect((await q.snapshot()).retries).toBe(1);
});

test("an idle worker reclaims a dead worker's item when its lease expires", async () => {
  const q = await openBatch(ctx.redis);
  const lease = { TASKBATCH_LEASE_SECONDS: '1' };
  const doomed = idleWorker(ctx.server.url, q, fixture('slow'), lease);
  await blocked(1);
  await q.enqueue({ id: 'orphan', data: { ms: 60_000 } });
  await waitFor('the item to be claimed', async () => (await q.snapshot()).running === 1);
  doomed.kill('SIGKILL');
  await doomed.exited;
  idleWorker(ctx.server.url, q, fixture('slow'), lease);
  await blocked(1);
  // The rescuer's first claim saw the lease; it wakes when it expires, and runs the item again.
  await waitFor('the orphan to run again', async () => (await q.snapshot()).retries === 1, 15_000);
});

test('a blocked worker stops at once on SIGTERM, on a drain request, and when its batch is closed and drained', async () => {
  const q = await openBatch(ctx.redis);
  const heartbeatRarely = { TASKBATCH_HEARTBEAT_SECONDS: '60', TASKBATCH_PRESENCE_STALE_SECONDS: '180' };
  const a = idleWorker(ctx.server.url, q, fixture('startedAt'), heartbeatRarely);
  const b = idleWorker(ctx.server.url, q, fixture('startedAt'), heartbeatRarely);
  const c = idleWorker(ctx.server.url, q, fixture('startedAt'), heartbeatRarely);
  const d = idleWorker(ctx.server.url, q, fixture('startedAt'), heartbeatRarely);
  await blocked(4);

  a.kill('SIGTERM');
  expect(await a.exited).toEqual({ code: 0, signal: null });

  // Its next heartbeat is a minute away: only the wake-up can start the drain now.
  const registered = await listWorkers(q, { staleMs: 180_000 });
  expect(registered).toHaveLength(3);
  await requestDrain(q, registered[0]!.id);
  await waitFor('one worker to drain', () => [b, c, d].filter((w) => w.logs.some((l) => l.msg === 'Received a drain request')).length === 1);

  await q.close();
  const exits = await Promise.all([b, c, d].map((w) => w.exited));
  expect(exits).toEqual([0, 0, 0].map((code) => ({ code, signal: null })));
  expect([b, c, d].filter((w) => w.logs.some((l) => l.msg === 'Batch is complete')).length).toBe(2);
});

describe('on a Redis Cluster', () => {
  let cluster: RedisClusterFixture;
  let client: Cluster;
  beforeAll(async () => {
    cluster = await startRedisCluster(3);
    client = new Cluster([{ host: cluster.nodes[0]!.host, port: cluster.nodes[0]!.port }]);
  });
  afterAll(async () => {
    client.disconnect();
    await cluster.stop();
  });

  test('idle workers on three batches (three slots) wake for new and delayed items', async () => {
    const queues = await Promise.all(['a', 'b', 'c'].map((s) => openBatch(client, uniqueName(`cl-${s}`))));
    for (const q of queues) idleWorker(cluster.seedUrl, q, fixture('startedAt'), { TASKBATCH_REDIS_CLUSTER: 'true' });
    await blocked(
      3,
      cluster.nodes.map((n) => n.url),
    );
    const t0 = Date.now();
    await Promise.all(
      queues.map((q) =>
        q.enqueueMany([
          { id: 'now', data: {} },
          { id: 'later', data: {}, delayMs: 1000 },
        ]),
      ),
    );
    for (const q of queues) await waitFor(`both items of ${q.ref.name}`, async () => (await q.snapshot()).succeeded === 2, 15_000);
    for (const q of queues) {
      const { at } = (await q.result('later'))!.result as { at: number };
      expect(at).toBeGreaterThanOrEqual(t0 + 1000);
    }
  });
});
