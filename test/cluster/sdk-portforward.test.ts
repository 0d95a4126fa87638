// A laptop submitting to a batch whose Redis only has a cluster address (a Service DNS name):
// the SDK and the CLI find the TaskBatch through the API server, see that they cannot reach its
// Redis, resolve the Service to a ready pod, and port-forward through the API server
// (WebSocket, v4.channel.k8s.io). The node agent has no port-forward, so the pod runs on a
// second Node whose "kubelet" serves only port-forwarding (test/support/sdk-kubelet.ts); the API
// server, its authentication, RBAC and upgrade proxy are the real ones.
import { jest } from '@jest/globals';
import { Redis } from 'ioredis';
import { batchPath, type TaskBatch } from '../../api/taskbatch.js';
import { BatchQueue } from '../../queue/index.js';
import { connect, PortForwardError } from '../../sdk/index.js';
import { taskbatch } from '../support/cli-run.js';
import { aTaskBatch, createNamespace, startOperatorEnv, type OperatorEnv } from '../support/operator-env.js';
import { startFakeKubelet, type FakeKubelet } from '../support/sdk-kubelet.js';

jest.setTimeout(120_000);

let env: OperatorEnv;
let kubelet: FakeKubelet;
let redis: Redis;
const NS = 'pf';
const NAME = 'remote-batch';

beforeAll(async () => {
  env = await startOperatorEnv({ nodeAgent: false });
  redis = new Redis(env.redis.port, env.redis.host);
  await createNamespace(env.kube, NS);
  kubelet = await startFakeKubelet(env.kube);
  // The in-cluster Redis: a Service selecting a pod (on the port-forward node) whose port 6379
  // is, on this machine, the test's redis-server.
  await kubelet.runPod(env.kube, NS, 'redis-0', { app: 'redis' }, 6379, '10.244.9.9');
  kubelet.route(NS, 'redis-0', 6379, { host: env.redis.host, port: env.redis.port });
  await env.kube.create(`/api/v1/namespaces/${NS}/services`, {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'redis', namespace: NS },
    spec: { selector: { app: 'redis' }, ports: [{ name: 'redis', port: 6379, targetPort: 'redis' }] },
  });
  // No operator runs here (it could not reach that Redis either): create the queue and record
  // its epoch on the TaskBatch as the operator would.
  await env.kube.create(batchPath(NS), aTaskBatch(NS, NAME, { open: true, redis: { url: `redis://redis.${NS}.svc.cluster.local:6379` } }));
  const { epoch } = await new BatchQueue(redis, { namespace: NS, name: NAME }).create({ maxAttempts: 1 });
  await env.kube.patch(`${batchPath(NS, NAME)}/status`, { status: { queueEpoch: epoch, state: 'Pending' } });
});

afterAll(async () => {
  redis?.disconnect();
  await kubelet?.stop(env?.kube);
  await env?.stop();
});

test('the SDK reaches an in-cluster-only Redis through a port-forward over the API server', async () => {
  const client = await connect({ kube: { kubeconfig: env.cp.kubeconfigPath }, namespace: NS });
  try {
    expect(client.mode).toBe('kubernetes');
    const b = client.batch(NAME);
    const r = await b.submitMany(Array.from({ length: 500 }, (_, i) => ({ id: `pf-${i}`, data: { i } })));
    expect(r).toMatchObject({ added: 500, duplicates: 0 });
    expect((await b.submit({ i: 1 }, { id: 'pf-1' })).duplicate).toBe(true);
    const s = await b.status();
    expect(s).toMatchObject({ countsFrom: 'redis', counts: { total: 500, pending: 500 }, taskBatch: { open: true, state: 'Pending' } });
    const [pf] = await client.portForwards();
    expect(pf?.target).toEqual({ namespace: NS, pod: 'redis-0', port: 6379, via: 'service redis → pod redis-0' });
    expect(pf?.stats.errors).toBe(0);
  } finally {
    await client.close();
  }
  // The items are in the real Redis, and they came through the fake node's kubelet endpoint.
  expect(await redis.llen(`tb:{${NS}/${NAME}}:pending`)).toBe(500);
  expect(kubelet.connections.get(`${NS}/redis-0:6379`)).toBeGreaterThanOrEqual(1);
  expect(kubelet.requests.some((r) => r.startsWith(`/portForward/${NS}/redis-0?`) && /port=6379/.test(r))).toBe(true);
});

test('a long-lived client follows the Service to a new pod when its pod goes away', async () => {
  const warnings: string[] = [];
  const client = await connect({ kube: { kubeconfig: env.cp.kubeconfigPath }, namespace: NS, onWarning: (m) => warnings.push(m) });
  try {
    const b = client.batch(NAME);
    const before = (await b.status()).counts.total;
    // The pod is replaced: the old one is gone (its connections cut), a new one serves the Service.
    await kubelet.runPod(env.kube, NS, 'redis-1', { app: 'redis-next' }, 6379, '10.244.9.10');
    kubelet.route(NS, 'redis-1', 6379, { host: env.redis.host, port: env.redis.port });
    await env.kube.patch(`/api/v1/namespaces/${NS}/pods/redis-1`, { metadata: { labels: { app: 'redis' } } });
    await env.kube.delete(`/api/v1/namespaces/${NS}/pods/redis-0`, { gracePeriodSeconds: 0 });
    kubelet.drop(NS, 'redis-0', 6379);
    // ioredis reconnects; the next port-forward connection looks the Service up again.
    const r = await b.submit({ after: 'failover' }, { id: 'after-failover' });
    expect(r).toEqual({ id: 'after-failover', duplicate: false });
    expect((await b.status()).counts.total).toBe(before + 1);
    const [pf] = await client.portForwards();
    expect(pf?.target).toMatchObject({ pod: 'redis-1', via: 'service redis → pod redis-1' });
    expect(kubelet.connections.get(`${NS}/redis-1:6379`)).toBeGreaterThanOrEqual(1);
  } finally {
    await client.close();
  }
});

test('the CLI does the same with --context', async () => {
  const env2 = { KUBECONFIG: env.cp.kubeconfigPath };
  let r = await taskbatch(['submit', NAME, '-n', NS, '--data', '{"cli": 1}', '--data', '{"cli": 2}', '--id-prefix', 'cli'], { env: env2 });
  expect(r).toMatchObject({ code: 0, stdout: `Submitted 2 items to ${NS}/${NAME}\n` });
  r = await taskbatch(['status', NAME, '-n', NS, '-o', 'json'], { env: env2 });
  expect(r.code).toBe(0);
  expect(JSON.parse(r.stdout)).toMatchObject({ countsFrom: 'redis', counts: { total: 503 } });
  // --port-forward never: the cluster address does not resolve here, and the error says so.
  r = await taskbatch(['status', NAME, '-n', NS, '--port-forward', 'never'], { env: env2 });
  expect(r.code).toBe(0); // status falls back to the TaskBatch's own counts ...
  expect(r.stderr).toMatch(/note: counts are from the TaskBatch's status; Redis was not reachable: cannot reach Redis at redis:\/\/redis\.pf\.svc\.cluster\.local:6379/);
  r = await taskbatch(['submit', NAME, '-n', NS, '--data', '1', '--port-forward', 'never'], { env: env2 });
  expect(r.code).toBe(4); // ... while submitting needs Redis
});

test('a user without pods/portforward is told what is missing', async () => {
  const user = await env.cp.createUserKubeconfig('reader', []);
  await env.kube.create(`/apis/rbac.authorization.k8s.io/v1/namespaces/${NS}/roles`, {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'Role',
    metadata: { name: 'batch-reader', namespace: NS },
    rules: [
      { apiGroups: ['taskbatch.dev'], resources: ['taskbatches'], verbs: ['get'] },
      { apiGroups: [''], resources: ['services', 'pods'], verbs: ['get', 'list'] },
    ],
  });
  await env.kube.create(`/apis/rbac.authorization.k8s.io/v1/namespaces/${NS}/rolebindings`, {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'RoleBinding',
    metadata: { name: 'batch-reader', namespace: NS },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'batch-reader' },
    subjects: [{ kind: 'User', name: 'reader', apiGroup: 'rbac.authorization.k8s.io' }],
  });
  const client = await connect({ kube: { kubeconfig: user.path }, namespace: NS });
  try {
    const err = await client
      .batch(NAME)
      .submit({ x: 1 })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PortForwardError);
    expect((err as Error).message).toMatch(/port-forward to pf\/redis-1:6379 \(service redis → pod redis-1\) through https:\/\/127\.0\.0\.1:\d+ failed: .*needs "create" on pods\/portforward/);
  } finally {
    await client.close();
  }
  const r = await taskbatch(['submit', NAME, '-n', NS, '--data', '1'], { env: { KUBECONFIG: user.path } });
  expect(r.code).toBe(4);
  // And a TaskBatch the user may not read: 4 too (forbidden), with the RBAC message.
  const r2 = await taskbatch(['status', NAME, '-n', 'default'], { env: { KUBECONFIG: user.path } });
  expect(r2.code).toBe(4);
  expect(r2.stderr).toMatch(/forbidden by the API server's RBAC/);
});

test('the TaskBatch is what the SDK read', async () => {
  const tb = await env.kube.get<TaskBatch>(batchPath(NS, NAME));
  expect(tb.spec.redis?.url).toBe(`redis://redis.${NS}.svc.cluster.local:6379`);
});
