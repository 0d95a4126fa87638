import { namespaceAclRules, namespaceAclUser, namespaceKeyPattern, passwordHash, NAMESPACE_ACL_COMMANDS } from '../../queue/acl.js';
import { batchKeys } from '../../queue/keys.js';
import { planNamespaceAcl, NAMESPACE_REDIS_SECRET, ROTATE_ANNOTATION, ROTATED_AT_ANNOTATION, ROTATED_FOR_ANNOTATION, type NamespaceSecret } from '../../operator/reconcile/redis-acl.js';
import { buildWorkerPod, REDIS_CREDENTIALS_DIR, type WorkerPodConfig } from '../../operator/reconcile/pods.js';
import type { TaskBatch } from '../../api/taskbatch.js';

const b64 = (s: string): string => Buffer.from(s).toString('base64');
const T0 = Date.parse('2026-01-01T00:00:00Z');

describe('ACL rules of a namespace', () => {
  test("the pattern covers the namespace's keys and reply channels, and no other namespace's", () => {
    const pattern = namespaceKeyPattern('team');
    expect(pattern).toBe('tb:{team/*');
    const glob = new RegExp(`^${pattern.replace(/[{}]/g, '\\$&').replace('*', '.*')}$`);
    for (const k of Object.values(batchKeys({ namespace: 'team', name: 'b.1' }))) expect(k).toMatch(glob);
    expect('tb:{team/b.1}:reply:abc').toMatch(glob);
    expect(batchKeys({ namespace: 'team-a', name: 'x' }).meta).not.toMatch(glob);
    expect(batchKeys({ namespace: 'tea', name: 'x' }).meta).not.toMatch(glob);
    expect(() => namespaceKeyPattern('Team*')).toThrow(/namespace "Team\*" is not a DNS label/);
  });

  test('the exact ACL SETUSER rules', () => {
    const h = passwordHash('pw');
    expect(namespaceAclUser('team')).toBe('tb-ns-team');
    expect(namespaceAclRules('team', [h])).toEqual(['reset', 'on', `#${h}`, '~tb:{team/*', '&tb:{team/*', '-@all', ...NAMESPACE_ACL_COMMANDS.map((c) => `+${c}`)]);
    for (const forbidden of [
      'flushall',
      'flushdb',
      'keys',
      'scan',
      'config',
      'acl',
      'debug',
      'shutdown',
      'module',
      'monitor',
      'psubscribe',
      'function',
      'script',
      'client|kill',
      'client|list',
      'get',
      'set',
      'del',
    ]) {
      expect(NAMESPACE_ACL_COMMANDS).not.toContain(forbidden);
    }
    expect(() => namespaceAclRules('team', [])).toThrow(/ACL user tb-ns-team: at least one password hash is required/);
  });
});

describe('planNamespaceAcl', () => {
  const secret = (password: string, annotations: Record<string, string>): NamespaceSecret => ({
    metadata: { name: NAMESPACE_REDIS_SECRET, namespace: 'team', resourceVersion: '7', annotations },
    data: { username: b64('tb-ns-team'), password: b64(password) },
  });
  const setAt = new Date(T0).toISOString();
  const base = { namespace: 'team', nowMs: T0 + 1000, graceMs: 60_000, newPassword: 'fresh' };
  const cases: { name: string; input: Partial<Parameters<typeof planNamespaceAcl>[0]>; action: string; hashes: string[] }[] = [
    { name: 'no Secret, no user: create both', input: { secret: undefined, aclHashes: [] }, action: 'create', hashes: [passwordHash('fresh')] },
    {
      name: 'Secret deleted: a new one, the old password kept',
      input: { secret: undefined, aclHashes: [passwordHash('old')] },
      action: 'create',
      hashes: [passwordHash('fresh'), passwordHash('old')],
    },
    {
      name: 'steady state',
      input: { secret: secret('cur', { [ROTATED_AT_ANNOTATION]: setAt }), aclHashes: [passwordHash('cur')], nowMs: T0 + 999_999 },
      action: 'none',
      hashes: [passwordHash('cur')],
    },
    {
      name: 'user lost (Redis restarted): recreated from the Secret',
      input: { secret: secret('cur', { [ROTATED_AT_ANNOTATION]: setAt }), aclHashes: [] },
      action: 'none',
      hashes: [passwordHash('cur')],
    },
    {
      name: 'rotation requested',
      input: { secret: secret('cur', { [ROTATED_AT_ANNOTATION]: setAt, [ROTATE_ANNOTATION]: 'r1' }), aclHashes: [passwordHash('cur')] },
      action: 'update',
      hashes: [passwordHash('fresh'), passwordHash('cur')],
    },
    {
      name: 'rotation already done for that request, within grace',
      input: { secret: secret('new', { [ROTATED_AT_ANNOTATION]: setAt, [ROTATE_ANNOTATION]: 'r1', [ROTATED_FOR_ANNOTATION]: 'r1' }), aclHashes: [passwordHash('new'), passwordHash('cur')] },
      action: 'none',
      hashes: [passwordHash('new'), passwordHash('cur')],
    },
    {
      name: 'grace over: the old password removed',
      input: {
        secret: secret('new', { [ROTATED_AT_ANNOTATION]: setAt, [ROTATE_ANNOTATION]: 'r1', [ROTATED_FOR_ANNOTATION]: 'r1' }),
        aclHashes: [passwordHash('new'), passwordHash('cur')],
        nowMs: T0 + 60_000,
      },
      action: 'none',
      hashes: [passwordHash('new')],
    },
    {
      name: 'no timestamp: old passwords kept',
      input: { secret: secret('new', {}), aclHashes: [passwordHash('new'), passwordHash('cur')], nowMs: T0 + 10 ** 9 },
      action: 'none',
      hashes: [passwordHash('new'), passwordHash('cur')],
    },
  ];
  test.each(cases)('$name', ({ input, action, hashes }) => {
    const plan = planNamespaceAcl({ ...base, secret: undefined, aclHashes: [], ...input });
    expect(plan.secret.action).toBe(action);
    expect(plan.hashes).toEqual(hashes);
    if (plan.secret.action !== 'none') {
      expect(plan.secret.body.data).toEqual({ username: b64('tb-ns-team'), password: b64('fresh') });
      expect(plan.secret.body.metadata.annotations?.[ROTATED_AT_ANNOTATION]).toBe(new Date(input.nowMs ?? base.nowMs).toISOString());
      // Owned by nothing: deleting a TaskBatch must not delete the namespace's credential.
      expect(plan.secret.body.metadata).not.toHaveProperty('ownerReferences');
    }
  });
});

describe('worker pod credentials', () => {
  const cfg = (defaultRedis: WorkerPodConfig['defaultRedis']): WorkerPodConfig => ({
    image: 'w',
    command: ['node'],
    metricsPort: 9090,
    restrictedSecurityContext: true,
    podSecurity: 'restricted',
    terminationGracePeriodSeconds: 60,
    ...(defaultRedis ? { defaultRedis } : {}),
  });
  const batch = (redis?: TaskBatch['spec']['redis'], template?: Record<string, unknown>): TaskBatch => ({
    apiVersion: 'taskbatch.dev/v1alpha1',
    kind: 'TaskBatch',
    metadata: { name: 'b', namespace: 'team', uid: 'u' },
    spec: { handler: { builtin: 'noop' }, range: { end: 1 }, ...(redis ? { redis } : {}), ...(template ? { template } : {}) },
  });
  const view = (tb: TaskBatch, c: WorkerPodConfig) => {
    const pod = buildWorkerPod(tb, 'e', c);
    const w = pod.spec.containers.find((x) => x.name === 'worker')!;
    return { pod, w, env: Object.fromEntries((w.env ?? []).map((e) => [e.name, e.value ?? e.valueFrom])) };
  };

  test("managed default Redis: the namespace's user, its password by file from the namespace's Secret", () => {
    const { pod, w, env } = view(batch(), cfg({ url: 'redis://r:6379', username: 'admin', passwordSecret: { name: 'admin-secret', key: 'password' }, managedAcls: true }));
    expect(env).toMatchObject({ TASKBATCH_REDIS_USERNAME: 'tb-ns-team', TASKBATCH_REDIS_PASSWORD_FILE: `${REDIS_CREDENTIALS_DIR}/password` });
    expect(env).not.toHaveProperty('TASKBATCH_REDIS_PASSWORD');
    expect(pod.spec.volumes).toEqual([{ name: 'taskbatch-redis-credentials', secret: { secretName: 'taskbatch-redis', items: [{ key: 'password', path: 'password' }] } }]);
    expect(w.volumeMounts).toEqual([{ name: 'taskbatch-redis-credentials', mountPath: REDIS_CREDENTIALS_DIR, readOnly: true }]);
    // Nothing of the operator's admin credential reaches the pod.
    expect(JSON.stringify(pod)).not.toMatch(/admin/);
  });

  test('spec.redis.secretRef: the password key by file (optional, as before), never an env var; other containers get no mount', () => {
    const { pod, w, env } = view(
      batch(
        { url: 'redis://mine:6379', secretRef: { name: 'my-redis', passwordKey: 'pw' } },
        { spec: { containers: [{ name: 'side', image: 's' }, { name: 'worker' }], volumes: [{ name: 'data', emptyDir: {} }] } },
      ),
      cfg(undefined),
    );
    expect(env).toMatchObject({ TASKBATCH_REDIS_PASSWORD_FILE: `${REDIS_CREDENTIALS_DIR}/password`, TASKBATCH_REDIS_PASSWORD_OPTIONAL: 'true' });
    expect(env).not.toHaveProperty('TASKBATCH_REDIS_PASSWORD');
    expect(pod.spec.volumes).toEqual([
      { name: 'data', emptyDir: {} },
      { name: 'taskbatch-redis-credentials', secret: { secretName: 'my-redis', items: [{ key: 'pw', path: 'password' }], optional: true } },
    ]);
    expect(w.volumeMounts).toHaveLength(1);
    expect(pod.spec.containers.find((c) => c.name === 'side')?.volumeMounts).toBeUndefined();
  });

  test('unmanaged default Redis with a password Secret: by file too; no Secret, no volume', () => {
    expect(view(batch(), cfg({ url: 'redis://r:6379', passwordSecret: { name: 'rp', key: 'k' } })).pod.spec.volumes).toEqual([
      { name: 'taskbatch-redis-credentials', secret: { secretName: 'rp', items: [{ key: 'k', path: 'password' }] } },
    ]);
    const bare = view(batch(), cfg({ url: 'redis://r:6379' }));
    expect(bare.pod.spec.volumes).toBeUndefined();
    expect(bare.env).not.toHaveProperty('TASKBATCH_REDIS_PASSWORD_FILE');
  });
});
