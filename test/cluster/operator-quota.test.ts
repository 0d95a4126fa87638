/**
 * The per-namespace quota of items held in Redis (TASKBATCH_NAMESPACE_ITEM_QUOTA): a batch that
 * does not fit beside its namespace's other unfinished batches waits, unseeded, with a
 * QuotaExceeded condition, and seeds when they finish; a batch larger than the whole quota fails;
 * other namespaces are not affected.
 */
import { Redis } from 'ioredis';
import { batchPath } from '../../api/taskbatch.js';
import { eventually } from '../support/batches.js';
import { aTaskBatch, createNamespace, getBatch, startOperator, startOperatorEnv, waitForCondition, type OperatorEnv, type OperatorProcess } from '../support/operator-env.js';

let env: OperatorEnv;
let op: OperatorProcess;
let redis: Redis;
let ns: string;
let other: string;

beforeAll(async () => {
  env = await startOperatorEnv();
  redis = new Redis(env.redis.port, env.redis.host);
  ns = await createNamespace(env.kube, 'quota');
  other = await createNamespace(env.kube, 'quota-other');
  op = await startOperator(env, { TASKBATCH_NAMESPACE_ITEM_QUOTA: '1000' });
}, 120_000);
afterAll(async () => {
  await op?.kill('SIGTERM');
  redis?.disconnect();
  await env?.stop();
}, 60_000);
afterEach(() => {
  const state = expect.getState();
  if (state.assertionCalls !== state.numPassingAsserts) console.log(`operator log tail:\n${op.logs().split('\n').slice(-40).join('\n')}`);
});

const seedCursor = async (n: string, name: string): Promise<number> => Number((await redis.hget(`tb:{${n}/${name}}:meta`, 'seedCursor')) ?? 0);

test('a batch over the namespace quota waits unseeded until the others finish; one larger than the quota fails', async () => {
  // 800 items of 20 ms on one worker with 4 slots: held for a few seconds.
  await env.kube.create(
    batchPath(ns),
    aTaskBatch(ns, 'first', { items: Array.from({ length: 800 }, () => ({ ms: 20 })), handler: { builtin: 'sleep' }, pool: { mode: 'async', size: 4 }, workers: { max: 1 } }),
  );
  await eventually(async () => (await seedCursor(ns, 'first')) === 800, 60_000, 'first seeded');
  await env.kube.create(batchPath(ns), aTaskBatch(ns, 'second', { range: { start: 0, end: 300 }, handler: { builtin: 'noop' } }));
  const waiting = await waitForCondition(env.kube, ns, 'second', 'QuotaExceeded', 60_000);
  expect(waiting.status?.conditions?.find((c) => c.type === 'QuotaExceeded')?.message).toMatch(/other batches hold \d+ items and this one needs 300, over the quota of 1000/);
  expect(await seedCursor(ns, 'second')).toBe(0);
  // Another namespace is not held back.
  await env.kube.create(batchPath(other), aTaskBatch(other, 'elsewhere', { range: { start: 0, end: 900 }, handler: { builtin: 'noop' } }));
  await waitForCondition(env.kube, other, 'elsewhere', 'Complete', 120_000);
  // When the first finishes, the second seeds and completes.
  await waitForCondition(env.kube, ns, 'first', 'Complete', 180_000);
  const done = await waitForCondition(env.kube, ns, 'second', 'Complete', 120_000);
  expect(done.status?.items).toMatchObject({ total: 300, succeeded: 300 });
  expect(done.status?.conditions?.find((c) => c.type === 'QuotaExceeded')).toMatchObject({ status: 'False', reason: 'WithinQuota' });

  await env.kube.create(batchPath(ns), aTaskBatch(ns, 'huge', { range: { start: 0, end: 1001 }, handler: { builtin: 'noop' } }));
  const failed = await waitForCondition(env.kube, ns, 'huge', 'Failed', 60_000);
  expect(failed.status?.conditions?.find((c) => c.type === 'Failed')).toMatchObject({ reason: 'TooManyItems' });
  expect(await seedCursor(ns, 'huge')).toBe(0);
  expect((await getBatch(env.kube, ns, 'huge')).status?.items?.total ?? 0).toBe(0);
}, 300_000);
