import { Redis } from 'ioredis';
import { BatchQueue } from '../../queue/index.js';
import { startRedisServer, type RedisServer } from '../support/redis-server.js';

let server: RedisServer;
let redis: Redis;
beforeAll(async () => {
  server = await startRedisServer();
  redis = new Redis(server.port, server.host);
});
afterAll(async () => {
  redis.disconnect();
  await server.stop();
});

test('smoke: enqueue, claim, complete', async () => {
  const q = new BatchQueue(redis, { namespace: 'default', name: 'smoke' });
  await q.create();
  const r = await q.enqueueMany([{ data: 1 }, { data: 2 }, { id: 'x', data: 3 }]);
  expect(r.added).toBe(3);
  const c = await q.claim(10, 5000);
  expect(c.items.map((i) => i.payload)).toEqual(['1', '2', '3']);
  await q.complete(c.items.map((claim) => ({ claim, result: { ok: claim.id } })));
  await q.close();
  const s = await q.snapshot();
  expect(s).toMatchObject({ total: 3, succeeded: 3, pending: 0, running: 0, complete: true });
});
