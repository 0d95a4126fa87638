/**
 * With kube-controller-manager: garbage collection of owned pods, namespace deletion, default
 * ServiceAccounts, and a pod that acts under a restricted ServiceAccount (real RBAC).
 */
import { CoreV1Api, RbacAuthorizationV1Api, type V1Pod } from '@kubernetes/client-node';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startControlPlane, startNodeAgent, type ControlPlane, type NodeAgent } from '../../localcluster/index.js';
import { createNamespace, nodeScript, waitFor, waitForPhase, waitForPodGone } from './helpers.js';

// jest's per-project testTimeout does not apply (a global-only option), so each hook/test names its own.
const TIMEOUT_MS = 120_000;

let cp: ControlPlane;
let agent: NodeAgent;
let core: CoreV1Api;

beforeAll(async () => {
  cp = await startControlPlane({ controllerManager: true });
  agent = await startNodeAgent({ kubeConfig: cp.kubeConfig });
  core = cp.kubeConfig.makeApiClient(CoreV1Api);
}, TIMEOUT_MS);

afterAll(async () => {
  await agent?.stop();
  await cp?.stop();
}, TIMEOUT_MS);

async function namespaceWithDefaultSA(prefix: string): Promise<string> {
  const ns = await createNamespace(core, prefix);
  // The serviceaccount controller creates `default`; the ServiceAccount admission plugin needs it.
  await waitFor(`ServiceAccount ${ns}/default`, () => core.readNamespacedServiceAccount({ namespace: ns, name: 'default' }).then(() => true));
  return ns;
}

test(
  'deleting an owner garbage-collects the pods it owns',
  async () => {
    const ns = await namespaceWithDefaultSA('gc');
    const owner = await core.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: 'owner' }, data: {} } });
    const ownerRef = { apiVersion: 'v1', kind: 'ConfigMap', name: 'owner', uid: owner.metadata?.uid ?? '', controller: true, blockOwnerDeletion: true };
    const owned = (name: string): V1Pod => ({
      metadata: { name, ownerReferences: [ownerRef] },
      spec: {
        terminationGracePeriodSeconds: 5,
        containers: [{ name: 'main', image: 'local/test', command: nodeScript("process.on('SIGTERM', () => { console.log('bye'); process.exit(0); }); setInterval(() => {}, 1000)") }],
      },
    });
    await core.createNamespacedPod({ namespace: ns, body: owned('child-1') });
    await core.createNamespacedPod({ namespace: ns, body: owned('child-2') });
    await core.createNamespacedPod({ namespace: ns, body: { ...owned('orphan'), metadata: { name: 'orphan' } } });
    await Promise.all(['child-1', 'child-2', 'orphan'].map((n) => waitForPhase(core, ns, n, ['Running'])));

    await core.deleteNamespacedConfigMap({ namespace: ns, name: 'owner', propagationPolicy: 'Background' });
    await Promise.all([waitForPodGone(core, ns, 'child-1', 60_000), waitForPodGone(core, ns, 'child-2', 60_000)]);
    expect(agent.podLog(ns, 'child-1')).toContain('bye');
    const orphan = await core.readNamespacedPod({ namespace: ns, name: 'orphan' });
    expect(orphan.status?.phase).toBe('Running');
  },
  TIMEOUT_MS,
);

test(
  'a pod under a restricted ServiceAccount gets exactly what its Role grants',
  async () => {
    const ns = await namespaceWithDefaultSA('sa');
    await core.createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name: 'lister' } } });
    const rbac = cp.kubeConfig.makeApiClient(RbacAuthorizationV1Api);
    await rbac.createNamespacedRole({ namespace: ns, body: { metadata: { name: 'pod-lister' }, rules: [{ apiGroups: [''], resources: ['pods'], verbs: ['list'] }] } });
    await rbac.createNamespacedRoleBinding({
      namespace: ns,
      body: {
        metadata: { name: 'lister-lists-pods' },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'pod-lister' },
        subjects: [{ kind: 'ServiceAccount', name: 'lister', namespace: ns }],
      },
    });
    await core.createNamespacedPod({
      namespace: ns,
      body: {
        metadata: { name: 'probe' },
        spec: {
          serviceAccountName: 'lister',
          restartPolicy: 'Never',
          containers: [
            {
              name: 'main',
              image: 'taskbatch/worker:test',
              command: ['node', '/app/dist/test/cluster/fixtures/k8s-access.js'],
              env: [{ name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } }],
            },
          ],
        },
      },
    });
    const done = await waitForPhase(core, ns, 'probe', ['Succeeded', 'Failed']);
    const out = agent.podLog(ns, 'probe');
    expect(done.status?.phase).toBe('Succeeded');
    const report = JSON.parse(out.trim()) as { server: string; hasToken: boolean; results: { what: string; status: number }[] };
    expect(report.server).toBe(cp.server);
    expect(report.hasToken).toBe(true);
    expect(report.results).toEqual([
      { what: 'list pods', status: 200 },
      { what: 'list secrets', status: 403 },
      { what: 'list pods in default', status: 403 },
    ]);
    // The ServiceAccount admission plugin mounted the token volume into the spec, as on a real cluster.
    expect(done.spec?.volumes?.some((v) => v.name.startsWith('kube-api-access-'))).toBe(true);

    // The in-cluster files exist too (token, ca.crt, namespace), next to the pod's kubeconfig,
    // and kubectl with that kubeconfig acts as the ServiceAccount (the token is bound to the pod, which still exists).
    const podDir = agent.podDir(ns, 'probe') ?? '';
    expect(readFileSync(join(podDir, 'serviceaccount', 'namespace'), 'utf8')).toBe(ns);
    expect(existsSync(join(podDir, 'serviceaccount', 'token'))).toBe(true);
    expect(readFileSync(join(podDir, 'serviceaccount', 'ca.crt'), 'utf8')).toBe(readFileSync(cp.caCertPath, 'utf8'));
    const whoami = await cp.kubectl(['auth', 'whoami', '-o', 'jsonpath={.status.userInfo.username}'], { kubeconfigPath: join(podDir, 'kubeconfig') });
    expect(whoami.stdout).toBe(`system:serviceaccount:${ns}:lister`);
  },
  TIMEOUT_MS,
);

test(
  'deleting a namespace removes its pods and finishes (namespace controller)',
  async () => {
    const ns = await namespaceWithDefaultSA('nsdel');
    await core.createNamespacedPod({
      namespace: ns,
      body: { metadata: { name: 'sleeper' }, spec: { terminationGracePeriodSeconds: 5, containers: [{ name: 'main', image: 'local/test', command: nodeScript('setInterval(() => {}, 1000)') }] } },
    });
    const proc = await agent.waitForPodProcess(ns, 'sleeper');
    await core.deleteNamespace({ name: ns });
    await waitFor(
      `namespace ${ns} to be gone`,
      async () => {
        try {
          await core.readNamespace({ name: ns });
          return false;
        } catch (err) {
          return (err as { code?: number }).code === 404;
        }
      },
      90_000,
      250,
    );
    expect(() => process.kill(proc.pid, 0)).toThrow();
  },
  TIMEOUT_MS,
);

test(
  'the node stays Ready under the node lifecycle controller',
  async () => {
    const node = await core.readNode({ name: agent.nodeName });
    expect(node.status?.conditions?.find((c) => c.type === 'Ready')?.status).toBe('True');
    expect(node.spec?.taints ?? []).toEqual([]);
  },
  TIMEOUT_MS,
);
