import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { batchPath, type TaskBatch } from '../../api/taskbatch.js';
import { BatchQueue } from '../../queue/index.js';
import { eventually } from '../support/batches.js';
import { aTaskBatch, createNamespace, getBatch, type OperatorEnv, type OperatorProcess, startOperator, startOperatorEnv, waitForCondition } from '../support/operator-env.js';

// Redis restored from an older RDB file keeps the batch's epoch, so only facts that never shrink
// (the item total, succeeded, a closed queue) can tell. A real redis-server is saved mid-run and
// later restarted from that file.

let env: OperatorEnv;
let op: OperatorProcess;
let redis: Redis;
let ns: string;

beforeAll(async () => {
  env = await startOperatorEnv();
  redis = new Redis(env.redis.port, env.redis.host, { maxRetriesPerRequest: 1 });
  ns = await createNamespace(env.kube, 'rollback');
  op = await startOperator(env, { TASKBATCH_SEED_SLICE_ITEMS: '1000', TASKBATCH_STATUS_INTERVAL_MS: '200' });
});
afterAll(async () => {
  await op?.kill('SIGTERM');
  redis?.disconnect();
  await env?.stop();
});
afterEach(() => {
  const state = expect.getState();
  if (state.assertionCalls !== state.numPassingAsserts) console.log(`operator log tail:\n${op.logs().split('\n').slice(-40).join('\n')}`);
});

/** SAVE now; returns a copy of the RDB file to restore later. */
async function snapshotRdb(name: string): Promise<string> {
  await redis.save();
  const copy = join(env.redis.dir, `${name}.rdb`);
  copyFileSync(join(env.redis.dir, 'dump.rdb'), copy);
  return copy;
}

/** Kills Redis and starts it again from the given RDB file (same port, same epoch inside). */
async function restoreRdb(copy: string): Promise<void> {
  redis.disconnect();
  await env.redis.kill();
  copyFileSync(copy, join(env.redis.dir, 'dump.rdb'));
  await env.redis.start();
  redis = new Redis(env.redis.port, env.redis.host, { maxRetriesPerRequest: 1 });
}

test('restored from a snapshot taken mid-seeding: QueueStateLost/RolledBack, the missing items are seeded again, and the batch completes', async () => {
  const name = 'mid-seed';
  const total = 60_000;
  await env.kube.create<TaskBatch>(batchPath(ns), aTaskBatch(ns, name, { range: { end: total }, pool: { mode: 'async', size: 64 }, workers: { max: 2, itemsPerWorker: 100_000 } }));
  const q = () => new BatchQueue(redis, { namespace: ns, name });
  // Save while seeding is under way (the operator seeds 1,000 items per pass).
  await eventually(
    async () =>
      Number(
        (
          await q()
            .snapshot()
            .catch(() => undefined)
        )?.seedCursor || 0,
      ) >= 3000,
    60_000,
    'seeding under way',
  );
  const old = await snapshotRdb(name);
  const saved = await q().snapshot();
  expect(Number(saved.seedCursor)).toBeLessThan(total);
  const seeded = await eventually(
    async () => {
      const b = await getBatch(env.kube, ns, name);
      return b.status?.seeded && b.status.items?.total === total ? b : undefined;
    },
    120_000,
    'seeded',
  );
  const epoch = seeded.status!.queueEpoch;

  await restoreRdb(old);
  const detected = await eventually(
    async () => {
      const b = await getBatch(env.kube, ns, name);
      const c = b.status?.conditions?.find((x) => x.type === 'QueueStateLost' && x.reason?.startsWith('RolledBack'));
      return c ? { b, c } : undefined;
    },
    60_000,
    'the rollback detected',
  );
  expect(detected.c.message).toMatch(new RegExp(`item total ${total} → \\d+`));
  const done = await waitForCondition(env.kube, ns, name, 'Complete', 240_000);
  expect(done.status?.queueEpoch).toBe(epoch); // recovered in place, not re-created
  expect(done.status?.items).toMatchObject({ total, succeeded: total, failed: 0 });
  expect(done.status?.conditions?.find((c) => c.type === 'QueueStateLost')).toMatchObject({ status: 'False', reason: 'RolledBackReseeded' });
  const events = await env.kube.list<{ reason: string; involvedObject: { name: string } }>(`/api/v1/namespaces/${ns}/events`);
  expect(events.items.filter((e) => e.involvedObject.name === name).map((e) => e.reason)).toContain('QueueRolledBack');
});

test('restored from a snapshot taken after seeding: items finished since run again and the batch completes with every item', async () => {
  const name = 'after-seed';
  const total = 400;
  await env.kube.create<TaskBatch>(
    batchPath(ns),
    aTaskBatch(ns, name, { items: Array.from({ length: total }, () => ({ ms: 30 })), handler: { builtin: 'sleep' }, pool: { mode: 'async', size: 4 }, workers: { max: 1 } }),
  );
  const q = () => new BatchQueue(redis, { namespace: ns, name });
  await eventually(
    async () =>
      ((
        await q()
          .snapshot()
          .catch(() => undefined)
      )?.succeeded ?? 0) >= 20,
    120_000,
    'some items done',
  );
  const old = await snapshotRdb(name);
  const savedSucceeded = (await q().snapshot()).succeeded;
  await eventually(async () => ((await getBatch(env.kube, ns, name)).status?.items?.succeeded ?? 0) > savedSucceeded + 40, 120_000, 'more items done after the snapshot');
  await restoreRdb(old);
  const detected = await eventually(
    async () => {
      const b = await getBatch(env.kube, ns, name);
      return b.status?.conditions?.find((x) => x.type === 'QueueStateLost' && x.reason === 'RolledBackReseeded');
    },
    60_000,
    'the rollback detected',
  );
  expect(detected.message).toMatch(/succeeded \d+ → \d+/);
  const done = await waitForCondition(env.kube, ns, name, 'Complete', 240_000);
  expect(done.status?.items).toMatchObject({ total, succeeded: total, failed: 0 });
});
