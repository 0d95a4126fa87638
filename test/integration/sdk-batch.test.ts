import { jest } from '@jest/globals';
import { Redis } from 'ioredis';
import { BatchQueue, batchKeys } from '../../queue/index.js';
import { BatchNotFoundError, connect, NotOpenError, type TaskBatchClient, WaitTimeoutError, type Progress } from '../../sdk/index.js';
import { startRedisServer, type RedisServer } from '../../localcluster/redis-server.js';
import { sdkBatchName, spawnCallWorker, stopWorker } from '../support/sdk-env.js';

jest.setTimeout(60_000);

const NS = 'sdk';
let server: RedisServer;
let redis: Redis;
let client: TaskBatchClient;

beforeAll(async () => {
  server = await startRedisServer();
  redis = new Redis(server.port, server.host);
  client = await connect({ redis: server.url, namespace: NS });
});

afterAll(async () => {
  await client?.close();
  redis?.disconnect();
  await server?.stop();
});

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

test('submit and submitMany: ids make submissions idempotent; delays land in the delayed set', async () => {
  const b = client.batch(sdkBatchName());
  expect(await b.create()).toMatchObject({ created: true });
  expect(await b.submit({ n: 1 }, { id: 'a' })).toEqual({ id: 'a', duplicate: false });
  expect(await b.submit({ n: 1 }, { id: 'a' })).toEqual({ id: 'a', duplicate: true });
  const generated = await b.submit({ n: 2 });
  expect(generated.id).toMatch(/^#\d+$/);
  const many = await b.submitMany([
    { id: 'b', data: 1 },
    { data: 2 },
    { id: 'a', data: 3 },
    { id: 'later', data: 4, delayMs: 60_000 },
    { id: 'tomorrow', data: 5, notBefore: new Date(Date.now() + 86_400_000) },
  ]);
  expect(many).toMatchObject({ added: 4, duplicates: 1 });
  expect(many.ids).toEqual(['b', expect.stringMatching(/^#\d+$/), 'a', 'later', 'tomorrow']);
  const s = await b.status();
  expect(s.countsFrom).toBe('redis');
  expect(s.counts).toMatchObject({ total: 6, pending: 4, delayed: 2, closed: false, complete: false });
  // Bad input is refused as a whole, naming the item.
  await expect(b.submitMany([{ data: 1 }, { id: '#bad', data: 2 }])).rejects.toThrow(/item 1 \(id "#bad"\): id must be/);
  await expect(b.submit(undefined)).rejects.toThrow(/not JSON-serializable/);
  // A generator is consumed in chunks.
  function* gen(): Generator<{ id: string; data: number }> {
    for (let i = 0; i < 12_000; i++) yield { id: `g${i}`, data: i };
  }
  expect(await b.submitMany(gen())).toMatchObject({ added: 12_000, duplicates: 0 });
  await b.close();
  await expect(b.submit({ n: 9 }, { id: 'new' })).rejects.toBeInstanceOf(NotOpenError);
  // Re-sending items that are all already there stays a no-op after close.
  expect(await b.submit({ n: 1 }, { id: 'a' })).toEqual({ id: 'a', duplicate: true });
});

test('wait() reports progress, then results() and failures() stream what the workers produced; replay and cancel', async () => {
  const name = sdkBatchName();
  const b = client.batch(name);
  await b.create({ maxAttempts: 1 });
  const items: { id: string; data: unknown }[] = Array.from({ length: 200 }, (_, i) => ({ id: `sq-${i}`, data: { fn: 'square', args: [i] } }));
  items.push({ id: 'bad-1', data: { fn: 'fail', args: ['nope'] } }, { id: 'bad-2', data: { fn: 'reject', args: ['never'] } });
  await b.submitMany(items);
  await b.close();
  const seen: Progress[] = [];
  const worker = spawnCallWorker(server.url, NS, name, { TASKBATCH_POOL_SIZE: '4' });
  try {
    const r = await b.wait({ intervalMs: 50, onProgress: (p) => seen.push(p) });
    expect(r).toMatchObject({ ok: false, outcome: 'Drained' });
    expect(r.progress).toMatchObject({ total: 202, succeeded: 200, failed: 2, done: 202, complete: true });
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.at(-1)!.done).toBe(202);
  } finally {
    await stopWorker(worker);
  }
  const results = await collect(b.results({ pageSize: 64 }));
  expect(results).toHaveLength(200);
  expect(new Map(results.map((x) => [x.id, x.result])).get('sq-12')).toBe(144);
  expect(results[0]!.completedAt).toBeInstanceOf(Date);
  const failures = await collect(b.failures({ pageSize: 1 }));
  expect(failures.map((f) => f.id).sort()).toEqual(['bad-1', 'bad-2']);
  expect(failures.find((f) => f.id === 'bad-1')).toMatchObject({ attempts: 1, error: { name: 'RangeError', message: 'nope' }, payload: { fn: 'fail', args: ['nope'] } });

  expect(await b.replay(['bad-1', 'unknown'])).toBe(1);
  expect((await b.status()).counts).toMatchObject({ failed: 1, pending: 1 });
  expect(await b.replay()).toBe(1);
  expect((await b.status()).counts).toMatchObject({ failed: 0, pending: 2 });

  expect(await b.cancel()).toEqual({ deleted: 'RedisKeys' });
  expect(await redis.exists(...Object.values(batchKeys({ namespace: NS, name })))).toBe(0);
  await expect(b.status()).rejects.toBeInstanceOf(BatchNotFoundError);
});

test('wait() gives up at its timeout; the batch keeps going', async () => {
  const b = client.batch(sdkBatchName());
  await b.create();
  await b.submit({ x: 1 });
  await expect(b.wait({ intervalMs: 20, timeoutMs: 100 })).rejects.toBeInstanceOf(WaitTimeoutError);
  expect((await b.status()).counts.pending).toBe(1);
});

test('an unknown batch is a BatchNotFoundError that says what to do', async () => {
  const b = client.batch('no-such-batch');
  const err = await b.submit({ x: 1 }).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(BatchNotFoundError);
  expect((err as Error).message).toMatch(/batch sdk\/no-such-batch not found in Redis at redis:\/\/127\.0\.0\.1:\d+; create it/);
  await expect(collect(b.results())).rejects.toBeInstanceOf(BatchNotFoundError);
  await expect(b.cancel()).rejects.toBeInstanceOf(BatchNotFoundError);
});

test('an unreachable Redis fails fast with a ConnectionError naming the URL', async () => {
  const c = await connect({ redis: 'redis://127.0.0.1:1', connectTimeoutMs: 10_000 });
  const t0 = Date.now();
  try {
    // Refused connections fail after a few attempts (~1 s), not at the connect timeout.
    await expect(c.batch('x').status()).rejects.toThrow(/cannot reach Redis at redis:\/\/127\.0\.0\.1:1 \(connect ECONNREFUSED 127\.0\.0\.1:1\); is it running/);
    expect(Date.now() - t0).toBeLessThan(5000);
  } finally {
    await c.close();
  }
});

test('Redis mode never touches batches of another namespace', async () => {
  const name = sdkBatchName();
  const q = new BatchQueue(redis, { namespace: 'other', name });
  await q.create();
  await expect(client.batch(name).status()).rejects.toBeInstanceOf(BatchNotFoundError);
  expect((await client.batch(name, { namespace: 'other' }).status()).counts.total).toBe(0);
});
