import { Redis } from 'ioredis';
import { BatchQueue, type Claim } from '../../queue/index.js';
import { startRedisServer, type RedisServer } from '../../localcluster/redis-server.js';
import { sleep, uniqueBatch } from '../support/batches.js';

let server: RedisServer;
const clients: Redis[] = [];

beforeAll(async () => {
  server = await startRedisServer();
});
afterAll(async () => {
  for (const c of clients) c.disconnect();
  await server.stop();
});

function client(): Redis {
  const c = new Redis(server.port, server.host);
  clients.push(c);
  return c;
}

test('concurrent claimers on separate connections never hold the same item at once', async () => {
  const ref = uniqueBatch();
  const producer = new BatchQueue(client(), ref);
  await producer.create();
  const total = 5000;
  await producer.enqueueMany(Array.from({ length: total }, (_, i) => ({ id: `i${i}`, data: i })));
  await producer.close();

  const held = new Map<string, string>(); // id -> holder
  const completedBy = new Map<string, string>();
  let overlaps = 0;
  const consumers = Array.from({ length: 8 }, (_, n) => {
    const q = new BatchQueue(client(), ref);
    const me = `c${n}`;
    return (async () => {
      for (;;) {
        const { items } = await q.claim(1 + (n % 4) * 20, 30_000);
        if (items.length === 0) {
          if ((await q.snapshot()).complete) return;
          await sleep(5);
          continue;
        }
        for (const c of items) {
          if (held.has(c.id)) overlaps++;
          held.set(c.id, me);
        }
        await sleep(Math.random() * 3);
        for (const c of items) held.delete(c.id);
        const { rejected } = await q.complete(items.map((claim) => ({ claim })));
        expect(rejected).toEqual([]);
        for (const c of items) {
          expect(completedBy.has(c.id)).toBe(false);
          completedBy.set(c.id, me);
        }
      }
    })();
  });
  await Promise.all(consumers);
  expect(overlaps).toBe(0);
  expect(completedBy.size).toBe(total);
  const s = await producer.snapshot();
  expect(s).toMatchObject({ total, succeeded: total, pending: 0, running: 0, retries: 0, complete: true });
  // More than one consumer did real work.
  expect(new Set(completedBy.values()).size).toBeGreaterThan(1);
});

test('a claimer that dies loses its items to another claimer, and its late completion is rejected', async () => {
  const ref = uniqueBatch();
  const dying = new BatchQueue(client(), ref);
  await dying.create({ maxAttempts: 3 });
  await dying.enqueueMany(Array.from({ length: 20 }, (_, i) => ({ id: `d${i}`, data: i })));
  const lost: Claim[] = (await dying.claim(10, 300)).items;
  expect(lost).toHaveLength(10);
  // The dying claimer stops renewing. Another claimer takes everything, including its 10
  // items once their lease lapses.
  const survivor = new BatchQueue(client(), ref);
  const taken: Claim[] = [];
  const deadline = Date.now() + 5000;
  while (taken.length < 20 && Date.now() < deadline) {
    taken.push(...(await survivor.claim(20, 30_000)).items);
    if (taken.length < 20) await sleep(50);
  }
  expect(taken.map((c) => c.id).sort()).toEqual(Array.from({ length: 20 }, (_, i) => `d${i}`).sort());
  const retried = taken
    .filter((c) => c.attempt === 2)
    .map((c) => c.id)
    .sort();
  expect(retried).toEqual(lost.map((c) => c.id).sort());
  // The "dead" claimer wakes up and tries to complete: rejected, nothing recorded.
  const late = await dying.complete(lost.map((claim) => ({ claim, result: 'stale' })));
  expect(late).toEqual({ completed: 0, rejected: lost.map((c) => c.token) });
  expect((await dying.renew(lost, 1000)).lost).toHaveLength(10);
  await survivor.complete(taken.map((claim) => ({ claim, result: 'fresh' })));
  const s = await survivor.snapshot();
  expect(s).toMatchObject({ succeeded: 20, retries: 10, running: 0, failed: 0 });
  const results = await survivor.results(0, 100);
  expect(results.every((r) => r.result === 'fresh')).toBe(true);
});
