// Partial loss (issue 13, item 2) against the real operator, API server and redis-server: keys of
// a batch deleted one by one while its meta hash stays are reported as QueueStateLost and
// recovered like a whole loss, and a Redis whose maxmemory-policy evicts keys is refused
// (RedisMisconfigured) until it is set to noeviction.
import { Redis } from 'ioredis';
import { batchPath, type TaskBatch } from '../../api/taskbatch.js';
import { BatchQueue } from '../../queue/index.js';
import { eventually } from '../support/batches.js';
import { aTaskBatch, createNamespace, getBatch, type OperatorEnv, type OperatorProcess, startOperator, startOperatorEnv, waitForCondition, workerPods } from '../support/operator-env.js';

let env: OperatorEnv;
let op: OperatorProcess;
let redis: Redis;
let ns: string;

beforeAll(async () => {
  env = await startOperatorEnv();
  redis = new Redis(env.redis.port, env.redis.host, { maxRetriesPerRequest: 1 });
  ns = await createNamespace(env.kube, 'partial');
  op = await startOperator(env, { TASKBATCH_STATUS_INTERVAL_MS: '200' });
});
afterAll(async () => {
  await op?.kill('SIGTERM');
  redis?.disconnect();
  await env?.stop();
});
afterEach(async () => {
  await redis.config('SET', 'maxmemory-policy', 'noeviction');
  const state = expect.getState();
  if (state.assertionCalls !== state.numPassingAsserts) console.log(`operator log tail:\n${op.logs().split('\n').slice(-40).join('\n')}`);
});

async function eventsOf(name: string): Promise<{ reason?: string; message?: string; type?: string }[]> {
  const list = await env.kube.list<{ reason?: string; message?: string; type?: string }>(`/api/v1/namespaces/${ns}/events`, { fieldSelector: `involvedObject.name=${name}` });
  return list.items;
}

// First: the operator reads each Redis's policy at most every 15 s, so this one must be its first look.
test('a Redis with maxmemory-policy allkeys-lru: RedisMisconfigured names the setting, nothing is written or started; set to noeviction, the batch runs', async () => {
  await redis.config('SET', 'maxmemory-policy', 'allkeys-lru');
  const name = 'evicting';
  await env.kube.create<TaskBatch>(batchPath(ns), aTaskBatch(ns, name, { range: { end: 200 }, pool: { mode: 'async', size: 16 } }));
  const refused = await waitForCondition(env.kube, ns, name, 'RedisMisconfigured', 60_000);
  const cond = refused.status?.conditions?.find((c) => c.type === 'RedisMisconfigured');
  expect(cond).toMatchObject({ status: 'True', reason: 'EvictionPolicy' });
  expect(cond?.message).toMatch(/Redis maxmemory-policy is allkeys-lru: .*set maxmemory-policy noeviction on the Redis.*TASKBATCH_REDIS_ALLOW_EVICTION=true/);
  expect((await eventsOf(name)).some((e) => e.reason === 'RedisMisconfigured' && e.type === 'Warning')).toBe(true);
  // Nothing was created in that Redis, and no worker was started.
  expect(refused.status?.queueEpoch).toBeUndefined();
  expect(await redis.exists(new BatchQueue(redis, { namespace: ns, name }).keys.meta)).toBe(0);
  expect(await workerPods(env.kube, ns, name)).toHaveLength(0);

  await redis.config('SET', 'maxmemory-policy', 'noeviction');
  const done = await waitForCondition(env.kube, ns, name, 'Complete', 120_000);
  expect(done.status?.items).toMatchObject({ total: 200, succeeded: 200 });
  expect(done.status?.conditions?.find((c) => c.type === 'RedisMisconfigured')).toMatchObject({ status: 'False', reason: 'NoEviction' });
});

test('the pending key deleted under a seeded batch: a QueueStateLost event names it, the batch is re-seeded under a new epoch and completes', async () => {
  const name = 'pending-gone';
  // Scaled to zero workers: seeded, so the items wait in the pending list.
  await env.kube.create<TaskBatch>(batchPath(ns), aTaskBatch(ns, name, { range: { end: 500 }, workers: { scaling: 'Replicas', replicas: 0, max: 2 }, pool: { mode: 'async', size: 16 } }));
  const seeded = await eventually(
    async () => {
      const b = await getBatch(env.kube, ns, name);
      return b.status?.seeded && b.status.items?.pending === 500 ? b : undefined;
    },
    60_000,
    'seeded with 500 pending',
  );
  const epoch = seeded.status!.queueEpoch!;
  const q = new BatchQueue(redis, { namespace: ns, name }, { expectedEpoch: epoch });
  expect(await redis.del(q.keys.pending)).toBe(1);

  const lost = await eventually(async () => (await eventsOf(name)).find((e) => e.reason === 'QueueStateLost'), 60_000, 'a QueueStateLost event');
  expect(lost).toMatchObject({ type: 'Warning' });
  expect(lost.message).toContain('the pending key holds 0 but the counters say 500');
  const reseeded = await eventually(
    async () => {
      const b = await getBatch(env.kube, ns, name);
      return b.status?.queueEpoch !== epoch && b.status?.seeded ? b : undefined;
    },
    60_000,
    'a new epoch, seeded',
  );
  expect(reseeded.status?.conditions?.find((c) => c.type === 'QueueStateLost')).toMatchObject({ status: 'False', reason: 'Reseeded' });

  await env.kube.patch(batchPath(ns, name), { spec: { workers: { replicas: 2 } } });
  const done = await waitForCondition(env.kube, ns, name, 'Complete', 120_000);
  expect(done.status?.items).toMatchObject({ total: 500, succeeded: 500, failed: 0 });
});
