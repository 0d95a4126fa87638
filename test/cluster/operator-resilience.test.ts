import { hostname } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../../localcluster/index.js';
import { batchPath, type TaskBatch } from '../../api/taskbatch.js';
import { eventually, sleep } from '../support/batches.js';
import { aTaskBatch, createNamespace, getBatch, startOperator, startOperatorEnv, waitForCondition, workerPods, type OperatorEnv, type OperatorProcess } from '../support/operator-env.js';

let env: OperatorEnv;
let ns: string;
const operators: OperatorProcess[] = [];

beforeAll(async () => {
  env = await startOperatorEnv();
  ns = await createNamespace(env.kube, 'res');
  await operator();
});
afterAll(async () => {
  for (const op of operators) await op.kill('SIGTERM');
  await env?.stop();
});

async function operator(): Promise<OperatorProcess> {
  const op = await startOperator(env);
  operators.push(op);
  return op;
}

async function leaseHolder(): Promise<string> {
  const lease = await env.kube.get<{ spec: { holderIdentity?: string } }>('/apis/coordination.k8s.io/v1/namespaces/default/leases/taskbatch-operator');
  return lease.spec.holderIdentity ?? '';
}

const identity = (op: OperatorProcess): string => `${hostname()}-${op.proc.pid}`;

test('two replicas: only the leader acts; when it is killed the other takes over', async () => {
  const a = operators[0]!;
  await eventually(async () => (await leaseHolder()) === identity(a), 30_000, 'first replica leads');
  const b = await operator();
  await env.kube.create(batchPath(ns), aTaskBatch(ns, 'ha-1', { range: { end: 500 }, pool: { mode: 'async', size: 4 }, workers: { max: 1 } }));
  await waitForCondition(env.kube, ns, 'ha-1', 'Complete', 120_000);
  expect(await leaseHolder()).toBe(identity(a));
  expect(b.logs()).not.toMatch(/Controller started|Created worker pod/);
  expect(a.logs()).toMatch(/Created worker pod/);

  await a.kill('SIGKILL');
  await eventually(async () => (await leaseHolder()) === identity(b), 60_000, 'second replica takes over');
  expect(b.logs()).toMatch(/Became leader/);
  await env.kube.create(batchPath(ns), aTaskBatch(ns, 'ha-2', { range: { end: 500 }, pool: { mode: 'async', size: 4 }, workers: { max: 1 } }));
  await waitForCondition(env.kube, ns, 'ha-2', 'Complete', 120_000);
  expect(b.logs()).toMatch(/Created worker pod/);
});

test('status writes stay bounded on a fast 10,000-item batch', async () => {
  const name = 'fast';
  let modified = 0;
  let first = 0;
  let last = 0;
  const stop = await env.kube.watch<TaskBatch>(
    batchPath(ns),
    { fieldSelector: `metadata.name=${name}` },
    (e) => {
      if (e.type === 'MODIFIED') {
        modified++;
        last = Date.now();
        first ||= last;
      }
    },
    () => undefined,
  );
  try {
    // 10,000 items of 5 ms on 2 workers x 4 slots: several seconds of steady progress.
    const handler = { module: join(repoRoot(), 'test/fixtures/operator/pause.mjs') };
    await env.kube.create(batchPath(ns), aTaskBatch(ns, name, { range: { end: 10_000 }, handler, pool: { mode: 'async', size: 4 }, workers: { max: 2, itemsPerWorker: 2000 } }));
    await waitForCondition(env.kube, ns, name, 'Complete', 120_000);
    await sleep(3000); // anything written after completion counts too
  } finally {
    stop();
  }
  const seconds = (last - first) / 1000;
  // One write per state change (finalizer, started, seeded, workers ready, complete, ...)
  // plus at most one progress write per 2 s status interval.
  console.log(`status writes for a 10,000-item batch: ${modified} over ${seconds.toFixed(1)}s`);
  expect(seconds).toBeGreaterThan(3);
  expect(modified).toBeLessThanOrEqual(12 + Math.ceil(seconds / 2));
  expect(modified).toBeLessThan(40);
});

test('Redis down shows RedisUnavailable; Redis back empty is detected and the batch is re-seeded, never completed early', async () => {
  const name = 'lossy';
  await env.kube.create(
    batchPath(ns),
    aTaskBatch(ns, name, { items: Array.from({ length: 60 }, () => ({ ms: 100 })), handler: { builtin: 'sleep' }, pool: { mode: 'async', size: 2 }, workers: { max: 1 } }),
  );
  await eventually(async () => ((await getBatch(env.kube, ns, name)).status?.items?.succeeded ?? 0) >= 5, 120_000, 'some progress');
  const epochBefore = (await getBatch(env.kube, ns, name)).status?.queueEpoch;

  await env.redis.kill();
  const down = await waitForCondition(env.kube, ns, name, 'RedisUnavailable', 60_000);
  expect(down.status?.state).toBe('RedisUnavailable');
  expect(down.status?.conditions?.find((c) => c.type === 'Complete')).toBeUndefined();

  await env.redis.start(); // empty: the batch's state is gone
  const reseeded = await eventually(
    async () => {
      const tb = await getBatch(env.kube, ns, name);
      const c = tb.status?.conditions?.find((x) => x.type === 'QueueStateLost');
      return c?.reason === 'Reseeded' ? tb : undefined;
    },
    60_000,
    'QueueStateLost Reseeded',
  );
  expect(reseeded.status?.queueEpoch).not.toBe(epochBefore);
  expect(reseeded.status?.conditions?.find((c) => c.type === 'Complete')).toBeUndefined();
  const done = await waitForCondition(env.kube, ns, name, 'Complete', 180_000);
  expect(done.status?.items).toMatchObject({ total: 60, succeeded: 60, failed: 0 });
  expect(done.status?.conditions?.find((c) => c.type === 'RedisUnavailable')).toMatchObject({ status: 'False' });
  const events = await env.kube.list<{ reason: string; involvedObject: { name: string } }>(`/api/v1/namespaces/${ns}/events`);
  expect(events.items.filter((e) => e.involvedObject.name === name).map((e) => e.reason)).toEqual(expect.arrayContaining(['QueueStateLost', 'RedisUnavailable', 'Completed']));
  // Worker pods of the lost epoch were replaced.
  for (const p of await workerPods(env.kube, ns, name)) expect(p.metadata.annotations?.['taskbatch.dev/queue-epoch']).toBe(done.status?.queueEpoch);
});

test('an open batch whose Redis state is lost fails explicitly', async () => {
  const name = 'open-lossy';
  await env.kube.create(batchPath(ns), aTaskBatch(ns, name, { open: true, pool: { mode: 'async', size: 1 }, workers: { min: 0, max: 1 } }));
  await eventually(async () => (await getBatch(env.kube, ns, name)).status?.seeded === true, 60_000, 'open batch created');
  await env.redis.restart();
  const failed = await waitForCondition(env.kube, ns, name, 'Failed', 60_000);
  expect(failed.status?.conditions?.find((c) => c.type === 'Failed')).toMatchObject({ reason: 'QueueStateLost' });
});
