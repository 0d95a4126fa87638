import { FINALIZER, batchPath, type TaskBatch } from '../../api/taskbatch.js';
import { loadConfig } from '../../operator/config.js';
import { Controller } from '../../operator/controller.js';
import { KubeClient } from '../../kube/client.js';
import { createLogger } from '../../operator/log.js';
import { startControlPlane, type ControlPlane } from '../../localcluster/index.js';
import { startRedisServer, type RedisServer } from '../../localcluster/redis-server.js';
import { eventually } from '../support/batches.js';
import { aTaskBatch, createNamespace, getBatch, installCrd, waitForCondition } from '../support/operator-env.js';

// The watch cache is off so that a watch from a compacted resourceVersion reaches etcd and
// gets a real 410 Gone (with the cache on, the API server may serve it from memory).
let cp: ControlPlane;
let redis: RedisServer;
let kube: KubeClient;
let controller: Controller;
const logs: string[] = [];

beforeAll(async () => {
  cp = await startControlPlane({ extraApiServerArgs: ['--watch-cache=false'] });
  kube = new KubeClient(cp.kubeConfig);
  await installCrd(kube);
  redis = await startRedisServer();
  const config = loadConfig({ TASKBATCH_DEFAULT_REDIS_URL: redis.url, TASKBATCH_LEADER_ELECTION: 'false', TASKBATCH_METRICS_PORT: '0' });
  controller = new Controller(
    kube,
    config,
    createLogger({}, 'info', (l) => void logs.push(l)),
  );
  await controller.start();
});
afterAll(async () => {
  await controller?.stop();
  await redis?.stop();
  await cp?.stop();
});

async function etcd(path: string, body: unknown): Promise<{ header: { revision: string } }> {
  const r = await fetch(`${cp.etcdUrl}${path}`, { method: 'POST', body: JSON.stringify(body) });
  if (!r.ok) throw new Error(`etcd ${path}: ${r.status} ${await r.text()}`);
  return (await r.json()) as { header: { revision: string } };
}

test('a broken watch and a real 410 Gone: the operator relists and reconciles edits made during the outage', async () => {
  const ns = await createNamespace(kube, 'watch');
  await kube.create(batchPath(ns), aTaskBatch(ns, 'x', { range: { end: 10 }, suspend: true }));
  await waitForCondition(kube, ns, 'x', 'Suspended');
  const listsBefore = controller.batches.lists;

  controller.batches.breakWatch(4000);
  // Edits while the operator is disconnected.
  await kube.patch(batchPath(ns, 'x'), { spec: { suspend: false, workers: { scaling: 'Replicas', replicas: 0 } } });
  await kube.create(batchPath(ns), aTaskBatch(ns, 'y', { range: { end: 5 }, suspend: true }));
  // Compact etcd past everything the operator has seen: its resourceVersion is now too old.
  const { header } = await etcd('/v3/kv/range', { key: Buffer.from('/').toString('base64') });
  await etcd('/v3/kv/compaction', { revision: header.revision, physical: true });

  const resumed = await eventually(
    async () => {
      const tb = await getBatch(kube, ns, 'x');
      return tb.status?.conditions?.find((c) => c.type === 'Suspended' && c.status === 'False') ? tb : undefined;
    },
    60_000,
    'the edit made during the outage to be reconciled',
  );
  expect(resumed.status?.conditions?.find((c) => c.type === 'Suspended')).toMatchObject({ reason: 'Resumed' });
  const y = await eventually(
    async () => {
      const tb = await kube.get<TaskBatch>(batchPath(ns, 'y'));
      return tb.metadata.finalizers?.includes(FINALIZER) && tb.status?.conditions?.length ? tb : undefined;
    },
    60_000,
    'the batch created during the outage to be reconciled',
  );
  expect(y.status?.state).toBe('Suspended');
  expect(controller.batches.lists).toBeGreaterThan(listsBefore);
  expect(logs.join('')).toMatch(/Watch expired \(410 Gone\); relisting/);
});
