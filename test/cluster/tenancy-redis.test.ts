import { Redis } from 'ioredis';
import { batchPath, type TaskBatch } from '../../api/taskbatch.js';
import { BatchQueue, aclPasswordHashes, namespaceAclUser, passwordHash } from '../../queue/index.js';
import type { Pod } from '../../kube/pod.js';
import { eventually, sleep } from '../support/batches.js';
import { aTaskBatch, createNamespace, startOperator, startOperatorEnv, waitForCondition, workerPods, type OperatorEnv, type OperatorProcess } from '../support/operator-env.js';

// A real API server, the real operator and the node agent, on a Redis that requires a password
// (the admin's, which only the operator gets): a TaskBatch on this managed default Redis runs on
// worker pods that authenticate as their namespace's ACL user, from the namespace's Secret.

const ADMIN_PASSWORD = 'the-operators-admin-password';
let env: OperatorEnv;
let op: OperatorProcess;
let admin: Redis;

beforeAll(async () => {
  env = await startOperatorEnv();
  const setup = new Redis(env.redis.port, env.redis.host);
  await setup.config('SET', 'requirepass', ADMIN_PASSWORD);
  setup.disconnect();
  admin = new Redis({ port: env.redis.port, host: env.redis.host, password: ADMIN_PASSWORD });
  op = await startOperator(env, { TASKBATCH_DEFAULT_REDIS_MANAGE_ACLS: 'true', TASKBATCH_DEFAULT_REDIS_PASSWORD: ADMIN_PASSWORD, TASKBATCH_MAX_WORKER_FAILURES: '3' });
});
afterAll(async () => {
  await op?.kill('SIGTERM');
  admin?.disconnect();
  await env?.stop();
});
afterEach(() => {
  const state = expect.getState();
  if (state.assertionCalls !== state.numPassingAsserts) console.log(`operator log tail:\n${op.logs().split('\n').slice(-40).join('\n')}`);
});

interface Secret {
  metadata: { labels?: Record<string, string>; ownerReferences?: unknown[] };
  data: Record<string, string>;
}

test("a TaskBatch on the managed default Redis completes on worker pods that are the namespace's ACL user, never the admin", async () => {
  const ns = await createNamespace(env.kube, 'tenant-a');
  // Worker pods go once the batch is complete: keep what was seen while it ran.
  const seen = new Map<string, Pod>();
  let watching = true;
  const watcher = (async () => {
    while (watching) {
      for (const p of await workerPods(env.kube, ns, 'acl-batch').catch(() => [] as Pod[])) seen.set(p.metadata.name!, p);
      await sleep(100);
    }
  })();
  await env.kube.create(batchPath(ns), aTaskBatch(ns, 'acl-batch', { range: { end: 300 }, handler: { builtin: 'noop' }, pool: { mode: 'async', size: 4 }, workers: { max: 2, itemsPerWorker: 150 } }));
  const done = await waitForCondition(env.kube, ns, 'acl-batch', 'Complete', 180_000);
  watching = false;
  await watcher;
  expect(done.status?.items).toMatchObject({ total: 300, succeeded: 300, failed: 0 });

  // The namespace's Secret, created by the operator, owned by nothing.
  const secret = await env.kube.get<Secret>(`/api/v1/namespaces/${ns}/secrets/taskbatch-redis`);
  expect(secret.metadata.ownerReferences).toBeUndefined();
  expect(secret.metadata.labels?.['app.kubernetes.io/managed-by']).toBe('taskbatch');
  const username = Buffer.from(secret.data.username!, 'base64').toString();
  const password = Buffer.from(secret.data.password!, 'base64').toString();
  expect(username).toBe(namespaceAclUser(ns));
  expect(await aclPasswordHashes(admin, username)).toEqual([passwordHash(password)]);

  // Every worker pod: the namespace's user, the password as a file of that Secret; no admin credential anywhere.
  const pods = [...seen.values()];
  expect(pods.length).toBeGreaterThan(0);
  for (const pod of pods) {
    const text = JSON.stringify(pod.spec);
    expect(text).not.toContain(ADMIN_PASSWORD);
    const c = pod.spec.containers.find((x) => x.name === 'worker')!;
    const podEnv = Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value ?? e.valueFrom]));
    expect(podEnv).toMatchObject({ TASKBATCH_REDIS_USERNAME: username, TASKBATCH_REDIS_PASSWORD_FILE: '/var/run/taskbatch/redis/password' });
    expect(podEnv).not.toHaveProperty('TASKBATCH_REDIS_PASSWORD');
    // (defaultMode 0644 is the API server's default.)
    expect(pod.spec.volumes).toEqual([{ name: 'taskbatch-redis-credentials', secret: { secretName: 'taskbatch-redis', items: [{ key: 'password', path: 'password' }], defaultMode: 0o644 } }]);
  }

  // The user the pods were given reaches its namespace's batch and nothing of another namespace.
  const asUser = new Redis({ port: env.redis.port, host: env.redis.host, username, password, maxRetriesPerRequest: 0 });
  try {
    expect(await new BatchQueue(asUser, { namespace: ns, name: 'acl-batch' }).snapshot()).toMatchObject({ succeeded: 300 });
    await expect(asUser.hgetall('tb:{other-ns/x}:meta')).rejects.toThrow(/^NOPERM/);
    await expect(asUser.flushall()).rejects.toThrow(/^NOPERM/);
  } finally {
    asUser.disconnect();
  }
  // Without credentials, nothing (the operator's admin password is the only other one).
  const anonymous = new Redis({ port: env.redis.port, host: env.redis.host, maxRetriesPerRequest: 0, lazyConnect: true });
  anonymous.on('error', () => undefined);
  await anonymous.connect().catch(() => undefined);
  await expect(anonymous.hgetall(`tb:{${ns}/acl-batch}:meta`)).rejects.toThrow(/NOAUTH/);
  anonymous.disconnect();
}, 240_000);

test('deleting the namespace Secret rotates: a new password, and a new batch still completes', async () => {
  const ns = 'tenant-a';
  const before = await env.kube.get<Secret>(`/api/v1/namespaces/${ns}/secrets/taskbatch-redis`);
  await env.kube.delete(`/api/v1/namespaces/${ns}/secrets/taskbatch-redis`);
  await env.kube.create(batchPath(ns), aTaskBatch(ns, 'after-rotation', { range: { end: 100 }, handler: { builtin: 'noop' }, pool: { mode: 'async', size: 4 } }) as TaskBatch);
  const done = await waitForCondition(env.kube, ns, 'after-rotation', 'Complete', 120_000);
  expect(done.status?.items).toMatchObject({ total: 100, succeeded: 100 });
  const after = await env.kube.get<Secret>(`/api/v1/namespaces/${ns}/secrets/taskbatch-redis`);
  expect(after.data.password).not.toBe(before.data.password);
  // Both passwords work during the grace period (600 s by default).
  const hashes = await aclPasswordHashes(admin, namespaceAclUser(ns));
  expect(new Set(hashes)).toEqual(new Set([before, after].map((s) => passwordHash(Buffer.from(s.data.password!, 'base64').toString()))));
}, 180_000);

test("the namespace's last TaskBatch gone, its ACL user and Secret go too", async () => {
  const ns = 'tenant-a';
  const batches = (await env.kube.list<TaskBatch>(batchPath(ns))).items;
  expect(batches.length).toBeGreaterThan(0);
  for (const b of batches) await env.kube.delete(batchPath(ns, b.metadata.name!));
  await eventually(async () => (await env.kube.list<TaskBatch>(batchPath(ns))).items.length === 0, 60_000, 'the batches deleted');
  await eventually(async () => (await env.kube.find(`/api/v1/namespaces/${ns}/secrets/taskbatch-redis`)) === undefined, 30_000, 'the namespace Secret deleted');
  expect(await admin.call('ACL', 'GETUSER', namespaceAclUser(ns))).toBeNull();
  // A new batch gets a fresh user and Secret, and completes.
  await env.kube.create(batchPath(ns), aTaskBatch(ns, 'again', { range: { end: 20 }, handler: { builtin: 'noop' }, pool: { mode: 'async', size: 4 } }) as TaskBatch);
  await waitForCondition(env.kube, ns, 'again', 'Complete', 120_000);
  expect(await env.kube.find(`/api/v1/namespaces/${ns}/secrets/taskbatch-redis`)).toBeDefined();
}, 180_000);
