import { jest } from '@jest/globals';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { BatchQueue, connectRedis, namespaceAclUser, passwordHash, setNamespaceAclUser, aclPasswordHashes } from '../../queue/index.js';
import { startRedisServer, type RedisServer } from '../../localcluster/redis-server.js';
import { connect, type TaskBatchClient } from '../../sdk/index.js';
import { NamespaceAcls, NAMESPACE_REDIS_SECRET, ROTATE_ANNOTATION, type NamespaceSecret } from '../../operator/reconcile/redis-acl.js';
import type { KubeClient } from '../../kube/client.js';
import { spawnCallWorker, stopWorker } from '../support/sdk-env.js';
import { BatchBuilder, fixture, spawnWorker, uniqueName, waitFor, workerEnv, type SpawnedWorker } from '../support/worker-harness.js';
import type * as MathModule from '../fixtures/sdk/math.js';

// Per-namespace Redis ACL users (queue/acl.ts) on a real redis-server 7: namespace A's user
// reaches nothing of namespace B, nothing server-wide, and everything of A (a real worker, the
// SDK's calls with their pub/sub replies); a password rotation during a running batch loses nothing.

jest.setTimeout(90_000);

const ADMIN_PASSWORD = 'admin-password-for-tests';
const A = 'team-a';
const B = 'team-b';
let server: RedisServer;
let admin: Redis;
let dir: string;
const workers: SpawnedWorker[] = [];
const clients: { disconnect(): void }[] = [];

function asUser(ns: string, password: string): Redis {
  const c = connectRedis({ url: server.url, username: namespaceAclUser(ns), password, redisOptions: { maxRetriesPerRequest: 0, enableReadyCheck: true } }) as Redis;
  c.on('error', () => undefined);
  clients.push(c);
  return c;
}

function passwordFile(name: string, password: string): string {
  const f = join(dir, name);
  writeFileSync(f, `${password}\n`);
  return f;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tb-tenancy-'));
  // DEBUG enabled, so that refusing it is the ACL's doing, not the server's default.
  server = await startRedisServer({ args: ['--requirepass', ADMIN_PASSWORD, '--enable-debug-command', 'yes'] });
  admin = new Redis({ port: server.port, host: server.host, password: ADMIN_PASSWORD });
  await setNamespaceAclUser(admin, A, [passwordHash('pw-a')]);
  await setNamespaceAclUser(admin, B, [passwordHash('pw-b')]);
});
afterEach(async () => {
  for (const w of workers.splice(0)) await stopWorker(w);
});
afterAll(async () => {
  for (const c of clients) c.disconnect();
  admin.disconnect();
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("namespace A's user and namespace B", () => {
  let b: { queue: BatchQueue; name: string };
  let a: Redis;
  beforeAll(async () => {
    const created = await new BatchBuilder(admin, uniqueName('b'), B).withItems([{ secret: 'of B' }]).create();
    b = { queue: created.queue, name: created.name };
    a = asUser(A, 'pw-a');
  });
  const NOPERM_KEYS = /^NOPERM this user has no permissions to access one of the keys used as arguments/;
  const NOPERM_CHANNELS = /^NOPERM this user has no permissions to access one of the channels used as arguments/;
  const bKey = (part: string): string => `tb:{${B}/${b.name}}:${part}`;

  test('cannot read or write any key of B, directly or through a script', async () => {
    await expect(a.hgetall(bKey('meta'))).rejects.toThrow(NOPERM_KEYS);
    await expect(a.hget(bKey('items'), 'item-1')).rejects.toThrow(NOPERM_KEYS);
    await expect(a.hset(bKey('results'), 'x', '1')).rejects.toThrow(NOPERM_KEYS);
    await expect(a.rpush(bKey('pending'), 'injected')).rejects.toThrow(NOPERM_KEYS);
    await expect(a.blpop(bKey('wake'), 0.01)).rejects.toThrow(NOPERM_KEYS);
    await expect(a.unlink(bKey('meta'))).rejects.toThrow(NOPERM_KEYS);
    // The queue's own scripts (EVALSHA/EVAL) against B's keys: claim, enqueue, purge.
    const intoB = new BatchQueue(a, { namespace: B, name: b.name });
    await expect(intoB.snapshot()).rejects.toThrow(NOPERM_KEYS);
    await expect(intoB.enqueue({ id: 'injected', data: 1 })).rejects.toThrow(NOPERM_KEYS);
    await expect(intoB.purge()).rejects.toThrow(NOPERM_KEYS);
    // A script naming A's key but touching B's inside: keys are checked inside scripts too.
    await expect(a.eval("return redis.call('HGETALL', ARGV[1])", 1, `tb:{${A}/x}:meta`, bKey('meta'))).rejects.toThrow(/can't access at least one of the keys|NOPERM/);
    // (Redis 7.0 words it "can't access", 7.2 NOPERM.)
    // B is untouched.
    expect(await b.queue.snapshot()).toMatchObject({ total: 1, pending: 1 });
    expect(await admin.hget(bKey('items'), 'item-1')).toContain('of B');
  });

  test("cannot publish to or subscribe to B's channels", async () => {
    const channel = bKey('reply:someone');
    await expect(a.publish(channel, 'spoofed')).rejects.toThrow(NOPERM_CHANNELS);
    await expect(a.call('SPUBLISH', channel, 'spoofed')).rejects.toThrow(NOPERM_CHANNELS);
    // Redis 7.0 words it "can't publish"; 7.2 says NOPERM: either way refused.
    await expect(a.eval("return redis.call('PUBLISH', ARGV[1], 'spoofed')", 0, channel)).rejects.toThrow(/can't publish to the channel|NOPERM/);
    const sub = a.duplicate();
    sub.on('error', () => undefined);
    clients.push(sub);
    await expect(sub.subscribe(channel)).rejects.toThrow(NOPERM_CHANNELS);
    await expect(sub.call('SSUBSCRIBE', channel)).rejects.toThrow(NOPERM_CHANNELS);
    await expect(sub.psubscribe('tb:*')).rejects.toThrow(/NOPERM/);
  });

  test('cannot run server-wide commands', async () => {
    for (const cmd of [
      ['FLUSHALL'],
      ['FLUSHDB'],
      ['KEYS', '*'],
      ['SCAN', '0'],
      ['CONFIG', 'GET', '*'],
      ['CONFIG', 'SET', 'maxmemory', '1'],
      ['ACL', 'LIST'],
      ['ACL', 'SETUSER', namespaceAclUser(A), '~*'],
      ['DEBUG', 'SLEEP', '0'],
      ['SHUTDOWN'],
      ['MODULE', 'LIST'],
      ['MONITOR'],
      ['CLIENT', 'LIST'],
      ['CLIENT', 'KILL', 'USER', 'default'],
      ['SCRIPT', 'FLUSH'],
      ['FUNCTION', 'LIST'],
      ['SET', `tb:{${A}/x}:free`, 'v'],
      ['GET', `tb:{${A}/x}:free`],
    ] as const) {
      await expect(a.call(cmd[0], ...cmd.slice(1))).rejects.toThrow(/^NOPERM this user has no permissions to run the '[a-z|]+' command/);
    }
    expect(await admin.dbsize()).toBeGreaterThan(0);
  });

  test('a wrong or missing password gets nothing', async () => {
    const wrong = asUser(A, 'pw-b');
    await expect(wrong.ping()).rejects.toThrow(/WRONGPASS|invalid username-password/);
    const anonymous = new Redis({ port: server.port, host: server.host, maxRetriesPerRequest: 0, lazyConnect: true });
    anonymous.on('error', () => undefined);
    clients.push(anonymous);
    await anonymous.connect().catch(() => undefined);
    await expect(anonymous.hgetall(bKey('meta'))).rejects.toThrow(/NOAUTH/);
  });
});

describe("everything of A works as A's user", () => {
  test('a full batch with the real worker: enqueue, claim, complete, results (password from a file)', async () => {
    const a = asUser(A, 'pw-a');
    const { queue, name } = await new BatchBuilder(a, uniqueName('a'), A)
      .withItems(Array.from({ length: 40 }, (_, i) => ({ n: i })))
      .closed()
      .create();
    const w = spawnWorker(
      workerEnv(server.url, name, fixture('ok'), {
        TASKBATCH_NAMESPACE: A,
        TASKBATCH_REDIS_USERNAME: namespaceAclUser(A),
        TASKBATCH_REDIS_PASSWORD_FILE: passwordFile('a-full', 'pw-a'),
        TASKBATCH_POOL_MODE: 'async',
        TASKBATCH_METRICS_PORT: 'off',
      }),
    );
    workers.push(w);
    expect(await w.exited).toEqual({ code: 0, signal: null });
    expect(await queue.snapshot()).toMatchObject({ total: 40, succeeded: 40, failed: 0, complete: true });
    expect(await queue.result('item-3')).toMatchObject({ result: { echo: { n: 2 } } });
  });

  test('remote calls: the reply comes back over A-only pub/sub (SDK and worker both as A)', async () => {
    const client: TaskBatchClient = await connect({ redis: { url: server.url, username: namespaceAclUser(A), password: 'pw-a' }, namespace: A });
    try {
      const service = uniqueName('math');
      await client.batch(service).create({ maxAttempts: 1 });
      const w = spawnCallWorker(server.url, A, service, { TASKBATCH_REDIS_USERNAME: namespaceAclUser(A), TASKBATCH_REDIS_PASSWORD_FILE: passwordFile('a-calls', 'pw-a') });
      workers.push(w);
      const math = client.proxy<typeof MathModule>(service, { timeoutMs: 15_000 });
      await expect(math.square(7)).resolves.toBe(49);
      await expect(math.add(2, 3)).resolves.toBe(5);
      // The idle worker waits for calls with BLPOP on A's wake list: allowed, so it never fell
      // back to claiming with backoff.
      expect(w.logs.filter((l) => l.msg.startsWith('Lost contact with Redis'))).toEqual([]);
    } finally {
      await client.close();
    }
  });
});

/** The Secret store the operator's NamespaceAcls talks to (the rotation logic, not the API server, is under test here). */
class FakeSecrets {
  secret: NamespaceSecret | undefined;
  private rv = 0;
  readonly kube = {
    find: async <T>(): Promise<T | undefined> => structuredClone(this.secret) as T | undefined,
    create: async <T>(_path: string, body: NamespaceSecret): Promise<T> => {
      this.secret = { ...structuredClone(body), metadata: { ...body.metadata, resourceVersion: String(++this.rv) } };
      return this.secret as T;
    },
    replace: async <T>(_path: string, body: NamespaceSecret): Promise<T> => {
      this.secret = { ...structuredClone(body), metadata: { ...body.metadata, resourceVersion: String(++this.rv) } };
      return this.secret as T;
    },
  } as unknown as KubeClient;
  password(): string {
    return Buffer.from(this.secret?.data?.password ?? '', 'base64').toString('utf8');
  }
}

describe('rotation', () => {
  test("rotating A's password during a running batch loses no item; the old password stops working after the grace period", async () => {
    const ns = 'team-rot';
    const secrets = new FakeSecrets();
    let now = Date.parse('2026-01-01T00:00:00Z');
    const graceMs = 60_000;
    const acls = new NamespaceAcls(secrets.kube, { graceMs, recheckMs: 0, now: () => now });
    await acls.ensure(ns, admin);
    expect(secrets.secret?.metadata.name).toBe(NAMESPACE_REDIS_SECRET);
    expect(Buffer.from(secrets.secret?.data?.username ?? '', 'base64').toString()).toBe(namespaceAclUser(ns));
    const oldPassword = secrets.password();
    expect(await aclPasswordHashes(admin, namespaceAclUser(ns))).toEqual([passwordHash(oldPassword)]);

    // 600 items of 30 ms on 4 slots: several seconds of work, the rotation happens midway.
    const creator = asUser(ns, oldPassword);
    const { queue, name } = await new BatchBuilder(creator, uniqueName('rot'), ns)
      .withItems(Array.from({ length: 600 }, () => ({ ms: 30 })))
      .closed()
      .create();
    const file = passwordFile('rot', oldPassword);
    const w = spawnWorker(
      workerEnv(server.url, name, fixture('slow'), {
        TASKBATCH_NAMESPACE: ns,
        TASKBATCH_REDIS_USERNAME: namespaceAclUser(ns),
        TASKBATCH_REDIS_PASSWORD_FILE: file,
        TASKBATCH_POOL_MODE: 'async',
        TASKBATCH_POOL_SIZE: '4',
        TASKBATCH_METRICS_PORT: 'off',
      }),
    );
    workers.push(w);
    await waitFor('some items done', async () => (await queue.snapshot()).succeeded >= 30);

    // Rotate: the annotation asks, the operator adds the new password next to the old one.
    secrets.secret!.metadata.annotations = { ...secrets.secret!.metadata.annotations, [ROTATE_ANNOTATION]: 'r1' };
    now += 1000;
    await acls.ensure(ns, admin);
    const newPassword = secrets.password();
    expect(newPassword).not.toBe(oldPassword);
    expect(new Set(await aclPasswordHashes(admin, namespaceAclUser(ns)))).toEqual(new Set([passwordHash(newPassword), passwordHash(oldPassword)]));
    // Within the grace period both work.
    await expect(asUser(ns, oldPassword).ping()).resolves.toBe('PONG');
    await expect(asUser(ns, newPassword).ping()).resolves.toBe('PONG');
    // The same request again does not rotate again.
    now += 1000;
    await acls.ensure(ns, admin);
    expect(secrets.password()).toBe(newPassword);

    // The kubelet refreshes the mounted file; the grace period ends; the old password is removed.
    writeFileSync(file, newPassword);
    now += graceMs;
    await acls.ensure(ns, admin);
    expect(await aclPasswordHashes(admin, namespaceAclUser(ns))).toEqual([passwordHash(newPassword)]);
    await expect(asUser(ns, oldPassword).ping()).rejects.toThrow(/WRONGPASS/);

    // Cut the worker's connection: it reconnects with the file's new password and carries on.
    const succeededBefore = (await queue.snapshot()).succeeded;
    expect(succeededBefore).toBeLessThan(600);
    const killed = Number(await admin.call('CLIENT', 'KILL', 'USER', namespaceAclUser(ns)));
    expect(killed).toBeGreaterThan(0);
    const viaAdmin = new BatchQueue(admin, { namespace: ns, name });
    // A worker that cannot authenticate again never finishes: fail within 30 s, not at the test timeout.
    await waitFor('the batch to complete after the reconnection', async () => (await viaAdmin.snapshot()).complete, 30_000, 100);
    expect(await w.exited).toEqual({ code: 0, signal: null });
    // (The creator's own connection was cut too and holds the old password: read as the admin.)
    const end = await viaAdmin.snapshot();
    expect(end).toMatchObject({ total: 600, succeeded: 600, failed: 0, complete: true });
  });

  test('a deleted Secret is recreated with a new password; the old one keeps working for the grace period', async () => {
    const ns = 'team-del';
    const secrets = new FakeSecrets();
    let now = Date.parse('2026-01-01T00:00:00Z');
    const acls = new NamespaceAcls(secrets.kube, { graceMs: 10_000, recheckMs: 0, now: () => now });
    await acls.ensure(ns, admin);
    const first = secrets.password();
    secrets.secret = undefined;
    now += 1000;
    await acls.ensure(ns, admin);
    const second = secrets.password();
    expect(second).not.toBe(first);
    await expect(asUser(ns, first).ping()).resolves.toBe('PONG');
    now += 10_000;
    await acls.ensure(ns, admin);
    await expect(asUser(ns, first).ping()).rejects.toThrow(/WRONGPASS/);
    await expect(asUser(ns, second).ping()).resolves.toBe('PONG');
  });
});
