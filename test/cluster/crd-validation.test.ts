import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { KubeApiError, KubeClient } from '../../kube/client.js';
import { batchPath, type TaskBatch } from '../../api/taskbatch.js';
import { startControlPlane, type ControlPlane } from '../../localcluster/index.js';
import { eventually } from '../support/batches.js';
import { aTaskBatch, createNamespace, CRD_FILE, installCrd } from '../support/operator-env.js';

let cp: ControlPlane;
let kube: KubeClient;
let ns: string;

beforeAll(async () => {
  cp = await startControlPlane();
  kube = new KubeClient(cp.kubeConfig);
  await installCrd(kube);
  ns = await createNamespace(kube, 'crd');
});
afterAll(async () => {
  await cp?.stop();
});

async function rejection(tb: TaskBatch): Promise<string> {
  try {
    await kube.create(batchPath(ns, undefined), tb);
  } catch (err) {
    expect(err).toBeInstanceOf(KubeApiError);
    expect((err as KubeApiError).status).toBe(422);
    return (err as Error).message;
  }
  throw new Error(`TaskBatch ${tb.metadata.name} was accepted`);
}

let n = 0;
const tb = (spec: Record<string, unknown>): TaskBatch => aTaskBatch(ns, `b${++n}`, spec);

test('a valid TaskBatch is accepted and defaulted', async () => {
  const created = await kube.create<TaskBatch>(batchPath(ns), tb({ range: { end: 10 } }));
  expect(created.spec).toMatchObject({
    pool: { mode: 'thread', size: 4 },
    workers: { scaling: 'Backlog', replicas: 0, min: 0, max: 10, itemsPerWorker: 100 },
    retry: { maxAttempts: 3, backoff: { initialMs: 1000, factor: 2, maxMs: 60000, jitter: 0.2 } },
    leaseSeconds: 30,
    itemTimeoutSeconds: 600,
    suspend: false,
    range: { start: 0, step: 1, end: 10 },
  });
});

test.each([
  ['two item sources', { range: { end: 5 }, items: [{ a: 1 }] }, /spec: Invalid value: "object": set exactly one item source/],
  ['no item source', {}, /spec: .*set one item source: spec.items \(inline\), spec.range, spec.itemsFrom \(ConfigMap\) or spec.open: true/],
  ['min > max', { range: { end: 5 }, workers: { min: 5, max: 2 } }, /spec.workers: Invalid value: "object": spec.workers.min must be <= spec.workers.max/],
  [
    'replicas under Backlog scaling (the default)',
    { range: { end: 5 }, workers: { replicas: 2 } },
    /spec.workers.replicas: Invalid value: "object": spec.workers.replicas must stay 0 while spec.workers.scaling is Backlog \(the default: the operator sizes the pool from the backlog\); to set the worker count yourself, or let kubectl scale, an HPA or KEDA set it through \/scale, set spec.workers.scaling: Replicas together with spec.workers.replicas/,
  ],
  [
    'replicas > max',
    { range: { end: 5 }, workers: { scaling: 'Replicas', replicas: 5, max: 4 } },
    /spec.workers.replicas: Invalid value: "object": spec.workers.replicas must be <= spec.workers.max, which caps the worker pods however they are scaled; ask for fewer \(kubectl scale --replicas, an HPA's maxReplicas, KEDA's maxReplicaCount\) or raise spec.workers.max/,
  ],
  ['replicas > the default max of 10', { range: { end: 5 }, workers: { scaling: 'Replicas', replicas: 11 } }, /spec.workers.replicas: .*must be <= spec.workers.max/],
  ['an unknown scaling', { range: { end: 5 }, workers: { scaling: 'Auto' } }, /spec.workers.scaling: Unsupported value: "Auto": supported values: "Backlog", "Replicas"/],
  ['module and builtin', { range: { end: 5 }, handler: { module: '/app/h.js', builtin: 'noop' } }, /spec.handler: .*set exactly one of module \(your code\) or builtin/],
  ['shell without command', { range: { end: 5 }, handler: { builtin: 'shell' } }, /spec.handler: .*spec.handler.command is required for the shell builtin/],
  [
    'password in the Redis URL',
    { range: { end: 5 }, redis: { url: 'redis://user:hunter2@redis:6379' } },
    /spec.redis.url: .*must not contain a password: put it in a Secret and reference it with spec.redis.secretRef/,
  ],
  ['a Redis URL of another scheme', { range: { end: 5 }, redis: { url: 'http://redis:6379' } }, /spec.redis.url: .*must start with redis:\/\/ or rediss:\/\//],
  ['redis without url or secret', { range: { end: 5 }, redis: { username: 'u' } }, /spec.redis: .*set url, or secretRef/],
  ['unreachable range end', { range: { start: 10, end: 0 } }, /spec.range: .*end must be reachable from start by step/],
  ['zero step', { range: { end: 10, step: 0 } }, /spec.range.step must not be 0/],
  ['unknown pool mode', { range: { end: 5 }, pool: { mode: 'fibers' } }, /spec.pool.mode: Unsupported value: "fibers": supported values: "thread", "process", "async"/],
  ['pool size out of bounds', { range: { end: 5 }, pool: { size: 0 } }, /spec.pool.size: Invalid value: 0: spec.pool.size in body should be greater than or equal to 1/],
  ['lease too short', { range: { end: 5 }, leaseSeconds: 1 }, /spec.leaseSeconds: Invalid value: 1: spec.leaseSeconds in body should be greater than or equal to 5/],
  ['negative max attempts', { range: { end: 5 }, retry: { maxAttempts: -1 } }, /spec.retry.maxAttempts: Invalid value: -1/],
  ['backoff initial > max', { range: { end: 5 }, retry: { backoff: { initialMs: 5000, maxMs: 10 } } }, /spec.retry.backoff: .*initialMs must be <= maxMs/],
  ['failure percent > 100', { range: { end: 5 }, failurePolicy: { maxFailedPercent: 150 } }, /spec.failurePolicy.maxFailedPercent: Invalid value: 150/],
  [
    'a thread pool over 256',
    { range: { end: 5 }, pool: { mode: 'thread', size: 257 } },
    /spec.pool.size: Invalid value: "object": spec.pool.size: a thread or process pool holds at most 256 executors per worker pod/,
  ],
  ['a process pool over 256 (mode defaulted to thread counts too)', { range: { end: 5 }, pool: { size: 300 } }, /spec.pool.size: .*at most 256 executors/],
  [
    'a range of more than 1e9 items',
    { range: { start: 0, end: 1_000_000_001 } },
    /spec.range: Invalid value: "object": spec.range: at most 1000000000 items \(\(end - start\) \/ step\) per TaskBatch, the API's hard ceiling \(the installer's limit, operator setting TASKBATCH_MAX_BATCH_ITEMS, is usually lower\)/,
  ],
  ['a negative-step range of more than 1e9 items', { range: { start: 0, end: -4_000_000_000, step: -2 } }, /spec.range: .*at most 1000000000 items/],
  ['a range at the edge of int64 (no overflow)', { range: { start: -9_000_000_000_000_000_000, end: 9_000_000_000_000_000_000 } }, /spec.range: .*at most 1000000000 items/],
])('rejects %s, naming the field', async (_name, spec, message) => {
  expect(await rejection(tb(spec))).toMatch(message);
});

test('the largest allowed pool and range are accepted', async () => {
  await kube.create(batchPath(ns), tb({ range: { end: 1_000_000_000 }, pool: { mode: 'thread', size: 256 } }));
  await kube.create(batchPath(ns), tb({ range: { start: 10, end: 2_000_000_010, step: 2 }, pool: { mode: 'async', size: 1024 } }));
});

test('too many inline items: the error says to use a ConfigMap or open mode', async () => {
  const items = Array.from({ length: 1001 }, (_, i) => ({ i }));
  expect(await rejection(tb({ items }))).toMatch(/spec.items: .*at most 1000 inline items .* put larger inputs in a ConfigMap \(spec.itemsFrom\) or use spec.open: true/);
});

test('item source, handler, retry and redis are immutable', async () => {
  const created = await kube.create<TaskBatch>(batchPath(ns), tb({ range: { end: 10 }, redis: { url: 'redis://r:6379' } }));
  const path = batchPath(ns, created.metadata.name);
  const patchFails = async (patch: Record<string, unknown>, message: RegExp): Promise<void> => {
    await expect(kube.patch(path, { spec: patch })).rejects.toThrow(message);
  };
  await patchFails({ range: { end: 20 } }, /spec.range: .*spec.range is immutable/);
  await patchFails({ handler: { builtin: 'sleep' } }, /spec.handler: .*spec.handler is immutable/);
  await patchFails({ retry: { maxAttempts: 9 } }, /spec.retry: .*spec.retry is immutable/);
  await patchFails({ redis: { url: 'redis://other:6379' } }, /spec.redis: .*spec.redis is immutable/);
  await patchFails({ range: null, items: [{ a: 1 }] }, /the item source cannot change after creation/);
  // Mutable fields can change.
  const updated = await kube.patch<TaskBatch>(path, { spec: { suspend: true, workers: { max: 3 }, pool: { size: 8 } } });
  expect(updated.spec).toMatchObject({ suspend: true, workers: { max: 3 }, pool: { size: 8 } });
});

test('printer columns and the /scale subresource', async () => {
  const created = await kube.create<TaskBatch>(batchPath(ns), tb({ range: { end: 10 } }));
  const name = created.metadata.name!;
  await kube.patch(`${batchPath(ns, name)}/status`, {
    status: { state: 'Running', progress: '3/10', items: { failed: 1 }, workers: { current: 2, summary: '2/3' }, selector: `taskbatch.dev/batch=${name}` },
  });
  const get = await cp.kubectl(['get', 'tb', name, '-n', ns]);
  expect(get.code).toBe(0);
  expect(get.stdout).toMatch(/NAME\s+STATUS\s+PROGRESS\s+FAILED\s+WORKERS\s+AGE/);
  expect(get.stdout).toMatch(new RegExp(`${name}\\s+Running\\s+3/10\\s+1\\s+2/3\\s+`));
  // GET /scale answers on a batch the operator scales from its backlog; kubectl scale is refused there...
  const scaleObj = await kube.get<{ spec: { replicas?: number }; status: { replicas: number; selector: string } }>(`${batchPath(ns, name)}/scale`);
  expect(scaleObj.spec.replicas ?? 0).toBe(0);
  expect(scaleObj.status).toEqual({ replicas: 2, selector: `taskbatch.dev/batch=${name}` });
  const refused = await cp.kubectl(['scale', `taskbatch/${name}`, '-n', ns, '--replicas=5']);
  expect(refused.code).not.toBe(0);
  expect(refused.stderr).toMatch(/spec.workers.replicas must stay 0 while spec.workers.scaling is Backlog/);
  // ...and sets the count once the batch is scaled by replicas, up to max.
  await kube.patch(batchPath(ns, name), { spec: { workers: { scaling: 'Replicas', replicas: 1 } } });
  const scale = await cp.kubectl(['scale', `taskbatch/${name}`, '-n', ns, '--replicas=5']);
  expect(scale.stderr).toBe('');
  const after = await kube.get<TaskBatch>(batchPath(ns, name));
  expect(after.spec.workers?.replicas).toBe(5);
  expect((await kube.get<{ spec: { replicas: number } }>(`${batchPath(ns, name)}/scale`)).spec.replicas).toBe(5);
  const overMax = await cp.kubectl(['scale', `taskbatch/${name}`, '-n', ns, '--replicas=11']);
  expect(overMax.stderr).toMatch(/spec.workers.replicas must be <= spec.workers.max/);
  expect((await cp.kubectl(['get', 'all', '-n', ns])).stdout).toContain(`taskbatch.taskbatch.dev/${name}`);
});

describe('spec.template: the fields the operator reads or enforces are structural', () => {
  const withTemplate = (spec: Record<string, unknown>): TaskBatch => tb({ range: { end: 5 }, template: { spec } });

  test.each([
    [
      'a string for privileged',
      { containers: [{ name: 'w', securityContext: { privileged: 'yes' } }] },
      /spec.template.spec.containers\[0\].securityContext.privileged: Invalid value: "string": .*must be of type boolean/,
    ],
    ['a string for hostNetwork', { hostNetwork: 'true', containers: [{ name: 'w' }] }, /spec.template.spec.hostNetwork: Invalid value: "string": .*must be of type boolean/],
    [
      'an unknown seccomp profile type',
      { securityContext: { seccompProfile: { type: 'Unconfinde' } }, containers: [{ name: 'w' }] },
      /spec.template.spec.securityContext.seccompProfile.type: Unsupported value: "Unconfinde"/,
    ],
    ['a container without a name', { initContainers: [{ image: 'busybox' }], containers: [{ name: 'w' }] }, /spec.template.spec.initContainers\[0\].name: Required value/],
    ['a volume without a name', { containers: [{ name: 'w' }], volumes: [{ emptyDir: {} }] }, /spec.template.spec.volumes\[0\].name: Required value/],
    [
      'capabilities as a string',
      { containers: [{ name: 'w', securityContext: { capabilities: { add: 'SYS_ADMIN' } } }] },
      /spec.template.spec.containers\[0\].securityContext.capabilities.add: Invalid value: "string"/,
    ],
  ])('rejects %s, naming the field', async (_name, spec, message) => {
    expect(await rejection(withTemplate(spec))).toMatch(message);
  });

  test("a misspelt field is refused under strict field validation (kubectl's default) and pruned otherwise; the rest of PodSpec is kept", async () => {
    const typo = withTemplate({ containers: [{ name: 'w', securityContext: { privilegd: true } }], volumes: [{ name: 'v', hostpath: { path: '/' } }], tolerations: [{ operator: 'Exists' }] });
    const strict = await kube.create(batchPath(ns), typo, { fieldValidation: 'Strict' }).then(
      () => 'accepted',
      (err: unknown) => String((err as Error).message),
    );
    expect(strict).toMatch(/unknown field "spec.template.spec.containers\[0\].securityContext.privilegd"/);
    expect(strict).toMatch(/unknown field "spec.template.spec.volumes\[0\].hostpath"/);
    const created = await kube.create<TaskBatch>(batchPath(ns), typo);
    const spec = (created.spec.template as { spec: Record<string, unknown> }).spec;
    expect(spec.containers).toEqual([{ name: 'w', securityContext: {} }]);
    expect(spec.volumes).toEqual([{ name: 'v' }]);
    expect(spec.tolerations).toEqual([{ operator: 'Exists' }]);
  });
});

describe('names: at most 63 characters, since worker pods carry the name as a label value', () => {
  const named = (name: string): TaskBatch => aTaskBatch(ns, name, { range: { end: 5 } });
  const longName = (c: string, length: number): string => c.repeat(length);

  test('a 64-character name is refused, saying why and the limit; 63 characters are accepted', async () => {
    expect(await rejection(named(longName('a', 64)))).toMatch(
      /metadata.name: Invalid value: "object": a TaskBatch name is at most 63 characters \(Kubernetes allows 253 for the object\), because its worker pods carry the name as the value of their label taskbatch.dev\/batch and label values are at most 63 characters; choose a shorter name/,
    );
    const ok = await kube.create<TaskBatch>(batchPath(ns), named(longName('a', 63)));
    expect(ok.metadata.name).toHaveLength(63);
  });

  test('a longer-named batch created before the rule can still be updated and deleted (the rule applies at creation only)', async () => {
    // The CRD as it was before the rule: without the root validation.
    const crd = parse(readFileSync(CRD_FILE, 'utf8')) as { metadata: { name: string }; spec: { versions: { schema: { openAPIV3Schema: Record<string, unknown> } }[] } };
    delete crd.spec.versions[0]!.schema.openAPIV3Schema['x-kubernetes-validations'];
    await kube.patch(`/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${crd.metadata.name}`, crd, 'apply', { fieldManager: 'taskbatch-tests', force: true });
    const old = longName('o', 70);
    const withFinalizer = { ...named(old), metadata: { name: old, namespace: ns, finalizers: ['taskbatch.dev/test'] } };
    await eventually(() => kube.create(batchPath(ns), withFinalizer).then(() => true), 30_000, 'the old CRD to accept a 70-character name');
    await installCrd(kube); // the CRD with the rule again
    await eventually(() => rejection(named(longName('n', 64))).then(() => true), 30_000, 'the new CRD to refuse a 64-character name');

    await kube.patch(`${batchPath(ns, old)}/status`, { status: { state: 'Failed' } });
    await kube.patch(batchPath(ns, old), { spec: { suspend: true } });
    await kube.delete(batchPath(ns, old));
    await kube.patch(batchPath(ns, old), { metadata: { finalizers: null } });
    await eventually(async () => (await kube.find(batchPath(ns, old))) === undefined, 30_000, 'the old batch to be gone');
  });
});
