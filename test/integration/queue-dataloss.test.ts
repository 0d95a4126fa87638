import { Redis } from 'ioredis';
import { BatchQueue, BatchStateLostError, ProtocolVersionError } from '../../queue/index.js';
import { startRedisServer, type RedisServer } from '../../localcluster/redis-server.js';
import { eventually, uniqueBatch } from '../support/batches.js';

let server: RedisServer;
let redis: Redis;
beforeAll(async () => {
  server = await startRedisServer();
  redis = new Redis(server.port, server.host, { maxRetriesPerRequest: null });
});
afterAll(async () => {
  redis.disconnect();
  await server.stop();
});

test('Redis restarted empty mid-batch is reported as lost state, not as an empty batch', async () => {
  const ref = uniqueBatch();
  const operator = new BatchQueue(redis, ref);
  const { epoch } = await operator.create();
  await operator.enqueueMany(Array.from({ length: 100 }, (_, i) => ({ data: i })));
  await operator.claim(10, 10_000);

  await server.restart();
  await eventually(async () => (await redis.ping()) === 'PONG', 10_000, 'reconnect');

  // The operator kept the epoch outside Redis: every call now fails loudly.
  const resumed = new BatchQueue(redis, ref, { expectedEpoch: epoch });
  await expect(resumed.snapshot()).rejects.toThrow(BatchStateLostError);
  await expect(resumed.snapshot()).rejects.toThrow(/batch test\/.*: batch state not found in Redis \(expected epoch /);
  await expect(resumed.claim(1, 1000)).rejects.toThrow(BatchStateLostError);
  await expect(resumed.enqueue({ data: 1 })).rejects.toThrow(BatchStateLostError);
  await expect(resumed.complete([{ claim: { token: '1:#1' } }])).rejects.toThrow(BatchStateLostError);
  // A client that never knew the epoch still learns the batch is gone (not "empty, complete").
  await expect(new BatchQueue(redis, ref).snapshot()).rejects.toThrow(BatchStateLostError);

  // Re-creating gives a new epoch; a client holding the old one keeps failing.
  const { epoch: fresh, created } = await new BatchQueue(redis, ref).create();
  expect(created).toBe(true);
  expect(fresh).not.toBe(epoch);
  await expect(resumed.snapshot()).rejects.toThrow(/epoch is .* but .* was expected/);
  expect((await new BatchQueue(redis, ref, { expectedEpoch: fresh }).snapshot()).total).toBe(0);
});

test('FLUSHALL is detected the same way', async () => {
  const ref = uniqueBatch();
  const q = new BatchQueue(redis, ref);
  await q.create();
  await redis.flushall();
  await expect(q.snapshot()).rejects.toThrow(BatchStateLostError);
});

test('a client of another protocol version fails loudly and changes nothing', async () => {
  const ref = uniqueBatch();
  const q = new BatchQueue(redis, ref);
  await q.create();
  await q.enqueue({ data: 1 });
  await redis.hset(q.keys.meta, 'v', '999');
  await expect(q.claim(1, 1000)).rejects.toThrow(ProtocolVersionError);
  await expect(q.claim(1, 1000)).rejects.toThrow(/queue protocol version 999 but this client speaks version 1/);
  await expect(q.create()).rejects.toThrow(ProtocolVersionError);
  expect(await redis.llen(q.keys.pending)).toBe(1);
});
