// Remote calls and submissions on a real 3-primary Redis Cluster: the reply channel shares the
// batch's hash tag, so SPUBLISH from complete.lua reaches the caller's SSUBSCRIBE on the slot's node.
import { jest } from '@jest/globals';
import { connect, type Remote } from '../../sdk/index.js';
import type * as MathModule from '../fixtures/sdk/math.js';
import { startRedisCluster, type RedisClusterFixture } from '../support/redis-cluster.js';
import { sdkBatchName, spawnCallWorker, stopWorker } from '../support/sdk-env.js';

jest.setTimeout(60_000);

let cluster: RedisClusterFixture;

beforeAll(async () => {
  cluster = await startRedisCluster(3);
});

afterAll(async () => {
  await cluster?.stop();
});

test('proxy calls and batch round trips on Redis Cluster, for batches on different nodes', async () => {
  const client = await connect({ redis: { url: cluster.seedUrl, cluster: true }, namespace: 'rc' });
  const workers = [];
  try {
    for (let k = 0; k < 3; k++) {
      const name = sdkBatchName(`rc${k}`);
      await client.batch(name).create({ maxAttempts: 1 });
      workers.push(spawnCallWorker(cluster.seedUrl, 'rc', name, { TASKBATCH_REDIS_CLUSTER: 'true' }));
      const math: Remote<typeof MathModule> = client.proxy<typeof MathModule>(name, { timeoutMs: 20_000 });
      await expect(math.square(9)).resolves.toBe(81);
      await expect(math.fail('on a cluster')).rejects.toMatchObject({ name: 'RangeError', message: 'on a cluster' });
      const many = await Promise.all(Array.from({ length: 300 }, (_, i) => math.add(i, k)));
      expect(many).toEqual(Array.from({ length: 300 }, (_, i) => i + k));
      const b = client.batch(name);
      expect((await b.status()).counts).toMatchObject({ succeeded: 301, failed: 1 });
    }
  } finally {
    await client.close();
    await Promise.all(workers.map((w) => stopWorker(w)));
  }
});
