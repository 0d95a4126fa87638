import { jest } from '@jest/globals';
import { Redis } from 'ioredis';
import { startRedisServer } from '../../localcluster/redis-server.js';
import { TcpProxy } from '../support/tcp-proxy.js';
import { aBatch, fixture, httpGet, metricValue, spawnWorker, waitFor, workerEnv, type SpawnedWorker } from '../support/worker-harness.js';

// A Redis connection that hangs without closing (a frozen network path, a half-open socket):
// the worker must notice before its leases lapse, turn not-ready and stop claiming, drop the
// connection, and come back by itself once the path delivers again. The worker reaches Redis
// through a TCP proxy on loopback that the test freezes mid-batch (bytes held both ways, no
// socket closed) and thaws later (the held bytes arrive late, as after a healed partition).
//
// The items the worker held when the path froze have their leases lapse meanwhile; the test
// requeues them as the operator's sweeper would, so they are re-run by the same worker after
// it recovers, and its late results for the old leases (held by the proxy, or retried by the
// worker) are rejected by the queue's fencing: every item is committed exactly once.

jest.setTimeout(120_000);

const LEASE_SECONDS = 3;
const ITEMS = 60;

const workers: SpawnedWorker[] = [];
afterEach(async () => {
  for (const w of workers.splice(0)) {
    w.kill('SIGKILL');
    await w.exited;
  }
});

test('a frozen connection: the worker turns not-ready, stops claiming, reconnects after the thaw, and every item is committed once', async () => {
  const server = await startRedisServer();
  const proxy = await TcpProxy.start({ host: server.host, port: server.port });
  const redis = new Redis(server.port, server.host, { maxRetriesPerRequest: null });
  try {
    const { queue, name } = await aBatch(redis)
      .withItems(Array.from({ length: ITEMS }, () => ({ ms: 300 })))
      .maxAttempts(5)
      .closed()
      .create();
    const w = spawnWorker(
      workerEnv(proxy.url, name, fixture('slow'), {
        TASKBATCH_POOL_MODE: 'async',
        TASKBATCH_POOL_SIZE: '2',
        TASKBATCH_PREFETCH_MAX: '1',
        TASKBATCH_LEASE_SECONDS: String(LEASE_SECONDS),
      }),
    );
    workers.push(w);
    const url = await w.httpUrl();
    await waitFor('some progress through the proxy', async () => (await queue.snapshot()).succeeded >= 4);
    await waitFor('the worker to be ready', async () => (await httpGet(`${url}/readyz`)).status === 200);
    const before = proxy.open().map((c) => c.id);
    expect(before.length).toBeGreaterThan(0);

    proxy.freeze();
    await waitFor('/readyz to fail while the connection hangs', async () => (await httpGet(`${url}/readyz`)).status === 503, 20_000);
    await w.waitForLog((l) => l.msg === 'Lease renewals failed; stopped claiming' && l.level === 'warn');
    // The hung connection is given up (its socket closed by the worker), not waited on forever.
    await waitFor('the worker to drop its frozen connection', () => before.every((id) => proxy.connections.find((c) => c.id === id)?.closedByClient), 20_000);

    // Not claiming while it cannot renew: no claim call, not even a failing one, until the thaw.
    const claimCalls = async (): Promise<number> => {
      const text = (await httpGet(`${url}/metrics`)).body;
      return (metricValue(text, 'taskbatch_worker_claim_round_trips_total') ?? 0) + (metricValue(text, 'taskbatch_worker_redis_errors_total', { op: 'claim' }) ?? 0);
    };
    const claimCallsAfterDrop = await claimCalls();

    // The leases of the items it held lapse; requeue them as the operator's sweeper does.
    const reclaimed = await waitFor('the held leases to lapse and be requeued', async () => (await queue.reclaimExpired()).reclaimed || undefined, 20_000);
    expect(reclaimed).toBeGreaterThan(0);
    expect((await httpGet(`${url}/readyz`)).status).toBe(503);
    expect(await claimCalls()).toBe(claimCallsAfterDrop);
    expect((await queue.snapshot()).succeeded).toBeLessThan(ITEMS); // work remains for after the thaw

    proxy.thaw();
    await waitFor('/readyz to pass after the thaw', async () => (await httpGet(`${url}/readyz`)).status === 200, 30_000);
    await w.waitForLog((l) => l.msg === 'Lease renewals succeeded again; resumed claiming' && l.level === 'info');
    // Reconnected on a new connection, opened after the freeze began.
    expect(proxy.open().filter((c) => !before.includes(c.id)).length).toBeGreaterThan(0);

    // The same worker finishes the batch: it claims again, including the requeued items.
    expect(await w.exited).toEqual({ code: 0, signal: null });
    const end = await queue.snapshot();
    expect(end).toMatchObject({ total: ITEMS, succeeded: ITEMS, failed: 0, running: 0, complete: true });
    expect(await redis.hlen(queue.keys.results)).toBe(ITEMS);
    // Its results for the lapsed leases were refused (fenced), not recorded a second time.
    expect(w.logs.some((l) => l.msg === 'Lost the lease of an item; stopped it' || l.msg.startsWith('Discarded results of items whose lease was lost'))).toBe(true);
  } finally {
    redis.disconnect();
    await proxy.close();
    await server.stop();
  }
});
