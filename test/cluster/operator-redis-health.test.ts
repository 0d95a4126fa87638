/**
 * Per-Redis health (issue 12, item 5), with a real operator process, a real redis-server and a
 * closed loopback port: batches naming an unreachable Redis fail fast with a condition naming
 * the address and the cause, and do not hold the operator's reconcile loops, so a healthy batch
 * beside them completes. The healthy batch's time to Complete, alone and beside 6 and 12 broken
 * batches, is printed (a figure for the closing note, not an assertion).
 */
import { createServer } from 'node:net';
import { batchPath, type TaskBatch } from '../../api/taskbatch.js';
import { aTaskBatch, createNamespace, startOperator, startOperatorEnv, waitForCondition, type OperatorEnv, type OperatorProcess } from '../support/operator-env.js';

let env: OperatorEnv;
let op: OperatorProcess;
let ns: string;
/** A loopback port that was bound, then closed: connecting to it is refused at once. */
let closedPort: number;
const figures: string[] = [];

beforeAll(async () => {
  env = await startOperatorEnv();
  const probe = createServer();
  closedPort = await new Promise<number>((resolve) => probe.listen(0, '127.0.0.1', () => resolve((probe.address() as { port: number }).port)));
  await new Promise((r) => probe.close(r));
  ns = await createNamespace(env.kube, 'redis-health');
  // Both the real redis-server and the closed port are on 127.0.0.1: allowed by this rule.
  op = await startOperator(env, { TASKBATCH_ALLOWED_REDIS: '127.0.0.1' });
}, 120_000);
afterAll(async () => {
  console.log(`healthy 200-item batch, create to Complete:\n${figures.join('\n')}`);
  await op?.kill('SIGTERM');
  await env?.stop();
}, 60_000);
afterEach(() => {
  const state = expect.getState();
  if (state.assertionCalls !== state.numPassingAsserts) console.log(`operator log tail:\n${op.logs().split('\n').slice(-40).join('\n')}`);
});

const closedUrl = (): string => `redis://127.0.0.1:${closedPort}`;

async function healthyBatch(name: string, label: string): Promise<void> {
  const started = Date.now();
  await env.kube.create<TaskBatch>(batchPath(ns), aTaskBatch(ns, name, { range: { end: 200 }, redis: { url: env.redis.url } }));
  const done = await waitForCondition(env.kube, ns, name, 'Complete', 240_000);
  figures.push(`  ${label}: ${((Date.now() - started) / 1000).toFixed(1)}s`);
  expect(done.status?.items).toMatchObject({ total: 200, succeeded: 200, failed: 0 });
}

/** Creates `count` batches on the closed port; each must show RedisUnavailable naming the address and the cause. */
async function brokenBatches(prefix: string, count: number): Promise<void> {
  const names = Array.from({ length: count }, (_, i) => `${prefix}-${i}`);
  for (const name of names) await env.kube.create<TaskBatch>(batchPath(ns), aTaskBatch(ns, name, { range: { end: 10 }, redis: { url: closedUrl() } }));
  for (const name of names) {
    const b = await waitForCondition(env.kube, ns, name, 'RedisUnavailable', 60_000);
    const c = b.status!.conditions!.find((x) => x.type === 'RedisUnavailable')!;
    // A connection problem, not a settings one (the reconciler names the reason).
    expect(c.reason).not.toBe('RedisConfigInvalid');
    expect(c.message).toContain(`Redis at 127.0.0.1:${closedPort} refused the connection (ECONNREFUSED)`);
    expect(c.message).toMatch(/; (next attempt within [\d.]+s|trying again now)/);
    expect(b.status?.queueEpoch).toBeUndefined();
  }
}

test('a healthy batch alone completes', async () => {
  await healthyBatch('alone', 'alone');
}, 300_000);

test('beside 6 batches naming a closed port: each shows RedisUnavailable naming the address and ECONNREFUSED, and the healthy batch completes', async () => {
  await brokenBatches('closed-a', 6);
  await healthyBatch('beside-6', 'beside 6 broken batches');
}, 300_000);

test('beside 12 batches naming a closed port: the healthy batch still completes', async () => {
  await brokenBatches('closed-b', 6);
  await healthyBatch('beside-12', 'beside 12 broken batches');
}, 300_000);
