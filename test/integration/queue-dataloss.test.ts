import { Redis } from 'ioredis';
import { BatchQueue, BatchStateLostError, PROTOCOL_VERSION, ProtocolVersionError } from '../../queue/index.js';
import { startRedisServer, type RedisServer } from '../../localcluster/redis-server.js';
import { eventually, uniqueBatch } from '../support/batches.js';

let server: RedisServer;
let redis: Redis;
beforeAll(async () => {
  server = await startRedisServer();
  redis = new Redis(server.port, server.host, { maxRetriesPerRequest: null });
});
afterAll(async () => {
  redis.disconnect();
  await server.stop();
});

test('Redis restarted empty mid-batch is reported as lost state, not as an empty batch', async () => {
  const ref = uniqueBatch();
  const operator = new BatchQueue(redis, ref);
  const { epoch } = await operator.create();
  await operator.enqueueMany(Array.from({ length: 100 }, (_, i) => ({ data: i })));
  await operator.claim(10, 10_000);

  await server.restart();
  await eventually(async () => (await redis.ping()) === 'PONG', 10_000, 'reconnect');

  // The operator kept the epoch outside Redis: every call now fails loudly.
  const resumed = new BatchQueue(redis, ref, { expectedEpoch: epoch });
  await expect(resumed.snapshot()).rejects.toThrow(BatchStateLostError);
  await expect(resumed.snapshot()).rejects.toThrow(/batch test\/.*: batch state not found in Redis \(expected epoch /);
  await expect(resumed.claim(1, 1000)).rejects.toThrow(BatchStateLostError);
  await expect(resumed.enqueue({ data: 1 })).rejects.toThrow(BatchStateLostError);
  await expect(resumed.complete([{ claim: { token: '1:#1' } }])).rejects.toThrow(BatchStateLostError);
  // A client that never knew the epoch still learns the batch is gone (not "empty, complete").
  await expect(new BatchQueue(redis, ref).snapshot()).rejects.toThrow(BatchStateLostError);

  // Re-creating gives a new epoch; a client holding the old one keeps failing.
  const { epoch: fresh, created } = await new BatchQueue(redis, ref).create();
  expect(created).toBe(true);
  expect(fresh).not.toBe(epoch);
  await expect(resumed.snapshot()).rejects.toThrow(/epoch is .* but .* was expected/);
  expect((await new BatchQueue(redis, ref, { expectedEpoch: fresh }).snapshot()).total).toBe(0);
});

test('FLUSHALL is detected the same way', async () => {
  const ref = uniqueBatch();
  const q = new BatchQueue(redis, ref);
  await q.create();
  await redis.flushall();
  await expect(q.snapshot()).rejects.toThrow(BatchStateLostError);
});

test('a client of another protocol version fails loudly and changes nothing', async () => {
  const ref = uniqueBatch();
  const q = new BatchQueue(redis, ref);
  await q.create();
  await q.enqueue({ data: 1 });
  await redis.hset(q.keys.meta, 'v', '999');
  await expect(q.claim(1, 1000)).rejects.toThrow(ProtocolVersionError);
  await expect(q.claim(1, 1000)).rejects.toThrow(`queue protocol version 999 but this client speaks version ${PROTOCOL_VERSION}`);
  await expect(q.create()).rejects.toThrow(ProtocolVersionError);
  expect(await redis.llen(q.keys.pending)).toBe(1);
});

describe('partial loss: some keys gone while the meta hash survives', () => {
  async function batchWith(items: number): Promise<BatchQueue> {
    const q = new BatchQueue(redis, uniqueBatch('partial'));
    const { epoch } = await q.create();
    await q.enqueueMany(Array.from({ length: items }, (_, i) => ({ id: `i${i}`, data: { i } })));
    return new BatchQueue(redis, q.ref, { expectedEpoch: epoch });
  }

  test('a pending id whose payload is gone is refused, not handed to a handler as null, and nothing moves', async () => {
    const q = await batchWith(5);
    await redis.hdel(q.keys.items, 'i0');
    const err = await q.claim(5, 10_000).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(BatchStateLostError);
    expect((err as BatchStateLostError).partial).toBe(true);
    expect((err as Error).message).toMatch(/item i0 is pending but its payload is gone/);
    // The refusal changed nothing: the ids are still pending, none is running.
    expect(await redis.llen(q.keys.pending)).toBe(5);
    expect(await redis.zcard(q.keys.running)).toBe(0);
    await expect(q.snapshot()).rejects.toThrow(/the items key holds 4 payloads for 5 unfinished items/);
  });

  test.each([
    ['pending', 'the pending key holds 0 but the counters say 7'],
    ['running', 'the running key holds 0 but the counters say 3'],
  ])('losing the %s key is reported by every snapshot as partial loss', async (key, message) => {
    const q = await batchWith(10);
    await q.claim(3, 60_000);
    expect((await q.snapshot()).running).toBe(3);
    await redis.del(key === 'pending' ? q.keys.pending : q.keys.running);
    const err = await q.snapshot().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(BatchStateLostError);
    expect((err as BatchStateLostError).partial).toBe(true);
    expect((err as Error).message).toContain(message);
  });

  test('a lost payload is not hidden by the payloads dead letters keep', async () => {
    const q = await batchWith(4);
    const { items } = await q.claim(1, 60_000);
    await q.fail([{ claim: items[0]!, error: { name: 'E', message: 'x' }, retryable: false }]);
    expect(await q.snapshot()).toMatchObject({ failed: 1, pending: 3 });
    await redis.hdel(q.keys.items, 'i3');
    await expect(q.snapshot()).rejects.toThrow(/the items key holds 3 payloads for 3 unfinished items and 1 dead letters/);
  });

  test('losing the delayed key is reported too', async () => {
    const q = await batchWith(0);
    await q.enqueue({ id: 'later', data: 1, delayMs: 600_000 });
    expect((await q.snapshot()).delayed).toBe(1);
    await redis.del(q.keys.delayed);
    await expect(q.snapshot()).rejects.toThrow(/the delayed key holds 0 but the counters say 1/);
  });

  test('a real redis-server evicting keys (maxmemory-policy allkeys-random) is caught, not run on garbage', async () => {
    const small = await startRedisServer({ args: ['--maxmemory', '8mb', '--maxmemory-policy', 'allkeys-random'] });
    const client = new Redis(small.port, small.host, { maxRetriesPerRequest: null });
    try {
      const batches: BatchQueue[] = [];
      // Many small batches of 4 KiB payloads: 4 MiB of queue state, then filler until Redis evicts.
      for (let b = 0; b < 32; b++) {
        const q = new BatchQueue(client, uniqueBatch('evicted'));
        const { epoch } = await q.create();
        await q.enqueueMany(Array.from({ length: 32 }, (_, i) => ({ id: `i${i}`, data: 'x'.repeat(4096) })));
        batches.push(new BatchQueue(client, q.ref, { expectedEpoch: epoch }));
      }
      for (let i = 0; i < 64; i++) await client.set(`filler:${i}`, 'y'.repeat(100_000)).catch(() => undefined);
      const info = await client.info('stats');
      expect(Number(/evicted_keys:(\d+)/.exec(info)?.[1])).toBeGreaterThan(0);
      // Each batch is either intact, or wholly or partly lost: never a snapshot that hides a loss.
      let lost = 0;
      for (const q of batches) {
        const result = await q.snapshot().then(
          (s) => s,
          (e: unknown) => e,
        );
        if (result instanceof BatchStateLostError) {
          lost++;
          continue;
        }
        expect(result).toMatchObject({ pending: 32, total: 32 });
        // An intact snapshot means every payload is there: claiming all hands out real data.
        const claimed = await q.claim(32, 60_000);
        expect(claimed.items).toHaveLength(32);
        expect(claimed.items.filter((it) => it.payload.includes('x'.repeat(4096)))).toHaveLength(32);
      }
      expect(lost).toBeGreaterThan(0);
    } finally {
      client.disconnect();
      await small.stop();
    }
  });
});

test('lease tokens never repeat after Redis is restored from an older snapshot: the holder from before cannot commit', async () => {
  const own = await startRedisServer();
  let client = new Redis(own.port, own.host, { maxRetriesPerRequest: null });
  try {
    const q = new BatchQueue(client, uniqueBatch('rollback'));
    const { epoch } = await q.create();
    await q.enqueueMany([
      { id: 'a', data: 1 },
      { id: 'b', data: 2 },
    ]);
    await client.save();
    // Claimed after the snapshot: a rollback forgets these leases and the token counter with them.
    const before = await q.claim(2, 60_000);
    client.disconnect();
    await own.restart(); // SIGKILL, then start from the saved dump.rdb
    client = new Redis(own.port, own.host, { maxRetriesPerRequest: null });
    const after = new BatchQueue(client, q.ref, { expectedEpoch: epoch });
    const again = await after.claim(2, 60_000);
    expect(again.items.map((c) => c.id)).toEqual(['a', 'b']);
    for (const [i, c] of again.items.entries()) expect(c.token).not.toBe(before.items[i]!.token);
    // The old holder's results are rejected; the new holder's are recorded once.
    expect((await after.complete(before.items.map((claim) => ({ claim, result: 'old' })))).rejected).toHaveLength(2);
    expect((await after.complete(again.items.map((claim) => ({ claim, result: 'new' })))).completed).toBe(2);
    expect(await after.snapshot()).toMatchObject({ succeeded: 2, running: 0 });
  } finally {
    client.disconnect();
    await own.stop();
  }
});

test('the state-change count grows with every transition and goes back with a restore from an older snapshot', async () => {
  const own = await startRedisServer();
  let client = new Redis(own.port, own.host, { maxRetriesPerRequest: null });
  try {
    const q = new BatchQueue(client, uniqueBatch('changes'));
    const { epoch } = await q.create();
    const seen: number[] = [(await q.snapshot()).changes];
    await q.enqueueMany(Array.from({ length: 10 }, (_, i) => ({ id: `i${i}`, data: i })));
    seen.push((await q.snapshot()).changes);
    await client.save();
    const { items } = await q.claim(4, 60_000);
    seen.push((await q.snapshot()).changes);
    await q.complete([{ claim: items[0]! }]);
    seen.push((await q.snapshot()).changes);
    await q.fail([{ claim: items[1]!, error: { name: 'E', message: 'x' } }]);
    seen.push((await q.snapshot()).changes);
    await q.release([items[2]!]);
    seen.push((await q.snapshot()).changes);
    await q.close();
    seen.push((await q.snapshot()).changes);
    for (let i = 1; i < seen.length; i++) expect(seen[i]).toBeGreaterThan(seen[i - 1]!);
    const last = seen.at(-1)!;

    client.disconnect();
    await own.restart(); // from the dump saved after enqueueing: totals equal, the claims undone
    client = new Redis(own.port, own.host, { maxRetriesPerRequest: null });
    const restored = await new BatchQueue(client, q.ref, { expectedEpoch: epoch }).snapshot();
    expect(restored).toMatchObject({ total: 10, pending: 10, changes: seen[1] });
    expect(restored.changes).toBeLessThan(last);
  } finally {
    client.disconnect();
    await own.stop();
  }
});

test('claims, completions and promotions of thousands of items at once stay whole (Lua unpack limits)', async () => {
  const q = new BatchQueue(redis, uniqueBatch('big'));
  await q.create();
  await q.enqueueMany(Array.from({ length: 9000 }, (_, i) => ({ id: `i${i}`, data: i })));
  await q.enqueueMany(Array.from({ length: 9000 }, (_, i) => ({ id: `d${i}`, data: i, delayMs: 1 })));
  await new Promise((r) => setTimeout(r, 20));
  // The claim promotes the 9,000 due delayed items behind the pending ones, then leases 10,000.
  const { items } = await q.claim(10_000, 60_000, { startNow: 10_000 });
  expect(items).toHaveLength(10_000);
  expect(await q.snapshot()).toMatchObject({ pending: 8000, delayed: 0, running: 10_000 });
  expect((await q.complete(items.map((claim) => ({ claim, result: 1 })))).completed).toBe(10_000);
  expect(await q.snapshot()).toMatchObject({ pending: 8000, running: 0, succeeded: 10_000 });
});
