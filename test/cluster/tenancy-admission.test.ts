/**
 * The chart's ValidatingAdmissionPolicy on a real kube-apiserver: creating a TaskBatch or a
 * TaskSchedule needs what creating a Job needs (create pods in the namespace) plus get on every
 * Secret (and the itemsFrom ConfigMap) the spec names — checked for the requesting user, with
 * the API server's own authorizer. Users are client certificates with only the rights each test
 * binds. No operator runs: admission happens before any controller.
 */
import { repoRoot, startControlPlane, type ControlPlane } from '../../localcluster/index.js';
import { parseAllDocuments } from 'yaml';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { getObject, helmTemplate, type K8sObject } from '../support/helm-chart.js';
import { uniqueName, waitFor } from './helpers.js';

const TIMEOUT_MS = 60_000;
const RELEASE = 'tb';
const RELEASE_NS = 'taskbatch-system';
const POLICY = 'tb-taskbatch-tenancy';
const OPERATOR_SA = 'tb-taskbatch';
/** The fix every Secret denial names. */
const SECRET_FIX = 'grant get on it or name a Secret you can read';

let cp: ControlPlane;
let ns: string;
/** kubeconfig path per user. */
const users: Record<string, string> = {};

interface Outcome {
  allowed: boolean;
  /** kubectl's stderr when refused. */
  error: string;
}

async function kubectl(args: string[], input?: string, kubeconfigPath?: string): Promise<string> {
  const r = await cp.kubectl(args, { ...(input !== undefined ? { input } : {}), ...(kubeconfigPath ? { kubeconfigPath } : {}) });
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

async function apply(objects: unknown[]): Promise<void> {
  await kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects }));
}

/** Creates the object as the user; allowed or the API server's refusal. */
async function createAs(user: string, obj: K8sObject): Promise<Outcome> {
  const r = await cp.kubectl(['create', '-f', '-', '-o', 'name'], { input: JSON.stringify(obj), kubeconfigPath: users[user]! });
  return { allowed: r.code === 0, error: r.code === 0 ? '' : r.stderr.trim() };
}

function batch(name: string, spec: Record<string, unknown> = {}, labels?: Record<string, string>): K8sObject {
  return {
    apiVersion: 'taskbatch.dev/v1alpha1',
    kind: 'TaskBatch',
    metadata: { name, namespace: ns, ...(labels ? { labels } : {}) },
    spec: { range: { end: 10 }, handler: { builtin: 'noop' }, ...spec },
  };
}

function schedule(name: string, spec: Record<string, unknown> = {}): K8sObject {
  return {
    apiVersion: 'taskbatch.dev/v1alpha1',
    kind: 'TaskSchedule',
    metadata: { name, namespace: ns },
    spec: { schedule: '@hourly', batchTemplate: { spec: { range: { end: 10 }, handler: { builtin: 'noop' }, ...spec } } },
  };
}

/** The policy's refusal as kubectl prints it: the first of its validations that failed. */
function refusal(kind: 'TaskBatch' | 'TaskSchedule', name: string, denial: string): string {
  const resource = kind === 'TaskBatch' ? 'taskbatches' : 'taskschedules';
  return `${resource}.taskbatch.dev "${name}" is forbidden: ValidatingAdmissionPolicy '${POLICY}' with binding '${POLICY}' denied request: ${denial}`;
}

const noPods = (user: string, kind: string): string =>
  `user "${user}" may not create pods in namespace "${ns}": a ${kind} runs its handler in worker pods, so it needs the right to create them; grant create on pods in this namespace (the edit role has it)`;
const noSecret = (field: string, user: string, secret: string): string => `${field}: user "${user}" may not get secret "${secret}" in namespace "${ns}"; ${SECRET_FIX}`;

function role(name: string, rules: unknown[]): unknown[] {
  return [
    { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata: { name, namespace: ns }, rules },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'RoleBinding',
      metadata: { name, namespace: ns },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name },
      subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name }],
    },
  ];
}

const CREATE_TASKBATCHES = { apiGroups: ['taskbatch.dev'], resources: ['taskbatches', 'taskschedules'], verbs: ['create', 'get', 'update', 'patch'] };
const CREATE_PODS = { apiGroups: [''], resources: ['pods'], verbs: ['create'] };

beforeAll(async () => {
  const t0 = Date.now();
  // The controller manager for the aggregation of the chart's -edit role into `edit` (and the
  // `default` ServiceAccounts the control plane waits for).
  cp = await startControlPlane({ controllerManager: true, controllers: ['clusterrole-aggregation-controller', 'serviceaccount-controller'] });
  const tStarted = Date.now();
  ns = uniqueName('team-a');
  await kubectl(['create', 'namespace', ns]);
  await kubectl(['create', 'namespace', RELEASE_NS]);

  // What the chart installs for tenancy: the CRDs, the aggregated user roles, the policy.
  // The tests' Redis is "redis" (any port), plus a host:port and a Service name to check the
  // allowed-address rule (the chart's default Redis is allowed without being listed).
  const rendered = await helmTemplate({ release: RELEASE, namespace: RELEASE_NS, values: { redis: { allowedAddresses: ['redis', 'cache.example:7000', 'shared.redis-team.svc.cluster.local'] } } });
  expect(rendered.code).toBe(0);
  const wanted = rendered.objects.filter(
    (o) => ['CustomResourceDefinition', 'ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicyBinding'].includes(o.kind) || (o.kind === 'ClusterRole' && /-(edit|view)$/.test(o.metadata.name)),
  );
  expect(wanted.map((o) => `${o.kind}/${o.metadata.name}`).sort()).toEqual([
    'ClusterRole/tb-taskbatch-edit',
    'ClusterRole/tb-taskbatch-view',
    'CustomResourceDefinition/taskbatches.taskbatch.dev',
    'CustomResourceDefinition/taskschedules.taskbatch.dev',
    `ValidatingAdmissionPolicy/${POLICY}`,
    `ValidatingAdmissionPolicyBinding/${POLICY}`,
  ]);
  await apply(wanted);
  await kubectl(['wait', '--for=condition=Established', '--timeout=60s', 'crd/taskbatches.taskbatch.dev', 'crd/taskschedules.taskbatch.dev']);

  // Users: client certificates, each with exactly the rights its name says.
  const secretNames = ['redis-auth', 'redis-ca', 'app-config', 'regcred', 'tls-files', 'env-file', 'projected-token'];
  await apply([
    ...secretNames.map((name) => ({ apiVersion: 'v1', kind: 'Secret', metadata: { name, namespace: ns }, stringData: { password: 'x', 'ca.crt': 'x' } })),
    { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'items', namespace: ns }, data: { items: '{"i":1}\n' } },
    ...role('tb-only', [CREATE_TASKBATCHES]),
    ...role('pods-only', [CREATE_PODS]),
    ...role('both', [CREATE_TASKBATCHES, CREATE_PODS]),
    // Like `both`, and may read one Secret and one ConfigMap by name.
    ...role('reader', [
      CREATE_TASKBATCHES,
      CREATE_PODS,
      { apiGroups: [''], resources: ['secrets'], resourceNames: ['redis-auth'], verbs: ['get'] },
      { apiGroups: [''], resources: ['configmaps'], resourceNames: ['items'], verbs: ['get'] },
    ]),
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'RoleBinding',
      metadata: { name: 'editor', namespace: ns },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'edit' },
      subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: 'editor' }],
    },
    // The operator's ServiceAccount (identity only: here it may create TaskBatches and nothing
    // else), and another ServiceAccount with the same rights.
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: OPERATOR_SA, namespace: RELEASE_NS } },
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'impostor', namespace: RELEASE_NS } },
    { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata: { name: 'sa-create-taskbatches', namespace: ns }, rules: [CREATE_TASKBATCHES] },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'RoleBinding',
      metadata: { name: 'sa-create-taskbatches', namespace: ns },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'sa-create-taskbatches' },
      subjects: [
        { kind: 'ServiceAccount', name: OPERATOR_SA, namespace: RELEASE_NS },
        { kind: 'ServiceAccount', name: 'impostor', namespace: RELEASE_NS },
      ],
    },
  ]);
  for (const user of ['tb-only', 'pods-only', 'both', 'reader', 'editor']) users[user] = (await cp.createUserKubeconfig(user)).path;
  users.operator = (await cp.createServiceAccountKubeconfig(RELEASE_NS, OPERATOR_SA)).path;
  users.impostor = (await cp.createServiceAccountKubeconfig(RELEASE_NS, 'impostor')).path;

  // `edit` picks up the chart's -edit role once the aggregation controller has run.
  await waitFor(
    'the edit role to include taskbatches',
    async () => {
      const r = await cp.kubectl(['auth', 'can-i', 'create', 'taskbatches.taskbatch.dev', '-n', ns], { kubeconfigPath: users.editor! });
      return r.stdout.trim() === 'yes';
    },
    30_000,
    250,
  );
  // The policy is enforced once the API server's policy informer has seen it and its binding.
  await waitFor(
    'the admission policy to be enforced',
    async () => {
      const r = await cp.kubectl(['create', '--dry-run=server', '-f', '-'], { input: JSON.stringify(batch('probe')), kubeconfigPath: users['tb-only']! });
      return r.code !== 0 && r.stderr.includes(`ValidatingAdmissionPolicy '${POLICY}'`);
    },
    30_000,
    250,
  );
  // The type checker's findings (warnings only) would point at a misspelt field.
  const policy = JSON.parse(await kubectl(['get', 'validatingadmissionpolicy', POLICY, '-o', 'json'])) as { status?: { typeChecking?: { expressionWarnings?: unknown[] } } };
  expect(policy.status?.typeChecking?.expressionWarnings ?? []).toEqual([]);
  console.log(`tenancy-admission: control plane ${tStarted - t0} ms, set-up ${Date.now() - tStarted} ms`);
}, 120_000);

afterAll(async () => {
  await cp?.stop();
});

const refused = (kind: 'TaskBatch' | 'TaskSchedule', name: string, denial: string): Outcome => ({ allowed: false, error: expect.stringContaining(refusal(kind, name, denial)) as unknown as string });
const ADMITTED: Outcome = { allowed: true, error: '' };
const REDIS_SECRET = { url: 'redis://redis:6379', secretRef: { name: 'redis-auth' } };
const T = 'spec.template.spec';

describe("spec.redis.url: only the installer's allowed Redis addresses (redis.allowedAddresses, and the default Redis)", () => {
  const notAllowed = (at: string, host: string, port: number): string =>
    `${at}.redis.url: host "${host}" port ${port} is not in the installer's allowed Redis addresses (Helm value redis.allowedAddresses, operator setting TASKBATCH_ALLOWED_REDIS); leave ${at}.redis unset to use the default Redis, or ask the installer to add the address`;

  test.each([
    ['a listed host, any port', 'redis://redis:6390'],
    ['a listed host:port', 'rediss://cache.example:7000/2'],
    ['a listed host in upper case with a trailing dot', 'redis://CACHE.example.:7000'],
    ['a listed Service by its short .svc name', 'redis://shared.redis-team.svc:6379'],
    ["the chart's default Redis, by its full Service name", `redis://tb-taskbatch-redis.${RELEASE_NS}.svc.cluster.local:6379`],
  ])(
    'admitted: %s',
    async (_what, url) => {
      expect(await createAs('both', batch(uniqueName('tb'), { redis: { url } }))).toEqual(ADMITTED);
    },
    TIMEOUT_MS,
  );

  test.each<[string, string, string, number]>([
    ['another address', 'redis://10.0.0.5:6379', '10.0.0.5', 6379],
    ['a listed host:port on another port', 'redis://cache.example:7001', 'cache.example', 7001],
    ['the default port of a host listed only with a port', 'redis://cache.example', 'cache.example', 6379],
    ['the default Redis on another port', `redis://tb-taskbatch-redis.${RELEASE_NS}.svc:6380`, `tb-taskbatch-redis.${RELEASE_NS}.svc`, 6380],
  ])(
    'refused: %s',
    async (_what, url, host, port) => {
      const name = uniqueName('tb');
      expect(await createAs('both', batch(name, { redis: { url } }))).toEqual(refused('TaskBatch', name, notAllowed('spec', host, port)));
    },
    TIMEOUT_MS,
  );

  test(
    'a TaskSchedule is refused naming spec.batchTemplate.spec.redis.url',
    async () => {
      const name = uniqueName('sched');
      expect(await createAs('both', schedule(name, { redis: { url: 'redis://127.0.0.99:6379' } }))).toEqual(refused('TaskSchedule', name, notAllowed('spec.batchTemplate.spec', '127.0.0.99', 6379)));
    },
    TIMEOUT_MS,
  );

  test(
    "a URL kept in a Secret cannot be seen here: admitted, and left to the operator's check",
    async () => {
      expect(await createAs('reader', batch(uniqueName('tb'), { redis: { secretRef: { name: 'redis-auth', urlKey: 'url' } } }))).toEqual(ADMITTED);
    },
    TIMEOUT_MS,
  );
});

describe('TaskBatch', () => {
  test(
    'only create taskbatches: refused for want of create pods',
    async () => {
      const name = uniqueName('tb');
      expect(await createAs('tb-only', batch(name))).toEqual(refused('TaskBatch', name, noPods('tb-only', 'TaskBatch')));
    },
    TIMEOUT_MS,
  );

  test(
    'only create pods: refused by RBAC before the policy runs',
    async () => {
      const name = uniqueName('tb');
      const r = await createAs('pods-only', batch(name));
      expect(r.allowed).toBe(false);
      expect(r.error).toContain(`taskbatches.taskbatch.dev is forbidden: User "pods-only" cannot create resource "taskbatches" in API group "taskbatch.dev" in the namespace "${ns}"`);
      expect(r.error).not.toContain('ValidatingAdmissionPolicy');
    },
    TIMEOUT_MS,
  );

  test(
    'create taskbatches and pods: a batch naming no Secret is admitted, with any ServiceAccount of the namespace',
    async () => {
      expect(await createAs('both', batch(uniqueName('tb')))).toEqual(ADMITTED);
      // create pods already lets a user run pods as any ServiceAccount of the namespace.
      expect(await createAs('both', batch(uniqueName('tb'), { template: { spec: { serviceAccountName: 'default' } } }))).toEqual(ADMITTED);
    },
    TIMEOUT_MS,
  );

  test(
    'create taskbatches and pods but no get on the Redis Secret: refused naming spec.redis.secretRef.name',
    async () => {
      const name = uniqueName('tb');
      expect(await createAs('both', batch(name, { redis: REDIS_SECRET }))).toEqual(refused('TaskBatch', name, noSecret('spec.redis.secretRef.name', 'both', 'redis-auth')));
    },
    TIMEOUT_MS,
  );

  test(
    'get on the Redis Secret by name: admitted; the CA Secret it cannot read is refused',
    async () => {
      expect(await createAs('reader', batch(uniqueName('tb'), { redis: REDIS_SECRET }))).toEqual(ADMITTED);
      const name = uniqueName('tb');
      const r = await createAs('reader', batch(name, { redis: { url: 'rediss://redis:6379', secretRef: { name: 'redis-auth' }, tls: { enabled: true, caSecretRef: { name: 'redis-ca' } } } }));
      expect(r).toEqual(refused('TaskBatch', name, noSecret('spec.redis.tls.caSecretRef.name', 'reader', 'redis-ca')));
    },
    TIMEOUT_MS,
  );

  test(
    'spec.itemsFrom: get on the ConfigMap is required',
    async () => {
      const ok = { itemsFrom: { configMapKeyRef: { name: 'items', key: 'items' } }, range: undefined };
      expect(await createAs('reader', batch(uniqueName('tb'), ok))).toEqual(ADMITTED);
      const name = uniqueName('tb');
      expect(await createAs('both', batch(name, ok))).toEqual(
        refused('TaskBatch', name, `spec.itemsFrom.configMapKeyRef.name: user "both" may not get configmap "items" in namespace "${ns}"; grant get on it or name a ConfigMap you can read`),
      );
    },
    TIMEOUT_MS,
  );

  test.each<[string, Record<string, unknown>, string, string]>([
    ['imagePullSecrets', { imagePullSecrets: [{ name: 'regcred' }] }, `${T}.imagePullSecrets`, 'regcred'],
    [
      'a secret volume',
      {
        volumes: [
          { name: 'scratch', emptyDir: {} },
          { name: 'tls', secret: { secretName: 'tls-files' } },
        ],
      },
      `${T}.volumes[name=tls].secret.secretName`,
      'tls-files',
    ],
    [
      'a projected volume',
      { volumes: [{ name: 'mixed', projected: { sources: [{ configMap: { name: 'items' } }, { secret: { name: 'projected-token' } }] } }] },
      `${T}.volumes[name=mixed].projected.sources.secret.name`,
      'projected-token',
    ],
    [
      'a CSI volume',
      { volumes: [{ name: 'vault', csi: { driver: 'secrets-store.csi.k8s.io', nodePublishSecretRef: { name: 'app-config' } } }] },
      `${T}.volumes[name=vault].csi.nodePublishSecretRef.name`,
      'app-config',
    ],
    [
      'env secretKeyRef',
      {
        containers: [
          {
            name: 'worker',
            env: [
              { name: 'PLAIN', value: 'x' },
              { name: 'API_KEY', valueFrom: { secretKeyRef: { name: 'app-config', key: 'password' } } },
            ],
          },
        ],
      },
      `${T}.containers[name=worker].env[name=API_KEY].valueFrom.secretKeyRef.name`,
      'app-config',
    ],
    [
      'envFrom secretRef',
      { containers: [{ name: 'worker' }, { name: 'sidecar', image: 'busybox', envFrom: [{ configMapRef: { name: 'items' } }, { secretRef: { name: 'env-file' } }] }] },
      `${T}.containers[name=sidecar].envFrom.secretRef.name`,
      'env-file',
    ],
    [
      "an init container's env",
      { initContainers: [{ name: 'init', image: 'busybox', env: [{ name: 'TOKEN', valueFrom: { secretKeyRef: { name: 'env-file', key: 'password' } } }] }] },
      `${T}.initContainers[name=init].env[name=TOKEN].valueFrom.secretKeyRef.name`,
      'env-file',
    ],
    [
      "an init container's envFrom",
      { initContainers: [{ name: 'init', image: 'busybox', envFrom: [{ secretRef: { name: 'env-file' } }] }] },
      `${T}.initContainers[name=init].envFrom.secretRef.name`,
      'env-file',
    ],
  ])(
    'the pod template: %s naming a Secret the user cannot read is refused, naming the field',
    async (_what, podSpec, field, secret) => {
      const name = uniqueName('tb');
      expect(await createAs('reader', batch(name, { template: { spec: podSpec } }))).toEqual(refused('TaskBatch', name, noSecret(field, 'reader', secret)));
      // The namespace's editors may read every Secret there: the same template is admitted.
      expect(await createAs('editor', batch(uniqueName('tb'), { template: { spec: podSpec } }))).toEqual(ADMITTED);
    },
    TIMEOUT_MS,
  );

  test(
    'a Secret it may read, in every place, is admitted',
    async () => {
      const template = {
        spec: {
          imagePullSecrets: [{ name: 'redis-auth' }],
          volumes: [{ name: 'a', secret: { secretName: 'redis-auth' } }],
          containers: [{ name: 'worker', envFrom: [{ secretRef: { name: 'redis-auth' } }] }],
        },
      };
      expect(await createAs('reader', batch(uniqueName('tb'), { redis: REDIS_SECRET, template }))).toEqual(ADMITTED);
    },
    TIMEOUT_MS,
  );

  test(
    'the first failed check is reported: create pods before Secrets, spec.redis before the template',
    async () => {
      const first = uniqueName('tb');
      expect(await createAs('tb-only', batch(first, { redis: REDIS_SECRET }))).toEqual(refused('TaskBatch', first, noPods('tb-only', 'TaskBatch')));
      const second = uniqueName('tb');
      expect(await createAs('both', batch(second, { redis: REDIS_SECRET, template: { spec: { imagePullSecrets: [{ name: 'regcred' }] } } }))).toEqual(
        refused('TaskBatch', second, noSecret('spec.redis.secretRef.name', 'both', 'redis-auth')),
      );
    },
    TIMEOUT_MS,
  );

  test(
    'a Secret named many times is checked once, where it first appears',
    async () => {
      const env = Array.from({ length: 40 }, (_, i) => ({ name: `K${i}`, valueFrom: { secretKeyRef: { name: 'redis-auth', key: 'password' } } }));
      expect(await createAs('reader', batch(uniqueName('tb'), { template: { spec: { containers: [{ name: 'worker', env }] } } }))).toEqual(ADMITTED);
      const name = uniqueName('tb');
      const tail = [
        { name: 'LAST', valueFrom: { secretKeyRef: { name: 'app-config', key: 'password' } } },
        { name: 'AGAIN', valueFrom: { secretKeyRef: { name: 'app-config', key: 'x' } } },
      ];
      expect(await createAs('reader', batch(name, { template: { spec: { containers: [{ name: 'worker', env: [...env, ...tail] }] } } }))).toEqual(
        refused('TaskBatch', name, noSecret(`${T}.containers[name=worker].env[name=LAST].valueFrom.secretKeyRef.name`, 'reader', 'app-config')),
      );
    },
    TIMEOUT_MS,
  );

  test(
    'at most 16 different Secrets (each an authorization check): the 17th is refused even for the edit role',
    async () => {
      const env = (n: number) => Array.from({ length: n }, (_, i) => ({ name: `K${i}`, valueFrom: { secretKeyRef: { name: `s${i}`, key: 'k' } } }));
      expect(await createAs('editor', batch(uniqueName('tb'), { template: { spec: { containers: [{ name: 'worker', env: env(16) }] } } }))).toEqual(ADMITTED);
      const name = uniqueName('tb');
      const r = await createAs('editor', batch(name, { template: { spec: { containers: [{ name: 'worker', env: env(17) }] } } }));
      expect(r).toEqual({
        allowed: false,
        error: expect.stringContaining(
          `ValidatingAdmissionPolicy '${POLICY}' with binding '${POLICY}' denied request: spec names 17 different Secrets, more than the 16 this admission policy checks; the first beyond is ${T}.containers[name=worker].env[name=K16].valueFrom.secretKeyRef.name ("s16"); name fewer Secrets (one Secret may hold many keys)`,
        ) as unknown as string,
      });
    },
    TIMEOUT_MS,
  );

  test(
    'at most 128 Secret references',
    async () => {
      const env = (n: number) => Array.from({ length: n }, (_, i) => ({ name: `K${i}`, valueFrom: { secretKeyRef: { name: 'redis-auth', key: 'password' } } }));
      expect(await createAs('editor', batch(uniqueName('tb'), { template: { spec: { containers: [{ name: 'worker', env: env(128) }] } } }))).toEqual(ADMITTED);
      const r = await createAs('editor', batch(uniqueName('tb'), { template: { spec: { containers: [{ name: 'worker', env: env(129) }] } } }));
      expect(r).toEqual({ allowed: false, error: expect.stringContaining(`denied request: spec names 129 Secrets, more than the 128 this admission policy checks; name fewer`) as unknown as string });
    },
    TIMEOUT_MS,
  );

  test(
    'a name that is no Secret name cannot pass as one it may read',
    async () => {
      const name = uniqueName('tb');
      const spec = { containers: [{ name: 'worker', env: [{ name: 'X', valueFrom: { secretKeyRef: { name: 'redis-auth other', key: 'password' } } }] }] };
      expect(await createAs('reader', batch(name, { template: { spec } }))).toEqual(
        refused('TaskBatch', name, noSecret(`${T}.containers[name=worker].env[name=X].valueFrom.secretKeyRef.name`, 'reader', '')),
      );
    },
    TIMEOUT_MS,
  );

  test(
    'UPDATE: a changed spec is checked again; a metadata-only change is not',
    async () => {
      const name = uniqueName('tb');
      // The editor creates a batch naming a Secret `both` cannot read.
      expect(await createAs('editor', batch(name, { redis: REDIS_SECRET }))).toEqual(ADMITTED);
      const asBoth = { kubeconfigPath: users.both! };
      const label = await cp.kubectl(['label', 'taskbatch.taskbatch.dev', name, '-n', ns, 'team=a'], asBoth);
      expect({ code: label.code, stderr: label.stderr }).toEqual({ code: 0, stderr: '' });
      const patch = { spec: { suspend: true } };
      const changed = await cp.kubectl(['patch', 'taskbatch.taskbatch.dev', name, '-n', ns, '--type=merge', '-p', JSON.stringify(patch)], asBoth);
      expect(changed.code).not.toBe(0);
      // The whole spec is checked for the user changing it, spec.redis included.
      expect(changed.stderr).toContain(refusal('TaskBatch', name, noSecret('spec.redis.secretRef.name', 'both', 'redis-auth')));
      const byEditor = await cp.kubectl(['patch', 'taskbatch.taskbatch.dev', name, '-n', ns, '--type=merge', '-p', JSON.stringify(patch)], { kubeconfigPath: users.editor! });
      expect({ code: byEditor.code, stderr: byEditor.stderr }).toEqual({ code: 0, stderr: '' });
    },
    TIMEOUT_MS,
  );

  test(
    "the operator's ServiceAccount is exempt (it creates TaskSchedule runs); another ServiceAccount with its rights is not",
    async () => {
      const spec = { redis: REDIS_SECRET };
      const labels = { 'taskbatch.dev/schedule': 'nightly' };
      expect(await createAs('operator', batch(uniqueName('run'), spec, labels))).toEqual(ADMITTED);
      const name = uniqueName('run');
      expect(await createAs('impostor', batch(name, spec, labels))).toEqual(refused('TaskBatch', name, noPods(`system:serviceaccount:${RELEASE_NS}:impostor`, 'TaskBatch')));
    },
    TIMEOUT_MS,
  );
});

describe('TaskSchedule', () => {
  test(
    'only create taskschedules: refused for want of create pods',
    async () => {
      const name = uniqueName('sched');
      expect(await createAs('tb-only', schedule(name))).toEqual(refused('TaskSchedule', name, noPods('tb-only', 'TaskSchedule')));
    },
    TIMEOUT_MS,
  );

  test(
    'create taskschedules and pods: admitted; Secrets it cannot read are refused, naming spec.batchTemplate.spec',
    async () => {
      expect(await createAs('both', schedule(uniqueName('sched')))).toEqual(ADMITTED);
      const redis = uniqueName('sched');
      expect(await createAs('both', schedule(redis, { redis: REDIS_SECRET }))).toEqual(refused('TaskSchedule', redis, noSecret('spec.batchTemplate.spec.redis.secretRef.name', 'both', 'redis-auth')));
      const volume = uniqueName('sched');
      expect(await createAs('both', schedule(volume, { template: { spec: { volumes: [{ name: 'tls', secret: { secretName: 'tls-files' } }] } } }))).toEqual(
        refused('TaskSchedule', volume, noSecret('spec.batchTemplate.spec.template.spec.volumes[name=tls].secret.secretName', 'both', 'tls-files')),
      );
      const items = uniqueName('sched');
      expect(await createAs('both', schedule(items, { itemsFrom: { configMapKeyRef: { name: 'items', key: 'items' } }, range: undefined }))).toEqual(
        refused(
          'TaskSchedule',
          items,
          `spec.batchTemplate.spec.itemsFrom.configMapKeyRef.name: user "both" may not get configmap "items" in namespace "${ns}"; grant get on it or name a ConfigMap you can read`,
        ),
      );
    },
    TIMEOUT_MS,
  );

  test(
    'get on the Secret, or the edit role: admitted',
    async () => {
      expect(await createAs('reader', schedule(uniqueName('sched'), { redis: REDIS_SECRET }))).toEqual(ADMITTED);
      expect(await createAs('editor', schedule(uniqueName('sched'), { redis: REDIS_SECRET, template: { spec: { imagePullSecrets: [{ name: 'regcred' }] } } }))).toEqual(ADMITTED);
    },
    TIMEOUT_MS,
  );

  test(
    'only create pods: refused by RBAC',
    async () => {
      const r = await createAs('pods-only', schedule(uniqueName('sched')));
      expect(r.allowed).toBe(false);
      expect(r.error).toContain('User "pods-only" cannot create resource "taskschedules"');
    },
    TIMEOUT_MS,
  );
});

test(
  "deploy/admission-policy.yaml is the chart's policy for the plain manifests (deploy/operator-rbac.yaml's ServiceAccount)",
  async () => {
    const deployed = parseAllDocuments(readFileSync(join(repoRoot(), 'deploy/admission-policy.yaml'), 'utf8')).map((d) => d.toJS() as K8sObject);
    const rbac = parseAllDocuments(readFileSync(join(repoRoot(), 'deploy/operator-rbac.yaml'), 'utf8')).map((d) => d.toJS() as K8sObject);
    const sa = getObject(rbac, 'ServiceAccount');
    const rendered = await helmTemplate({
      release: 'taskbatch',
      namespace: sa.metadata.namespace!,
      values: { serviceAccount: { name: sa.metadata.name } },
      showOnly: 'templates/admission-policy.yaml',
    });
    expect(rendered.code).toBe(0);
    const strip = (o: K8sObject): K8sObject => ({ ...o, metadata: { ...o.metadata, labels: undefined } });
    expect(deployed.map(strip)).toEqual(rendered.objects.map(strip));
    expect(JSON.stringify(getObject(deployed, 'ValidatingAdmissionPolicy').spec)).toContain(`request.userInfo.username != \\"system:serviceaccount:${sa.metadata.namespace}:${sa.metadata.name}\\"`);
  },
  TIMEOUT_MS,
);
