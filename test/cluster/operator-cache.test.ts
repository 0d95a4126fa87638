import { batchPath } from '../../api/taskbatch.js';
import { loadConfig } from '../../operator/config.js';
import { Controller } from '../../operator/controller.js';
import { KubeApiError, KubeClient, type KubeList, type KubeObject, type Query } from '../../kube/client.js';
import { Reflector } from '../../operator/kube/reflector.js';
import { createLogger } from '../../operator/log.js';
import { startControlPlane, type ControlPlane } from '../../localcluster/index.js';
import { startRedisServer, type RedisServer } from '../../localcluster/redis-server.js';
import { eventually } from '../support/batches.js';
import { aTaskBatch, createNamespace, installCrd, workerPods } from '../support/operator-env.js';

// The operator's caches on a real kube-apiserver: paginated lists, an expired continue token,
// and no reconcile before the caches hold a complete list. The watch cache is off so that lists
// are served by etcd and a compacted continue token gets a real 410 Gone.
let cp: ControlPlane;
let redis: RedisServer;
let kube: KubeClient;

beforeAll(async () => {
  cp = await startControlPlane({ extraApiServerArgs: ['--watch-cache=false'] });
  kube = new KubeClient(cp.kubeConfig);
  await installCrd(kube);
  redis = await startRedisServer();
});
afterAll(async () => {
  await redis?.stop();
  await cp?.stop();
});

interface ListRecord {
  query: Query;
  items?: number;
  status?: number;
}

/** The real client, recording every list request it sends and what came back. */
class RecordingKube extends KubeClient {
  readonly lists: ListRecord[] = [];
  /** Runs after a page with a continue token arrived, before it is handed to the caller. */
  afterFirstPage: (() => Promise<void>) | undefined;

  override async list<T>(path: string, query: Query = {}): Promise<KubeList<T>> {
    const record: ListRecord = { query: Object.fromEntries(Object.entries(query).filter(([, v]) => v !== undefined)) };
    this.lists.push(record);
    try {
      const page = await super.list<T>(path, query);
      record.items = page.items.length;
      if (page.metadata.continue && this.afterFirstPage) {
        const hook = this.afterFirstPage;
        this.afterFirstPage = undefined;
        await hook();
      }
      return page;
    } catch (err) {
      record.status = err instanceof KubeApiError ? err.status : -1;
      throw err;
    }
  }
}

async function configMaps(ns: string, n: number, labels: Record<string, string>): Promise<void> {
  for (let i = 0; i < n; i++) {
    await kube.create(`/api/v1/namespaces/${ns}/configmaps`, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: `cm-${String(i).padStart(2, '0')}`, labels }, data: { i: String(i) } });
  }
}

async function etcd(path: string, body: unknown): Promise<{ header: { revision: string } }> {
  const r = await fetch(`${cp.etcdUrl}${path}`, { method: 'POST', body: JSON.stringify(body) });
  if (!r.ok) throw new Error(`etcd ${path}: ${r.status} ${await r.text()}`);
  return (await r.json()) as { header: { revision: string } };
}

test('the reflector pages through a large list (25 objects, pages of 10) and holds all of them', async () => {
  const ns = await createNamespace(kube, 'paged');
  await configMaps(ns, 25, { 'tb-test': 'paged' });
  await kube.create(`/api/v1/namespaces/${ns}/configmaps`, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'unlabelled' } });
  const client = new RecordingKube(cp.kubeConfig);
  const r = new Reflector<KubeObject>(client, { path: `/api/v1/namespaces/${ns}/configmaps`, labelSelector: 'tb-test=paged', pageSize: 10 }, createLogger({}, 'warn'));
  try {
    expect(await r.start()).toBe(true);
    expect(client.lists.map((l) => [l.query.limit, Boolean(l.query.continue), l.items])).toEqual([
      [10, false, 10],
      [10, true, 10],
      [10, true, 5],
    ]);
    expect(
      r
        .list()
        .map((o) => o.metadata.name)
        .sort(),
    ).toEqual(Array.from({ length: 25 }, (_, i) => `cm-${String(i).padStart(2, '0')}`));
    // The watch started from the list's resourceVersion delivers what comes after it.
    await kube.create(`/api/v1/namespaces/${ns}/configmaps`, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'later', labels: { 'tb-test': 'paged' } } });
    await eventually(() => r.get(`${ns}/later`), 30_000, 'the object created after the list');
    expect(r.list()).toHaveLength(26);
  } finally {
    r.stop();
  }
});

test('a continue token compacted away mid-list gets a real 410 Gone; the reflector lists again from the start', async () => {
  const ns = await createNamespace(kube, 'expired');
  await configMaps(ns, 25, { 'tb-test': 'expired' });
  const client = new RecordingKube(cp.kubeConfig);
  client.afterFirstPage = async () => {
    // A write moves etcd's revision past the list's snapshot; compacting there expires the token.
    await kube.create('/api/v1/namespaces/default/configmaps', { apiVersion: 'v1', kind: 'ConfigMap', metadata: { generateName: 'bump-' } });
    const { header } = await etcd('/v3/kv/range', { key: Buffer.from('/').toString('base64') });
    await etcd('/v3/kv/compaction', { revision: header.revision, physical: true });
  };
  const logs: string[] = [];
  const r = new Reflector<KubeObject>(
    client,
    { path: `/api/v1/namespaces/${ns}/configmaps`, labelSelector: 'tb-test=expired', pageSize: 10 },
    createLogger({}, 'info', (l) => void logs.push(l)),
  );
  try {
    expect(await r.start()).toBe(true);
    expect(client.lists.map((l) => [Boolean(l.query.continue), l.status ?? l.items])).toEqual([
      [false, 10],
      [true, 410],
      [false, 10],
      [true, 10],
      [true, 5],
    ]);
    expect(r.list()).toHaveLength(25);
    expect(r.lists).toBe(1);
    expect(logs.join('')).toMatch(/continue token expired \(410 Gone\); listing again from the start/);
  } finally {
    r.stop();
  }
});

test('a restarted controller whose pod list is refused reconciles nothing until its pod cache synced: no second set of worker pods', async () => {
  const ns = await createNamespace(kube, 'restart');
  const config = loadConfig({ TASKBATCH_DEFAULT_REDIS_URL: redis.url, TASKBATCH_LEADER_ELECTION: 'false', TASKBATCH_METRICS_PORT: '0' });
  const first = new Controller(kube, config, createLogger({ controller: 'first' }, 'warn'));
  await first.start();
  await kube.create(batchPath(ns), aTaskBatch(ns, 'w', { range: { end: 100 }, workers: { scaling: 'Replicas', replicas: 2 } }));
  // No node here: the pods stay Pending, which is all this test needs.
  await eventually(async () => (await workerPods(kube, ns, 'w')).length === 2, 60_000, 'two worker pods');
  await first.stop();

  // The restarted operator may do everything except list and watch pods, until that is granted:
  // the API server refuses its pod list with 403 for a while.
  const user = 'restarted-operator';
  await kube.create('/apis/rbac.authorization.k8s.io/v1/clusterroles', {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'ClusterRole',
    metadata: { name: 'operator-without-pod-list' },
    rules: [
      { apiGroups: ['taskbatch.dev'], resources: ['*'], verbs: ['*'] },
      { apiGroups: [''], resources: ['pods'], verbs: ['get', 'create', 'delete', 'patch', 'update'] },
      { apiGroups: [''], resources: ['events', 'configmaps', 'secrets'], verbs: ['*'] },
    ],
  });
  await kube.create('/apis/rbac.authorization.k8s.io/v1/clusterrolebindings', {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'ClusterRoleBinding',
    metadata: { name: 'operator-without-pod-list' },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'operator-without-pod-list' },
    subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: user }],
  });
  const restricted = new KubeClient((await cp.createUserKubeconfig(user)).kubeConfig);
  const logs: string[] = [];
  const second = new Controller(
    restricted,
    config,
    createLogger({ controller: 'second' }, 'info', (l) => void logs.push(l)),
  );
  const refusals = (): number => logs.filter((l) => l.includes('The list failed') && l.includes('"path":"/api/v1/pods"') && l.includes('403')).length;
  let started = false;
  const starting = second.start().then(() => (started = true));
  try {
    // Two refused lists (about 1.2 s of backoff): ample time for a reconcile that did not wait.
    await eventually(() => refusals() >= 2, 60_000, 'the pod list to be refused twice');
    expect(second.batches.hasSynced).toBe(true);
    expect(second.pods.hasSynced).toBe(false);
    expect(second.synced).toBe(false);
    expect(started).toBe(false);
    expect((await second.metrics.reconciles.get()).values).toEqual([]);
    expect(await workerPods(kube, ns, 'w')).toHaveLength(2);

    await kube.create('/apis/rbac.authorization.k8s.io/v1/clusterroles', {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRole',
      metadata: { name: 'operator-pod-list' },
      rules: [{ apiGroups: [''], resources: ['pods'], verbs: ['list', 'watch'] }],
    });
    await kube.create('/apis/rbac.authorization.k8s.io/v1/clusterrolebindings', {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name: 'operator-pod-list' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'operator-pod-list' },
      subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: user }],
    });
    await starting;
    expect(second.synced).toBe(true);
    await eventually(async () => (await second.metrics.reconciles.get()).values.some((v) => v.labels.result === 'success' && v.value > 0), 60_000, 'a reconcile after the sync');
    expect(await workerPods(kube, ns, 'w')).toHaveLength(2);
    expect(logs.join('')).toMatch(/"msg":"Caches synced"[^\n]*"pods":2/);
  } finally {
    await second.stop();
  }
});
