import { jest } from '@jest/globals';
import { Redis } from 'ioredis';
import { startRedisServer, type RedisServer } from '../../localcluster/redis-server.js';
import { aBatch, fixture, httpGet, spawnWorker, waitFor, workerEnv, type SpawnedWorker } from '../support/worker-harness.js';

// Redis going away under a running worker: with its data (an append-only file survives the
// kill) the worker rides the outage out; without it (an empty restart) it stops, not ready,
// and exits 4 after TASKBATCH_STATE_LOST_EXIT_SECONDS.

jest.setTimeout(60_000);

const workers: SpawnedWorker[] = [];
afterEach(async () => {
  for (const w of workers.splice(0)) {
    w.kill('SIGKILL');
    await w.exited;
  }
});

async function withRedis(args: string[], body: (server: RedisServer, redis: Redis) => Promise<void>): Promise<void> {
  const server = await startRedisServer({ args });
  const redis = new Redis(server.port, server.host, { maxRetriesPerRequest: null, retryStrategy: () => 50 });
  redis.on('error', () => undefined);
  try {
    await body(server, redis);
  } finally {
    redis.disconnect();
    await server.stop();
  }
}

test('Redis restarted with its data: the worker goes not-ready, keeps retrying, and finishes the batch by itself', async () => {
  await withRedis(['--appendonly', 'yes', '--appendfsync', 'always'], async (server, redis) => {
    const { queue, name } = await aBatch(redis)
      .withItems(Array.from({ length: 20 }, () => ({ ms: 150 })))
      .closed()
      .create();
    const w = spawnWorker(workerEnv(server.url, name, fixture('slow'), { TASKBATCH_POOL_MODE: 'thread', TASKBATCH_POOL_SIZE: '2', TASKBATCH_LEASE_SECONDS: '10' }));
    workers.push(w);
    const url = await w.httpUrl();
    await waitFor('some progress', async () => (await queue.snapshot()).succeeded >= 4);
    await server.kill();
    await waitFor('/readyz to fail', async () => (await httpGet(`${url}/readyz`)).status === 503);
    expect((await httpGet(`${url}/healthz`)).status).toBe(200); // alive, retrying: not wedged
    await new Promise((r) => setTimeout(r, 1500));
    await server.start();
    expect(await w.exited).toEqual({ code: 0, signal: null });
    expect(await queue.snapshot()).toMatchObject({ total: 20, succeeded: 20, failed: 0, running: 0, complete: true });
    expect(w.logs.some((l) => l.msg === 'Lost contact with Redis; retrying with backoff')).toBe(true);
    expect(w.logs.some((l) => l.msg === 'Reconnected to Redis')).toBe(true);
  });
});

test('Redis restarted empty: the worker reports the lost state, stays not ready, and exits 4', async () => {
  await withRedis([], async (server, redis) => {
    const { queue, name } = await aBatch(redis)
      .withItems(Array.from({ length: 10 }, () => ({ ms: 5000 })))
      .create();
    const w = spawnWorker(workerEnv(server.url, name, fixture('slow'), { TASKBATCH_POOL_MODE: 'async', TASKBATCH_POOL_SIZE: '2', TASKBATCH_STATE_LOST_EXIT_SECONDS: '1.5' }));
    workers.push(w);
    const url = await w.httpUrl();
    await waitFor('items to run', async () => (await queue.snapshot()).running >= 2);
    await server.restart();
    await w.waitForLog((l) => l.msg === "Lost the batch's state in Redis: stopped claiming and dropped all items in hand");
    expect((await httpGet(`${url}/readyz`)).status).toBe(503);
    expect((await w.exited).code).toBe(4);
    // Nothing was written into the fresh Redis: no half-recreated batch.
    expect(await redis.exists(queue.keys.meta)).toBe(0);
  });
});
