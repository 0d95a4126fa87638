import { Redis } from 'ioredis';
import { BatchClosedError, BatchQueue, InvalidArgumentError, PayloadTooLargeError, type BatchSnapshot } from '../../queue/index.js';
import { startRedisServer, type RedisServer } from '../../localcluster/redis-server.js';
import { sleep, uniqueBatch } from '../support/batches.js';

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

async function newQueue(options: Parameters<BatchQueue['create']>[0] = {}, limits = {}): Promise<BatchQueue> {
  const q = new BatchQueue(redis, uniqueBatch(), { limits });
  await q.create(options);
  return q;
}

/** The counters must equal what the data structures actually hold. */
async function expectCountersMatchState(q: BatchQueue): Promise<BatchSnapshot> {
  const s = await q.snapshot();
  const [pending, delayed, running, dead] = await Promise.all([redis.llen(q.keys.pending), redis.zcard(q.keys.delayed), redis.zcard(q.keys.running), redis.hlen(q.keys.dead)]);
  expect({ pending: s.pending, delayed: s.delayed, running: s.running, failed: s.failed }).toEqual({ pending, delayed, running, failed: dead });
  expect(s.total).toBe(s.pending + s.delayed + s.running + s.succeeded + s.failed);
  return s;
}

describe('create', () => {
  test('returns a stable epoch and does not reset an existing batch', async () => {
    const q = await newQueue();
    await q.enqueue({ data: 1 });
    const again = await new BatchQueue(redis, q.ref).create();
    expect(again).toEqual({ epoch: q.expectedEpoch, created: false });
    expect((await q.snapshot()).total).toBe(1);
  });

  test('rejects absurd options before writing anything', async () => {
    const q = new BatchQueue(redis, uniqueBatch());
    await expect(q.create({ maxAttempts: 0 })).rejects.toThrow(/maxAttempts must be an integer between 1 and 1000, got 0/);
    await expect(q.create({ backoff: { initialMs: -5 } })).rejects.toThrow(/backoff.initialMs/);
    await expect(q.create({ backoff: { initialMs: 5000, maxMs: 10 } })).rejects.toThrow(/backoff.maxMs \(10\) must be >= backoff.initialMs \(5000\)/);
    expect(await redis.exists(q.keys.meta)).toBe(0);
  });
});

describe('enqueue', () => {
  test('generated ids are unique and in order; caller ids are idempotent', async () => {
    const q = await newQueue();
    const first = await q.enqueueMany([{ data: 'a' }, { id: 'x', data: 'b' }, { data: 'c' }]);
    expect(first).toEqual({ added: 3, duplicates: 0, generatedIds: ['#1', '#2'] });
    const second = await q.enqueueMany([
      { id: 'x', data: 'changed' },
      { id: 'y', data: 'd' },
      { id: 'y', data: 'dup in same call' },
    ]);
    expect(second).toMatchObject({ added: 1, duplicates: 2 });
    const claimed = await q.claim(10, 10_000);
    expect(claimed.items.map((c) => [c.id, JSON.parse(c.payload)])).toEqual([
      ['#1', 'a'],
      ['x', 'b'],
      ['#2', 'c'],
      ['y', 'd'],
    ]);
    // Still a duplicate after the item completed.
    await q.complete(claimed.items.map((claim) => ({ claim })));
    expect((await q.enqueue({ id: 'x', data: 'again' })).duplicates).toBe(1);
    expect((await expectCountersMatchState(q)).total).toBe(4);
  });

  test('bulk enqueue of many thousands in one call', async () => {
    const q = await newQueue();
    const items = Array.from({ length: 12_345 }, (_, i) => ({ id: `k${i}`, data: { i } }));
    expect((await q.enqueueMany(items)).added).toBe(12_345);
    expect((await q.enqueueMany(items)).duplicates).toBe(12_345);
    expect(await redis.llen(q.keys.pending)).toBe(12_345);
    await expectCountersMatchState(q);
  });

  test('bad input is rejected with the item and field named, and nothing is half-written', async () => {
    const q = await newQueue({}, { maxPayloadBytes: 1024 });
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    const good = Array.from({ length: 600 }, (_, i) => ({ data: i }));
    await expect(q.enqueueMany([...good, { data: 'x'.repeat(2000) }])).rejects.toThrow(PayloadTooLargeError);
    await expect(q.enqueueMany([...good, { data: 'x'.repeat(2000) }])).rejects.toThrow(/item 600: data is 2002 bytes of JSON, over the limit of 1024 bytes/);
    await expect(q.enqueueMany([...good, { data: circular }])).rejects.toThrow(/item 600: data is not JSON-serializable/);
    await expect(q.enqueueMany([{ data: 10n }])).rejects.toThrow(/not JSON-serializable/);
    await expect(q.enqueueMany([{ data: undefined }])).rejects.toThrow(/not JSON-serializable \(undefined\)/);
    await expect(q.enqueueMany([{ id: '#7', data: 1 }])).rejects.toThrow(/id must .* not starting with '#'/);
    await expect(q.enqueueMany([{ id: '', data: 1 }])).rejects.toThrow(InvalidArgumentError);
    await expect(q.enqueueMany([{ data: 1, delayMs: -1 }])).rejects.toThrow(/item 0: delayMs must be an integer between 0/);
    expect((await q.snapshot()).total).toBe(0);
    expect(await redis.exists(q.keys.items, q.keys.pending)).toBe(0);
  });

  test('a closed batch accepts no new items (re-sent ones are no-ops) and completes once drained', async () => {
    const q = await newQueue();
    await q.enqueue({ id: 'one', data: 1 });
    await q.close();
    await expect(q.enqueue({ data: 2 })).rejects.toThrow(BatchClosedError);
    await expect(
      q.enqueueMany([
        { id: 'one', data: 1 },
        { id: 'new', data: 2 },
      ]),
    ).rejects.toThrow(/batch is closed/);
    expect(await q.enqueueMany([{ id: 'one', data: 1 }])).toMatchObject({ added: 0, duplicates: 1 });
    expect((await q.snapshot()).complete).toBe(false);
    const { items, closed } = await q.claim(5, 10_000);
    expect(closed).toBe(true);
    expect((await q.snapshot()).complete).toBe(false);
    await q.complete(items.map((claim) => ({ claim })));
    expect((await q.snapshot()).complete).toBe(true);
  });

  test('delayed items are not claimable before they are due', async () => {
    const q = await newQueue();
    await q.enqueueMany([
      { id: 'later', data: 1, delayMs: 400 },
      { id: 'at', data: 2, notBefore: new Date(Date.now() + 400) },
      { id: 'now', data: 3 },
    ]);
    let s = await expectCountersMatchState(q);
    expect(s).toMatchObject({ pending: 1, delayed: 2, dueDelayed: 0 });
    const first = await q.claim(10, 10_000);
    expect(first.items.map((c) => c.id)).toEqual(['now']);
    expect(first.nextDueMs).toBeGreaterThan(200);
    expect(first.nextDueMs).toBeLessThanOrEqual(400);
    await sleep(450);
    s = await q.snapshot();
    expect(s.dueDelayed).toBe(2);
    const second = await q.claim(10, 10_000);
    expect(second.items.map((c) => c.id).sort()).toEqual(['at', 'later']);
    await expectCountersMatchState(q);
  });
});

describe('claim, renew, release, complete', () => {
  test('claim leases up to n items with distinct tokens', async () => {
    const q = await newQueue();
    await q.enqueueMany(Array.from({ length: 5 }, (_, i) => ({ data: i })));
    const { items } = await q.claim(3, 10_000);
    expect(items).toHaveLength(3);
    expect(new Set(items.map((c) => c.token)).size).toBe(3);
    expect(items.every((c) => c.attempt === 1)).toBe(true);
    expect(await expectCountersMatchState(q)).toMatchObject({ pending: 2, running: 3 });
  });

  test('complete stores results, frees payloads and rejects stale tokens', async () => {
    const q = await newQueue();
    await q.enqueueMany([
      { id: 'a', data: { big: 'x'.repeat(100) } },
      { id: 'b', data: 2 },
    ]);
    const { items } = await q.claim(2, 10_000);
    const [a, b] = items as [(typeof items)[0], (typeof items)[0]];
    const r = await q.complete([{ claim: a, result: { answer: 42 } }, { claim: b }]);
    expect(r).toEqual({ completed: 2, rejected: [] });
    expect(await redis.hlen(q.keys.items)).toBe(0);
    expect((await q.result('a'))?.result).toEqual({ answer: 42 });
    expect(await q.result('b')).toBeUndefined(); // undefined results are not stored
    // Completing again with the same (now stale) token is rejected and changes nothing.
    expect(await q.complete([{ claim: a, result: 'again' }])).toEqual({ completed: 0, rejected: [a.token] });
    expect((await q.result('a'))?.result).toEqual({ answer: 42 });
    expect(await expectCountersMatchState(q)).toMatchObject({ succeeded: 2, running: 0 });
  });

  test('a result over the limit is rejected before anything is written', async () => {
    const q = await newQueue({}, { maxResultBytes: 100 });
    await q.enqueueMany([{ data: 1 }, { data: 2 }]);
    const { items } = await q.claim(2, 10_000);
    await expect(
      q.complete([
        { claim: items[0]!, result: 'ok' },
        { claim: items[1]!, result: 'y'.repeat(200) },
      ]),
    ).rejects.toThrow(/over the limit of 100 bytes/);
    expect(await expectCountersMatchState(q)).toMatchObject({ running: 2, succeeded: 0 });
  });

  test('renew extends live leases and reports lost ones', async () => {
    const q = await newQueue();
    await q.enqueueMany([{ data: 1 }, { data: 2 }]);
    const { items } = await q.claim(2, 300);
    const [a, b] = items as [(typeof items)[0], (typeof items)[0]];
    expect(await q.renew([a], 5_000)).toEqual({ lost: [] });
    await sleep(400);
    // b's lease lapsed: a claimer reclaims it; a's renewed lease is untouched.
    const again = await q.claim(10, 5_000);
    expect(again.items.map((c) => c.id)).toEqual([b.id]);
    expect(again.items[0]!.attempt).toBe(2);
    expect(await q.renew([a, b], 5_000)).toEqual({ lost: [b.token] });
    expect((await q.complete([{ claim: b }])).rejected).toEqual([b.token]);
    expect((await q.complete([{ claim: again.items[0]! }, { claim: a }])).completed).toBe(2);
    expect(await expectCountersMatchState(q)).toMatchObject({ succeeded: 2, retries: 1 });
  });

  test('release puts items back at the front without counting an attempt; handedBack counts them, not retries', async () => {
    const q = await newQueue();
    await q.enqueueMany([
      { id: 'a', data: 1 },
      { id: 'b', data: 2 },
      { id: 'c', data: 3 },
    ]);
    const { items } = await q.claim(2, 10_000);
    expect(await q.release(items)).toEqual({ released: 2, lost: [] });
    const again = await q.claim(3, 10_000);
    expect(again.items.map((c) => [c.id, c.attempt])).toEqual([
      ['a', 1],
      ['b', 1],
      ['c', 1],
    ]);
    expect(await q.release(items)).toEqual({ released: 0, lost: items.map((c) => c.token).reverse() });
    expect(await expectCountersMatchState(q)).toMatchObject({ running: 3, retries: 0, handedBack: 2 });
  });
});

describe('failure, retry, dead letters', () => {
  test('retries with exponential backoff, then dead-letters with the last error', async () => {
    const q = await newQueue({ maxAttempts: 3, backoff: { initialMs: 200, factor: 2, maxMs: 10_000, jitter: 0 } });
    await q.enqueue({ id: 'x', data: 'payload' });
    const dueTimes: number[] = [];
    for (let attempt = 1; attempt <= 3; attempt++) {
      let claim;
      for (;;) {
        claim = (await q.claim(1, 10_000)).items[0];
        if (claim) break;
        await sleep(10);
      }
      dueTimes.push(Date.now());
      expect(claim.attempt).toBe(attempt);
      const r = await q.fail([{ claim, error: { name: 'Boom', message: `failure ${attempt}` } }]);
      expect(r).toEqual(attempt < 3 ? { retried: 1, deadLettered: 0, rejected: [] } : { retried: 0, deadLettered: 1, rejected: [] });
    }
    // Backoff: ~200ms before attempt 2, ~400ms before attempt 3.
    expect(dueTimes[1]! - dueTimes[0]!).toBeGreaterThanOrEqual(190);
    expect(dueTimes[1]! - dueTimes[0]!).toBeLessThan(350);
    expect(dueTimes[2]! - dueTimes[1]!).toBeGreaterThanOrEqual(390);
    expect(dueTimes[2]! - dueTimes[1]!).toBeLessThan(600);
    const s = await expectCountersMatchState(q);
    expect(s).toMatchObject({ failed: 1, retries: 2, succeeded: 0, total: 1 });
    const dead = await q.deadLetters();
    expect(dead.items).toHaveLength(1);
    expect(dead.items[0]).toMatchObject({ id: 'x', attempts: 3, error: { name: 'Boom', message: 'failure 3' }, payload: 'payload' });
  });

  test('jitter spreads retry delays within [delay*(1-jitter), delay]', async () => {
    const q = await newQueue({ maxAttempts: 5, backoff: { initialMs: 10_000, factor: 2, maxMs: 60_000, jitter: 0.5 } });
    await q.enqueueMany(Array.from({ length: 50 }, (_, i) => ({ data: i })));
    const { items } = await q.claim(50, 10_000);
    const before = Date.now();
    await q.fail(items.map((claim) => ({ claim, error: { name: 'E', message: 'x' } })));
    const scores = (await redis.zrange(q.keys.delayed, 0, -1, 'WITHSCORES')).filter((_, i) => i % 2 === 1).map((s) => Number(s) - before);
    expect(Math.min(...scores)).toBeGreaterThanOrEqual(5_000 - 50);
    expect(Math.max(...scores)).toBeLessThanOrEqual(10_000 + 50);
    expect(new Set(scores).size).toBeGreaterThan(10);
  });

  test('a non-retryable failure goes straight to the dead-letter set; replay brings it back', async () => {
    const q = await newQueue({ maxAttempts: 5 });
    await q.enqueueMany([
      { id: 'bad', data: { n: 1 } },
      { id: 'good', data: 2 },
    ]);
    const { items } = await q.claim(2, 10_000);
    const bad = items.find((c) => c.id === 'bad')!;
    await q.fail([{ claim: bad, error: { name: 'ValidationError', message: 'no' }, retryable: false }]);
    await q.complete([{ claim: items.find((c) => c.id === 'good')! }]);
    expect(await expectCountersMatchState(q)).toMatchObject({ failed: 1, succeeded: 1, retries: 0 });
    expect(await q.replay(['bad', 'not-dead'])).toBe(1);
    expect(await expectCountersMatchState(q)).toMatchObject({ failed: 0, pending: 1 });
    const again = (await q.claim(1, 10_000)).items[0]!;
    expect(again).toMatchObject({ id: 'bad', attempt: 1 });
    expect(JSON.parse(again.payload)).toEqual({ n: 1 });
  });

  test('failing with a stale token is rejected and records nothing', async () => {
    const q = await newQueue();
    await q.enqueue({ data: 1 });
    const first = (await q.claim(1, 200)).items[0]!;
    await sleep(250);
    const second = (await q.claim(1, 10_000)).items[0]!;
    expect(second.attempt).toBe(2);
    expect(await q.fail([{ claim: first, error: { name: 'Late', message: 'late' } }])).toEqual({ retried: 0, deadLettered: 0, rejected: [first.token] });
    expect(await expectCountersMatchState(q)).toMatchObject({ running: 1, delayed: 0, retries: 1 });
  });

  test('replayAll moves every dead-lettered item back', async () => {
    const q = await newQueue({ maxAttempts: 1 });
    await q.enqueueMany(Array.from({ length: 250 }, (_, i) => ({ data: i })));
    const { items } = await q.claim(250, 10_000);
    await q.fail(items.map((claim) => ({ claim, error: { name: 'E', message: 'm' } })));
    expect((await q.snapshot()).failed).toBe(250);
    let seen = 0;
    let cursor = '0';
    do {
      const page = await q.deadLetters(cursor, 100);
      seen += page.items.length;
      cursor = page.cursor;
    } while (cursor !== '0');
    expect(seen).toBe(250);
    expect(await q.replayAll()).toBe(250);
    expect(await expectCountersMatchState(q)).toMatchObject({ failed: 0, pending: 250 });
  });
});

describe('reclaim', () => {
  test('expired leases return to the queue with the attempt counted; exhausted ones are dead-lettered', async () => {
    const q = await newQueue({ maxAttempts: 2 });
    await q.enqueue({ id: 'x', data: 1 });
    await q.claim(1, 100);
    await sleep(150);
    expect(await q.reclaimExpired()).toMatchObject({ reclaimed: 1, promoted: 0, nextDueMs: -1, nextExpiryMs: -1 });
    expect(await expectCountersMatchState(q)).toMatchObject({ pending: 1, running: 0, retries: 1 });
    const second = (await q.claim(1, 100)).items[0]!;
    expect(second.attempt).toBe(2);
    await sleep(150);
    expect((await q.reclaimExpired()).reclaimed).toBe(1);
    const s = await expectCountersMatchState(q);
    expect(s).toMatchObject({ pending: 0, failed: 1 });
    const dead = await q.deadLetters();
    expect(dead.items[0]).toMatchObject({ id: 'x', attempts: 2, error: { name: 'LeaseExpired' } });
    // Never looped forever: nothing is claimable any more.
    expect((await q.claim(1, 100)).items).toEqual([]);
  });
});

describe('results', () => {
  test('results are listed in completion order and trimmed after their TTL', async () => {
    const q = await newQueue({ resultTtlSeconds: 1 });
    await q.enqueueMany(Array.from({ length: 3 }, (_, i) => ({ id: `r${i}`, data: i })));
    const { items } = await q.claim(3, 10_000);
    for (const claim of items) await q.complete([{ claim, result: claim.id.toUpperCase() }]);
    expect((await q.results()).map((r) => r.result)).toEqual(['R0', 'R1', 'R2']);
    await sleep(1100);
    await q.enqueue({ id: 'late', data: 9 });
    const late = (await q.claim(1, 10_000)).items[0]!;
    await q.complete([{ claim: late, result: 'L' }]);
    expect((await q.results()).map((r) => r.id)).toEqual(['late']);
    expect(await redis.hlen(q.keys.results)).toBe(1);
    // With no later completion, the rest expire too.
    await sleep(1100);
    expect(await q.results()).toEqual([]);
    expect(await q.result('late')).toBeUndefined();
  });
});

describe('purge', () => {
  test('deletes every key of the batch and nothing else', async () => {
    const q = await newQueue({ maxAttempts: 1 });
    const other = await newQueue();
    await other.enqueue({ data: 'keep' });
    await q.enqueueMany([{ id: 'a', data: 1 }, { data: 2 }, { data: 3, delayMs: 60_000 }]);
    const { items } = await q.claim(2, 10_000);
    await q.complete([{ claim: items[0]!, result: 1 }]);
    await q.fail([{ claim: items[1]!, error: { name: 'E', message: 'x' } }]);
    expect(await q.purge()).toBeGreaterThan(5);
    expect(await redis.keys(`tb:{${q.ref.namespace}/${q.ref.name}}:*`)).toEqual([]);
    expect((await other.snapshot()).total).toBe(1);
    expect(await q.purge()).toBe(0);
  });
});
