/**
 * The chart installed with the real helm CLI into the local control plane: the node agent runs
 * the operator Deployment's pod (image taskbatch/operator:dev → dist/operator/main.js) with the
 * chart's ServiceAccount and RBAC, and the worker pods the operator creates. Then a TaskBatch
 * completes, `helm test` passes, the operator's identity can do exactly what it needs, an upgrade
 * to namespaced RBAC works, and `helm uninstall` with TaskBatches still running leaves nothing
 * behind but the CRD.
 */
import { Redis } from 'ioredis';
import { startControlPlane, startNodeAgent, type ControlPlane, type NodeAgent } from '../../localcluster/index.js';
import { batchPath, type TaskBatch } from '../../api/taskbatch.js';
import { KubeClient } from '../../kube/client.js';
import type { Pod } from '../../kube/pod.js';
import { eventually, sleep } from '../support/batches.js';
import { canI, clusterObjectsOf, expectOk, helmUpgradeInstall, localValues, namespacedObjects } from '../support/helm-release.js';
import { aTaskBatch, createNamespace, getBatch, waitForCondition, workerPods } from '../support/operator-env.js';
import { startRedisServer, type RedisServer } from '../../localcluster/redis-server.js';

const RELEASE = 'tb';
const SYSTEM_NS = 'taskbatch-system';
const FULLNAME = 'tb-taskbatch';
const CRD = 'customresourcedefinitions.apiextensions.k8s.io/taskbatches.taskbatch.dev';
const T = 240_000;

let cp: ControlPlane;
let agent: NodeAgent;
let redisServer: RedisServer;
let redis: Redis;
let kube: KubeClient;
const timings: Record<string, number> = {};

async function timed<R>(what: string, fn: () => Promise<R>): Promise<R> {
  const t0 = Date.now();
  try {
    return await fn();
  } finally {
    timings[what] = Date.now() - t0;
  }
}

beforeAll(async () => {
  cp = await startControlPlane({ controllerManager: true });
  kube = new KubeClient(cp.kubeConfig);
  redisServer = await startRedisServer();
  redis = new Redis(redisServer.port, redisServer.host);
  agent = await startNodeAgent({ kubeConfig: cp.kubeConfig });
  await createNamespace(kube, 'work');
  await createNamespace(kube, 'elsewhere');
}, 120_000);

afterAll(async () => {
  console.log(`helm-install timings (ms): ${JSON.stringify(timings)}`);
  redis?.disconnect();
  await agent?.stop();
  await redisServer?.stop();
  await cp?.stop();
}, 60_000);

afterEach(() => {
  const state = expect.getState();
  if (state.assertionCalls !== state.numPassingAsserts) console.log(`operator log tail:\n${operatorLog().split('\n').slice(-40).join('\n')}`);
});

async function operatorPods(): Promise<Pod[]> {
  return (await kube.list<Pod>(`/api/v1/namespaces/${SYSTEM_NS}/pods`, { labelSelector: 'app.kubernetes.io/component=operator' })).items;
}

let lastOperatorPod: string | undefined;
function operatorLog(): string {
  return lastOperatorPod ? agent.podLog(SYSTEM_NS, lastOperatorPod) : '';
}

async function runningOperator(): Promise<Pod> {
  return eventually(
    async () => {
      const pods = (await operatorPods()).filter((p) => !p.metadata.deletionTimestamp && p.status?.phase === 'Running');
      if (pods.length !== 1) return undefined;
      lastOperatorPod = pods[0]!.metadata.name;
      return pods[0];
    },
    60_000,
    'one running operator pod',
  );
}

async function runBatch(ns: string, name: string, items = 200): Promise<TaskBatch> {
  await kube.create(batchPath(ns), aTaskBatch(ns, name, { range: { start: 0, end: items }, handler: { builtin: 'noop' }, pool: { mode: 'async', size: 4 }, workers: { max: 2, itemsPerWorker: 100 } }));
  return waitForCondition(kube, ns, name, 'Complete', 180_000);
}

describe('helm install, cluster-wide', () => {
  let saKubeconfig: string;

  test(
    'installs: the operator runs as its own ServiceAccount; NOTES say what to do next',
    async () => {
      const r = await timed('install', () => helmUpgradeInstall(cp, RELEASE, SYSTEM_NS, localValues(redisServer.url)));
      expectOk(r, 'helm install');
      expect(r.stdout).toMatch(/STATUS: deployed/);
      expect(r.stdout).toContain('NOTES:');
      expect(r.stdout).toContain(`kubectl -n ${SYSTEM_NS} rollout status deployment/${FULLNAME}`);
      expect(r.stdout).toContain(`helm test ${RELEASE} -n ${SYSTEM_NS}`);
      expect(r.stdout).toContain(`TaskBatches without spec.redis use ${redisServer.url}`);
      const pod = await runningOperator();
      expect(pod.spec.serviceAccountName).toBe(FULLNAME);
      expect(pod.spec.containers[0]!.image).toBe('taskbatch/operator:dev');
      // The node agent gave the pod its ServiceAccount token, and the operator became leader.
      await eventually(() => /Became leader/.test(operatorLog()), 30_000, 'the operator to lead');
      const lease = await kube.get<{ spec: { holderIdentity?: string } }>(`/apis/coordination.k8s.io/v1/namespaces/${SYSTEM_NS}/leases/${FULLNAME}`);
      expect(lease.spec.holderIdentity).toBe(pod.metadata.name);
      // The CRD came from the chart, kept on uninstall.
      const crd = JSON.parse(expectOk(await cp.kubectl(['get', CRD, '-o', 'json']), 'get crd').stdout) as { metadata: { annotations: Record<string, string> } };
      expect(crd.metadata.annotations).toMatchObject({ 'helm.sh/resource-policy': 'keep', 'meta.helm.sh/release-name': RELEASE });
    },
    T,
  );

  test(
    'a TaskBatch completes, on worker pods with the restricted security context',
    async () => {
      const name = 'hello-helm';
      let sawPod: Pod | undefined;
      const watcher = (async () => {
        while (!sawPod) {
          sawPod = (await workerPods(kube, 'work', name).catch(() => []))[0];
          await sleep(100);
        }
      })();
      const done = await timed('batch', () => runBatch('work', name));
      expect(done.status?.items).toMatchObject({ total: 200, succeeded: 200, failed: 0 });
      await Promise.race([watcher, sleep(1000)]);
      expect(sawPod).toBeDefined();
      const worker = sawPod!.spec.containers[0]!;
      expect(worker.image).toBe('taskbatch/worker:dev');
      // seccomp is set once for the pod (below); the restricted standard accepts it there.
      expect(worker.securityContext).toMatchObject({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true, capabilities: { drop: ['ALL'] } });
      expect(sawPod!.spec.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
      // The operator, with the chart's RBAC only, was never refused anything.
      expect(operatorLog()).not.toMatch(/forbidden|\b403\b/i);
    },
    T,
  );

  test(
    'helm test passes, and cleans up after itself',
    async () => {
      const r = await timed('helm test', () => cp.helm(['test', RELEASE, '--namespace', SYSTEM_NS, '--timeout', '3m'], { timeoutMs: 200_000 }));
      expectOk(r, 'helm test');
      expect(r.stdout).toMatch(new RegExp(`TEST SUITE:\\s+${FULLNAME}-test[\\s\\S]*Phase:\\s+Succeeded`));
      await eventually(async () => (await kube.find(`/api/v1/namespaces/${SYSTEM_NS}/pods/${FULLNAME}-test`)) === undefined, 30_000, 'the test pod deleted (hook-succeeded)');
      expect(await kube.find(`/apis/rbac.authorization.k8s.io/v1/namespaces/${SYSTEM_NS}/roles/${FULLNAME}-test`)).toBeUndefined();
      expect(await kube.find(batchPath(SYSTEM_NS, `${FULLNAME}-test`))).toBeUndefined();
    },
    T,
  );

  test(
    "the operator's identity may do what it needs and nothing more",
    async () => {
      saKubeconfig = (await cp.createServiceAccountKubeconfig(SYSTEM_NS, FULLNAME)).path;
      const allowed = [
        ['list', 'taskbatches.taskbatch.dev', '--all-namespaces'],
        ['watch', 'taskbatches.taskbatch.dev', '--all-namespaces'],
        ['patch', 'taskbatches.taskbatch.dev', '-n', 'work'],
        ['patch', 'taskbatches.taskbatch.dev', '--subresource=status', '-n', 'work'],
        ['delete', 'taskbatches.taskbatch.dev', '-n', 'work'],
        ['create', 'taskbatches.taskbatch.dev', '-n', 'work'], // runs of a TaskSchedule
        ['list', 'taskschedules.taskbatch.dev', '--all-namespaces'],
        ['delete', 'taskschedules.taskbatch.dev', '-n', 'work'], // the uninstall hook
        ['watch', 'taskschedules.taskbatch.dev', '--all-namespaces'],
        ['patch', 'taskschedules.taskbatch.dev', '--subresource=status', '-n', 'work'],
        ['create', 'pods', '-n', 'work'],
        ['delete', 'pods', '-n', 'elsewhere'],
        ['get', 'configmaps', '-n', 'work'],
        ['get', 'secrets', '-n', 'work'],
        ['create', 'events', '-n', 'work'],
        ['get', `leases.coordination.k8s.io/${FULLNAME}`, '-n', SYSTEM_NS],
        ['update', `leases.coordination.k8s.io/${FULLNAME}`, '-n', SYSTEM_NS],
      ];
      const denied = [
        ['delete', CRD],
        ['update', CRD],
        ['update', 'taskbatches.taskbatch.dev', '-n', 'work'],
        ['create', 'taskschedules.taskbatch.dev', '-n', 'work'],
        ['update', 'taskschedules.taskbatch.dev', '-n', 'work'],
        ['list', 'secrets', '--all-namespaces'],
        ['list', 'secrets', '-n', 'work'],
        ['watch', 'secrets', '-n', 'work'],
        ['update', 'pods', '-n', 'work'],
        ['create', 'pods', '--subresource=exec', '-n', 'work'],
        ['update', 'deployments.apps', '-n', SYSTEM_NS],
        ['update', 'leases.coordination.k8s.io/other-lease', '-n', SYSTEM_NS],
        ['get', 'leases.coordination.k8s.io', '-n', 'work'],
        ['create', 'clusterroles.rbac.authorization.k8s.io'],
        ['create', 'rolebindings.rbac.authorization.k8s.io', '-n', 'work'],
        ['impersonate', 'serviceaccounts', '-n', 'work'],
        ['list', 'nodes'],
        ['delete', 'namespaces'],
      ];
      const wrong: string[] = [];
      for (const a of allowed) if (!(await canI(cp, saKubeconfig, a))) wrong.push(`should be allowed: ${a.join(' ')}`);
      for (const d of denied) if (await canI(cp, saKubeconfig, d)) wrong.push(`should be denied: ${d.join(' ')}`);
      expect(wrong).toEqual([]);
      // A real request, not just a review: deleting the CRD is refused.
      const del = await cp.kubectl(['delete', CRD, '--wait=false'], { kubeconfigPath: saKubeconfig });
      expect(del.code).not.toBe(0);
      expect(del.stderr).toMatch(/forbidden/i);
      expectOk(await cp.kubectl(['get', CRD]), 'the CRD still exists');
    },
    T,
  );

  test(
    'upgrading to watch.allNamespaces=false: no cluster-wide rights; batches in the watched namespace still complete',
    async () => {
      const values = localValues(redisServer.url, { watch: { allNamespaces: false, namespace: 'work' } });
      expectOk(await timed('upgrade', () => helmUpgradeInstall(cp, RELEASE, SYSTEM_NS, values)), 'helm upgrade');
      await eventually(
        async () => {
          const pods = (await operatorPods()).filter((p) => !p.metadata.deletionTimestamp);
          const env = pods[0]?.spec.containers[0]?.env ?? [];
          return pods.length === 1 && pods[0]!.status?.phase === 'Running' && env.some((e) => e.name === 'TASKBATCH_WATCH_NAMESPACE' && e.value === 'work');
        },
        90_000,
        'the upgraded operator pod to run',
      );
      await runningOperator();
      await eventually(() => /Became leader/.test(operatorLog()), 60_000, 'the upgraded operator to lead');
      expect(await canI(cp, saKubeconfig, ['get', 'secrets', '-n', 'work'])).toBe(true);
      expect(await canI(cp, saKubeconfig, ['get', 'secrets', '-n', 'elsewhere'])).toBe(false);
      expect(await canI(cp, saKubeconfig, ['list', 'taskbatches.taskbatch.dev', '--all-namespaces'])).toBe(false);
      expect(await canI(cp, saKubeconfig, ['create', 'pods', '-n', 'elsewhere'])).toBe(false);
      expect(await clusterObjectsOf(cp, RELEASE)).toEqual(expect.not.arrayContaining([expect.objectContaining({ kind: 'ClusterRoleBinding' })]));
      const done = await timed('namespaced batch', () => runBatch('work', 'scoped'));
      expect(done.status?.items).toMatchObject({ succeeded: 200 });
      // A batch outside the watched namespace is not this operator's business.
      await kube.create(batchPath('elsewhere'), aTaskBatch('elsewhere', 'ignored', { range: { end: 10 } }));
      await sleep(3000);
      const ignored = await getBatch(kube, 'elsewhere', 'ignored');
      expect(ignored.metadata.finalizers ?? []).toEqual([]);
      expect(ignored.status).toBeUndefined();
      expect(operatorLog()).not.toMatch(/forbidden|\b403\b/i);
    },
    T,
  );

  test(
    'helm uninstall with batches still running deletes them first, then leaves nothing behind but the CRD',
    async () => {
      const name = 'unfinished';
      await kube.create(
        batchPath('work'),
        aTaskBatch('work', name, { items: Array.from({ length: 300 }, () => ({ ms: 200 })), handler: { builtin: 'sleep' }, pool: { mode: 'async', size: 1 }, workers: { max: 1 } }),
      );
      await eventually(
        async () => (await workerPods(kube, 'work', name)).some((p) => p.status?.phase === 'Running') && (await redis.exists(`tb:{work/${name}}:meta`)) === 1,
        90_000,
        'the batch running',
      );
      expect((await getBatch(kube, 'work', name)).metadata.finalizers).toContain('taskbatch.dev/redis-cleanup');

      const r = await timed('uninstall', () => cp.helm(['uninstall', RELEASE, '--namespace', SYSTEM_NS, '--wait', '--timeout', '3m'], { timeoutMs: 200_000 }));
      expectOk(r, 'helm uninstall');
      expect(r.stdout).toMatch(/release "tb" uninstalled/);
      expect(r.stdout + r.stderr).toMatch(/kept due to the resource policy[\s\S]*taskbatches.taskbatch.dev|taskbatches.taskbatch.dev[\s\S]*kept due to the resource policy/);
      // The pre-delete hook deleted the batches while the operator still ran: finalizer done, Redis clean.
      expect(await kube.find(batchPath('work', name))).toBeUndefined();
      expect(await kube.find(batchPath('work', 'scoped'))).toBeUndefined();
      expect(await redis.keys(`tb:{work/*`)).toEqual([]);
      // The batch outside the watched namespace had no finalizer and is untouched.
      expect(await kube.find(batchPath('elsewhere', 'ignored'))).toBeDefined();

      // Nothing of the release is left: pods (the operator, workers, the hook's) go away, and no
      // object of any kind remains in the release namespace but what every namespace has.
      await eventually(async () => (await namespacedObjects(cp, 'work')).filter((o) => o.kind === 'Pod').length === 0, 90_000, 'worker pods gone');
      const leftover = await eventually(
        async () => {
          const objs = (await namespacedObjects(cp, SYSTEM_NS)).filter((o) => !(o.kind === 'ServiceAccount' && o.name === 'default') && !(o.kind === 'ConfigMap' && o.name === 'kube-root-ca.crt'));
          return objs.length === 0 ? objs : undefined;
        },
        90_000,
        `nothing left in ${SYSTEM_NS}`,
      ).catch(async () => namespacedObjects(cp, SYSTEM_NS));
      expect(leftover).toEqual([]);
      const work = (await namespacedObjects(cp, 'work')).filter((o) => !(o.kind === 'ServiceAccount' && o.name === 'default') && !(o.kind === 'ConfigMap' && o.name === 'kube-root-ca.crt'));
      expect(work).toEqual([]);
      expect(await clusterObjectsOf(cp, RELEASE)).toEqual([]);
      expect(expectOk(await cp.helm(['list', '--all-namespaces', '--all', '-q']), 'helm list').stdout.trim()).toBe('');
      // The CRD stays (helm.sh/resource-policy: keep), and with it the TaskBatch API.
      expectOk(await cp.kubectl(['get', CRD]), 'the kept CRD');
    },
    T,
  );

  test(
    'installing again with the same release name adopts the kept CRD',
    async () => {
      const r = await timed('reinstall', () => helmUpgradeInstall(cp, RELEASE, SYSTEM_NS, localValues(redisServer.url)));
      expectOk(r, 'helm install again');
      await runningOperator();
      expectOk(await cp.helm(['uninstall', RELEASE, '--namespace', SYSTEM_NS, '--wait', '--timeout', '3m'], { timeoutMs: 200_000 }), 'helm uninstall again');
    },
    T,
  );
});
