/**
 * connectRedis({ maxReplyBytes }): a server answering with more than the bound gets its
 * connection closed after about the bound (plus one socket chunk), instead of being buffered
 * whole. The operator sets it for every Redis it connects to (issue 11, item 5).
 */
import { createServer, type Server, type Socket } from 'node:net';
import { connectRedis, type RedisClient } from '../../queue/index.js';
import { startRedisServer, type RedisServer } from '../../localcluster/redis-server.js';

const MAX = 1 << 20; // 1 MiB

interface Hostile {
  server: Server;
  url: string;
  /** Bytes written to each connection before the client closed it. */
  closedAfter: number[];
}

/**
 * A fake Redis answering GET with `header` and `count` times `element`, written until the client
 * hangs up, and anything else (ioredis' CLIENT SETINFO on connect) with +OK.
 */
async function hostile(header: string, element: string, count: number): Promise<Hostile> {
  const closedAfter: number[] = [];
  const server = createServer((socket: Socket) => {
    let written = 0;
    socket.on('error', () => undefined);
    socket.on('data', (data: Buffer) => {
      const text = data.toString('latin1');
      for (let i = 0; i < (text.match(/\r\nclient\r\n/gi) ?? []).length; i++) socket.write('+OK\r\n');
      if (!/\r\nget\r\n/i.test(text)) return;
      socket.write(header);
      let sent = 0;
      const pump = (): void => {
        while (sent < count && !socket.destroyed) {
          sent++;
          written += element.length;
          if (!socket.write(element)) return void socket.once('drain', pump);
        }
      };
      pump();
    });
    socket.on('close', () => closedAfter.push(written));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return { server, url: `redis://127.0.0.1:${port}`, closedAfter };
}

const clients: RedisClient[] = [];
const servers: Server[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.disconnect();
  for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
});

function client(url: string, maxReplyBytes?: number): { redis: RedisClient; errors: Error[] } {
  const errors: Error[] = [];
  const redis = connectRedis({
    url,
    ...(maxReplyBytes !== undefined ? { maxReplyBytes } : {}),
    redisOptions: { enableReadyCheck: false, maxRetriesPerRequest: 0, retryStrategy: () => null, disconnectTimeout: 10 },
  });
  redis.on('error', (e: Error) => errors.push(e));
  clients.push(redis);
  return { redis, errors };
}

test('a reply streaming past the bound (a 100 MB array of 1 KB strings) is cut off after about the bound', async () => {
  const element = `$1000\r\n${'x'.repeat(1000)}\r\n`;
  const h = await hostile('*100000\r\n', element, 100_000);
  servers.push(h.server);
  const { redis, errors } = client(h.url, MAX);
  await expect(redis.get('k')).rejects.toThrow();
  expect(errors.map((e) => e.name)).toContain('ReplyTooLargeError');
  expect(errors.find((e) => e.name === 'ReplyTooLargeError')?.message).toBe(`a Redis reply exceeded ${MAX} bytes (the client's maxReplyBytes); the connection was closed`);
  await new Promise((r) => setTimeout(r, 200));
  // Written before the close: the bound plus what was in flight (socket buffers), far below 100 MB.
  expect(h.closedAfter).toHaveLength(1);
  expect(h.closedAfter[0]!).toBeLessThan(MAX + 16 * 1024 * 1024);
});

test('a bulk string announced over the bound is refused on its header', async () => {
  const h = await hostile('$500000000\r\n', 'y'.repeat(64 * 1024), 100);
  servers.push(h.server);
  const { redis, errors } = client(h.url, MAX);
  await expect(redis.get('k')).rejects.toThrow();
  expect(errors.find((e) => e.name === 'ReplyTooLargeError')?.message).toMatch(/announced a 500000000-byte string/);
});

test('without maxReplyBytes a large reply is read whole (what the bound prevents)', async () => {
  const element = `$1000\r\n${'x'.repeat(1000)}\r\n`;
  const h = await hostile('*3000\r\n', element, 3000);
  servers.push(h.server);
  const { redis } = client(h.url);
  const got = (await redis.call('get', 'k')) as string[];
  expect(got).toHaveLength(3000);
});

describe('against a real redis-server', () => {
  let server: RedisServer;
  beforeAll(async () => {
    server = await startRedisServer();
  });
  afterAll(async () => {
    await server?.stop();
  });

  test('replies within the bound pass; one value over it closes the connection', async () => {
    const { redis, errors } = client(server.url, MAX);
    await redis.set('small', 'v'.repeat(1000));
    expect(await redis.get('small')).toHaveLength(1000);
    for (let i = 0; i < 50; i++) await redis.get('small'); // 50 KB over many replies: fine
    await redis.set('big', 'v'.repeat(MAX + 1));
    await expect(redis.get('big')).rejects.toThrow();
    expect(errors.map((e) => e.name)).toContain('ReplyTooLargeError');
  });
});
