// The embedded-default demo until the operator runs the real thing: starts a local
// redis-server, enqueues a batch, drains it with an in-process consumer (claim 100 /
// batched complete, ~200 in flight) and prints counts and throughput.
import { BatchQueue, connectRedis } from '../queue/index.js';
import { startRedisServer } from '../test/support/redis-server.js';

const items = Number(process.env.DEMO_ITEMS ?? 200_000);
const server = await startRedisServer();
const redis = connectRedis({ url: server.url });
try {
  const q = new BatchQueue(redis, { namespace: 'demo', name: 'hello' });
  const { epoch } = await q.create({ maxAttempts: 3 });
  console.log(`Started redis-server on ${server.url}; created batch demo/hello (epoch ${epoch})`);
  let t = performance.now();
  const CHUNK = 20_000;
  for (let i = 0; i < items; i += CHUNK) {
    await q.enqueueMany(Array.from({ length: Math.min(CHUNK, items - i) }, (_, k) => ({ data: { n: i + k } })));
  }
  await q.close();
  console.log(`Enqueued ${items} items in ${((performance.now() - t) / 1000).toFixed(2)}s (${Math.round(items / ((performance.now() - t) / 1000))} items/s)`);

  t = performance.now();
  let lastPrint = t;
  const consumer = async (): Promise<void> => {
    for (;;) {
      const { items: claims } = await q.claim(100, 30_000);
      if (claims.length === 0) return;
      // The "work": square the number; results are stored (bounded TTL) for every 1000th item.
      await q.complete(claims.map((claim) => {
        const n = (JSON.parse(claim.payload) as { n: number }).n;
        return n % 1000 === 0 ? { claim, result: n * n } : { claim };
      }));
      if (performance.now() - lastPrint > 1000) {
        lastPrint = performance.now();
        const s = await q.snapshot();
        console.log(`  progress ${s.succeeded}/${s.total} (${Math.round(s.succeeded / ((lastPrint - t) / 1000))} items/s)`);
      }
    }
  };
  await Promise.all([consumer(), consumer()]);
  const seconds = (performance.now() - t) / 1000;
  const s = await q.snapshot();
  console.log(`Drained in ${seconds.toFixed(2)}s: ${Math.round(s.succeeded / seconds)} items/s`);
  console.log(JSON.stringify({ total: s.total, pending: s.pending, delayed: s.delayed, running: s.running, succeeded: s.succeeded, failed: s.failed, retries: s.retries, complete: s.complete }));
  const sample = await q.results(0, 3);
  console.log(`Sample results: ${sample.map((r) => `${r.id}=${JSON.stringify(r.result)}`).join(', ')}`);
  await q.purge();
} finally {
  redis.disconnect();
  await server.stop();
}
