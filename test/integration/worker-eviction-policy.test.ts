// A worker refuses a real redis-server whose maxmemory-policy evicts keys (issue 13, item 2):
// it exits with the configuration code (2), naming the setting, before running anything; with
// TASKBATCH_REDIS_ALLOW_EVICTION=true it runs the batch.
import { aBatch, fixture, spawnWorker, workerEnv, type SpawnedWorker, useWorkerRedis } from '../support/worker-harness.js';

const h = useWorkerRedis({ args: ['--maxmemory', '256mb', '--maxmemory-policy', 'allkeys-lru'] });

function start(batch: string, extra: Record<string, string> = {}): SpawnedWorker {
  const w = spawnWorker(workerEnv(h.server.url, batch, fixture('ok'), extra));
  h.track(w);
  return w;
}

test('maxmemory-policy allkeys-lru: exit 2 naming the setting and the opt-in; nothing completed', async () => {
  const { queue, name } = await aBatch(h.redis).withItems([1, 2, 3]).closed().create();
  const w = start(name);
  expect((await w.exited).code).toBe(2);
  const refused = w.logs.find((l) => l.msg === 'Refusing a Redis that evicts keys');
  expect(JSON.stringify(refused)).toMatch(/maxmemory-policy is allkeys-lru.*set maxmemory-policy noeviction.*TASKBATCH_REDIS_ALLOW_EVICTION=true/);
  expect(await queue.snapshot()).toMatchObject({ succeeded: 0, failed: 0, running: 0, pending: 3 });
});

test('the same Redis with TASKBATCH_REDIS_ALLOW_EVICTION=true: the batch runs', async () => {
  const { queue, name } = await aBatch(h.redis).withItems([1, 2, 3]).closed().create();
  const w = start(name, { TASKBATCH_REDIS_ALLOW_EVICTION: 'true' });
  expect((await w.exited).code).toBe(0);
  expect(w.logs.some((l) => l.msg === 'Refusing a Redis that evicts keys')).toBe(false);
  expect(await queue.snapshot()).toMatchObject({ succeeded: 3, pending: 0 });
});
