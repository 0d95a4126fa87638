import { Redis } from 'ioredis';
import { join } from 'node:path';
import { repoRoot } from '../../localcluster/index.js';
import { batchPath, type TaskBatch } from '../../api/taskbatch.js';
import { BatchQueue } from '../../queue/index.js';
import { eventually, sleep } from '../support/batches.js';
import { aTaskBatch, createNamespace, getBatch, startOperator, startOperatorEnv, waitForCondition, workerPods, type OperatorEnv, type OperatorProcess } from '../support/operator-env.js';

let env: OperatorEnv;
let op: OperatorProcess;
let redis: Redis;
let ns: string;
// Fail fast on crash-looping workers (2 s + 4 s of replacement backoff) so the test stays short.
const OPERATOR_ENV = { TASKBATCH_MAX_WORKER_FAILURES: '3' };

beforeAll(async () => {
  env = await startOperatorEnv();
  redis = new Redis(env.redis.port, env.redis.host);
  ns = await createNamespace(env.kube, 'e2e');
  op = await startOperator(env, OPERATOR_ENV);
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

async function apply(tb: TaskBatch): Promise<TaskBatch> {
  return env.kube.create<TaskBatch>(batchPath(ns), tb);
}

/** Polls the batch's worker pods while `until` is pending; returns the most seen at once and all names. */
function trackPods(batch: string): { max: () => number; names: Set<string>; stop: () => void } {
  let max = 0;
  const names = new Set<string>();
  let stopped = false;
  void (async () => {
    while (!stopped) {
      const pods = (await workerPods(env.kube, ns, batch).catch(() => [])).filter((p) => !p.metadata.deletionTimestamp);
      max = Math.max(max, pods.length);
      for (const p of pods) names.add(p.metadata.name!);
      await sleep(100);
    }
  })();
  return { max: () => max, names, stop: () => (stopped = true) };
}

test.each(['thread', 'process', 'async'])('a 1,000-item batch in %s mode runs to Complete on real worker processes', async (mode) => {
  const name = `thousand-${mode}`;
  const pods = trackPods(name);
  await apply(aTaskBatch(ns, name, { range: { end: 1000 }, handler: { builtin: 'noop' }, pool: { mode, size: 2 }, workers: { max: 2, itemsPerWorker: 500 } }));
  const done = await waitForCondition(env.kube, ns, name, 'Complete', 180_000);
  pods.stop();
  expect(done.status?.items).toEqual({ total: 1000, pending: 0, delayed: 0, running: 0, succeeded: 1000, failed: 0, retries: 0, handedBack: 0 });
  expect(done.status).toMatchObject({ progress: '1000/1000', state: 'Complete', redis: { url: env.redis.url } });
  expect(done.status?.completionTime).toBeDefined();
  expect(pods.names.size).toBeGreaterThan(0);
  expect(pods.max()).toBeLessThanOrEqual(2);
  // The pods ran the real worker: its structured logs are in the node agent's pod logs.
  const logged = [...pods.names].map((p) => env.agent!.podLog(ns, p)).join('\n');
  expect(logged).toMatch(new RegExp(`"mode":"${mode}"`));
  await eventually(async () => (await workerPods(env.kube, ns, name)).length === 0, 60_000, 'worker pods gone');
  // kubectl wait works on the condition.
  const wait = await env.cp.kubectl(['wait', '--for=condition=Complete', `tb/${name}`, '-n', ns, '--timeout=5s']);
  expect(wait.code).toBe(0);
});

test('failing items end Failed with the right counts, or Complete within the failure policy', async () => {
  const handler = { module: join(repoRoot(), 'test/fixtures/operator/fail-some.mjs') };
  const retry = { maxAttempts: 2, backoff: { initialMs: 10, maxMs: 20, factor: 2, jitter: 0 } };
  await apply(aTaskBatch(ns, 'strict', { range: { end: 100 }, handler, retry, pool: { mode: 'async', size: 4 }, workers: { max: 1 } }));
  await apply(aTaskBatch(ns, 'tolerant', { range: { end: 100 }, handler, retry, pool: { mode: 'async', size: 4 }, workers: { max: 1 }, failurePolicy: { maxFailedPercent: 10 } }));
  const strict = await waitForCondition(env.kube, ns, 'strict', 'Failed', 120_000);
  expect(strict.status?.items).toMatchObject({ total: 100, succeeded: 90, failed: 10, retries: 10 });
  const failed = strict.status?.conditions?.find((c) => c.type === 'Failed');
  expect(failed).toMatchObject({ reason: 'FailurePolicyExceeded' });
  expect(failed?.message).toMatch(/10 of 100 items failed permanently \(allowed: 0\)/);
  const q = new BatchQueue(redis, { namespace: ns, name: 'strict' });
  const dead = await q.deadLetters('0', 100);
  expect(dead.items.map((d) => d.payload).sort((a, b) => (a as { i: number }).i - (b as { i: number }).i)).toEqual(Array.from({ length: 10 }, (_, k) => ({ i: k * 10 })));
  expect(dead.items[0]).toMatchObject({ attempts: 2, error: { message: expect.stringMatching(/is a multiple of 10/) } });
  const tolerant = await waitForCondition(env.kube, ns, 'tolerant', 'Complete', 120_000);
  expect(tolerant.status?.items).toMatchObject({ succeeded: 90, failed: 10 });
});

test('scales up with a backlog and scales in by draining, without interrupting an item', async () => {
  const name = 'elastic';
  const pods = trackPods(name);
  await apply(
    aTaskBatch(ns, name, {
      items: Array.from({ length: 240 }, () => ({ ms: 150 })),
      handler: { builtin: 'sleep' },
      pool: { mode: 'async', size: 2 },
      workers: { max: 4, itemsPerWorker: 20, scaleDownDelaySeconds: 0 },
    }),
  );
  const done = await waitForCondition(env.kube, ns, name, 'Complete', 180_000);
  pods.stop();
  expect(pods.max()).toBe(4);
  // Scale-in happened before the end, by drain requests (not pod deletion)...
  const drains = op
    .logs()
    .split('\n')
    .filter((l) => l.includes('"Requested worker drain"') && l.includes(`"batch":"${ns}/${name}"`));
  expect(drains.length).toBeGreaterThan(0);
  // ...and interrupted nothing: every item succeeded on its first attempt.
  expect(done.status?.items).toMatchObject({ total: 240, succeeded: 240, failed: 0, retries: 0 });
});

test('suspend stops the workers without losing items; resume finishes the batch', async () => {
  const name = 'pausable';
  await apply(
    aTaskBatch(ns, name, { items: Array.from({ length: 200 }, (_, i) => ({ ms: 50, i })), handler: { builtin: 'sleep' }, pool: { mode: 'async', size: 2 }, workers: { max: 2, itemsPerWorker: 50 } }),
  );
  await eventually(async () => ((await getBatch(env.kube, ns, name)).status?.items?.succeeded ?? 0) > 10, 120_000, 'some progress');
  await env.kube.patch(batchPath(ns, name), { spec: { suspend: true } });
  const suspended = await waitForCondition(env.kube, ns, name, 'Suspended', 60_000);
  expect(suspended.status?.state).toBe('Suspended');
  await eventually(async () => (await workerPods(env.kube, ns, name)).length === 0, 60_000, 'workers gone while suspended');
  const q = new BatchQueue(redis, { namespace: ns, name });
  const paused = await eventually(
    async () => {
      const s = await q.snapshot();
      return s.running === 0 ? s : undefined;
    },
    30_000,
    'no item running while suspended',
  );
  await sleep(2000);
  expect((await q.snapshot()).succeeded).toBe(paused.succeeded);
  expect(paused.total).toBe(200);
  expect(paused.pending + paused.delayed + paused.succeeded).toBe(200);
  await env.kube.patch(batchPath(ns, name), { spec: { suspend: false } });
  const done = await waitForCondition(env.kube, ns, name, 'Complete', 180_000);
  expect(done.status?.items).toMatchObject({ total: 200, succeeded: 200, failed: 0 });
  expect(done.status?.conditions?.find((c) => c.type === 'Suspended')).toMatchObject({ status: 'False', reason: 'Resumed' });
});

test('deleting a batch removes its Redis keys and its pods', async () => {
  const name = 'doomed';
  await apply(aTaskBatch(ns, name, { items: Array.from({ length: 100 }, () => ({ ms: 200 })), handler: { builtin: 'sleep' }, pool: { mode: 'async', size: 1 }, workers: { max: 1 } }));
  await eventually(async () => (await workerPods(env.kube, ns, name)).length > 0 && (await redis.exists(`tb:{${ns}/${name}}:meta`)) === 1, 60_000, 'batch running');
  const got = await getBatch(env.kube, ns, name);
  expect(got.metadata.finalizers).toContain('taskbatch.dev/redis-cleanup');
  await env.kube.delete(batchPath(ns, name));
  await eventually(async () => (await env.kube.find(batchPath(ns, name))) === undefined, 60_000, 'TaskBatch gone');
  expect(await redis.keys(`tb:{${ns}/${name}}:*`)).toEqual([]);
  await eventually(async () => (await workerPods(env.kube, ns, name)).length === 0, 60_000, 'pods garbage-collected');
});

test('an operator killed mid-seed and mid-batch converges without duplicate items or pods', async () => {
  const name = 'crashy';
  const total = 300_000;
  const pods = trackPods(name);
  await apply(aTaskBatch(ns, name, { range: { end: total }, handler: { builtin: 'noop' }, pool: { mode: 'async', size: 8 }, workers: { max: 2, itemsPerWorker: 1000 } }));
  // Kill -9 while the seed cursor is part-way.
  const cursorAt = await eventually(
    async () => {
      const c = Number(await redis.hget(`tb:{${ns}/${name}}:meta`, 'seedCursor'));
      return c > 0 && c < total ? c : undefined;
    },
    60_000,
    'seeding under way',
  );
  await op.kill('SIGKILL');
  op = await startOperator(env, OPERATOR_ENV);
  const q = new BatchQueue(redis, { namespace: ns, name });
  await eventually(async () => (await q.snapshot()).seedCursor === String(total), 120_000, 'seeding finished');
  expect(cursorAt).toBeLessThan(total);
  expect((await q.snapshot()).total).toBe(total);
  // Kill -9 again mid-batch.
  await eventually(async () => (await q.snapshot()).succeeded > 1000, 120_000, 'items being processed');
  await op.kill('SIGKILL');
  await sleep(1000);
  op = await startOperator(env, OPERATOR_ENV);
  const done = await waitForCondition(env.kube, ns, name, 'Complete', 300_000);
  pods.stop();
  expect(done.status?.items).toMatchObject({ total, succeeded: total, failed: 0 });
  expect(pods.max()).toBeLessThanOrEqual(2);
});

test('workers that keep crashing fail the batch with WorkersCrashLooping', async () => {
  const name = 'crashloop';
  await apply(aTaskBatch(ns, name, { range: { end: 10 }, handler: { module: join(repoRoot(), 'test/fixtures/operator/does-not-exist.mjs') }, workers: { max: 1 } }));
  const degraded = await waitForCondition(env.kube, ns, name, 'Degraded', 60_000);
  expect(degraded.status?.conditions?.find((c) => c.type === 'Degraded')).toMatchObject({ reason: 'WorkerPodsFailing' });
  const failed = await waitForCondition(env.kube, ns, name, 'Failed', 120_000);
  expect(failed.status?.conditions?.find((c) => c.type === 'Failed')).toMatchObject({ reason: 'WorkersCrashLooping', message: expect.stringMatching(/3 worker pods failed in a row/) });
  expect(failed.status?.workers?.failures).toBe(3);
  await eventually(async () => (await workerPods(env.kube, ns, name)).length === 0, 60_000, 'no worker pods left');
});

test('activeDeadlineSeconds fails a batch that runs too long and stops its workers', async () => {
  const name = 'deadline';
  await apply(
    aTaskBatch(ns, name, { items: Array.from({ length: 50 }, () => ({ ms: 1000 })), handler: { builtin: 'sleep' }, pool: { mode: 'async', size: 1 }, workers: { max: 1 }, activeDeadlineSeconds: 3 }),
  );
  const failed = await waitForCondition(env.kube, ns, name, 'Failed', 60_000);
  expect(failed.status?.conditions?.find((c) => c.type === 'Failed')).toMatchObject({ reason: 'DeadlineExceeded' });
  expect(failed.status?.items?.succeeded).toBeLessThan(50);
  await eventually(async () => (await workerPods(env.kube, ns, name)).length === 0, 60_000, 'workers stopped');
});
