import { Redis } from 'ioredis';
import { BatchQueue, type Claim } from '../../queue/index.js';
import { startRedisServer, type RedisServer } from '../../localcluster/redis-server.js';
import { sleep, uniqueBatch } from '../support/batches.js';

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

/** mulberry32: a small seeded PRNG so a failing seed can be replayed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SEEDS = Array.from({ length: 40 }, (_, i) => i + 1);

test.each(SEEDS)('counters equal the real state after a random sequence of operations (seed %i)', async (seed) => {
  const rand = rng(seed);
  const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const q = new BatchQueue(redis, uniqueBatch(`p${seed}`));
  await q.create({ maxAttempts: 1 + Math.floor(rand() * 3), backoff: { initialMs: 0, factor: 1, maxMs: 0, jitter: 0 } });
  const held: Claim[] = [];
  let nextId = 0;
  let closed = false;
  let handedBack = 0;

  for (let step = 0; step < 60; step++) {
    const op = pick(['enqueue', 'enqueue', 'claim', 'claim', 'complete', 'fail', 'failHard', 'release', 'expire', 'replay', 'stale', 'close']);
    switch (op) {
      case 'enqueue': {
        if (closed) break;
        const n = 1 + Math.floor(rand() * 8);
        const items = Array.from({ length: n }, () => {
          const dup = rand() < 0.2 && nextId > 0;
          const id = dup ? `k${Math.floor(rand() * nextId)}` : rand() < 0.5 ? `k${nextId++}` : undefined;
          return { ...(id ? { id } : {}), data: { step }, ...(rand() < 0.2 ? { delayMs: Math.floor(rand() * 30) } : {}) };
        });
        await q.enqueueMany(items);
        break;
      }
      case 'claim':
        held.push(...(await q.claim(1 + Math.floor(rand() * 5), rand() < 0.2 ? 100 : 10_000)).items);
        break;
      case 'complete': {
        const take = held.splice(0, Math.floor(rand() * 4));
        await q.complete(take.map((claim) => ({ claim, ...(rand() < 0.5 ? { result: step } : {}) })));
        break;
      }
      case 'fail':
      case 'failHard': {
        const take = held.splice(0, 1 + Math.floor(rand() * 2));
        await q.fail(take.map((claim) => ({ claim, error: { name: 'E', message: op }, retryable: op === 'fail' })));
        break;
      }
      case 'release':
        handedBack += (await q.release(held.splice(0, Math.floor(rand() * 3)))).released;
        break;
      case 'expire':
        await sleep(110);
        await q.reclaimExpired();
        break;
      case 'replay': {
        const { items } = await q.deadLetters('0', 10);
        await q.replay(items.slice(0, 2).map((d) => d.id));
        break;
      }
      case 'stale':
        // Re-using tokens that may be stale must never corrupt counters.
        if (held.length) await q.complete([{ claim: pick(held) }]);
        break;
      case 'close':
        if (rand() < 0.3) {
          await q.close();
          closed = true;
        }
        break;
    }
    const s = await q.snapshot();
    const [pending, delayed, running, dead, items] = await Promise.all([
      redis.llen(q.keys.pending),
      redis.zcard(q.keys.delayed),
      redis.zcard(q.keys.running),
      redis.hlen(q.keys.dead),
      redis.hlen(q.keys.items),
    ]);
    const state = { pending: s.pending, delayed: s.delayed, running: s.running, failed: s.failed };
    expect({ seed, step, op, ...state }).toEqual({ seed, step, op, pending, delayed, running, failed: dead });
    expect(s.total).toBe(s.pending + s.delayed + s.running + s.succeeded + s.failed);
    expect({ step, op, handedBack: s.handedBack }).toEqual({ step, op, handedBack });
    // Payloads exist exactly for items not yet succeeded.
    expect(items).toBe(s.total - s.succeeded);
  }
});
