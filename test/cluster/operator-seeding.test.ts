/**
 * Seeding is bounded: a batch over the installer's item limit is refused with a condition naming
 * the field, before anything reaches Redis; a large batch is seeded in slices, one per reconcile,
 * with status written between them; nothing is seeded while suspended; suspend and delete stop
 * seeding within a slice; and a small batch completes while a large one seeds.
 */
import { Redis } from 'ioredis';
import { batchPath } from '../../api/taskbatch.js';
import { eventually, sleep } from '../support/batches.js';
import { aTaskBatch, createNamespace, getBatch, startOperator, startOperatorEnv, waitForCondition, type OperatorEnv, type OperatorProcess } from '../support/operator-env.js';

let env: OperatorEnv;
let op: OperatorProcess;
let redis: Redis;
let ns: string;
const LIMIT = 3_000_000;
const SLICE = 20_000;

beforeAll(async () => {
  env = await startOperatorEnv();
  redis = new Redis(env.redis.port, env.redis.host);
  ns = await createNamespace(env.kube, 'seed');
  op = await startOperator(env, { TASKBATCH_MAX_BATCH_ITEMS: String(LIMIT), TASKBATCH_SEED_SLICE_ITEMS: String(SLICE) });
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

const seedCursor = async (name: string): Promise<number> => Number((await redis.hget(`tb:{${ns}/${name}}:meta`, 'seedCursor')) ?? 0);
const pendingCount = async (name: string): Promise<number> => redis.llen(`tb:{${ns}/${name}}:pending`).catch(() => 0);

test("a range over the installer's limit is refused with a condition naming the field; nothing is enqueued", async () => {
  // Above the API's hard ceiling (1e9 items) the request itself is refused.
  await expect(env.kube.create(batchPath(ns), aTaskBatch(ns, 'way-too-big', { range: { start: 0, end: 1_000_000_000_000 }, handler: { builtin: 'noop' } }))).rejects.toThrow(
    /spec\.range: at most 1000000000 items/,
  );
  // Below it, the installer's limit (3M here) is the operator's to enforce, before anything reaches Redis.
  const name = 'too-big';
  await env.kube.create(batchPath(ns), aTaskBatch(ns, name, { range: { start: 0, end: 5_000_000 }, handler: { builtin: 'noop' } }));
  const failed = await waitForCondition(env.kube, ns, name, 'Failed', 60_000);
  const c = failed.status?.conditions?.find((x) => x.type === 'Failed');
  expect(c?.reason).toBe('TooManyItems');
  expect(c?.message).toMatch(/^spec\.range: 5000000 items exceed this installation's limit of 3000000 items per batch/);
  expect(await seedCursor(name)).toBe(0);
  expect(await pendingCount(name)).toBe(0);
});

test('nothing is seeded while suspended; resumed, seeding goes in slices with status between them; suspend stops it', async () => {
  const name = 'big';
  const total = 2_000_000;
  await env.kube.create(batchPath(ns), aTaskBatch(ns, name, { range: { start: 0, end: total }, handler: { builtin: 'noop' }, suspend: true, workers: { max: 1 } }));
  await waitForCondition(env.kube, ns, name, 'Suspended', 60_000);
  await sleep(2000);
  expect(await seedCursor(name)).toBe(0);

  await env.kube.patch(batchPath(ns, name), { spec: { suspend: false } });
  // Status shows seeding progress part-way (written between slices), in whole slices.
  const partway = await eventually(
    async () => {
      const b = await getBatch(env.kube, ns, name);
      const m = /(\d+) of (\d+) items seeded/.exec(b.status?.conditions?.find((c) => c.type === 'Progressing')?.message ?? '');
      return m && Number(m[1]) > 0 && Number(m[1]) < total ? Number(m[1]) : undefined;
    },
    60_000,
    'a status written mid-seed',
  );
  expect(partway % SLICE).toBe(0);

  // A small batch is not held up by the big one's seeding.
  await env.kube.create(batchPath(ns), aTaskBatch(ns, 'small', { range: { start: 0, end: 50 }, handler: { builtin: 'noop' } }));
  const small = await waitForCondition(env.kube, ns, 'small', 'Complete', 120_000);
  expect(small.status?.items).toMatchObject({ total: 50, succeeded: 50 });

  // Suspend mid-seed: the cursor stops within a slice.
  const before = await seedCursor(name);
  expect(before).toBeLessThan(total);
  await env.kube.patch(batchPath(ns, name), { spec: { suspend: true } });
  await waitForCondition(env.kube, ns, name, 'Suspended', 60_000);
  const atSuspend = await seedCursor(name);
  await sleep(3000);
  expect(await seedCursor(name)).toBe(atSuspend);

  // Delete mid-seed: the batch goes, its keys go, and seeding does not come back.
  await env.kube.delete(batchPath(ns, name));
  await eventually(async () => (await env.kube.find(batchPath(ns, name))) === undefined, 60_000, 'the batch deleted');
  await sleep(1500);
  expect(await redis.keys(`tb:{${ns}/${name}}*`)).toEqual([]);
}, 300_000);
