// workerPodSecurity: the pure check and hardening (operator/reconcile/pod-security.ts), and how
// buildWorkerPod and the config use them. Each Pod Security Standards control is a row.
import { checkPodSecurity, describeViolations, hardenPodSpec, type PodSecurityLevel } from '../../operator/reconcile/pod-security.js';
import { buildWorkerPod, PodTemplateRejectedError, type WorkerPodConfig } from '../../operator/reconcile/pods.js';
import { loadConfig } from '../../operator/config.js';
import type { TaskBatch } from '../../api/taskbatch.js';

type Spec = Record<string, unknown>;
const worker = (securityContext?: Spec, extra: Spec = {}): Spec => ({ name: 'worker', ...(securityContext ? { securityContext } : {}), ...extra });
/** A spec whose second container (a sidecar) carries the given security context. */
const sidecar = (securityContext: Spec, extra: Spec = {}): Spec => ({ containers: [worker(), { name: 'side', image: 'envoy', securityContext, ...extra }] });
/** A spec whose only init container carries the given security context. */
const init = (securityContext: Spec): Spec => ({ initContainers: [{ name: 'setup', image: 'busybox', securityContext }], containers: [worker()] });
const vol = (source: Spec): Spec => ({ containers: [worker()], volumes: [{ name: 'v', ...source }] });

const paths = (level: PodSecurityLevel, spec: Spec, annotations?: Record<string, string>): string[] => checkPodSecurity(level, spec, annotations).map((v) => v.path);

// [control, spec, the path refused at restricted, refused at baseline too?]
const CASES: [string, Spec, string, boolean][] = [
  ['privileged sidecar', sidecar({ privileged: true }), 'spec.containers[1].securityContext.privileged', true],
  ['privileged init container', init({ privileged: true }), 'spec.initContainers[0].securityContext.privileged', true],
  ['hostNetwork', { containers: [worker()], hostNetwork: true }, 'spec.hostNetwork', true],
  ['hostPID', { containers: [worker()], hostPID: true }, 'spec.hostPID', true],
  ['hostIPC', { containers: [worker()], hostIPC: true }, 'spec.hostIPC', true],
  ['hostPath volume', vol({ hostPath: { path: '/' } }), 'spec.volumes[0].hostPath', true],
  ['hostPort', { containers: [worker(undefined, { ports: [{ containerPort: 80 }, { containerPort: 81, hostPort: 81 }] })] }, 'spec.containers[0].ports[1].hostPort', true],
  ['hostPort in an init container', { initContainers: [{ name: 'i', ports: [{ containerPort: 1, hostPort: 1 }] }], containers: [worker()] }, 'spec.initContainers[0].ports[0].hostPort', true],
  ['SYS_ADMIN added', sidecar({ capabilities: { add: ['NET_BIND_SERVICE', 'SYS_ADMIN'] } }), 'spec.containers[1].securityContext.capabilities.add[1]', true],
  ['CHOWN added (baseline allows it)', sidecar({ capabilities: { add: ['CHOWN'] } }), 'spec.containers[1].securityContext.capabilities.add[0]', false],
  ['seccomp Unconfined on a container', sidecar({ seccompProfile: { type: 'Unconfined' } }), 'spec.containers[1].securityContext.seccompProfile.type', true],
  ['seccomp Unconfined on the pod', { containers: [worker()], securityContext: { seccompProfile: { type: 'Unconfined' } } }, 'spec.securityContext.seccompProfile.type', true],
  ['procMount Unmasked', init({ procMount: 'Unmasked' }), 'spec.initContainers[0].securityContext.procMount', true],
  [
    'an unsafe sysctl',
    {
      containers: [worker()],
      securityContext: {
        sysctls: [
          { name: 'kernel.shm_rmid_forced', value: '1' },
          { name: 'kernel.msgmax', value: '1' },
        ],
      },
    },
    'spec.securityContext.sysctls[1].name',
    true,
  ],
  ['AppArmor Unconfined on a container', sidecar({ appArmorProfile: { type: 'Unconfined' } }), 'spec.containers[1].securityContext.appArmorProfile.type', true],
  ['AppArmor Unconfined on the pod', { containers: [worker()], securityContext: { appArmorProfile: { type: 'Unconfined' } } }, 'spec.securityContext.appArmorProfile.type', true],
  ['SELinux type spc_t', sidecar({ seLinuxOptions: { type: 'spc_t' } }), 'spec.containers[1].securityContext.seLinuxOptions.type', true],
  ['SELinux user', { containers: [worker()], securityContext: { seLinuxOptions: { user: 'system_u' } } }, 'spec.securityContext.seLinuxOptions.user', true],
  ['SELinux role', init({ seLinuxOptions: { role: 'sysadm_r' } }), 'spec.initContainers[0].securityContext.seLinuxOptions.role', true],
  ['Windows HostProcess', sidecar({ windowsOptions: { hostProcess: true } }), 'spec.containers[1].securityContext.windowsOptions.hostProcess', true],
  ['Windows HostProcess on the pod', { containers: [worker()], securityContext: { windowsOptions: { hostProcess: true } } }, 'spec.securityContext.windowsOptions.hostProcess', true],
  ['an ephemeral container', { containers: [worker()], ephemeralContainers: [{ name: 'debug', image: 'busybox' }] }, 'spec.ephemeralContainers[0]', true],
  ['runAsUser 0 on a container', sidecar({ runAsUser: 0 }), 'spec.containers[1].securityContext.runAsUser', false],
  ['runAsUser 0 on the pod', { containers: [worker()], securityContext: { runAsUser: 0 } }, 'spec.securityContext.runAsUser', false],
  ['runAsNonRoot false on an init container', init({ runAsNonRoot: false }), 'spec.initContainers[0].securityContext.runAsNonRoot', false],
  ['runAsNonRoot false on the pod', { containers: [worker()], securityContext: { runAsNonRoot: false } }, 'spec.securityContext.runAsNonRoot', false],
  ['allowPrivilegeEscalation true', sidecar({ allowPrivilegeEscalation: true }), 'spec.containers[1].securityContext.allowPrivilegeEscalation', false],
  ['an nfs volume', vol({ nfs: { server: 'x', path: '/' } }), 'spec.volumes[0].nfs', false],
  ['a gitRepo volume', vol({ gitRepo: { repository: 'https://example' } }), 'spec.volumes[0].gitRepo', false],
];

describe('checkPodSecurity', () => {
  test.each(CASES)('%s: refused by restricted, naming the field', (_name, spec, path) => {
    expect(paths('restricted', spec)).toEqual([path]);
  });

  test.each(CASES)('%s: baseline refuses only baseline violations', (_name, spec, path, baseline) => {
    expect(paths('baseline', spec)).toEqual(baseline ? [path] : []);
  });

  test.each(CASES)('%s: unrestricted refuses nothing', (_name, spec) => {
    expect(checkPodSecurity('unrestricted', spec)).toEqual([]);
  });

  test('AppArmor annotations: unconfined is refused, runtime/default and localhost/* are not', () => {
    const spec = { containers: [worker()] };
    const annotations = {
      'container.apparmor.security.beta.kubernetes.io/worker': 'unconfined',
      'container.apparmor.security.beta.kubernetes.io/side': 'runtime/default',
      'container.apparmor.security.beta.kubernetes.io/init': 'localhost/my-profile',
      'example.com/other': 'unconfined',
    };
    expect(paths('restricted', spec, annotations)).toEqual(['metadata.annotations["container.apparmor.security.beta.kubernetes.io/worker"]']);
    expect(paths('baseline', spec, annotations)).toHaveLength(1);
  });

  test('what the Standards allow is accepted at both levels', () => {
    const ok: Spec = {
      securityContext: {
        runAsNonRoot: true,
        runAsUser: 1000,
        seccompProfile: { type: 'Localhost', localhostProfile: 'p.json' },
        sysctls: [{ name: 'net.ipv4.ip_local_port_range', value: '1024 65000' }],
        seLinuxOptions: { type: 'container_t', level: 's0:c1' },
        appArmorProfile: { type: 'RuntimeDefault' },
      },
      hostNetwork: false,
      initContainers: [{ name: 'i', securityContext: { privileged: false, allowPrivilegeEscalation: false, procMount: 'Default', capabilities: { drop: ['ALL'], add: ['NET_BIND_SERVICE'] } } }],
      containers: [worker({ runAsUser: 1000, seccompProfile: { type: 'RuntimeDefault' } }, { ports: [{ containerPort: 80, hostPort: 0 }] })],
      volumes: [
        { name: 'a', emptyDir: {} },
        { name: 'b', configMap: { name: 'c' } },
        { name: 'c', secret: { secretName: 's' } },
        { name: 'd', projected: { sources: [] } },
        { name: 'e', persistentVolumeClaim: { claimName: 'p' } },
        { name: 'f', downwardAPI: { items: [] } },
        { name: 'g', csi: { driver: 'd' } },
        { name: 'h', ephemeral: { volumeClaimTemplate: {} } },
      ],
    };
    expect(checkPodSecurity('restricted', ok)).toEqual([]);
    expect(checkPodSecurity('baseline', ok)).toEqual([]);
  });

  test('every violation is reported, not just the first; the message names each path and the level', () => {
    const spec = { hostNetwork: true, initContainers: [{ name: 'i', securityContext: { runAsUser: 0 } }], containers: [worker(), { name: 'side', securityContext: { privileged: true } }] };
    const v = checkPodSecurity('restricted', spec);
    expect(v.map((x) => x.path)).toEqual(['spec.hostNetwork', 'spec.initContainers[0].securityContext.runAsUser', 'spec.containers[1].securityContext.privileged']);
    expect(describeViolations('restricted', v)).toMatch(
      /^spec\.template\.spec\.hostNetwork: forbidden by workerPodSecurity=restricted \(.*\); spec\.template\.spec\.initContainers\[0\]\.securityContext\.runAsUser: forbidden by workerPodSecurity=restricted .*; spec\.template\.spec\.containers\[1\]\.securityContext\.privileged: forbidden by workerPodSecurity=restricted \(privileged containers are not allowed\)$/,
    );
  });

  test('a template of odd shapes (user input) does not throw', () => {
    expect(() => checkPodSecurity('restricted', { containers: 'x', initContainers: [null, 3], volumes: {}, securityContext: [] })).not.toThrow();
    expect(paths('restricted', { containers: [{ name: 'w', securityContext: { capabilities: { add: [7] } } }] })).toEqual(['spec.containers[0].securityContext.capabilities.add[0]']);
  });
});

describe('hardenPodSpec', () => {
  test('restricted fills in every container (init containers and sidecars) and the pod', () => {
    const input = { initContainers: [{ name: 'i' }], containers: [worker(), { name: 'side', securityContext: { runAsUser: 1000, capabilities: { drop: ['NET_RAW'], add: ['NET_BIND_SERVICE'] } } }] };
    const out = hardenPodSpec<Spec>('restricted', input) as { securityContext?: Spec; initContainers: Spec[]; containers: Spec[] };
    expect(out.securityContext).toEqual({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
    const hardened = { allowPrivilegeEscalation: false, runAsNonRoot: true, capabilities: { drop: ['ALL'] } };
    expect(out.initContainers[0]).toEqual({ name: 'i', securityContext: hardened });
    expect(out.containers[0]).toEqual({ name: 'worker', securityContext: hardened });
    expect(out.containers[1]!.securityContext).toEqual({ runAsUser: 1000, allowPrivilegeEscalation: false, runAsNonRoot: true, capabilities: { drop: ['NET_RAW', 'ALL'], add: ['NET_BIND_SERVICE'] } });
    // The input is not modified.
    expect(input.initContainers[0]).toEqual({ name: 'i' });
  });

  test('restricted keeps compatible values the template set', () => {
    const out = hardenPodSpec('restricted', {
      securityContext: { runAsNonRoot: true, runAsUser: 1000, seccompProfile: { type: 'Localhost', localhostProfile: 'p' } },
      containers: [worker({ allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } })],
    });
    expect(out.securityContext).toEqual({ runAsNonRoot: true, runAsUser: 1000, seccompProfile: { type: 'Localhost', localhostProfile: 'p' } });
    expect((out.containers as Spec[])[0]).toEqual(worker({ allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] }, runAsNonRoot: true }));
  });

  test.each(['baseline', 'unrestricted'] as const)('%s adds nothing', (level) => {
    const input = { initContainers: [{ name: 'i' }], containers: [worker()] };
    expect(hardenPodSpec(level, input)).toEqual(input);
  });
});

describe('buildWorkerPod with workerPodSecurity', () => {
  const cfg = (podSecurity: PodSecurityLevel, restrictedSecurityContext = true): WorkerPodConfig => ({
    image: 'taskbatch/worker:dev',
    command: ['node', '/app/dist/worker/main.js'],
    metricsPort: 9090,
    restrictedSecurityContext,
    podSecurity,
    terminationGracePeriodSeconds: 60,
  });
  const batch = (template?: Spec): TaskBatch => ({
    apiVersion: 'taskbatch.dev/v1alpha1',
    kind: 'TaskBatch',
    metadata: { name: 'b', namespace: 'n', uid: 'u' },
    spec: { handler: { builtin: 'noop' }, range: { end: 1 }, ...(template ? { template } : {}) },
  });
  const privilegedSidecar = { spec: { containers: [{ name: 'worker' }, { name: 'side', image: 'x', securityContext: { privileged: true } }] } };

  test('restricted refuses a contradicting template: no pod is built', () => {
    expect(() => buildWorkerPod(batch(privilegedSidecar), 'e', cfg('restricted'))).toThrow(PodTemplateRejectedError);
    expect(() => buildWorkerPod(batch(privilegedSidecar), 'e', cfg('restricted'))).toThrow('spec.template.spec.containers[1].securityContext.privileged: forbidden by workerPodSecurity=restricted');
    expect(() => buildWorkerPod(batch(privilegedSidecar), 'e', cfg('baseline'))).toThrow(/workerPodSecurity=baseline/);
  });

  test("unrestricted keeps today's behaviour: the template passes through", () => {
    const pod = buildWorkerPod(batch(privilegedSidecar), 'e', cfg('unrestricted'));
    expect(pod.spec.containers[1]).toEqual({ name: 'side', image: 'x', securityContext: { privileged: true } });
  });

  test('restricted hardens the init container and the default worker; the worker keeps a read-only root by default', () => {
    const pod = buildWorkerPod(batch({ spec: { initContainers: [{ name: 'setup', image: 'busybox', command: ['true'] }] } }), 'e', cfg('restricted', false));
    expect(pod.spec.securityContext).toEqual({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
    const initC = (pod.spec.initContainers as { securityContext?: Spec }[])[0]!;
    expect(initC.securityContext).toEqual({ allowPrivilegeEscalation: false, runAsNonRoot: true, capabilities: { drop: ['ALL'] } });
    expect(pod.spec.containers[0]!.securityContext).toEqual({ allowPrivilegeEscalation: false, runAsNonRoot: true, capabilities: { drop: ['ALL'] }, readOnlyRootFilesystem: true });
    expect(checkPodSecurity('restricted', pod.spec)).toEqual([]);
    // The template may still turn the read-only root off (not part of the Standard).
    const writable = buildWorkerPod(batch({ spec: { containers: [{ name: 'worker', securityContext: { readOnlyRootFilesystem: false } }] } }), 'e', cfg('restricted'));
    expect(writable.spec.containers[0]!.securityContext).toMatchObject({ readOnlyRootFilesystem: false, allowPrivilegeEscalation: false });
  });

  test("baseline applies only today's worker defaults: a sidecar is not hardened", () => {
    const pod = buildWorkerPod(batch({ spec: { containers: [{ name: 'worker' }, { name: 'side', image: 'x' }] } }), 'e', cfg('baseline'));
    expect(pod.spec.containers[1]).toEqual({ name: 'side', image: 'x' });
    expect(pod.spec.containers[0]!.securityContext).toMatchObject({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false });
    const bare = buildWorkerPod(batch(), 'e', cfg('baseline', false));
    expect(bare.spec.containers[0]!.securityContext).toBeUndefined();
  });
});

describe('TASKBATCH_WORKER_POD_SECURITY', () => {
  test('defaults to restricted; accepts the three levels; names the variable otherwise', () => {
    expect(loadConfig({}).workerPodSecurity).toBe('restricted');
    expect(loadConfig({ TASKBATCH_WORKER_POD_SECURITY: 'baseline' }).workerPodSecurity).toBe('baseline');
    expect(loadConfig({ TASKBATCH_WORKER_POD_SECURITY: 'unrestricted' }).workerPodSecurity).toBe('unrestricted');
    expect(() => loadConfig({ TASKBATCH_WORKER_POD_SECURITY: 'privileged' })).toThrow('TASKBATCH_WORKER_POD_SECURITY="privileged" is invalid: expected one of restricted, baseline, unrestricted');
  });
});
