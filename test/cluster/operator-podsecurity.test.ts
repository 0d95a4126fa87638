// workerPodSecurity end to end: the real operator process against a real kube-apiserver (whose
// PodSecurity admission plugin is on by default) and the node agent running the pods.
import { batchPath, type TaskBatch } from '../../api/taskbatch.js';
import { KubeApiError } from '../../kube/client.js';
import { eventually, sleep } from '../support/batches.js';
import { aTaskBatch, createNamespace, startOperator, startOperatorEnv, waitForCondition, workerPods, type OperatorEnv, type OperatorProcess } from '../support/operator-env.js';

let env: OperatorEnv;

beforeAll(async () => {
  env = await startOperatorEnv();
});
afterAll(async () => {
  await env?.stop();
});

async function apply(tb: TaskBatch): Promise<TaskBatch> {
  return env.kube.create<TaskBatch>(batchPath(tb.metadata.namespace!), tb);
}

/** Every worker pod the batch ever had, polled until stop() (a pod created and deleted at once is still seen by its creation in the operator's log). */
function trackPods(ns: string, batch: string): { names: Set<string>; stop: () => void } {
  const names = new Set<string>();
  let stopped = false;
  void (async () => {
    while (!stopped) {
      for (const p of await workerPods(env.kube, ns, batch).catch(() => [])) names.add(p.metadata.name!);
      await sleep(100);
    }
  })();
  return { names, stop: () => (stopped = true) };
}

/** A worker container and a sidecar that asks for privileged mode. */
const privilegedSidecar = (ns: string, name: string): TaskBatch =>
  aTaskBatch(ns, name, {
    range: { end: 3 },
    workers: { max: 1 },
    template: { spec: { containers: [{ name: 'worker' }, { name: 'proxy', image: 'envoy:dev', command: ['sleep', '3600'], securityContext: { privileged: true } }] } },
  });

const FIELD = 'spec.template.spec.containers[1].securityContext.privileged';

describe('workerPodSecurity=restricted (the default)', () => {
  let op: OperatorProcess;
  let ns: string;
  beforeAll(async () => {
    ns = await createNamespace(env.kube, 'psa-restricted');
    op = await startOperator(env);
  });
  afterAll(async () => {
    await op?.kill('SIGTERM');
  });
  afterEach(() => {
    const state = expect.getState();
    if (state.assertionCalls !== state.numPassingAsserts) console.log(`operator log tail:\n${op.logs().split('\n').slice(-40).join('\n')}`);
  });

  test('a privileged sidecar is refused: Failed/PodTemplateRejected naming the field, an Event, and no pod', async () => {
    const pods = trackPods(ns, 'privileged');
    await apply(privilegedSidecar(ns, 'privileged'));
    const failed = await waitForCondition(env.kube, ns, 'privileged', 'Failed', 60_000);
    const cond = failed.status?.conditions?.find((c) => c.type === 'Failed');
    expect(cond).toMatchObject({ status: 'True', reason: 'PodTemplateRejected' });
    expect(cond?.message).toContain(`${FIELD}: forbidden by workerPodSecurity=restricted`);
    expect(failed.status?.state).toBe('Failed');
    const events = await eventually(
      async () => {
        const list = await env.kube.list<{ reason?: string; message?: string; type?: string }>(`/api/v1/namespaces/${ns}/events`, { fieldSelector: 'involvedObject.name=privileged' });
        const found = list.items.filter((e) => e.reason === 'PodTemplateRejected');
        return found.length > 0 ? found : undefined;
      },
      30_000,
      'a PodTemplateRejected event',
    );
    expect(events[0]).toMatchObject({ type: 'Warning' });
    expect(events[0]!.message).toContain(FIELD);
    // Let a few more reconcile passes go by: still no pod, ever.
    await sleep(3000);
    pods.stop();
    expect(pods.names.size).toBe(0);
    expect(op.logs()).not.toMatch(/Created worker pod.*psa-restricted\/privileged/);
  });

  test('an init container without a securityContext runs, with the restricted settings filled in', async () => {
    await apply(
      aTaskBatch(ns, 'with-init', {
        range: { end: 5 },
        workers: { max: 1 },
        template: { spec: { initContainers: [{ name: 'setup', image: 'busybox:dev', command: ['true'] }], containers: [{ name: 'worker' }] } },
      }),
    );
    const pod = await eventually(async () => (await workerPods(env.kube, ns, 'with-init'))[0], 60_000, 'a worker pod');
    const init = (pod.spec.initContainers as { name: string; securityContext?: Record<string, unknown> }[])[0]!;
    expect(init.securityContext).toEqual({ allowPrivilegeEscalation: false, runAsNonRoot: true, capabilities: { drop: ['ALL'] } });
    expect(pod.spec.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
    expect(pod.spec.containers[0]!.securityContext).toMatchObject({ allowPrivilegeEscalation: false, runAsNonRoot: true, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
    const done = await waitForCondition(env.kube, ns, 'with-init', 'Complete', 120_000);
    expect(done.status?.items?.succeeded).toBe(5);
  });

  test('in a namespace enforcing the restricted Pod Security Standard, worker pods pass admission and the batch completes', async () => {
    const enforced = 'psa-enforced';
    await env.kube.create('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: enforced, labels: { 'pod-security.kubernetes.io/enforce': 'restricted' } } });
    // The label is enforced here: a bare pod is refused (so the completion below means something).
    const bare = await env.kube.create(`/api/v1/namespaces/${enforced}/pods`, { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'bare' }, spec: { containers: [{ name: 'c', image: 'x' }] } }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(bare).toBeInstanceOf(KubeApiError);
    expect((bare as KubeApiError).status).toBe(403);
    expect((bare as Error).message).toMatch(/violates PodSecurity "restricted/);
    await apply(
      aTaskBatch(enforced, 'enforced', {
        range: { end: 20 },
        workers: { max: 2, itemsPerWorker: 10 },
        template: { spec: { initContainers: [{ name: 'setup', image: 'busybox:dev', command: ['true'] }], containers: [{ name: 'worker' }] } },
      }),
    );
    const done = await waitForCondition(env.kube, enforced, 'enforced', 'Complete', 120_000);
    expect(done.status?.items?.succeeded).toBe(20);
    expect(done.status?.workers?.failures ?? 0).toBe(0);
    expect(op.logs()).not.toMatch(/violates PodSecurity/);
  });
});

describe('workerPodSecurity=unrestricted', () => {
  let op: OperatorProcess;
  let ns: string;
  beforeAll(async () => {
    ns = await createNamespace(env.kube, 'psa-unrestricted');
    // Its own lease, so it need not wait for the first operator's to expire.
    op = await startOperator(env, { TASKBATCH_WORKER_POD_SECURITY: 'unrestricted', TASKBATCH_LEASE_NAME: 'taskbatch-unrestricted' });
  });
  afterAll(async () => {
    await op?.kill('SIGTERM');
  });

  test('the privileged sidecar is allowed: a pod is created with it as written', async () => {
    await apply(privilegedSidecar(ns, 'privileged'));
    const pod = await eventually(async () => (await workerPods(env.kube, ns, 'privileged'))[0], 60_000, 'a worker pod');
    expect(pod.spec.containers[1]).toMatchObject({ name: 'proxy', securityContext: { privileged: true } });
    const tb = await env.kube.get<TaskBatch>(batchPath(ns, 'privileged'));
    expect(tb.status?.conditions?.find((c) => c.type === 'Failed' && c.status === 'True')).toBeUndefined();
  });
});
