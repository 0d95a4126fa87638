// The /scale subresource on the real API server with the real operator: GET answers on every
// batch (spec.workers.replicas always exists, CRD default 0), writes are refused under Backlog
// scaling with a message saying how to hand the count over, and under Replicas scaling a PUT or
// PATCH of /scale is what the operator runs (pods follow), never above spec.workers.max.
import { Redis } from 'ioredis';
import { batchPath, type TaskBatch } from '../../api/taskbatch.js';
import { KubeApiError } from '../../kube/client.js';
import type { Pod } from '../../kube/pod.js';
import { BatchQueue } from '../../queue/index.js';
import { eventually } from '../support/batches.js';
import { aTaskBatch, createNamespace, getBatch, startOperator, startOperatorEnv, waitForCondition, workerPods, type OperatorEnv, type OperatorProcess } from '../support/operator-env.js';

interface Scale {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec: { replicas?: number };
  status: { replicas: number; selector?: string };
}

let env: OperatorEnv;
let op: OperatorProcess;
let redis: Redis;
let ns: string;

beforeAll(async () => {
  env = await startOperatorEnv();
  redis = new Redis(env.redis.port, env.redis.host);
  ns = await createNamespace(env.kube, 'scale');
  op = await startOperator(env);
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

const scalePath = (name: string): string => `${batchPath(ns, name)}/scale`;
const getScale = (name: string): Promise<Scale> => env.kube.get<Scale>(scalePath(name));
const patchScale = (name: string, replicas: number): Promise<Scale> => env.kube.patch<Scale>(scalePath(name), { spec: { replicas } });
const putScale = async (name: string, replicas: number): Promise<Scale> => {
  const current = await getScale(name);
  return env.kube.replace<Scale>(scalePath(name), { ...current, spec: { replicas } });
};

/** The API's refusal of a /scale write (422), as its message. */
async function refusal(write: Promise<unknown>): Promise<string> {
  try {
    await write;
  } catch (err) {
    expect(err).toBeInstanceOf(KubeApiError);
    expect((err as KubeApiError).status).toBe(422);
    return (err as Error).message;
  }
  throw new Error('the /scale write was accepted');
}

const running = (p: Pod): boolean => !p.metadata.deletionTimestamp && p.status?.phase !== 'Succeeded' && p.status?.phase !== 'Failed';

/** Waits until the batch runs exactly `n` worker pods (Running and not on their way out) and /scale reports them. */
async function followsTo(name: string, n: number): Promise<Scale> {
  await eventually(
    async () => {
      const pods = (await workerPods(env.kube, ns, name)).filter(running);
      if (pods.length === n && pods.every((p) => p.status?.phase === 'Running')) return true;
      // Thrown so that a timeout says what the pods were doing.
      throw new Error(`pods: ${pods.map((p) => `${p.metadata.name} ${p.status?.phase}`).join(', ') || 'none'}`);
    },
    120_000,
    `${n} running worker pods of ${name}`,
  );
  return eventually(
    async () => {
      const s = await getScale(name);
      return s.status.replicas === n ? s : undefined;
    },
    60_000,
    `/scale of ${name} to report status.replicas ${n}`,
  );
}

test('Backlog scaling (the default): GET /scale answers with the running count; writes are refused, saying how to hand the count over', async () => {
  const name = 'auto';
  // Open and empty: min 1 keeps one worker, the backlog asks for no more.
  await env.kube.create(batchPath(ns), aTaskBatch(ns, name, { open: true, pool: { mode: 'async', size: 1 }, workers: { min: 1, max: 3 } }));
  const scale = await followsTo(name, 1);
  expect(scale.spec.replicas ?? 0).toBe(0);
  expect(scale.status).toEqual({ replicas: 1, selector: `taskbatch.dev/batch=${name}` });

  const handOver =
    /spec.workers.replicas: Invalid value: "object": spec.workers.replicas must stay 0 while spec.workers.scaling is Backlog .*set spec.workers.scaling: Replicas together with spec.workers.replicas/;
  expect(await refusal(patchScale(name, 2))).toMatch(handOver);
  expect(await refusal(putScale(name, 2))).toMatch(handOver);
  const tb = await getBatch(env.kube, ns, name);
  expect(tb.spec.workers).toMatchObject({ scaling: 'Backlog', replicas: 0 });
  expect((await workerPods(env.kube, ns, name)).filter(running)).toHaveLength(1);
  await env.kube.delete(batchPath(ns, name));
});

test('Replicas scaling: PUT and PATCH of /scale set the worker count, pods follow, above max is refused; the batch completes', async () => {
  const name = 'fixed';
  await env.kube.create(batchPath(ns), aTaskBatch(ns, name, { open: true, pool: { mode: 'async', size: 2 }, workers: { min: 1, max: 3 } }));
  await followsTo(name, 1);
  // The hand-over: one patch switches the scaling and sets the count to start from.
  await env.kube.patch(batchPath(ns, name), { spec: { workers: { scaling: 'Replicas', replicas: 2 } } });
  expect((await followsTo(name, 2)).spec.replicas).toBe(2);

  expect((await putScale(name, 3)).spec.replicas).toBe(3);
  await followsTo(name, 3);
  expect(await refusal(patchScale(name, 4))).toMatch(
    /spec.workers.replicas: Invalid value: "object": spec.workers.replicas must be <= spec.workers.max, which caps the worker pods however they are scaled/,
  );
  expect((await getScale(name)).spec.replicas).toBe(3);

  expect((await patchScale(name, 1)).spec.replicas).toBe(1);
  await followsTo(name, 1);
  expect((await patchScale(name, 0)).spec.replicas ?? 0).toBe(0); // 0 is omitted from the Scale's JSON
  await followsTo(name, 0);

  // Work submitted while scaled to zero waits; a /scale write brings workers that finish it.
  const tb = await getBatch(env.kube, ns, name);
  const queue = new BatchQueue(redis, { namespace: ns, name }, { expectedEpoch: tb.status!.queueEpoch! });
  await queue.enqueueMany(Array.from({ length: 20 }, (_, i) => ({ id: `item-${i}`, data: { i } })));
  await queue.close();
  expect((await getBatch(env.kube, ns, name)).status?.conditions?.find((c) => c.type === 'Complete')?.status).not.toBe('True');
  await patchScale(name, 2);
  const done = await waitForCondition(env.kube, ns, name, 'Complete', 120_000);
  expect(done.status?.items).toMatchObject({ total: 20, succeeded: 20, failed: 0 });
});

test('kubectl scale sets the count of a batch created with Replicas scaling; status.workers follows', async () => {
  const name = 'kubectl';
  await env.kube.create(batchPath(ns), aTaskBatch(ns, name, { open: true, pool: { mode: 'async', size: 1 }, workers: { scaling: 'Replicas', replicas: 1, max: 2 } }));
  await followsTo(name, 1);
  const r = await env.cp.kubectl(['scale', `taskbatch/${name}`, '-n', ns, '--replicas=2']);
  expect(r.stderr).toBe('');
  const s = await followsTo(name, 2);
  expect(s.spec.replicas).toBe(2);
  const tb: TaskBatch = await getBatch(env.kube, ns, name);
  expect(tb.status?.workers).toMatchObject({ desired: 2, current: 2 });
});
