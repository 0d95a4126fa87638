/**
 * The Helm chart without a cluster: `helm lint --strict`, `helm template` with default and
 * non-default values, and the values schema rejecting bad values. Real helm CLI (the one
 * hack/build-controlplane.sh builds).
 */
import { lstatSync, mkdtempSync, readFileSync, readlinkSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { repoRoot } from '../../localcluster/index.js';
import {
  CHART_DIR,
  CRD_SOURCE,
  envOf,
  findObject,
  getObject,
  helm,
  helmTemplate,
  isHook,
  kinds,
  parseManifests,
  podSpecOf,
  valuesFile,
  withoutSymlinkNotice,
  type K8sObject,
} from '../support/helm-chart.js';

const TEST_TIMEOUT_MS = 60_000;

const MONITORING = ['monitoring.coreos.com/v1'];

/** Non-default values that between them switch every optional template on or off. */
const VARIANTS: Record<string, unknown> = {
  defaults: {},
  namespaced: { watch: { allNamespaces: false, namespace: 'batches' }, rbac: { aggregateToDefaultRoles: false } },
  externalRedis: { redis: { url: 'rediss://redis.example:6380/1', username: 'tb', existingSecret: 'redis-auth', tls: true } },
  redisUrlInSecret: { redis: { existingSecret: 'redis-auth', existingSecretUrlKey: 'url' } },
  everythingOn: {
    operator: { replicas: 2, extraEnv: [{ name: 'FOO', value: 'bar' }], podAnnotations: { a: 'b' }, nodeSelector: { 'kubernetes.io/os': 'linux' } },
    networkPolicy: { enabled: true },
    monitoring: { grafanaDashboard: { enabled: true }, prometheusRule: { alertLabels: { team: 'data' } } },
    imagePullSecrets: [{ name: 'regcred' }],
    worker: { command: ['node', '/app/dist/worker/main.js', '--log-level', 'debug'] },
  },
  everythingOff: {
    crds: { install: false },
    rbac: { create: false, aggregateToDefaultRoles: false },
    serviceAccount: { create: false, name: 'my-operator' },
    metrics: { service: { enabled: false } },
    redis: { bundled: { enabled: false } },
    uninstall: { deleteTaskBatches: false },
    tests: { enabled: false },
    operator: { leaderElection: false },
    admissionPolicy: { enabled: false },
  },
};

function container(o: K8sObject, name?: string) {
  const spec = podSpecOf(o);
  const c = name ? spec.containers.find((x) => x.name === name) : spec.containers[0];
  if (!c) throw new Error(`${o.kind}/${o.metadata.name} has no container ${name}`);
  return c;
}

describe('helm lint', () => {
  test.each(Object.keys(VARIANTS))(
    'passes --strict with %s values',
    async (variant) => {
      const r = await helm(['lint', '--strict', CHART_DIR, '-f', valuesFile(VARIANTS[variant])]);
      expect({ code: r.code, out: r.stdout }).toMatchObject({ code: 0, out: expect.stringContaining('0 chart(s) failed') });
      expect(r.stdout).not.toMatch(/\[(WARNING|ERROR)\]/);
    },
    TEST_TIMEOUT_MS,
  );
});

describe('helm template', () => {
  test(
    'renders the operator, its RBAC, the metrics Service, the bundled Redis, the CRD and the hooks by default',
    async () => {
      const r = await helmTemplate({ release: 'tb', namespace: 'taskbatch-system' });
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(kinds(r.objects)).toEqual([
        'ClusterRole/tb-taskbatch',
        'ClusterRole/tb-taskbatch-edit',
        'ClusterRole/tb-taskbatch-view',
        'ClusterRoleBinding/tb-taskbatch',
        'CustomResourceDefinition/taskbatches.taskbatch.dev',
        'CustomResourceDefinition/taskschedules.taskbatch.dev',
        'Deployment/tb-taskbatch',
        'Deployment/tb-taskbatch-redis',
        'Job/tb-taskbatch-uninstall',
        'Lease/tb-taskbatch',
        'Pod/tb-taskbatch-test',
        'Role/tb-taskbatch-leader-election',
        'Role/tb-taskbatch-test',
        'RoleBinding/tb-taskbatch-leader-election',
        'RoleBinding/tb-taskbatch-test',
        'Secret/tb-taskbatch-redis-auth',
        'Service/tb-taskbatch-metrics',
        'Service/tb-taskbatch-redis',
        'ServiceAccount/tb-taskbatch',
        'ServiceAccount/tb-taskbatch-test',
        'ValidatingAdmissionPolicy/tb-taskbatch-tenancy',
        'ValidatingAdmissionPolicyBinding/tb-taskbatch-tenancy',
      ]);
      // Without the Prometheus Operator's API, no monitoring objects.
      expect(r.objects.filter((o) => o.apiVersion.startsWith('monitoring.coreos.com'))).toEqual([]);
    },
    TEST_TIMEOUT_MS,
  );

  test.each(Object.keys(VARIANTS))(
    '%s: no hard-coded namespace; standard labels on every object',
    async (variant) => {
      const r = await helmTemplate({ release: 'rel', namespace: 'some-ns', values: VARIANTS[variant], apiVersions: MONITORING });
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      const watched = (VARIANTS[variant] as { watch?: { namespace?: string } }).watch?.namespace;
      for (const o of r.objects) {
        if (o.kind.startsWith('Cluster') || o.kind.startsWith('ValidatingAdmissionPolicy') || o.kind === 'CustomResourceDefinition') {
          expect({ obj: `${o.kind}/${o.metadata.name}`, ns: o.metadata.namespace }).toEqual({ obj: `${o.kind}/${o.metadata.name}`, ns: undefined });
          continue;
        }
        // Namespaced objects live in the release namespace, or (Roles for the watched namespace) there.
        expect([`${o.kind}/${o.metadata.name}`, ['some-ns', watched].includes(o.metadata.namespace)]).toEqual([`${o.kind}/${o.metadata.name}`, true]);
      }
      for (const o of r.objects.filter((x) => x.kind !== 'CustomResourceDefinition' && !isHook(x))) {
        expect([`${o.kind}/${o.metadata.name}`, o.metadata.labels]).toEqual([
          `${o.kind}/${o.metadata.name}`,
          expect.objectContaining({
            'helm.sh/chart': 'taskbatch-0.1.0',
            'app.kubernetes.io/name': 'taskbatch',
            'app.kubernetes.io/instance': 'rel',
            'app.kubernetes.io/version': '0.1.0',
            'app.kubernetes.io/managed-by': 'Helm',
          }),
        ]);
      }
      // Every name fits a DNS label / subdomain.
      for (const o of r.objects) expect(o.metadata.name.length).toBeLessThanOrEqual(o.kind === 'CustomResourceDefinition' ? 253 : 63);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'long release names stay within 63 characters and keep names distinct',
    async () => {
      const release = 'a'.repeat(21) + '-very-long-release-name-the-most'; // 53: helm's limit
      expect(release).toHaveLength(53);
      const r = await helmTemplate({ release, values: VARIANTS.everythingOn, apiVersions: MONITORING });
      expect(r.code).toBe(0);
      const names = r.objects.map((o) => `${o.kind}/${o.metadata.name}`);
      expect(new Set(names).size).toBe(names.length);
      for (const o of r.objects.filter((x) => x.kind !== 'CustomResourceDefinition')) expect(o.metadata.name.length).toBeLessThanOrEqual(63);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'the CRD is the repository crds/ file (through a symlink), plus the keep policy',
    async () => {
      const link = join(CHART_DIR, 'files/crds/taskbatch.dev_taskbatches.yaml');
      expect(lstatSync(link).isSymbolicLink()).toBe(true);
      expect(resolve(dirname(link), readlinkSync(link))).toBe(CRD_SOURCE);
      expect(realpathSync(link)).toBe(realpathSync(CRD_SOURCE));

      const source = parse(readFileSync(CRD_SOURCE, 'utf8')) as K8sObject;
      const kept = getObject((await helmTemplate()).objects, 'CustomResourceDefinition');
      expect(kept.metadata.annotations).toEqual({ 'helm.sh/resource-policy': 'keep' });
      expect({ ...kept, metadata: { ...kept.metadata, annotations: undefined } }).toEqual({ ...source, metadata: { ...source.metadata, annotations: undefined } });

      const plain = getObject((await helmTemplate({ values: { crds: { keep: false } } })).objects, 'CustomResourceDefinition');
      expect(plain).toEqual(source);
      expect(findObject((await helmTemplate({ values: { crds: { install: false } } })).objects, 'CustomResourceDefinition')).toBeUndefined();

      // `helm package` stores the linked file's contents, so a packaged chart renders the same CRD.
      const out = mkdtempSync(join(tmpdir(), 'tb-package-'));
      try {
        const pkg = await helm(['package', CHART_DIR, '--destination', out]);
        expect(pkg.code).toBe(0);
        const tgz = join(out, 'taskbatch-0.1.0.tgz');
        const packaged = await helm(['template', 'tb', tgz]);
        expect(packaged.code).toBe(0);
        expect(getObject(parseManifests(packaged.stdout), 'CustomResourceDefinition')).toEqual(kept);
      } finally {
        rmSync(out, { recursive: true, force: true });
      }
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'the default ClusterRole holds exactly the rules of deploy/operator-rbac.yaml',
    async () => {
      const reference = parseAllDocuments(readFileSync(join(repoRoot(), 'deploy/operator-rbac.yaml'), 'utf8')).map((d) => d.toJS() as K8sObject);
      const refRole = reference.find((o) => o.kind === 'ClusterRole')!;
      const objects = (await helmTemplate({ release: 'tb' })).objects;
      expect(getObject(objects, 'ClusterRole', 'tb-taskbatch').rules).toEqual(refRole.rules);
      const binding = getObject(objects, 'ClusterRoleBinding', 'tb-taskbatch');
      expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: 'tb-taskbatch', namespace: 'taskbatch-system' }]);
      // Leader election: only its own Lease in the release namespace (create cannot be scoped by name).
      const leader = getObject(objects, 'Role', 'tb-taskbatch-leader-election');
      expect(leader.metadata.namespace).toBe('taskbatch-system');
      expect(leader.rules).toEqual([
        { apiGroups: ['coordination.k8s.io'], resources: ['leases'], resourceNames: ['tb-taskbatch'], verbs: ['get', 'update'] },
        { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create'] },
      ]);
      const lease = getObject(objects, 'Lease', 'tb-taskbatch');
      expect(envOf(container(getObject(objects, 'Deployment', 'tb-taskbatch')))).toMatchObject({ TASKBATCH_LEASE_NAME: lease.metadata.name, TASKBATCH_LEASE_NAMESPACE: 'taskbatch-system' });
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'watch.allNamespaces=false: a Role in the watched namespace and no cluster-wide grant',
    async () => {
      const { objects } = await helmTemplate({ release: 'tb', values: VARIANTS.namespaced });
      expect(objects.filter((o) => o.kind === 'ClusterRole' || o.kind === 'ClusterRoleBinding')).toEqual([]);
      const role = getObject(objects, 'Role', 'tb-taskbatch');
      expect(role.metadata.namespace).toBe('batches');
      expect(getObject(objects, 'RoleBinding', 'tb-taskbatch')).toMatchObject({ metadata: { namespace: 'batches' }, roleRef: { kind: 'Role', name: 'tb-taskbatch' } });
      expect(envOf(container(getObject(objects, 'Deployment', 'tb-taskbatch'))).TASKBATCH_WATCH_NAMESPACE).toBe('batches');
      // The helm test batch runs where the operator looks.
      expect(getObject(objects, 'Role', 'tb-taskbatch-test').metadata.namespace).toBe('batches');
      // watch.namespace defaults to the release namespace.
      const own = await helmTemplate({ release: 'tb', namespace: 'mine', values: { watch: { allNamespaces: false } } });
      expect(getObject(own.objects, 'Role', 'tb-taskbatch').metadata.namespace).toBe('mine');
      expect(envOf(container(getObject(own.objects, 'Deployment', 'tb-taskbatch'))).TASKBATCH_WATCH_NAMESPACE).toBe('mine');
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'rbac.create=false and serviceAccount.create=false render no RBAC and use the named ServiceAccount',
    async () => {
      const { objects } = await helmTemplate({ release: 'tb', values: VARIANTS.everythingOff });
      expect(objects.filter((o) => o.apiVersion.startsWith('rbac.authorization.k8s.io') || o.kind === 'ServiceAccount')).toEqual([]);
      expect(podSpecOf(getObject(objects, 'Deployment', 'tb-taskbatch')).serviceAccountName).toBe('my-operator');
      expect(kinds(objects)).toEqual(['Deployment/tb-taskbatch']);
      const missing = await helmTemplate({ values: { serviceAccount: { create: false } } });
      expect(missing.code).not.toBe(0);
      expect(missing.stderr).toMatch(/serviceAccount.name is required when serviceAccount.create is false/);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'restricted Pod Security settings and resource requests on every pod the chart creates',
    async () => {
      const { objects } = await helmTemplate({ values: VARIANTS.everythingOn, apiVersions: MONITORING });
      const pods = objects.filter((o) => ['Deployment', 'Job', 'Pod'].includes(o.kind));
      expect(pods.map((o) => o.kind).sort()).toEqual(['Deployment', 'Deployment', 'Job', 'Pod']);
      for (const o of pods) {
        const spec = podSpecOf(o);
        const where = `${o.kind}/${o.metadata.name}`;
        expect([where, spec.securityContext]).toEqual([where, expect.objectContaining({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } })]);
        for (const c of spec.containers) {
          expect([where, c.name, c.securityContext]).toEqual([
            where,
            c.name,
            expect.objectContaining({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true, capabilities: { drop: ['ALL'] }, seccompProfile: { type: 'RuntimeDefault' } }),
          ]);
          expect([where, c.name, Object.keys(c.resources?.requests ?? {}).sort()]).toEqual([where, c.name, ['cpu', 'memory']]);
          expect([where, c.name, c.resources?.limits?.memory]).toEqual([where, c.name, expect.any(String)]);
        }
      }
      // ... and the operator applies them to the worker pods it creates.
      expect(envOf(container(getObject(objects, 'Deployment', 'tb-taskbatch'))).TASKBATCH_WORKER_RESTRICTED).toBe('true');
      // ... and enforces the restricted level on every TaskBatch's pod template.
      expect(envOf(container(getObject(objects, 'Deployment', 'tb-taskbatch'))).TASKBATCH_WORKER_POD_SECURITY).toBe('restricted');
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'the operator gets its configuration from values',
    async () => {
      const { objects } = await helmTemplate({
        release: 'tb',
        values: {
          ...(VARIANTS.everythingOn as object),
          operator: { concurrency: 8, logLevel: 'debug', metricsPort: 8181, metricsHost: '0.0.0.0', image: { repository: 'reg.example/op', tag: '1.2.3' } },
          worker: {
            image: { repository: 'reg.example/wk', tag: '1.2.3' },
            metricsPort: 9191,
            terminationGracePeriodSeconds: 90,
            restrictedSecurityContext: false,
            podSecurity: 'baseline',
            command: ['node', '/app/dist/worker/main.js'],
          },
        },
      });
      const op = container(getObject(objects, 'Deployment', 'tb-taskbatch'));
      expect(op.image).toBe('reg.example/op:1.2.3');
      expect(op.ports).toEqual([{ name: 'metrics', containerPort: 8181, protocol: 'TCP' }]);
      expect(envOf(op)).toMatchObject({
        TASKBATCH_CONCURRENCY: '8',
        TASKBATCH_LOG_LEVEL: 'debug',
        TASKBATCH_METRICS_PORT: '8181',
        TASKBATCH_METRICS_HOST: '0.0.0.0',
        TASKBATCH_WORKER_IMAGE: 'reg.example/wk:1.2.3',
        TASKBATCH_WORKER_COMMAND: '["node","/app/dist/worker/main.js"]',
        TASKBATCH_WORKER_METRICS_PORT: '9191',
        TASKBATCH_WORKER_GRACE_SECONDS: '90',
        TASKBATCH_WORKER_RESTRICTED: 'false',
        TASKBATCH_WORKER_POD_SECURITY: 'baseline',
        TASKBATCH_LEADER_ELECTION: 'true',
      });
      // The operator's own config parser accepts what the chart renders.
      const { loadConfig } = await import('../../operator/config.js');
      const env = Object.fromEntries(Object.entries(envOf(op)).filter(([, v]) => !v.startsWith('{')));
      expect(loadConfig({ ...env, POD_NAMESPACE: 'taskbatch-system' })).toMatchObject({
        concurrency: 8,
        workerMetricsPort: 9191,
        workerGraceSeconds: 90,
        restrictedWorkerSecurityContext: false,
        workerPodSecurity: 'baseline',
        workerCommand: ['node', '/app/dist/worker/main.js'],
        metricsHost: '0.0.0.0',
      });
      const dflt = container(getObject((await helmTemplate({ release: 'tb' })).objects, 'Deployment', 'tb-taskbatch'));
      expect(dflt.image).toBe('ghcr.io/taskbatch/operator:0.1.0');
      expect(envOf(dflt).TASKBATCH_WORKER_IMAGE).toBe('ghcr.io/taskbatch/worker:0.1.0');
      expect(envOf(dflt).TASKBATCH_METRICS_HOST).toBeUndefined(); // the pod IP
      expect(envOf(dflt).TASKBATCH_WORKER_COMMAND).toBeUndefined(); // the operator's default
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'worker resources, their maximum and the allowed Redis addresses reach the operator, which parses them',
    async () => {
      const { loadConfig } = await import('../../operator/config.js');
      const dflt = envOf(container(getObject((await helmTemplate({ release: 'tb' })).objects, 'Deployment', 'tb-taskbatch')));
      // By default no Redis but the default one, and workers get 256Mi requested / 1Gi limit, at most 4 CPUs / 8Gi.
      expect(dflt.TASKBATCH_ALLOWED_REDIS).toBe('');
      expect(loadConfig({ ...dflt, POD_NAMESPACE: 'x' })).toMatchObject({
        allowedRedis: [],
        workerResources: { defaults: { requests: { cpu: '100m', memory: '256Mi' }, limits: { memory: '1Gi' } }, max: { cpu: '4', memory: '8Gi' } },
      });
      const set = envOf(
        container(
          getObject(
            (
              await helmTemplate({
                release: 'tb',
                values: {
                  redis: { allowedAddresses: ['redis.team-a.svc', '10.0.0.0/8', 'cache:7000'] },
                  worker: { resources: { requests: { cpu: '1' }, limits: { memory: '2Gi' } }, maxResources: { memory: '16Gi' } },
                },
              })
            ).objects,
            'Deployment',
            'tb-taskbatch',
          ),
        ),
      );
      expect(set.TASKBATCH_ALLOWED_REDIS).toBe('redis.team-a.svc,10.0.0.0/8,cache:7000');
      const cfg = loadConfig({ ...set, POD_NAMESPACE: 'x' });
      expect(cfg.allowedRedis.map((r) => r.kind)).toEqual(['host', 'cidr', 'host']);
      // Helm merges maps with the defaults: keys not set keep their default (null removes one).
      expect(cfg.workerResources).toEqual({ defaults: { requests: { cpu: '1', memory: '256Mi' }, limits: { memory: '2Gi' } }, max: { cpu: '4', memory: '16Gi' } });
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'Redis: bundled by default; off when a URL is given (in values or a Secret)',
    async () => {
      const bundled = (await helmTemplate({ release: 'tb', namespace: 'ns1' })).objects;
      const redis = getObject(bundled, 'Deployment', 'tb-taskbatch-redis');
      expect(container(redis).image).toBe('redis:7');
      expect(container(redis).command).toEqual(expect.arrayContaining(['--maxmemory-policy', 'noeviction']));
      expect(getObject(bundled, 'Service', 'tb-taskbatch-redis')).toMatchObject({ spec: { ports: [{ port: 6379 }] } });
      expect(envOf(container(getObject(bundled, 'Deployment', 'tb-taskbatch'))).TASKBATCH_DEFAULT_REDIS_URL).toBe('redis://tb-taskbatch-redis.ns1.svc:6379');

      const external = (await helmTemplate({ release: 'tb', values: VARIANTS.externalRedis })).objects;
      expect(findObject(external, 'Deployment', 'tb-taskbatch-redis')).toBeUndefined();
      const op = container(getObject(external, 'Deployment', 'tb-taskbatch'));
      expect(envOf(op)).toMatchObject({
        TASKBATCH_DEFAULT_REDIS_URL: 'rediss://redis.example:6380/1',
        TASKBATCH_DEFAULT_REDIS_USERNAME: 'tb',
        TASKBATCH_DEFAULT_REDIS_TLS: 'true',
        TASKBATCH_DEFAULT_REDIS_PASSWORD_SECRET: 'redis-auth/password',
      });
      expect(op.env?.find((e) => e.name === 'TASKBATCH_DEFAULT_REDIS_PASSWORD')?.valueFrom).toEqual({ secretKeyRef: { name: 'redis-auth', key: 'password' } });

      const inSecret = (await helmTemplate({ release: 'tb', values: VARIANTS.redisUrlInSecret })).objects;
      expect(findObject(inSecret, 'Deployment', 'tb-taskbatch-redis')).toBeUndefined();
      expect(container(getObject(inSecret, 'Deployment', 'tb-taskbatch')).env?.find((e) => e.name === 'TASKBATCH_DEFAULT_REDIS_URL')?.valueFrom).toEqual({
        secretKeyRef: { name: 'redis-auth', key: 'url' },
      });

      const none = (await helmTemplate({ release: 'tb', values: { redis: { bundled: { enabled: false } } } })).objects;
      expect(envOf(container(getObject(none, 'Deployment', 'tb-taskbatch'))).TASKBATCH_DEFAULT_REDIS_URL).toBeUndefined();
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'Redis identities: the bundled Redis has a generated admin password and protected mode; the operator manages per-namespace ACL users',
    async () => {
      const { objects } = await helmTemplate({ release: 'tb', namespace: 'ns1' });
      const auth = getObject(objects, 'Secret', 'tb-taskbatch-redis-auth') as K8sObject & { data: Record<string, string> };
      expect(Buffer.from(auth.data.password!, 'base64').toString()).toMatch(/^[A-Za-z0-9]{40}$/);
      const redis = container(getObject(objects, 'Deployment', 'tb-taskbatch-redis'));
      const args = (redis.command as string[] | undefined) ?? [];
      expect(args[args.indexOf('--requirepass') + 1]).toBe('$(REDIS_PASSWORD)');
      expect(args[args.indexOf('--protected-mode') + 1]).toBe('yes');
      const secretRef = { secretKeyRef: { name: 'tb-taskbatch-redis-auth', key: 'password' } };
      expect(redis.env?.filter((e) => e.name === 'REDIS_PASSWORD' || e.name === 'REDISCLI_AUTH').map((e) => e.valueFrom)).toEqual([secretRef, secretRef]);
      const op = container(getObject(objects, 'Deployment', 'tb-taskbatch'));
      expect(envOf(op)).toMatchObject({ TASKBATCH_DEFAULT_REDIS_MANAGE_ACLS: 'true', TASKBATCH_REDIS_ROTATION_GRACE_SECONDS: '600' });
      expect(op.env?.find((e) => e.name === 'TASKBATCH_DEFAULT_REDIS_PASSWORD')?.valueFrom).toEqual(secretRef);
      // Workers never get the admin password: no Secret of it is handed to them.
      expect(envOf(op).TASKBATCH_DEFAULT_REDIS_PASSWORD_SECRET).toBeUndefined();
      const secretRules = (getObject(objects, 'ClusterRole', 'tb-taskbatch').rules as { resources: string[]; verbs: string[]; resourceNames?: string[] }[]).filter((r) =>
        r.resources.includes('secrets'),
      );
      expect(secretRules).toEqual([
        expect.objectContaining({ verbs: ['get'] }),
        expect.objectContaining({ verbs: ['create'] }),
        expect.objectContaining({ verbs: ['update', 'delete'], resourceNames: ['taskbatch-redis'] }),
      ]);

      // Your own Redis: unmanaged unless asked, then no Secret rights beyond get.
      const external = (await helmTemplate({ release: 'tb', values: VARIANTS.externalRedis })).objects;
      expect(findObject(external, 'Secret', 'tb-taskbatch-redis-auth')).toBeUndefined();
      expect(envOf(container(getObject(external, 'Deployment', 'tb-taskbatch'))).TASKBATCH_DEFAULT_REDIS_MANAGE_ACLS).toBeUndefined();
      expect((getObject(external, 'ClusterRole', 'tb-taskbatch').rules as { resources: string[]; verbs: string[] }[]).filter((r) => r.resources.includes('secrets'))).toEqual([
        expect.objectContaining({ verbs: ['get'] }),
      ]);
      const managed = (
        await helmTemplate({ release: 'tb', values: { redis: { ...(VARIANTS.externalRedis as { redis: Record<string, unknown> }).redis, manageAcls: true, rotationGraceSeconds: 60 } } })
      ).objects;
      expect(envOf(container(getObject(managed, 'Deployment', 'tb-taskbatch')))).toMatchObject({ TASKBATCH_DEFAULT_REDIS_MANAGE_ACLS: 'true', TASKBATCH_REDIS_ROTATION_GRACE_SECONDS: '60' });
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'the NetworkPolicy admits only the operator and worker pods to Redis',
    async () => {
      const { objects } = await helmTemplate({ release: 'tb', values: { networkPolicy: { enabled: true } } });
      const np = getObject(objects, 'NetworkPolicy', 'tb-taskbatch-redis');
      const redisPods = (getObject(objects, 'Deployment', 'tb-taskbatch-redis').spec as { template: { metadata: { labels: Record<string, string> } } }).template.metadata.labels;
      const opLabels = (getObject(objects, 'Deployment', 'tb-taskbatch').spec as { template: { metadata: { labels: Record<string, string> } } }).template.metadata.labels;
      const spec = np.spec as {
        podSelector: { matchLabels: Record<string, string> };
        policyTypes: string[];
        ingress: { from: { podSelector?: { matchLabels: Record<string, string> }; namespaceSelector?: unknown }[]; ports: unknown[] }[];
      };
      expect(redisPods).toMatchObject(spec.podSelector.matchLabels);
      expect(spec.policyTypes).toEqual(['Ingress']);
      expect(spec.ingress).toHaveLength(1);
      expect(spec.ingress[0]!.ports).toEqual([{ port: 6379, protocol: 'TCP' }]);
      const [operatorPeer, workerPeer] = spec.ingress[0]!.from;
      expect(opLabels).toMatchObject(operatorPeer!.podSelector!.matchLabels);
      expect(operatorPeer!.namespaceSelector).toBeUndefined();
      // The labels the operator puts on worker pods (operator/reconcile/pods.ts), in any namespace.
      expect(workerPeer).toEqual({ namespaceSelector: {}, podSelector: { matchLabels: { 'app.kubernetes.io/name': 'taskbatch-worker', 'app.kubernetes.io/managed-by': 'taskbatch' } } });
      const { buildWorkerPod } = await import('../../operator/reconcile/pods.js');
      const pod = buildWorkerPod(
        { apiVersion: 'taskbatch.dev/v1alpha1', kind: 'TaskBatch', metadata: { name: 'b', namespace: 'x', uid: 'u' }, spec: { handler: { builtin: 'noop' } } } as never,
        'e1',
        { image: 'w', command: ['node'], metricsPort: 9090, restrictedSecurityContext: true, podSecurity: 'restricted', terminationGracePeriodSeconds: 30 },
      );
      expect(pod.metadata.labels).toMatchObject(workerPeer!.podSelector!.matchLabels);

      const namespaced = (await helmTemplate({ release: 'tb', values: { networkPolicy: { enabled: true }, watch: { allNamespaces: false, namespace: 'jobs' } } })).objects;
      const nsPeer = (getObject(namespaced, 'NetworkPolicy').spec as typeof spec).ingress[0]!.from[1];
      expect(nsPeer!.namespaceSelector).toEqual({ matchLabels: { 'kubernetes.io/metadata.name': 'jobs' } });

      const own = (await helmTemplate({ release: 'tb', values: { networkPolicy: { enabled: true, redisPodSelector: { app: 'my-redis' } }, redis: { url: 'redis://my-redis:6379' } } })).objects;
      expect((getObject(own, 'NetworkPolicy').spec as typeof spec).podSelector).toEqual({ matchLabels: { app: 'my-redis' } });
      const nothingToProtect = await helmTemplate({ values: { networkPolicy: { enabled: true }, redis: { url: 'redis://my-redis:6379' } } });
      expect(nothingToProtect.code).not.toBe(0);
      expect(nothingToProtect.stderr).toMatch(/set networkPolicy.redisPodSelector/);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'with the Prometheus Operator API: ServiceMonitor, PodMonitor and PrometheusRule',
    async () => {
      const { objects } = await helmTemplate({ release: 'tb', apiVersions: MONITORING });
      const sm = getObject(objects, 'ServiceMonitor', 'tb-taskbatch');
      const svc = getObject(objects, 'Service', 'tb-taskbatch-metrics');
      expect(svc.metadata.labels).toMatchObject((sm.spec as { selector: { matchLabels: Record<string, string> } }).selector.matchLabels);
      // The operator is trusted: its per-batch `namespace` label is kept.
      expect(sm.spec).toMatchObject({ namespaceSelector: { matchNames: ['taskbatch-system'] }, endpoints: [{ port: 'metrics', path: '/metrics', honorLabels: true }] });
      const pm = getObject(objects, 'PodMonitor', 'tb-taskbatch-workers');
      // Worker pods run tenants' code: Prometheus' labels win, and `batch` comes from the pod label the operator sets.
      expect(pm.spec).toEqual(
        expect.objectContaining({
          namespaceSelector: { any: true },
          selector: { matchLabels: { 'app.kubernetes.io/name': 'taskbatch-worker', 'app.kubernetes.io/managed-by': 'taskbatch' } },
          podMetricsEndpoints: [
            {
              port: 'metrics',
              path: '/metrics',
              interval: '15s',
              honorLabels: false,
              relabelings: [{ sourceLabels: ['__meta_kubernetes_pod_label_taskbatch_dev_batch'], targetLabel: 'batch' }],
              metricRelabelings: [{ action: 'labeldrop', regex: 'exported_(namespace|batch)' }],
            },
          ],
        }),
      );
      // The label the operator puts on every worker pod (operator/reconcile/pods.ts), as Prometheus names it.
      const { BATCH_LABEL } = await import('../../api/taskbatch.js');
      expect(`__meta_kubernetes_pod_label_${BATCH_LABEL.replace(/[^a-zA-Z0-9_]/g, '_')}`).toBe('__meta_kubernetes_pod_label_taskbatch_dev_batch');
      const trusted = getObject((await helmTemplate({ release: 'tb', apiVersions: MONITORING, values: { monitoring: { podMonitor: { honorLabels: true } } } })).objects, 'PodMonitor');
      expect((trusted.spec as { podMetricsEndpoints: unknown[] }).podMetricsEndpoints).toEqual([{ port: 'metrics', path: '/metrics', interval: '15s', honorLabels: true }]);
      const rule = getObject(objects, 'PrometheusRule', 'tb-taskbatch');
      const alerts = (rule.spec as { groups: { rules: { alert: string }[] }[] }).groups.flatMap((g) => g.rules.map((r) => r.alert));
      expect(alerts).toEqual(
        expect.arrayContaining(['TaskBatchFailed', 'TaskBatchItemsFailing', 'TaskBatchWorkersNotReady', 'TaskBatchExecutorsCrashLooping', 'TaskBatchRedisUnreachable', 'TaskBatchQueueNotDraining']),
      );

      const namespaced = (await helmTemplate({ release: 'tb', apiVersions: MONITORING, values: { watch: { allNamespaces: false, namespace: 'jobs' } } })).objects;
      expect(getObject(namespaced, 'PodMonitor').spec).toMatchObject({ namespaceSelector: { matchNames: ['jobs'] } });
      const off = (await helmTemplate({ apiVersions: MONITORING, values: { monitoring: { serviceMonitor: { enabled: false }, podMonitor: { enabled: false }, prometheusRule: { enabled: false } } } }))
        .objects;
      expect(off.filter((o) => o.apiVersion.startsWith('monitoring.coreos.com'))).toEqual([]);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "the admission policy: on by default, exempting the release's operator ServiceAccount; validationActions; off",
    async () => {
      const { objects } = await helmTemplate({ release: 'tb', namespace: 'ops', values: { serviceAccount: { name: 'runner' } } });
      const policy = getObject(objects, 'ValidatingAdmissionPolicy', 'tb-taskbatch-tenancy');
      const spec = policy.spec as { failurePolicy: string; matchConstraints: unknown; matchConditions: { name: string; expression: string }[]; validations: unknown[] };
      expect(spec.failurePolicy).toBe('Fail');
      expect(spec.matchConstraints).toEqual({ resourceRules: [{ apiGroups: ['taskbatch.dev'], apiVersions: ['*'], operations: ['CREATE', 'UPDATE'], resources: ['taskbatches', 'taskschedules'] }] });
      expect(spec.matchConditions[0]).toEqual({ name: 'not-the-operator', expression: 'request.userInfo.username != "system:serviceaccount:ops:runner"' });
      // create pods, the itemsFrom ConfigMap, 16 Secrets one by one, the two bounds, and the allowed Redis addresses.
      expect(spec.validations).toHaveLength(21);
      expect(getObject(objects, 'ValidatingAdmissionPolicyBinding', 'tb-taskbatch-tenancy').spec).toEqual({ policyName: 'tb-taskbatch-tenancy', validationActions: ['Deny'] });
      const trial = await helmTemplate({ release: 'tb', values: { admissionPolicy: { validationActions: ['Warn', 'Audit'] } } });
      expect(getObject(trial.objects, 'ValidatingAdmissionPolicyBinding').spec).toMatchObject({ validationActions: ['Warn', 'Audit'] });
      const off = await helmTemplate({ values: { admissionPolicy: { enabled: false } } });
      expect(off.objects.filter((o) => o.kind.startsWith('ValidatingAdmissionPolicy'))).toEqual([]);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'the Grafana dashboard ConfigMap holds a dashboard of progress, throughput, latency, failures and workers',
    async () => {
      const { objects } = await helmTemplate({ release: 'tb', values: { monitoring: { grafanaDashboard: { enabled: true, namespace: 'grafana' } } } });
      const cm = getObject(objects, 'ConfigMap', 'tb-taskbatch-dashboard');
      expect(cm.metadata).toMatchObject({ namespace: 'grafana', labels: { grafana_dashboard: '1' } });
      const dash = JSON.parse((cm.data as Record<string, string>)['taskbatch.json']!) as { uid: string; panels: { title: string; type: string; targets?: { expr: string }[] }[] };
      expect(dash.uid).toBe('taskbatch-overview');
      const titles = dash.panels.map((p) => p.title);
      expect(titles).toEqual(expect.arrayContaining(['Progress', 'Throughput', 'Item duration', 'Failed attempts by outcome', 'Workers desired / ready']));
      const exprs = dash.panels.flatMap((p) => p.targets?.map((t) => t.expr) ?? []).join('\n');
      for (const metric of [
        'taskbatch_batch_items',
        'taskbatch_worker_items_total',
        'taskbatch_worker_item_duration_seconds_bucket',
        'taskbatch_batch_workers',
        'taskbatch_worker_executor_restarts_total',
        'taskbatch_operator_reconcile_errors_total',
      ]) {
        expect(exprs).toContain(metric);
      }
      expect(findObject((await helmTemplate()).objects, 'ConfigMap')).toBeUndefined();
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'hooks: a pre-delete Job deleting TaskBatches as the operator, and a helm test Pod',
    async () => {
      const { objects } = await helmTemplate({ release: 'tb', values: { watch: { allNamespaces: false } } });
      const job = getObject(objects, 'Job', 'tb-taskbatch-uninstall');
      expect(job.metadata.annotations).toMatchObject({ 'helm.sh/hook': 'pre-delete', 'helm.sh/hook-delete-policy': 'before-hook-creation,hook-succeeded' });
      expect(podSpecOf(job).serviceAccountName).toBe('tb-taskbatch');
      expect(container(job).command).toEqual(['node', '/app/docker/hooks/delete-taskbatches.mjs']);
      expect(envOf(container(job)).TASKBATCH_WATCH_NAMESPACE).toBe('taskbatch-system');
      const pod = getObject(objects, 'Pod', 'tb-taskbatch-test');
      expect(pod.metadata.annotations).toMatchObject({ 'helm.sh/hook': 'test' });
      expect(container(pod).command).toEqual(['node', '/app/docker/hooks/smoke-test.mjs']);
      expect(getObject(objects, 'Role', 'tb-taskbatch-test').rules).toEqual([
        { apiGroups: ['taskbatch.dev'], resources: ['taskbatches'], verbs: ['get', 'create', 'delete'] },
        // The admission policy admits a TaskBatch only from a user who may create pods.
        { apiGroups: [''], resources: ['pods'], verbs: ['create'] },
      ]);
      const off = (await helmTemplate({ values: { uninstall: { deleteTaskBatches: false }, tests: { enabled: false } } })).objects;
      expect(off.filter(isHook)).toEqual([]);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'replicas > 1 needs leader election',
    async () => {
      const r = await helmTemplate({ values: { operator: { replicas: 2, leaderElection: false } } });
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/operator.replicas > 1 needs operator.leaderElection: true/);
    },
    TEST_TIMEOUT_MS,
  );
});

describe('values.schema.json', () => {
  test(
    'is strict: every object in it forbids unknown keys',
    () => {
      const schema = JSON.parse(readFileSync(join(CHART_DIR, 'values.schema.json'), 'utf8')) as Record<string, unknown>;
      const loose: string[] = [];
      const walk = (node: unknown, path: string): void => {
        if (!node || typeof node !== 'object') return;
        const n = node as { type?: string; properties?: Record<string, unknown>; additionalProperties?: unknown; items?: unknown; anyOf?: unknown[] };
        if (n.type === 'object' && n.properties && n.additionalProperties !== false) loose.push(path || '/');
        for (const [k, v] of Object.entries(n.properties ?? {})) walk(v, `${path}/${k}`);
        if (n.items) walk(n.items, `${path}[]`);
      };
      walk(schema, '');
      expect(loose).toEqual([]);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'documents every key of values.yaml, and values.yaml documents every key',
    () => {
      const schema = JSON.parse(readFileSync(join(CHART_DIR, 'values.schema.json'), 'utf8')) as Record<string, unknown>;
      const values = parse(readFileSync(join(CHART_DIR, 'values.yaml'), 'utf8')) as Record<string, unknown>;
      const schemaKeys: string[] = [];
      const walkSchema = (node: { properties?: Record<string, unknown>; description?: string }, path: string): void => {
        for (const [k, v] of Object.entries(node.properties ?? {})) {
          const child = v as { properties?: Record<string, unknown>; description?: string };
          if (!child.properties) schemaKeys.push(`${path}${k}`);
          walkSchema(child, `${path}${k}.`);
        }
      };
      walkSchema(schema as never, '');
      const valueKeys: string[] = [];
      const walkValues = (node: Record<string, unknown>, path: string, schemaNode: { properties?: Record<string, unknown> }): void => {
        for (const [k, v] of Object.entries(node)) {
          const s = (schemaNode.properties?.[k] ?? {}) as { properties?: Record<string, unknown> };
          if (v && typeof v === 'object' && !Array.isArray(v) && s.properties) walkValues(v as Record<string, unknown>, `${path}${k}.`, s);
          else valueKeys.push(`${path}${k}`);
        }
      };
      walkValues(values, '', schema as never);
      // `global` is Helm's (for use as a subchart); resources.claims is rarely set, so not in values.yaml.
      expect(valueKeys.sort()).toEqual(schemaKeys.filter((k) => k !== 'global' && !k.endsWith('resources.claims')).sort());
      // Every leaf in values.yaml has a `# --` comment (helm-docs style).
      const text = readFileSync(join(CHART_DIR, 'values.yaml'), 'utf8');
      const leaves = text.split('\n').filter((l) => /^\s*[a-zA-Z][\w]*:\s*\S/.test(l) || /^\s*[a-zA-Z][\w]*:\s*$/.test(l));
      expect(leaves.length).toBeGreaterThan(50);
      const lines = text.split('\n');
      const undocumented: string[] = [];
      for (const key of valueKeys) {
        const leaf = key.split('.').pop()!;
        const idx = lines.findIndex((l, i) => new RegExp(`^\\s*${leaf}:`).test(l) && lines.slice(Math.max(0, i - 6), i).some((p) => /#\s*--/.test(p)));
        if (idx < 0) undocumented.push(key);
      }
      expect(undocumented).toEqual([]);
      // ... and docs/helm.md has a row for each (or for the object holding it).
      const doc = readFileSync(join(repoRoot(), 'docs/helm.md'), 'utf8').split('\n## Values')[1]!.split('\n## ')[0]!;
      const documented = new Set(
        doc
          .split('\n')
          .filter((l) => l.startsWith('| `'))
          .flatMap((l) => [...(l.split(' | ')[0] ?? '').matchAll(/`([\w.]+)`/g)].map((m) => m[1]!)),
      );
      const ancestors = (k: string): string[] =>
        k
          .split('.')
          .map((_, i, parts) => parts.slice(0, i + 1).join('.'))
          .filter((a) => a.includes('.') || a === k);
      expect(valueKeys.filter((k) => !ancestors(k).some((a) => documented.has(a)))).toEqual([]);
      for (const d of documented) expect([d, schemaKeys.some((k) => k === d || k.startsWith(`${d}.`))]).toEqual([d, true]);
    },
    TEST_TIMEOUT_MS,
  );

  test.each([
    ['an unknown top-level key', { replicaCount: 2 }, /additional properties 'replicaCount' not allowed/],
    ['a misspelt nested key', { operator: { replica: 2 } }, /at '\/operator': additional properties 'replica' not allowed/],
    ['a string for an integer', { operator: { replicas: 'two' } }, /at '\/operator\/replicas': got string, want integer/],
    ['a string for a boolean', { watch: { allNamespaces: 'no' } }, /at '\/watch\/allNamespaces': got string, want boolean/],
    ['a value outside its enum', { operator: { logLevel: 'verbose' } }, /at '\/operator\/logLevel'.*(value must be one of|must be one of)/],
    ['an unknown worker pod security level', { worker: { podSecurity: 'privileged' } }, /at '\/worker\/podSecurity'.*(value must be one of|must be one of)/],
    ['a port out of range', { worker: { metricsPort: 70000 } }, /at '\/worker\/metricsPort'.*(maximum|<= 65535)/],
    ['a Redis URL with credentials', { redis: { url: 'redis://user:secret@redis:6379' } }, /at '\/redis\/url'.*does not match pattern/],
    ['a Redis URL of another scheme', { redis: { url: 'http://redis:6379' } }, /at '\/redis\/url'.*does not match pattern/],
    ['an invalid namespace', { watch: { namespace: 'Not_A_Namespace' } }, /at '\/watch\/namespace'.*does not match pattern/],
    ['a bad duration', { monitoring: { serviceMonitor: { interval: '30 seconds' } } }, /at '\/monitoring\/serviceMonitor\/interval'.*does not match pattern/],
    ['a bad resource quantity', { operator: { resources: { requests: { memory: 'lots' } } } }, /\/operator\/resources\/requests\/memory/],
    ['a bad worker maximum', { worker: { maxResources: { memory: 'plenty' } } }, /\/worker\/maxResources\/memory/],
    ['an allowed Redis address with a scheme', { redis: { allowedAddresses: ['redis://cache:6379'] } }, /at '\/redis\/allowedAddresses\/0'.*does not match pattern/],
    ['an env entry without a name', { operator: { extraEnv: [{ value: 'x' }] } }, /\/operator\/extraEnv\/0.*missing propert(y|ies) 'name'/],
    ['admission Deny together with Warn', { admissionPolicy: { validationActions: ['Deny', 'Warn'] } }, /at '\/admissionPolicy\/validationActions'/],
    ['an unknown admission action', { admissionPolicy: { validationActions: ['Block'] } }, /at '\/admissionPolicy\/validationActions\/0'/],
  ])(
    'rejects %s, naming it',
    async (_what, values, message) => {
      const r = await helmTemplate({ values });
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/values don't meet the specifications of the schema/);
      expect(r.stderr).toMatch(message);
      expect(r.objects).toEqual([]);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    '--set is checked too',
    async () => {
      const r = await helm(['template', 'tb', CHART_DIR, '--set', 'operator.concurrency=0']);
      expect(r.code).not.toBe(0);
      expect(withoutSymlinkNotice(r.stderr)).toMatch(/at '\/operator\/concurrency'.*minimum/);
    },
    TEST_TIMEOUT_MS,
  );
});
