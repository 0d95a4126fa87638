// The SDK and the CLI in Kubernetes mode, against a real API server, the real operator (a
// process) and worker pods run by the node agent: batches found by name through the kubeconfig,
// the operator's conditions deciding wait()/watch, remote calls served by worker pods, and
// cancel as deletion (the operator's finalizer deletes the Redis keys).
import { jest } from '@jest/globals';
import { Redis } from 'ioredis';
import { batchPath, type TaskBatch } from '../../api/taskbatch.js';
import { batchKeys } from '../../queue/index.js';
import { BatchNotFoundError, connect, RemoteCallError, type TaskBatchClient, type Progress, type Remote } from '../../sdk/index.js';
import type * as MathModule from '../fixtures/sdk/math.js';
import { eventually } from '../support/batches.js';
import { taskbatch } from '../support/cli-run.js';
import { aTaskBatch, createNamespace, startOperator, startOperatorEnv, waitForCondition, type OperatorEnv, type OperatorProcess } from '../support/operator-env.js';

jest.setTimeout(240_000);

let env: OperatorEnv;
let op: OperatorProcess;
let redis: Redis;
let client: TaskBatchClient;
let KUBE: Record<string, string>;
const NS = 'sdkk';
const MATH = 'dist/test/fixtures/sdk/math.js'; // relative to the worker's working directory (/app in the image, the repository here)

beforeAll(async () => {
  env = await startOperatorEnv();
  redis = new Redis(env.redis.port, env.redis.host);
  await createNamespace(env.kube, NS);
  op = await startOperator(env, { TASKBATCH_STATUS_INTERVAL_MS: '500' });
  client = await connect({ kube: { kubeconfig: env.cp.kubeconfigPath }, namespace: NS });
  KUBE = { KUBECONFIG: env.cp.kubeconfigPath };
});

afterAll(async () => {
  await client?.close();
  await op?.kill('SIGTERM');
  redis?.disconnect();
  await env?.stop();
});

afterEach(() => {
  const state = expect.getState();
  if (state.assertionCalls !== state.numPassingAsserts) console.log(`operator log tail:\n${op.logs().split('\n').slice(-30).join('\n')}`);
});

test("feed an open TaskBatch, wait for the operator's verdict, read results and failures, cancel", async () => {
  const name = 'feed-me';
  await env.kube.create(
    batchPath(NS),
    aTaskBatch(NS, name, {
      open: true,
      redis: { url: env.redis.url },
      handler: { module: MATH, dispatch: 'fn' },
      pool: { mode: 'async', size: 8 },
      workers: { max: 1, itemsPerWorker: 1000 },
      retry: { maxAttempts: 1 },
      failurePolicy: { maxFailedItems: 1 },
    }),
  );
  const b = client.batch(name);
  const items = Array.from({ length: 100 }, (_, i) => ({ id: `n${i}`, data: { fn: 'square', args: [i] } }));
  // The SDK waits for the operator to create the queue (status.queueEpoch).
  expect(await b.submitMany([...items, { id: 'bad', data: { fn: 'fail', args: ['nope'] } }])).toMatchObject({ added: 101 });
  await b.close();
  const seen: Progress[] = [];
  const r = await b.wait({ intervalMs: 250, onProgress: (p) => seen.push(p) });
  expect(r).toMatchObject({ ok: true, outcome: 'Complete', reason: 'AllItemsProcessed', progress: { total: 101, succeeded: 100, failed: 1 } });
  expect(seen.length).toBeGreaterThan(1);
  const results = [];
  for await (const x of b.results()) results.push(x);
  expect(results).toHaveLength(100);
  const failures = [];
  for await (const f of b.failures()) failures.push(f);
  expect(failures).toEqual([expect.objectContaining({ id: 'bad', error: expect.objectContaining({ name: 'RangeError', message: 'nope' }) })]);
  const s = await b.status();
  expect(s.taskBatch).toMatchObject({ state: 'Complete', open: true });

  // The CLI sees the same, by name, through the kubeconfig.
  let c = await taskbatch(['status', name, '-n', NS], { env: KUBE });
  expect(c.code).toBe(0);
  expect(
    c.stdout
      .split('\n')[1]!
      .split(/\s{3,}/)
      .slice(0, 5),
  ).toEqual([name, 'Complete', '101/101', '100', '1']);
  c = await taskbatch(['watch', name, '-n', NS], { env: KUBE });
  expect(c).toMatchObject({ code: 0, stdout: expect.stringMatching(new RegExp(`Batch ${NS}/${name} Complete: 100 succeeded, 1 failed of 101 \\(AllItemsProcessed\\)`)) });
  c = await taskbatch(['failures', name, '-n', NS, '-o', 'table'], { env: KUBE });
  expect(c.stdout).toMatch(/^ID\s+ATTEMPTS\s+FAILED\s+ERROR\nbad\s+1\s+\S+\s+RangeError: nope\n$/);

  expect(await b.cancel({ wait: true })).toEqual({ deleted: 'TaskBatch' });
  expect(await env.kube.find(batchPath(NS, name))).toBeUndefined();
  expect(await redis.exists(...Object.values(batchKeys({ namespace: NS, name })))).toBe(0);
  await expect(b.status()).rejects.toBeInstanceOf(BatchNotFoundError);
});

test('a typed proxy over a service TaskBatch whose functions run on worker pods', async () => {
  const name = 'math-service';
  await env.kube.create(
    batchPath(NS),
    aTaskBatch(NS, name, {
      open: true,
      redis: { url: env.redis.url },
      handler: { module: MATH, dispatch: 'fn' },
      pool: { mode: 'async', size: 32 },
      workers: { min: 1, max: 1 },
      retry: { maxAttempts: 1 },
      failurePolicy: { maxFailedPercent: 100 },
    }),
  );
  const math: Remote<typeof MathModule> = client.proxy<typeof MathModule>(name, { timeoutMs: 90_000 });
  // The first call waits for the operator to start a worker pod.
  await expect(math.square(7)).resolves.toBe(49);
  await expect(math.fail('thrown on a pod')).rejects.toMatchObject({ name: 'RangeError', message: 'thrown on a pod' });
  await expect(math.fail('again')).rejects.toBeInstanceOf(RemoteCallError);
  const many = await Promise.all(Array.from({ length: 200 }, (_, i) => math.add(i, 1)));
  expect(many).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
  const c = await taskbatch(['call', name, 'square', '12', '-n', NS], { env: KUBE });
  expect(c).toMatchObject({ code: 0, stdout: '144\n' });
  // The worker that answered is a pod of this batch.
  const who = await math.whoami();
  expect(who.id).toMatch(/^call:/);
  const pods = (await env.kube.list<{ metadata: { name: string } }>(`/api/v1/namespaces/${NS}/pods`, { labelSelector: `taskbatch.dev/batch=${name}` })).items;
  expect(pods.length).toBe(1);
  expect(env.agent!.podLog(NS, pods[0]!.metadata.name)).toMatch(/"msg":"Started worker"/);
});

test("batches on the operator's default Redis are found through status.redis; unknown batches are BatchNotFound (CLI: 3)", async () => {
  const name = 'on-default';
  await env.kube.create(batchPath(NS), aTaskBatch(NS, name, { open: true, handler: { builtin: 'noop' }, workers: { max: 1 } }));
  await waitForCondition(env.kube, NS, name, 'Progressing', 60_000);
  // The operator records its default Redis (no credentials) on the resource...
  const tb = await env.kube.get<TaskBatch>(batchPath(NS, name));
  expect(tb.status?.redis).toEqual({ url: env.redis.url });
  // ...so the SDK and the CLI need no address.
  await client.batch(name).submit({ x: 1 });
  let c = await taskbatch(['submit', name, '-n', NS, '--data', '{"a":1}'], { env: KUBE });
  expect(c).toMatchObject({ code: 0, stdout: `Submitted 1 item to ${NS}/${name}\n` });
  // An explicit address still wins; the TaskBatch decides namespace, name and epoch.
  c = await taskbatch(['submit', name, '-n', NS, '--data', '{"a":2}', '--redis-url', env.redis.url, '--context', 'taskbatch-local'], { env: KUBE });
  expect(c).toMatchObject({ code: 0, stdout: `Submitted 1 item to ${NS}/${name}\n` });
  c = await taskbatch(['status', name, '-n', NS], { env: KUBE });
  expect(c.code).toBe(0);
  await eventually(async () => (await taskbatch(['status', name, '-n', NS, '-o', 'json'], { env: KUBE })).stdout.includes('"succeeded": 3'), 60_000, 'the items counted');

  await expect(client.batch('no-such').status()).rejects.toThrow(/TaskBatch "no-such" not found in namespace "sdkk" \(context taskbatch-local\); list them with: kubectl get taskbatches -n sdkk/);
  c = await taskbatch(['results', 'no-such', '-n', NS], { env: KUBE });
  expect(c).toMatchObject({ code: 3, stderr: expect.stringMatching(/TaskBatch "no-such" not found/) });
  c = await taskbatch(['status', 'x', '--context', 'elsewhere'], { env: KUBE });
  expect(c).toMatchObject({ code: 2, stderr: expect.stringMatching(/context "elsewhere" is not in the kubeconfig; its contexts: taskbatch-local/) });
  // cancel through the CLI: the TaskBatch goes, the finalizer removes its keys.
  c = await taskbatch(['cancel', name, '-n', NS, '--wait'], { env: KUBE });
  expect(c).toMatchObject({ code: 0, stdout: `Deleted TaskBatch ${NS}/${name} (and its Redis keys)\n` });
  expect(await redis.exists(batchKeys({ namespace: NS, name }).meta)).toBe(0);
});

test('replay refuses a batch that failed for a reason replayed items cannot outlive (here its deadline), naming the reason', async () => {
  const name = 'too-late';
  await env.kube.create(
    batchPath(NS, undefined),
    aTaskBatch(NS, name, { items: Array.from({ length: 50 }, () => ({ ms: 2000 })), handler: { builtin: 'sleep' }, pool: { mode: 'async', size: 1 }, workers: { max: 1 }, activeDeadlineSeconds: 2 }),
  );
  await waitForCondition(env.kube, NS, name, 'Failed', 120_000);
  await expect(client.batch(name).replay()).rejects.toThrow(/failed \(DeadlineExceeded: .*\); replayed items would never run .* create a new TaskBatch/);
  const c = await taskbatch(['replay', name, '--all', '-n', NS], { env: KUBE });
  expect(c.code).not.toBe(0);
  expect(c.stderr).toMatch(/DeadlineExceeded/);
});
