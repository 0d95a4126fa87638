import { jest } from '@jest/globals';
import { Redis } from 'ioredis';
import { startRedisServer, type RedisServer } from '../../localcluster/redis-server.js';
import { BatchQueue, InvalidArgumentError, type BatchSnapshot } from '../../queue/index.js';
import { uniqueBatch } from '../support/batches.js';

// A claim reply is bounded in bytes (claim.lua's ARGV[6]): one claim of many large items must
// not make Redis build, nor the worker buffer, n × payload bytes at once. The budget counts each
// item's payload plus its "<token>:<id>" member; the item that would cross it is not taken,
// except as the first (a single item larger than the budget is claimed alone).

jest.setTimeout(120_000);

const MiB = 1024 * 1024;
/** Item data whose JSON is exactly 1 MiB (a string: its two quotes included). */
const ONE_MIB_DATA = 'x'.repeat(MiB - 2);

let server: RedisServer;
let redis: Redis;

beforeAll(async () => {
  server = await startRedisServer();
  redis = new Redis(server.port, server.host);
});
afterAll(async () => {
  redis.disconnect();
  await server.stop();
});

async function countersMatch(q: BatchQueue): Promise<BatchSnapshot> {
  const s = await q.snapshot();
  expect({ pending: s.pending, running: s.running }).toEqual({ pending: await redis.llen(q.keys.pending), running: await redis.zcard(q.keys.running) });
  expect(s.total).toBe(s.pending + s.delayed + s.running + s.succeeded + s.failed);
  return s;
}

test('50 items of 1 MiB, n = 50, budget 4 MiB: the reply carries 3 (a 4th would cross), the other 47 stay pending in order', async () => {
  const q = new BatchQueue(redis, uniqueBatch('budget'));
  await q.create();
  const ids = Array.from({ length: 50 }, (_, i) => `item-${i + 1}`);
  await q.enqueueMany(ids.map((id) => ({ id, data: ONE_MIB_DATA })));

  const first = await q.claim(50, 10_000, { maxBytes: 4 * MiB });
  // 3 × (1 MiB + member) fits; a 4th would make 4 MiB + members, over the budget.
  expect(first.items.map((c) => c.id)).toEqual(['item-1', 'item-2', 'item-3']);
  expect(first.items.every((c) => c.payload.length === MiB)).toBe(true);
  expect(first.leftByBudget).toBe(47);
  expect(await redis.lrange(q.keys.pending, 0, -1)).toEqual(ids.slice(3));
  expect(await countersMatch(q)).toMatchObject({ total: 50, pending: 47, running: 3 });

  // The next claim continues in queue order, and leases are real (renewable, completable).
  const second = await q.claim(50, 10_000, { maxBytes: 4 * MiB });
  expect(second.items.map((c) => c.id)).toEqual(['item-4', 'item-5', 'item-6']);
  expect((await q.renew([...first.items, ...second.items], 10_000)).lost).toEqual([]);
  expect(await q.complete(first.items.map((claim) => ({ claim })))).toEqual({ completed: 3, rejected: [] });
  expect(await countersMatch(q)).toMatchObject({ pending: 44, running: 3, succeeded: 3 });

  // Without a binding budget, n still bounds the count (the default budget is 8 MiB: 7 items here).
  const third = await q.claim(2, 10_000, { maxBytes: 64 * MiB });
  expect(third.items.map((c) => c.id)).toEqual(['item-7', 'item-8']);
  expect(third.leftByBudget).toBe(0);
  const byDefault = await q.claim(50, 10_000);
  expect(byDefault.items).toHaveLength(7);
  expect(byDefault.items[0]?.id).toBe('item-9');
  expect(await countersMatch(q)).toMatchObject({ pending: 35, running: 12, succeeded: 3 });
});

test('a 6 MiB item is claimed alone under a 4 MiB budget; the small item behind it waits for the next claim', async () => {
  const q = new BatchQueue(redis, uniqueBatch('budget'), { limits: { maxPayloadBytes: 8 * MiB } });
  await q.create();
  await q.enqueueMany([
    { id: 'big', data: 'y'.repeat(6 * MiB) },
    { id: 'small', data: 1 },
  ]);
  const first = await q.claim(10, 10_000, { maxBytes: 4 * MiB });
  expect(first.items.map((c) => c.id)).toEqual(['big']);
  expect(first.items[0]?.payload.length).toBe(6 * MiB + 2);
  expect(first.leftByBudget).toBe(1);
  expect(await countersMatch(q)).toMatchObject({ pending: 1, running: 1 });
  const second = await q.claim(10, 10_000, { maxBytes: 4 * MiB });
  expect(second.items.map((c) => c.id)).toEqual(['small']);
  expect(second.leftByBudget).toBe(0);
  expect(await countersMatch(q)).toMatchObject({ pending: 0, running: 2 });
});

test('items reclaimed and promoted in the same call count against the budget too', async () => {
  const q = new BatchQueue(redis, uniqueBatch('budget'));
  await q.create({ backoff: { initialMs: 0, maxMs: 0, jitter: 0 } });
  await q.enqueueMany(Array.from({ length: 4 }, (_, i) => ({ id: `r-${i + 1}`, data: ONE_MIB_DATA })));
  // All four leased briefly, then their leases lapse: the next claim reclaims them to pending first.
  const leased = await q.claim(4, 100, { maxBytes: 64 * MiB });
  expect(leased.items).toHaveLength(4);
  await new Promise((r) => setTimeout(r, 250));
  const again = await q.claim(4, 10_000, { maxBytes: 2 * MiB + 100 });
  expect(again.items.map((c) => [c.id, c.attempt])).toEqual([
    ['r-1', 2],
    ['r-2', 2],
  ]);
  expect(again.leftByBudget).toBe(2);
  expect(await countersMatch(q)).toMatchObject({ pending: 2, running: 2, retries: 4 });
});

test('the budget is validated, naming the batch and the option', async () => {
  const q = new BatchQueue(redis, uniqueBatch('budget'));
  await q.create();
  await expect(q.claim(1, 1000, { maxBytes: 0 })).rejects.toThrow(InvalidArgumentError);
  await expect(q.claim(1, 1000, { maxBytes: 0.5 })).rejects.toThrow(/claim maxBytes must be an integer between 1 and 536870912, got 0.5/);
});
