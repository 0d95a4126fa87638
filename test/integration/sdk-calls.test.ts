import { jest } from '@jest/globals';
import { Redis } from 'ioredis';
import { BatchQueue } from '../../queue/index.js';
import { connect, CallTimeoutError, RemoteCallError, type TaskBatchClient, type Remote } from '../../sdk/index.js';
import { startRedisServer, type RedisServer } from '../../localcluster/redis-server.js';
import { sdkBatchName, spawnCallWorker, stopWorker } from '../support/sdk-env.js';
import type { SpawnedWorker } from '../support/worker-harness.js';
import { waitFor } from '../support/worker-harness.js';
import type * as MathModule from '../fixtures/sdk/math.js';

jest.setTimeout(60_000);

const NS = 'calls';
let server: RedisServer;
let redis: Redis;
let client: TaskBatchClient;
let worker: SpawnedWorker | undefined;
let service: string;
let math: Remote<typeof MathModule>;

beforeAll(async () => {
  server = await startRedisServer();
  redis = new Redis(server.port, server.host);
  client = await connect({ redis: server.url, namespace: NS });
  service = sdkBatchName('math');
  // A service batch: one attempt per call, so a thrown error comes back at once.
  await client.batch(service).create({ maxAttempts: 1 });
  worker = spawnCallWorker(server.url, NS, service);
  math = client.proxy<typeof MathModule>(service, { timeoutMs: 10_000 });
});

afterAll(async () => {
  await client?.close();
  await stopWorker(worker);
  redis?.disconnect();
  await server?.stop();
});

describe('typed proxy', () => {
  test('returns what the remote function returns', async () => {
    await expect(math.square(4)).resolves.toBe(16);
    await expect(math.add(2, 3)).resolves.toBe(5);
    await expect(math.echo({ a: [1, 'two', null], b: { c: true } })).resolves.toEqual({ a: [1, 'two', null], b: { c: true } });
    await expect(math.nothing()).resolves.toBeUndefined();
    // The worker appends the handler context; the caller does not pass it.
    const who = await math.whoami();
    expect(who.id).toMatch(/^call:[0-9a-f]{12}:\d+$/);
    expect(who.attempt).toBe(1);
  });

  test("rejects with the thrown error's name and message", async () => {
    const err = await math.fail('out of range: 42').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RemoteCallError);
    expect(err).toMatchObject({ name: 'RangeError', message: 'out of range: 42', fn: 'fail', attempts: 1 });
    expect((err as RemoteCallError).remoteStack).toMatch(/RangeError: out of range: 42/);
    await expect(math.reject('bad input')).rejects.toMatchObject({ name: 'TypeError', message: 'bad input' });
  });

  test('an unknown function is a remote error naming the callable ones', async () => {
    const untyped = client.proxy<Record<string, (...a: unknown[]) => unknown>>(service);
    const err = (await untyped.cube!(3).catch((e: unknown) => e)) as RemoteCallError;
    expect(err).toBeInstanceOf(RemoteCallError);
    expect(err.message).toMatch(/no callable export "cube"; callable: .*square/);
    await expect(client.call(service, 'add', [40, 2])).resolves.toBe(42);
  });

  test('a call without an answer in time rejects with CallTimeoutError (and may still run)', async () => {
    const t0 = Date.now();
    // Within the proxy's timeout (10 s) a slow call succeeds; past a per-call timeout it does not.
    await expect(math.sleep(300)).resolves.toBe(300);
    const late = await client.call(service, 'sleep', [1500], { timeoutMs: 300 }).catch((e: unknown) => e);
    expect(late).toBeInstanceOf(CallTimeoutError);
    expect((late as Error).message).toMatch(/got no answer within 300 ms; it may still run later/);
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  test("an aborted call rejects with the signal's reason", async () => {
    const ac = new AbortController();
    const p = client.call(service, 'sleep', [1000], { signal: ac.signal });
    setTimeout(() => ac.abort(new Error('no longer needed')), 50);
    await expect(p).rejects.toThrow('no longer needed');
  });

  test('arguments that are not JSON are refused before anything is sent', async () => {
    await expect(client.call(service, 'echo', [10n])).rejects.toThrow(/not JSON-serializable/);
    await expect(client.call(service, '_private', [])).rejects.toThrow(/invalid/);
    expect((client.proxy<typeof MathModule>(service) as Record<string, unknown>).then).toBeUndefined();
  });

  test('1,000 concurrent calls all get their own answer; delivered calls leave nothing behind', async () => {
    const n = 1000;
    const t0 = performance.now();
    const answers = await Promise.all(Array.from({ length: n }, (_, i) => math.square(i)));
    const ms = performance.now() - t0;
    expect(answers).toEqual(Array.from({ length: n }, (_, i) => i * i));
    process.stdout.write(`1000 concurrent calls in ${ms.toFixed(0)} ms (${Math.round((n * 1000) / ms)} calls/s)\n`);
    // Results and idempotence ids of delivered calls are removed in the background.
    const q = new BatchQueue(redis, { namespace: NS, name: service });
    await waitFor('call bookkeeping cleaned up', async () => (await redis.hlen(q.keys.results)) === 0 && (await redis.scard(q.keys.seen)) === 0, 5000);
    const s = await q.snapshot();
    expect(s.pending + s.running + s.delayed).toBe(0);
  });
});

describe('outcomes that are not announced', () => {
  test('an item dead-lettered by lease expiry (no announcement) is reported at the timeout, not as a timeout', async () => {
    const name = sdkBatchName('lease');
    const b = client.batch(name);
    await b.create({ maxAttempts: 1 });
    // No worker: a "worker" claims the call with a short lease and dies.
    const p = client.call(name, 'square', [3], { timeoutMs: 1500 }).catch((e: unknown) => e);
    const q = new BatchQueue(redis, { namespace: NS, name });
    const claimed = await waitFor('the call claimed', async () => {
      const c = await q.claim(1, 100);
      return c.items.length ? c.items : undefined;
    });
    expect(claimed[0]!.id).toMatch(/^call:/);
    await new Promise((r) => setTimeout(r, 200));
    expect(await q.reclaimExpired()).toMatchObject({ reclaimed: 1 });
    const err = await p;
    expect(err).toBeInstanceOf(RemoteCallError);
    expect(err).toMatchObject({ name: 'LeaseExpired', attempts: 1 });
  });

  test('a reply missed while the subscriber was disconnected is recovered from Redis', async () => {
    const name = sdkBatchName('recover');
    const other = await connect({ redis: server.url, namespace: NS });
    try {
      await other.batch(name).create({ maxAttempts: 1 });
      const warm = other.call(name, 'square', [1], { timeoutMs: 20_000 });
      const q = new BatchQueue(redis, { namespace: NS, name });
      // Play the worker by hand, so the reply can be published while nobody listens.
      let c = await waitFor('first call claimed', async () => (await q.claim(10, 10_000)).items[0]);
      await q.complete([{ claim: c, result: 1 }]);
      await expect(warm).resolves.toBe(1);
      const p = other.call(name, 'square', [7], { timeoutMs: 20_000 });
      c = await waitFor('second call claimed', async () => (await q.claim(10, 10_000)).items[0]);
      // Kill the client's subscriber connection, then complete while it reconnects.
      const clients = (await redis.client('LIST')) as string;
      const subs = clients.split('\n').filter((l) => / flags=P /.test(l));
      expect(subs.length).toBeGreaterThan(0);
      for (const line of subs) {
        const id = /id=(\d+)/.exec(line)?.[1];
        if (id) await redis.client('KILL', 'ID', id);
      }
      await q.complete([{ claim: c, result: 49 }]);
      await expect(p).resolves.toBe(49);
    } finally {
      await other.close();
    }
  });
});

describe('retries', () => {
  test('with retries, the caller gets the error of the last attempt only', async () => {
    const name = sdkBatchName('retry');
    await client.batch(name).create({ maxAttempts: 3, backoff: { initialMs: 10, maxMs: 10, factor: 1, jitter: 0 } });
    const w = spawnCallWorker(server.url, NS, name);
    try {
      const err = await client.call(name, 'fail', ['again'], { timeoutMs: 10_000 }).catch((e: unknown) => e);
      expect(err).toMatchObject({ name: 'RangeError', message: 'again', attempts: 3 });
      await expect(client.call(name, 'square', [5])).resolves.toBe(25);
    } finally {
      await stopWorker(w);
    }
  });
});
