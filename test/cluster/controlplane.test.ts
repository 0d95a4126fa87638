/**
 * The control-plane harness against the real built binaries: kubectl (CRDs and their schema
 * validation), helm, and RBAC with restricted identities.
 */
import { CoreV1Api, RbacAuthorizationV1Api, VersionApi, type V1PodTemplate } from '@kubernetes/client-node';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger, repoRoot, startControlPlane, startListWatch, type ControlPlane } from '../../localcluster/index.js';
import { createNamespace, uniqueName, waitFor } from './helpers.js';

// jest's per-project testTimeout does not apply (a global-only option), so each hook/test names its own.
const TIMEOUT_MS = 120_000;

let cp: ControlPlane;
let core: CoreV1Api;

beforeAll(async () => {
  // No watch cache for PodTemplates: their watches are served by etcd, so a compaction makes old resourceVersions 410 Gone.
  cp = await startControlPlane({ extraApiServerArgs: ['--watch-cache-sizes=podtemplates#0'] });
  core = cp.kubeConfig.makeApiClient(CoreV1Api);
}, TIMEOUT_MS);

afterAll(async () => {
  await cp?.stop();
}, TIMEOUT_MS);

test(
  'serves the built Kubernetes version over TLS with the admin kubeconfig',
  async () => {
    const v = await cp.kubeConfig.makeApiClient(VersionApi).getCode();
    expect(v.gitVersion).toBe('v1.34.4');
    expect(cp.server).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const r = await cp.kubectl(['version', '-o', 'json']);
    expect(r.code).toBe(0);
    const parsed = JSON.parse(r.stdout) as { clientVersion: { gitVersion: string }; serverVersion: { gitVersion: string } };
    expect(parsed.clientVersion.gitVersion).toBe('v1.34.4');
    expect(parsed.serverVersion.gitVersion).toBe('v1.34.4');
  },
  TIMEOUT_MS,
);

test(
  'kubectl applies a CRD; a resource violating its schema is rejected with the field path',
  async () => {
    const group = `${uniqueName('g')}.example.com`;
    const crd = `
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.${group}
spec:
  group: ${group}
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [replicas]
              properties:
                replicas: {type: integer, minimum: 0, maximum: 10}
                colour: {type: string, enum: [red, green]}
`;
    const applied = await cp.kubectl(['apply', '-f', '-'], { input: crd });
    expect(applied.stderr).toBe('');
    expect(applied.stdout).toContain(`widgets.${group} created`);
    const established = await cp.kubectl(['wait', '--for=condition=Established', `crd/widgets.${group}`, '--timeout=30s']);
    expect(established.code).toBe(0);

    const ns = await createNamespace(core, 'crd');
    const good = await cp.kubectl(['apply', '-n', ns, '-f', '-'], {
      input: `apiVersion: ${group}/v1\nkind: Widget\nmetadata: {name: good}\nspec: {replicas: 3, colour: red}\n`,
    });
    expect(good.code).toBe(0);
    expect(good.stdout).toContain('widget.');

    const tooMany = await cp.kubectl(['apply', '-n', ns, '-f', '-'], {
      input: `apiVersion: ${group}/v1\nkind: Widget\nmetadata: {name: bad}\nspec: {replicas: 20, colour: blue}\n`,
    });
    expect(tooMany.code).not.toBe(0);
    expect(tooMany.stderr).toContain('is invalid');
    expect(tooMany.stderr).toMatch(/spec\.replicas: Invalid value: 20: spec\.replicas in body should be less than or equal to 10/);
    expect(tooMany.stderr).toMatch(/spec\.colour: Unsupported value: "blue"/);

    const missing = await cp.kubectl(['apply', '-n', ns, '-f', '-'], {
      input: `apiVersion: ${group}/v1\nkind: Widget\nmetadata: {name: bad2}\nspec: {colour: red}\n`,
    });
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(/spec\.replicas: Required value/);

    const unknown = await cp.kubectl(['apply', '-n', ns, '-f', '-'], {
      input: `apiVersion: ${group}/v1\nkind: Widget\nmetadata: {name: bad3}\nspec: {replicas: 1, size: 4}\n`,
    });
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toMatch(/unknown field "spec\.size"/);

    const list = await cp.kubectl(['get', 'widgets', '-n', ns, '-o', 'name']);
    expect(list.stdout.trim()).toBe(`widget.${group}/good`);
  },
  TIMEOUT_MS,
);

test(
  'helm version, template and install work with the built helm',
  async () => {
    const version = await cp.helm(['version', '--short']);
    expect(version.code).toBe(0);
    expect(version.stdout.trim()).toMatch(/^v3\.19\.5/);

    const dir = mkdtempSync(join(tmpdir(), 'tb-chart-'));
    try {
      const chart = join(dir, 'tiny');
      mkdirSync(join(chart, 'templates'), { recursive: true });
      writeFileSync(join(chart, 'Chart.yaml'), 'apiVersion: v2\nname: tiny\nversion: 0.1.0\n');
      writeFileSync(join(chart, 'values.yaml'), 'greeting: hello\n');
      writeFileSync(
        join(chart, 'templates', 'configmap.yaml'),
        'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  greeting: {{ .Values.greeting | quote }}\n  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n',
      );
      const rendered = await cp.helm(['template', 'demo', chart, '--set', 'greeting=hi']);
      expect(rendered.stderr).toBe('');
      expect(rendered.stdout).toContain('name: demo-cm');
      expect(rendered.stdout).toContain('greeting: "hi"');
      // Client-only rendering uses the Kubernetes version compiled into helm (set by the build script).
      expect(rendered.stdout).toMatch(/kube: "v1\.34\.\d+"/);

      const ns = await createNamespace(core, 'helm');
      const installed = await cp.helm(['install', 'demo', chart, '-n', ns, '--wait', '--timeout', '60s']);
      expect(installed.stderr).toBe('');
      expect(installed.stdout).toContain('STATUS: deployed');
      const cm = await core.readNamespacedConfigMap({ name: 'demo-cm', namespace: ns });
      expect(cm.data?.greeting).toBe('hello');
      expect(cm.data?.kube).toBe('v1.34.4');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
  TIMEOUT_MS,
);

test(
  'RBAC is enforced for a restricted user and a ServiceAccount kubeconfig',
  async () => {
    const ns = await createNamespace(core, 'rbac');
    const user = uniqueName('alice');
    const handle = await cp.createUserKubeconfig(user, ['taskbatch:testers']);
    const asUser = handle.kubeConfig.makeApiClient(CoreV1Api);

    await expect(asUser.listNamespacedConfigMap({ namespace: ns })).rejects.toMatchObject({ code: 403 });
    const denied = await cp.kubectl(['get', 'configmaps', '-n', ns], { kubeconfigPath: handle.path });
    expect(denied.code).not.toBe(0);
    expect(denied.stderr).toContain(`User "${user}" cannot list resource "configmaps"`);

    const rbac = cp.kubeConfig.makeApiClient(RbacAuthorizationV1Api);
    await rbac.createNamespacedRole({
      namespace: ns,
      body: { metadata: { name: 'cm-reader' }, rules: [{ apiGroups: [''], resources: ['configmaps'], verbs: ['get', 'list'] }] },
    });
    await rbac.createNamespacedRoleBinding({
      namespace: ns,
      body: {
        metadata: { name: 'testers-read-cm' },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'cm-reader' },
        subjects: [{ kind: 'Group', name: 'taskbatch:testers', apiGroup: 'rbac.authorization.k8s.io' }],
      },
    });
    // RBAC changes reach the authorizer through an informer: allow a moment.
    await waitFor(
      'the Role to take effect',
      async () => {
        await asUser.listNamespacedConfigMap({ namespace: ns });
        return true;
      },
      10_000,
    );
    await expect(asUser.listNamespacedSecret({ namespace: ns })).rejects.toMatchObject({ code: 403 });
    const can = await cp.kubectl(['auth', 'can-i', 'list', 'secrets', '-n', ns], { kubeconfigPath: handle.path });
    expect(can.stdout.trim()).toBe('no');

    // A ServiceAccount's TokenRequest token: the identity is system:serviceaccount:<ns>:<name>.
    await core.createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name: 'robot' } } });
    const sa = await cp.createServiceAccountKubeconfig(ns, 'robot', 600);
    const asSa = sa.kubeConfig.makeApiClient(CoreV1Api);
    const err = await asSa.listNamespacedPod({ namespace: ns }).then(
      () => undefined,
      (e: unknown) => e as { code?: number; body?: string },
    );
    expect(err?.code).toBe(403);
    expect(err?.body).toContain(`system:serviceaccount:${ns}:robot`);
  },
  TIMEOUT_MS,
);

test.each(['SIGKILL', 'SIGINT'] as const)(
  'nothing outlives an owner ended by %s: control plane, pods and their children, temp dirs',
  async (signal) => {
    const fixture = join(repoRoot(), 'dist/test/cluster/fixtures/start-and-hang.js');
    const child = spawn(process.execPath, [fixture], { stdio: ['ignore', 'pipe', 'inherit'] });
    const line = await new Promise<string>((resolve, reject) => {
      createInterface({ input: child.stdout! }).once('line', resolve);
      child.once('exit', (code) => reject(new Error(`fixture exited early with ${code}`)));
    });
    const started = JSON.parse(line) as { pids: Record<string, number>; dirs: string[] };
    expect(Object.keys(started.pids).sort()).toEqual(['etcd', 'kube-apiserver', 'pod', 'podChild']);
    const alive = (pid: number): boolean => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    for (const pid of Object.values(started.pids)) expect(alive(pid)).toBe(true);
    child.kill(signal);
    await waitFor('every spawned process to end', () => Object.values(started.pids).every((pid) => !alive(pid)), 15_000, 100);
    await waitFor('the temp dirs to be removed', () => started.dirs.every((d) => !existsSync(d)), 15_000, 100);
  },
  TIMEOUT_MS,
);

test(
  'the list+watch relists after 410 Gone and delivers later events',
  async () => {
    const ns = await createNamespace(core, 'watch');
    const template = (name: string): V1PodTemplate => ({ metadata: { name }, template: { spec: { containers: [{ name: 'c', image: 'x' }] } } });
    let lists = 0;
    const seen: string[] = [];
    // History the watch would have to replay, then compacted away in etcd (as kube-apiserver does every 5 min).
    for (let i = 0; i < 3; i++) await core.createNamespacedPodTemplate({ namespace: ns, body: template(`before-${i}`) });
    const head = (await (await fetch(`${cp.etcdUrl}/v3/kv/range`, { method: 'POST', body: JSON.stringify({ key: Buffer.from('/').toString('base64') }) })).json()) as { header: { revision: string } };
    const compacted = await fetch(`${cp.etcdUrl}/v3/kv/compaction`, { method: 'POST', body: JSON.stringify({ revision: head.header.revision, physical: true }) });
    expect(compacted.ok).toBe(true);
    const lw = startListWatch<V1PodTemplate>({
      kubeConfig: cp.kubeConfig,
      path: `/api/v1/namespaces/${ns}/podtemplates`,
      logger: createLogger('test-watch'),
      list: async () => {
        lists++;
        const l = await core.listNamespacedPodTemplate({ namespace: ns });
        // The first list claims an ancient resourceVersion: the watch from it gets 410 Gone.
        return { items: l.items, resourceVersion: lists === 1 ? '1' : (l.metadata?.resourceVersion ?? '') };
      },
      onSync: () => undefined,
      onEvent: (type, pt) => seen.push(`${type} ${pt.metadata?.name}`),
    });
    try {
      await lw.synced;
      await waitFor('a relist after 410', () => lists >= 2, 10_000, 20);
      await core.createNamespacedPodTemplate({ namespace: ns, body: template('after') });
      await waitFor('the ADDED event', () => seen.includes('ADDED after'), 10_000, 20);
    } finally {
      lw.stop();
    }
  },
  TIMEOUT_MS,
);
