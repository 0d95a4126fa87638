// The wake-up protocol on a real redis-server: which transitions push tokens on a batch's wake
// list, how many, when claim empties it, and how a claim pipelined behind a BLPOP behaves.
import { Redis } from 'ioredis';
import { BatchQueue, workerWakeKey, type ClaimWait } from '../../queue/index.js';
import { heartbeat, leave, requestDrain } from '../../queue/presence.js';
import { startRedisServer, type RedisServer } from '../../localcluster/redis-server.js';
import { sleep, uniqueBatch } from '../support/batches.js';

let server: RedisServer;
let redis: Redis;
let blocking: Redis;

beforeAll(async () => {
  server = await startRedisServer();
  redis = new Redis(server.port, server.host);
  blocking = new Redis(server.port, server.host);
});
afterAll(async () => {
  redis.disconnect();
  blocking.disconnect();
  await server.stop();
});

async function newQueue(): Promise<BatchQueue> {
  const q = new BatchQueue(redis, uniqueBatch('wake'));
  await q.create({ maxAttempts: 3, backoff: { initialMs: 200, maxMs: 200, jitter: 0 } });
  return q;
}

const tokens = (q: BatchQueue): Promise<number> => redis.llen(q.keys.wake);
const wait = (workerId: string, timeoutMs: number): ClaimWait => ({ client: blocking, workerId, timeoutMs });
const report = { inflight: 0, running: 0, capacity: 1, mode: 'async', draining: false, startedAt: 0, version: 'test' };

test('enqueue pushes one token per new pending item, at most 32; claim tops up while items remain and empties the list once none does', async () => {
  const q = await newQueue();
  await q.enqueue({ data: 1 });
  expect(await tokens(q)).toBe(1);
  await q.enqueueMany(Array.from({ length: 99 }, (_, i) => ({ data: i })));
  expect(await tokens(q)).toBe(32);
  // Tokens consumed by blocked workers are topped up by the claims that follow.
  await redis.ltrim(q.keys.wake, 1, 0);
  await q.claim(90, 10_000);
  expect(await tokens(q)).toBe(10);
  await q.claim(90, 10_000);
  expect(await tokens(q)).toBe(0);
  // A duplicate (nothing new pending) pushes nothing.
  await q.enqueue({ id: 'x', data: 1 });
  await q.claim(1, 10_000);
  await q.enqueue({ id: 'x', data: 1 });
  expect(await tokens(q)).toBe(0);
});

test('a delayed item or a retry pushes one token (a worker learns the due time); reclaim promotes due items, wakes for them and returns the next times', async () => {
  const q = await newQueue();
  await q.enqueue({ data: 'later', delayMs: 300 });
  expect(await tokens(q)).toBe(1);
  const empty = await q.claim(1, 10_000);
  expect(empty.items).toHaveLength(0);
  expect(empty.nextDueMs).toBeGreaterThan(0);
  expect(empty.nextDueMs).toBeLessThanOrEqual(300);
  expect(empty.nextExpiryMs).toBe(-1);
  expect(await tokens(q)).toBe(0);
  await sleep(empty.nextDueMs + 1);
  const swept = await q.reclaimExpired();
  expect(swept).toMatchObject({ reclaimed: 0, promoted: 1, nextDueMs: -1, nextExpiryMs: -1 });
  expect(await tokens(q)).toBe(1);
  const c = (await q.claim(1, 10_000)).items[0]!;
  const failed = await q.fail([{ claim: c, error: { name: 'E', message: 'again' } }]);
  expect(failed.retried).toBe(1);
  expect(await tokens(q)).toBe(1);
});

test('claim reports when the earliest lease expires', async () => {
  const q = await newQueue();
  await q.enqueueMany([{ data: 1 }, { data: 2 }]);
  await q.claim(1, 5000);
  const second = await q.claim(1, 60_000);
  expect(second.nextExpiryMs).toBeGreaterThan(4000);
  expect(second.nextExpiryMs).toBeLessThanOrEqual(5000);
});

test('the last outcome of a closed batch, or closing a drained one, wakes every registered worker (one token each, plus one) and claim keeps them', async () => {
  const q = await newQueue();
  for (const id of ['w1', 'w2', 'w3']) await heartbeat(q, id, report);
  await q.enqueueMany([{ data: 1 }, { data: 2 }]);
  const [a, b] = (await q.claim(2, 10_000)).items;
  await q.close();
  expect(await tokens(q)).toBe(0);
  await q.complete([{ claim: a! }]);
  expect(await tokens(q)).toBe(0);
  await q.fail([{ claim: b!, error: { name: 'E', message: 'no' }, retryable: false }]);
  expect(await tokens(q)).toBe(4);
  // A worker that claims in a done batch leaves the tokens for the others.
  await redis.lpop(q.keys.wake);
  const last = await q.claim(1, 10_000);
  expect(last.closed).toBe(true);
  expect(await tokens(q)).toBe(4);

  const drained = await newQueue();
  await heartbeat(drained, 'w1', report);
  await drained.close();
  expect(await tokens(drained)).toBe(2);
});

test('release and replay wake for the items they make pending', async () => {
  const q = await newQueue();
  await q.enqueueMany([{ data: 1 }, { data: 2 }]);
  const held = (await q.claim(2, 10_000)).items;
  expect(await tokens(q)).toBe(0);
  await q.release(held);
  expect(await tokens(q)).toBe(2);
  const again = (await q.claim(2, 10_000)).items;
  await q.fail(again.map((claim) => ({ claim, error: { name: 'E', message: 'no' }, retryable: false })));
  await redis.ltrim(q.keys.wake, 1, 0);
  expect(await q.replayAll()).toBe(2);
  expect(await tokens(q)).toBe(2);
});

test('a claim waiting for a wake-up runs the moment an item is enqueued, and returns empty at its timeout', async () => {
  const q = await newQueue();
  const timedOut = await q.claim(1, 10_000, { wait: wait('w1', 200) });
  expect(timedOut).toMatchObject({ items: [], wokenBy: 'timeout' });
  const waiting = q.claim(4, 10_000, { wait: wait('w1', 60_000) });
  await sleep(100);
  await new BatchQueue(redis, q.ref).enqueue({ id: 'call', data: 'now' });
  const woken = await waiting;
  expect(woken.wokenBy).toBe('batch');
  expect(woken.items.map((c) => c.id)).toEqual(['call']);
  expect(await tokens(q)).toBe(0);
});

test("a worker's own wake list ends its wait at once (wake-worker on shutdown, presence-drain), and leaving deletes it", async () => {
  const q = await newQueue();
  await heartbeat(q, 'w1', report);
  const waiting = q.claim(1, 10_000, { wait: wait('w1', 60_000) });
  await sleep(100);
  await q.wakeWorker('w1');
  await expect(waiting).resolves.toMatchObject({ items: [], wokenBy: 'worker' });

  const draining = q.claim(1, 10_000, { wait: wait('w1', 60_000) });
  await sleep(100);
  expect(await requestDrain(q, 'w1')).toBe(true);
  await expect(draining).resolves.toMatchObject({ wokenBy: 'worker' });
  await requestDrain(q, 'w1');
  expect(await redis.llen(workerWakeKey(q.keys, 'w1'))).toBe(1);
  expect(await redis.pttl(workerWakeKey(q.keys, 'w1'))).toBeGreaterThan(0);
  await leave(q, 'w1');
  expect(await redis.exists(workerWakeKey(q.keys, 'w1'))).toBe(0);
  // A worker that is not registered (gone, or its batch purged) is not written for: nothing is
  // left behind for a purge to miss.
  expect(await q.wakeWorker('w1')).toBe(false);
  expect(await requestDrain(q, 'w1')).toBe(false);
  expect(await redis.exists(workerWakeKey(q.keys, 'w1'))).toBe(0);
});

test('purge deletes the wake list with the rest of the batch', async () => {
  const q = await newQueue();
  await q.enqueue({ data: 1 });
  expect(await redis.exists(q.keys.wake)).toBe(1);
  await q.purge();
  expect(await redis.exists(q.keys.wake)).toBe(0);
});
