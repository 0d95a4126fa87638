/**
 * The operator's Redis pool through a real Sentinel group (test/support/redis-sentinel.ts): it
 * reaches the primary the sentinels name; it refuses a sentinel outside the allow-list before
 * connecting, and a primary outside it after asking, on every round (the cause stays the same
 * from round to round); a name no sentinel knows is said in words.
 */
import { Redis } from 'ioredis';
import type { TaskBatch } from '../../api/taskbatch.js';
import type { KubeClient } from '../../kube/client.js';
import { parseAllowedRedis, RedisGuard, RedisNotAllowedError } from '../../operator/reconcile/redis-allow.js';
import { RedisPool, RedisUnavailableError } from '../../operator/reconcile/redis-pool.js';
import { startRedisServer, type RedisServer } from '../../localcluster/redis-server.js';
import { eventually } from '../support/batches.js';
import { startSentinelGroup, type SentinelGroup } from '../support/redis-sentinel.js';

let group: SentinelGroup;
let outside: RedisServer;
let admin: Redis;
let pool: RedisPool;

const at = (a: { host: string; port: number }): string => `${a.host}:${a.port}`;
const kube = { find: async () => undefined } as unknown as KubeClient;

beforeAll(async () => {
  group = await startSentinelGroup('tbpool');
  outside = await startRedisServer({ host: '127.0.0.1' });
  admin = new Redis(group.sentinels[0]!.port, group.sentinels[0]!.host);
  await admin.call('SENTINEL', 'MONITOR', 'elsewhere', outside.host, String(outside.port), '2');
  const allowed = [...group.sentinels.map(at), ...group.nodes.map((n) => `${n.host}:${n.port}`)].join(',');
  pool = new RedisPool(kube, undefined, undefined, new RedisGuard(parseAllowedRedis(allowed), undefined, 1 << 20), { backoff: { initialMs: 50, maxMs: 200, jitter: 0 } });
}, 60_000);
afterAll(async () => {
  pool?.close();
  await admin?.call('SENTINEL', 'REMOVE', 'elsewhere').catch(() => undefined);
  admin?.disconnect();
  await outside?.stop();
  await group?.stop();
}, 30_000);

let seq = 0;
const aBatch = (sentinel: { addresses: string[]; masterName: string }): TaskBatch =>
  ({ apiVersion: 'taskbatch.dev/v1alpha1', kind: 'TaskBatch', metadata: { namespace: 'ns', name: `b${++seq}` }, spec: { handler: { builtin: 'noop' }, redis: { sentinel } } }) as TaskBatch;

async function failure(batch: TaskBatch, code: string): Promise<RedisUnavailableError> {
  return eventually(
    async () => {
      const e = await pool.forBatch(batch).then(
        () => undefined,
        (err: unknown) => err,
      );
      return e instanceof RedisUnavailableError && e.cause.code === code ? e : undefined;
    },
    20_000,
    `a RedisUnavailableError with cause ${code}`,
  );
}

test('reaches the primary the sentinels name', async () => {
  const client = await eventually(
    async () =>
      pool.forBatch(aBatch({ addresses: group.sentinels.map(at), masterName: group.masterName })).catch((err: unknown) => {
        if (err instanceof RedisUnavailableError) return undefined;
        throw err;
      }),
    20_000,
    'connected',
  );
  expect(((await client.call('ROLE')) as [string])[0]).toBe('master');
  expect(await client.call('CONFIG', 'GET', 'port')).toEqual(['port', String(await group.primaryPort())]);
});

test('a sentinel outside the list: refused before any connection, naming its index', async () => {
  const batch = aBatch({ addresses: [at(group.sentinels[0]!), `127.0.0.1:${outside.port}`], masterName: group.masterName });
  await expect(pool.forBatch(batch)).rejects.toThrow(RedisNotAllowedError);
  await expect(pool.forBatch(batch)).rejects.toThrow(`spec.redis.sentinel.addresses[1]: host "127.0.0.1" port ${outside.port} is not in the installer's allowed Redis addresses`);
});

test('a primary outside the list is never dialled, and the cause stays the same on every round', async () => {
  const batch = aBatch({ addresses: [at(group.sentinels[0]!)], masterName: 'elsewhere' });
  const first = await failure(batch, 'PRIMARY_NOT_ALLOWED');
  expect(first.message).toMatch(
    new RegExp(
      `^Redis at primary elsewhere via sentinels ${at(group.sentinels[0]!).replace(/\./g, '\\.')} is refused: spec\\.redis\\.sentinel: the sentinels name host "127\\.0\\.0\\.1" port ${outside.port} as primary "elsewhere", which is not in the installer's allowed Redis addresses`,
    ),
  );
  // Several more rounds (50-200 ms apart): still the same cause, not ioredis' summary of the last round.
  await new Promise((r) => setTimeout(r, 1000));
  expect((await failure(batch, 'PRIMARY_NOT_ALLOWED')).cause).toEqual(first.cause);
  const observer = new Redis(outside.port, outside.host);
  try {
    const myId = String(await observer.client('ID'));
    const others = String(await observer.client('LIST'))
      .trim()
      .split('\n')
      .filter((line) => !/ name=sentinel-/.test(line) && !line.startsWith(`id=${myId} `));
    expect(others).toEqual([]);
  } finally {
    observer.disconnect();
  }
});

test('a name no sentinel knows: said in words, naming the field', async () => {
  const e = await failure(aBatch({ addresses: [at(group.sentinels[1]!)], masterName: 'nobody' }), 'NO_PRIMARY');
  expect(e.message).toContain(`could not be found: sentinel ${at(group.sentinels[1]!)} knows no primary of that name (check spec.redis.sentinel.masterName)`);
});
