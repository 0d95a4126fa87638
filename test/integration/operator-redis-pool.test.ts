/**
 * The operator's Redis pool (operator/reconcile/redis-pool.ts) against real sockets: a real
 * redis-server, a closed loopback port, a listener that hangs up at once and one that never
 * answers. A Redis that does not answer makes forBatch fail with RedisUnavailableError naming the
 * address and the cause, without waiting on a connection (the pool's clock is manual: a call that
 * waited on one of its timers would never settle); calls do not start connection attempts of
 * their own; clients reconnect in the background; idle clients are closed, leased ones never.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { Redis } from 'ioredis';
import type { TaskBatch } from '../../api/taskbatch.js';
import type { KubeClient } from '../../kube/client.js';
import { RedisPool, RedisUnavailableError, type RedisPoolOptions } from '../../operator/reconcile/redis-pool.js';
import { startRedisServer, type RedisServer } from '../../localcluster/redis-server.js';
import { eventually } from '../support/batches.js';
import { ManualClock } from '../support/manual-clock.js';

let server: RedisServer;
let observer: Redis;
let observerId: number;
const pools: RedisPool[] = [];
const listeners: Server[] = [];
const sockets: Socket[] = [];

beforeAll(async () => {
  server = await startRedisServer();
  observer = new Redis(server.port, server.host);
  observerId = Number(await observer.client('ID'));
}, 60_000);
afterEach(() => {
  for (const p of pools.splice(0)) p.close();
  for (const s of sockets.splice(0)) s.destroy();
  for (const l of listeners.splice(0)) l.close();
});
afterAll(async () => {
  observer?.disconnect();
  await server?.stop();
});

const secrets = new Map<string, { data: Record<string, string> }>();
const kube = { find: async (path: string) => secrets.get(path) } as unknown as KubeClient;

/**
 * A pool whose timers run only when the test advances its clock; a long backoff, so no attempt
 * repeats on its own; a short command bound, as ioredis keeps timers of commands a dead
 * connection never answered until then (and jest would wait for them).
 */
function aPool(options: RedisPoolOptions = {}): { pool: RedisPool; clock: ManualClock } {
  const clock = new ManualClock();
  const pool = new RedisPool(kube, undefined, undefined, undefined, { clock, random: () => 0, backoff: { initialMs: 60_000, maxMs: 60_000, jitter: 0 }, commandTimeoutMs: 500, ...options });
  pools.push(pool);
  return { pool, clock };
}

let seq = 0;
function aBatch(redis: Record<string, unknown>): TaskBatch {
  return { apiVersion: 'taskbatch.dev/v1alpha1', kind: 'TaskBatch', metadata: { namespace: 'ns', name: `b${++seq}` }, spec: { handler: { builtin: 'noop' }, redis } } as TaskBatch;
}

/** A loopback port nothing listens on (bound, then closed). */
async function closedPort(): Promise<number> {
  const s = createServer();
  const port = await new Promise<number>((resolve) => s.listen(0, '127.0.0.1', () => resolve((s.address() as { port: number }).port)));
  await new Promise((r) => s.close(r));
  return port;
}

/** A listener counting connections; `hangUp` closes each at once, otherwise it accepts and stays silent. */
async function aListener(hangUp: boolean): Promise<{ port: number; connections: () => number }> {
  let n = 0;
  const l = createServer((socket) => {
    n++;
    sockets.push(socket);
    socket.on('error', () => undefined);
    if (hangUp) socket.destroy();
  });
  listeners.push(l);
  const port = await new Promise<number>((resolve) => l.listen(0, '127.0.0.1', () => resolve((l.address() as { port: number }).port)));
  return { port, connections: () => n };
}

async function unavailable(p: Promise<unknown>): Promise<RedisUnavailableError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(RedisUnavailableError);
  return err as RedisUnavailableError;
}

/** Connections to the real redis-server other than the observer's. */
async function serverClients(): Promise<number> {
  const list = (await observer.client('LIST')) as string;
  return list.split('\n').filter((l) => l.startsWith('id=') && !l.startsWith(`id=${observerId} `)).length;
}

test('a healthy Redis: forBatch returns a connected client, shared by batches with the same settings', async () => {
  const { pool } = aPool();
  const a = await pool.forBatch(aBatch({ url: server.url }));
  const b = await pool.forBatch(aBatch({ url: server.url }));
  expect(a).toBe(b);
  expect(await a.ping()).toBe('PONG');
});

test('a closed port: every call fails with RedisUnavailableError naming the address and ECONNREFUSED, with the same retryAt, without waiting', async () => {
  const { pool, clock } = aPool();
  const port = await closedPort();
  const batch = aBatch({ url: `redis://127.0.0.1:${port}` });
  const first = await unavailable(pool.forBatch(batch));
  expect(first.message).toBe(`Redis at 127.0.0.1:${port} refused the connection (ECONNREFUSED); next attempt within 60s`);
  expect(first).toMatchObject({ address: `127.0.0.1:${port}`, cause: { kind: 'refused', code: 'ECONNREFUSED' }, retryAt: clock.now() + 60_000 });
  for (let i = 0; i < 10; i++) {
    const again = await unavailable(pool.forBatch(aBatch({ url: `redis://127.0.0.1:${port}` })));
    expect(again.message).toBe(first.message);
    expect(again.retryAt).toBe(first.retryAt);
  }
});

test('while an endpoint backs off, calls do not start connection attempts of their own', async () => {
  const { pool } = aPool();
  const l = await aListener(true);
  const batch = aBatch({ url: `redis://127.0.0.1:${l.port}` });
  const first = await unavailable(pool.forBatch(batch));
  expect(first.cause).toMatchObject({ kind: 'closed' });
  expect(first.message).toMatch(new RegExp(`^Redis at 127\\.0\\.0\\.1:${l.port} closed the connection \\((CONNECTION_CLOSED|ECONNRESET|EPIPE)\\); next attempt within 60s$`));
  for (let i = 0; i < 20; i++) await unavailable(pool.forBatch(batch));
  expect(l.connections()).toBe(1);
});

test('a port that accepts and never answers: the first call waits only for the first-try bound; the attempt ends at the handshake bound with a timeout cause', async () => {
  // The ready check's own bound (commandTimeoutMs, real time) must not end the attempt before the test's clock does.
  const { pool, clock } = aPool({ firstTryMs: 1000, connectTimeoutMs: 2000, commandTimeoutMs: 5000 });
  const l = await aListener(false);
  const batch = aBatch({ url: `redis://127.0.0.1:${l.port}` });
  const pending = unavailable(pool.forBatch(batch));
  await eventually(() => l.connections() === 1, 10_000, 'the connection accepted');
  clock.advance(1000);
  const first = await pending;
  expect(first.cause).toMatchObject({ kind: 'connecting', code: 'CONNECTING' });
  expect(first.message).toBe(`Redis at 127.0.0.1:${l.port} has not answered yet; the operator keeps connecting in the background (each attempt up to 2s)`);
  // Later calls do not wait for the attempt in flight.
  expect((await unavailable(pool.forBatch(batch))).cause.code).toBe('CONNECTING');
  clock.advance(1000);
  const timedOut = await eventually(
    async () => {
      const e = await unavailable(pool.forBatch(batch));
      return e.cause.code === 'ETIMEDOUT' ? e : undefined;
    },
    10_000,
    'the attempt given up',
  );
  expect(timedOut.message).toBe(`Redis at 127.0.0.1:${l.port} accepted the connection but did not answer as Redis within 2s: is this the Redis port? (ETIMEDOUT); next attempt within 60s`);
  expect(l.connections()).toBe(1);
});

test('Redis down, then back: calls fail with the cause while it is down and succeed once the client has reconnected in the background', async () => {
  const own = await startRedisServer();
  try {
    const pool = new RedisPool(kube, undefined, undefined, undefined, { backoff: { initialMs: 50, maxMs: 400, jitter: 0.2 } });
    pools.push(pool);
    const batch = aBatch({ url: own.url });
    const client = await pool.forBatch(batch);
    await own.kill();
    const down = await eventually(
      async () => {
        const e = await pool.forBatch(batch).then(
          () => undefined,
          (err: unknown) => err,
        );
        return e instanceof RedisUnavailableError && e.cause.code === 'ECONNREFUSED' ? e : undefined;
      },
      30_000,
      'ECONNREFUSED while down',
    );
    expect(down.message).toMatch(new RegExp(`^Redis at 127\\.0\\.0\\.1:${own.port} refused the connection \\(ECONNREFUSED\\); next attempt within`));
    await own.start();
    const back = await eventually(async () => pool.forBatch(batch).catch(() => undefined), 30_000, 'reconnected');
    expect(back).toBe(client);
    expect(await back.ping()).toBe('PONG');
  } finally {
    await own.stop();
  }
});

test("wrong credentials: an auth cause; an address from a Secret is replaced by the Secret's name in the error", async () => {
  const locked = await startRedisServer({ args: ['--requirepass', 'right-password'] });
  try {
    const { pool } = aPool();
    secrets.set('/api/v1/namespaces/ns/secrets/creds', { data: { url: Buffer.from(locked.url).toString('base64'), password: Buffer.from('WRONG-PASSWORD').toString('base64') } });
    const err = await unavailable(pool.forBatch(aBatch({ secretRef: { name: 'creds', urlKey: 'url' } })));
    expect(err.cause).toMatchObject({ kind: 'auth', code: 'WRONGPASS' });
    expect(err.address).toBe(`<value from Secret ns/creds>:${locked.port}`);
    expect(err.message).toBe(
      `Redis at <value from Secret ns/creds>:${locked.port} refused the credentials: check the username and password (spec.redis.username, the Secret's password key) (WRONGPASS); next attempt within 60s`,
    );
    const literal = await unavailable(pool.forBatch(aBatch({ url: locked.url })));
    expect(literal.cause).toMatchObject({ kind: 'auth', code: 'NOAUTH' });
  } finally {
    await locked.stop();
  }
});

test('a client idle past the limit is disconnected and dropped; one held by a reconcile is not; the next call gets a new client', async () => {
  const { pool, clock } = aPool({ idleMs: 60_000 });
  const batch = aBatch({ url: server.url });
  const first = await pool.forBatch(batch);
  expect(await serverClients()).toBe(1);

  // Held past the limit (sweeps run meanwhile): still connected.
  await pool.withClient(batch, async (client) => {
    expect(client).toBe(first);
    clock.advance(180_000);
    expect(await client.ping()).toBe('PONG');
  });
  expect(first.status).toBe('ready');
  expect(await serverClients()).toBe(1);

  // Released: idle for half the limit, kept; for the whole limit, closed.
  clock.advance(30_000);
  expect(first.status).toBe('ready');
  expect(await serverClients()).toBe(1);
  clock.advance(30_000);
  await eventually(async () => (await serverClients()) === 0, 10_000, 'the idle client disconnected');
  expect(first.status).toBe('end');

  const second = await pool.forBatch(batch);
  expect(second).not.toBe(first);
  expect(await second.ping()).toBe('PONG');
});
