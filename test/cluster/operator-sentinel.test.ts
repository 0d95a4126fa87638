/**
 * spec.redis.sentinel and spec.redis.durability (issue 13, item 10) with a real operator process,
 * a real API server, worker pods run by the node agent as processes, and a real Sentinel group
 * (a primary, a replica, three sentinels on loopback; test/support/redis-sentinel.ts):
 * - the API server refuses the combinations that make no sense, naming the field and the fix;
 * - a batch on the sentinels with durability replicated completes with every item succeeded
 *   although its primary is SIGKILLed mid-batch;
 * - a sentinel outside TASKBATCH_ALLOWED_REDIS fails the batch naming spec.redis.sentinel.addresses[i],
 *   and nothing connects to it;
 * - an allowed sentinel made to name a primary outside the list (SENTINEL MONITOR, what any
 *   client of the sentinel can do) does not get the operator to connect to that primary.
 */
import { createServer, type Server } from 'node:net';
import { Redis } from 'ioredis';
import { batchPath, type TaskBatch } from '../../api/taskbatch.js';
import { KubeApiError } from '../../kube/client.js';
import { startRedisServer, type RedisServer } from '../../localcluster/redis-server.js';
import { eventually } from '../support/batches.js';
import { aTaskBatch, createNamespace, getBatch, startOperator, startOperatorEnv, waitForCondition, workerPods, type OperatorEnv, type OperatorProcess } from '../support/operator-env.js';
import { startSentinelGroup, type SentinelGroup } from '../support/redis-sentinel.js';

let env: OperatorEnv;
let op: OperatorProcess;
let group: SentinelGroup;
let ns: string;
/** A plain TCP listener named as a sentinel the installer did not allow: it must never see a connection. */
let trap: Server;
let trapPort: number;
let trapConnections = 0;
/** A real Redis outside the allow-list, which a sentinel will be made to name as a primary. */
let outside: RedisServer;

const at = (a: { host: string; port: number }): string => `${a.host}:${a.port}`;

beforeAll(async () => {
  env = await startOperatorEnv();
  group = await startSentinelGroup('tbsentinel');
  outside = await startRedisServer({ host: '127.0.0.1' });
  trap = createServer((socket) => {
    trapConnections++;
    socket.destroy();
  });
  trapPort = await new Promise<number>((resolve) => trap.listen(0, '127.0.0.1', () => resolve((trap.address() as { port: number }).port)));
  ns = await createNamespace(env.kube, 'sentinel');
  // The sentinels and both data nodes (either can become primary), nothing else.
  const allowed = [...group.sentinels.map(at), ...group.nodes.map((n) => `${n.host}:${n.port}`)].join(',');
  op = await startOperator(env, { TASKBATCH_ALLOWED_REDIS: allowed, TASKBATCH_STATUS_INTERVAL_MS: '200' });
}, 120_000);
afterAll(async () => {
  await op?.kill('SIGTERM');
  await new Promise((r) => trap?.close(r));
  await outside?.stop();
  await group?.stop();
  await env?.stop();
}, 60_000);
afterEach(() => {
  const state = expect.getState();
  if (state.assertionCalls !== state.numPassingAsserts) console.log(`operator log tail:\n${op.logs().split('\n').slice(-40).join('\n')}`);
});

const sentinelSpec = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({ sentinel: { addresses: group.sentinels.map(at), masterName: group.masterName }, ...extra });

async function rejection(name: string, redis: Record<string, unknown>): Promise<string> {
  try {
    await env.kube.create(batchPath(ns), aTaskBatch(ns, name, { range: { end: 1 }, redis }));
  } catch (err) {
    expect(err).toBeInstanceOf(KubeApiError);
    expect((err as KubeApiError).status).toBe(422);
    return (err as Error).message;
  }
  throw new Error(`TaskBatch ${name} was accepted`);
}

test('the API server refuses sentinel combinations that make no sense, naming the field and the fix', async () => {
  const s = { addresses: ['s-0.redis.svc:26379'], masterName: 'm' };
  const cases: [Record<string, unknown>, RegExp][] = [
    [
      { sentinel: s, url: 'redis://r:6379' },
      /spec.redis: Invalid value: "object": spec.redis.url and spec.redis.sentinel exclude each other: with sentinel the primary's address comes from the sentinels; remove url and give the database number in spec.redis.db/,
    ],
    [{ sentinel: s, secretRef: { name: 'c', urlKey: 'url' } }, /spec.redis.secretRef.urlKey and spec.redis.sentinel exclude each other/],
    [{ sentinel: s, cluster: true }, /spec.redis.cluster and spec.redis.sentinel exclude each other: a Redis Cluster fails over by itself; set one of them/],
    [{ sentinel: s, tls: { enabled: true } }, /spec.redis.tls is not supported with spec.redis.sentinel yet/],
    [{ url: 'redis://r:6379', db: 2 }, /spec.redis.db is only read with spec.redis.sentinel; with url, put the database in the URL's path/],
    [{ sentinel: { ...s, passwordKey: 'spw' } }, /spec.redis.sentinel.passwordKey names a key of the spec.redis.secretRef Secret: set spec.redis.secretRef.name/],
    [{ url: 'redis://r:6379', cluster: true, durability: 'replicated' }, /spec.redis.durability replicated is not supported with spec.redis.cluster/],
    [{ sentinel: { ...s, addresses: ['s-0:26379', 'no-port'] } }, /spec.redis.sentinel.addresses\[1\]: Invalid value: "string": must be host:port \(IPv6 as \[addr\]:port\)/],
    [{ sentinel: { ...s, addresses: [] } }, /spec.redis.sentinel.addresses: Invalid value: 0: spec.redis.sentinel.addresses in body should have at least 1 items/],
    [{ sentinel: { ...s, masterName: 'bad name' } }, /spec.redis.sentinel.masterName: Invalid value: "bad name": spec.redis.sentinel.masterName in body should match/],
    [{ sentinel: s, durability: 'quorum' }, /spec.redis.durability: Unsupported value: "quorum": supported values: "local", "replicated"/],
  ];
  let i = 0;
  for (const [redis, message] of cases) expect(await rejection(`bad-${++i}`, redis)).toMatch(message);
}, 60_000);

test('a batch on the sentinels with durability replicated completes with every item although its primary is SIGKILLed mid-batch', async () => {
  const name = 'failover';
  const total = 800;
  // 800 items of 50 ms on 2 workers x 4: about 5 s of work, long enough to kill the primary in it.
  const created = await env.kube.create<TaskBatch>(
    batchPath(ns),
    aTaskBatch(ns, name, {
      items: Array.from({ length: total }, (_, i) => ({ ms: 50, i })),
      handler: { builtin: 'sleep' },
      pool: { mode: 'async', size: 4 },
      workers: { scaling: 'Replicas', replicas: 2, max: 2 },
      // Claims the failover strands (their reply lost) come back when their lease lapses: keep it short.
      leaseSeconds: 5,
      redis: sentinelSpec({ durability: 'replicated' }),
    }),
  );
  expect(created.spec.redis).toMatchObject({ durability: 'replicated' });
  const pods = await eventually(
    async () => {
      const p = await workerPods(env.kube, ns, name);
      return p.length > 0 ? p : undefined;
    },
    60_000,
    'a worker pod',
  );
  const envOf = Object.fromEntries((pods[0]!.spec.containers[0]!.env ?? []).map((e) => [e.name, e.value]));
  expect(envOf).toMatchObject({ TASKBATCH_REDIS_SENTINELS: group.sentinels.map(at).join(','), TASKBATCH_REDIS_SENTINEL_MASTER: group.masterName, TASKBATCH_REDIS_DURABILITY: 'replicated' });
  expect(envOf).not.toHaveProperty('TASKBATCH_REDIS_URL');

  const before = await eventually(
    async () => {
      const b = await getBatch(env.kube, ns, name);
      return (b.status?.items?.succeeded ?? 0) >= total / 10 ? b : undefined;
    },
    90_000,
    'a tenth of the items done',
  );
  // Mid-batch: items still to do when the primary goes.
  expect(before.status?.items?.succeeded).toBeLessThan(total);
  const old = await group.primary();
  const killedAt = Date.now();
  await old.kill();
  const newPort = await group.waitForFailover(old.port);
  const promotedAfterMs = Date.now() - killedAt;
  // The promoted node has no replica left, and replicated writes wait for one: give it one, as an operator would.
  await group.rejoin(old);
  const done = await waitForCondition(env.kube, ns, name, 'Complete', 120_000);
  expect(done.status?.items).toMatchObject({ total, succeeded: total, failed: 0 });
  process.stdout.write(
    `[sentinel] primary ${old.port} SIGKILLed at ${before.status?.items?.succeeded}/${total} succeeded (status); ${newPort} promoted after ${promotedAfterMs} ms; Complete ${Date.now() - killedAt} ms after the kill; retries ${done.status?.items?.retries}, handedBack ${done.status?.items?.handedBack}\n`,
  );
}, 240_000);

test('a sentinel outside the allowed addresses: Failed naming spec.redis.sentinel.addresses[1], and nothing connects to it', async () => {
  const name = 'not-allowed';
  const created = await env.kube.create<TaskBatch>(
    batchPath(ns),
    aTaskBatch(ns, name, { range: { end: 10 }, redis: { sentinel: { addresses: [at(group.sentinels[0]!), `127.0.0.1:${trapPort}`], masterName: group.masterName } } }),
  );
  expect(created.spec.redis?.durability).toBe('local');
  const b = await waitForCondition(env.kube, ns, name, 'Failed', 60_000);
  expect(b.status?.conditions?.find((c) => c.type === 'Failed')).toMatchObject({
    reason: 'RedisAddressNotAllowed',
    message: `spec.redis.sentinel.addresses[1]: host "127.0.0.1" port ${trapPort} is not in the installer's allowed Redis addresses (TASKBATCH_ALLOWED_REDIS), which must list every sentinel; the operator did not connect to it. Leave spec.redis unset to use the default Redis, or ask the installer to add the address (Helm value redis.allowedAddresses)`,
  });
  expect(b.status?.queueEpoch).toBeUndefined();
  expect(await workerPods(env.kube, ns, name)).toEqual([]);
  expect(trapConnections).toBe(0);
}, 90_000);

test('an allowed sentinel that names a primary outside the list: the operator never connects to it and says why', async () => {
  const name = 'outside-primary';
  const sentinel = group.sentinels[0]!;
  const admin = new Redis(sentinel.port, sentinel.host);
  // What any client of the sentinel may do: point it at another address.
  await admin.call('SENTINEL', 'MONITOR', 'elsewhere', outside.host, String(outside.port), '2');
  const observer = new Redis(outside.port, outside.host);
  try {
    await env.kube.create<TaskBatch>(batchPath(ns), aTaskBatch(ns, name, { range: { end: 10 }, redis: { sentinel: { addresses: [at(sentinel)], masterName: 'elsewhere' } } }));
    const b = await eventually(
      async () => {
        const got = await getBatch(env.kube, ns, name);
        const c = got.status?.conditions?.find((x) => x.type === 'RedisUnavailable' && x.status === 'True');
        return c?.message?.includes('PRIMARY_NOT_ALLOWED') ? got : undefined;
      },
      60_000,
      'RedisUnavailable naming the refused primary',
    );
    expect(b.status?.conditions?.find((c) => c.type === 'RedisUnavailable')?.message).toContain(
      `is refused: spec.redis.sentinel: the sentinels name host "${outside.host}" port ${outside.port} as primary "elsewhere", which is not in the installer's allowed Redis addresses (TASKBATCH_ALLOWED_REDIS); the operator did not connect to it`,
    );
    expect(b.status?.queueEpoch).toBeUndefined();
    // Clients of that Redis: the sentinel's own (named sentinel-...) and this observer, nobody else.
    const myId = String(await observer.client('ID'));
    const clients = String(await observer.client('LIST'))
      .trim()
      .split('\n')
      .filter((line) => !/ name=sentinel-/.test(line) && !line.startsWith(`id=${myId} `));
    expect(clients).toEqual([]);
    expect(await observer.dbsize()).toBe(0);
  } finally {
    await admin.call('SENTINEL', 'REMOVE', 'elsewhere').catch(() => undefined);
    admin.disconnect();
    observer.disconnect();
  }
}, 90_000);
