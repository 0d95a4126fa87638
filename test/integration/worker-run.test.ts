import { jest } from '@jest/globals';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { heartbeat, listWorkers, requestDrain } from '../../queue/presence.js';
import { freePort } from '../../localcluster/ports.js';
import { aBatch, BAD_FIXTURE, FIXTURES, fixture, httpGet, metricValue, spawnWorker, useWorkerRedis, waitFor, workerEnv, type SpawnedWorker } from '../support/worker-harness.js';

// The worker as a process (node dist/worker/main.js) against a real redis-server: every
// test asserts on counts in Redis and on what the process did (exit code, logs, metrics).

jest.setTimeout(60_000);

const DISPATCH = JSON.stringify({ module: FIXTURES, dispatch: 'fn' });
const h = useWorkerRedis();

function start(batch: string, handler: string, extra: Record<string, string> = {}): SpawnedWorker {
  const w = spawnWorker(workerEnv(h.server.url, batch, handler, extra));
  h.track(w);
  return w;
}

test('completes a batch: counts, results, metrics, health, presence; exits 0 when the batch is complete', async () => {
  const { queue, name } = await aBatch(h.redis)
    .withItems(Array.from({ length: 50 }, (_, i) => ({ n: i })))
    .create();
  const w = start(name, fixture('ok'), { TASKBATCH_POOL_MODE: 'thread', TASKBATCH_POOL_SIZE: '2' });
  const url = await w.httpUrl();
  await waitFor('50 items succeeded', async () => (await queue.snapshot()).succeeded === 50);
  const metrics = (await httpGet(`${url}/metrics`)).body;
  expect(metricValue(metrics, 'taskbatch_worker_items_total', { outcome: 'succeeded', mode: 'thread', batch: name })).toBe(50);
  expect(metricValue(metrics, 'taskbatch_worker_claim_round_trips_total')).toBeGreaterThan(0);
  expect(metricValue(metrics, 'taskbatch_worker_item_duration_seconds_count', { outcome: 'succeeded' })).toBe(50);
  expect(metricValue(metrics, 'taskbatch_worker_pool_size')).toBe(2);
  expect((await httpGet(`${url}/healthz`)).status).toBe(200);
  expect((await httpGet(`${url}/readyz`)).status).toBe(200);
  const live = await listWorkers(queue);
  expect(live).toEqual([expect.objectContaining({ mode: 'thread', capacity: 2, draining: false })]);
  expect(await queue.result('item-7')).toMatchObject({ result: { echo: { n: 6 }, attempt: 1, id: 'item-7' } });

  await queue.close();
  expect(await w.exited).toEqual({ code: 0, signal: null });
  expect(await queue.snapshot()).toMatchObject({ total: 50, succeeded: 50, running: 0, pending: 0, complete: true });
  expect(await listWorkers(queue)).toEqual([]);
  expect(w.logs.some((l) => l.msg === 'Batch is complete')).toBe(true);
});

test('retries failures per the batch policy and dead-letters non-retryable ones', async () => {
  const { queue, name } = await aBatch(h.redis)
    .withItems([1, 2, 3].map(() => ({ fn: 'failsUntilAttempt', args: [{ okOnAttempt: 2 }] })))
    .withItem('fatal', { fn: 'nonRetryable' })
    .maxAttempts(3)
    .closed()
    .create();
  const w = start(name, DISPATCH, { TASKBATCH_POOL_MODE: 'process', TASKBATCH_POOL_SIZE: '2' });
  expect((await w.exited).code).toBe(0);
  expect(await queue.snapshot()).toMatchObject({ total: 4, succeeded: 3, failed: 1, retries: 3, complete: true });
  const dead = (await queue.deadLetters()).items;
  expect(dead).toEqual([expect.objectContaining({ id: 'fatal', attempts: 1, error: expect.objectContaining({ message: 'bad input' }) })]);
});

describe.each(['thread', 'process', 'async'] as const)('%s mode', (mode) => {
  test('an item that exceeds its timeout is failed as timed out and retried; the rest of the batch goes on', async () => {
    const stuck = mode === 'async' ? { fn: 'slowUntilAttempt', args: [{ okOnAttempt: 2, ms: 60_000 }] } : { fn: 'hangsUntilAttempt', args: [{ okOnAttempt: 2 }] };
    const { queue, name } = await aBatch(h.redis)
      .withItem('stuck', stuck)
      .withItems([1, 2, 3, 4].map((n) => ({ fn: 'add', args: [n, 1] })))
      .maxAttempts(2)
      .closed()
      .create();
    const w = start(name, DISPATCH, { TASKBATCH_POOL_MODE: mode, TASKBATCH_POOL_SIZE: '2', TASKBATCH_ITEM_TIMEOUT_SECONDS: '0.5', TASKBATCH_ABORT_GRACE_SECONDS: '0.2' });
    expect((await w.exited).code).toBe(0);
    expect(await queue.snapshot()).toMatchObject({ total: 5, succeeded: 5, failed: 0, retries: 1 });
    expect(await queue.result('stuck')).toMatchObject({ result: { attempt: 2 } });
    const timedOut = w.logs.find((l) => l.msg === 'Item timed out');
    expect(timedOut).toMatchObject({ item: 'stuck', attempt: 1, error: { name: 'TimeoutError' } });
    if (mode !== 'async') expect(w.logs.some((l) => l.msg === 'Replaced an executor' && l.reason === 'timeout')).toBe(true);
  });

  if (mode !== 'async') {
    test('a CPU-bound item longer than the lease keeps its lease (renewed from the main thread)', async () => {
      const { queue, name } = await aBatch(h.redis).withItem('cpu', { ms: 2500 }).closed().create();
      const w = start(name, fixture('cpu'), { TASKBATCH_POOL_MODE: mode, TASKBATCH_POOL_SIZE: '1', TASKBATCH_LEASE_SECONDS: '0.6' });
      expect((await w.exited).code).toBe(0);
      expect(await queue.snapshot()).toMatchObject({ succeeded: 1, retries: 0 });
      expect(w.logs.some((l) => l.msg.startsWith('Lost the lease'))).toBe(false);
    });
  }
});

test('async mode: a handler that blocks the event loop gets the worker killed by its watchdog; another worker finishes the item', async () => {
  const { queue, name } = await aBatch(h.redis)
    .withItem('blocker', { fn: 'hangsUntilAttempt', args: [{ okOnAttempt: 2 }] })
    .closed()
    .create();
  const env = { TASKBATCH_POOL_MODE: 'async', TASKBATCH_ITEM_TIMEOUT_SECONDS: '0.5', TASKBATCH_LEASE_SECONDS: '1' };
  const a = start(name, DISPATCH, env);
  expect(await a.exited).toEqual({ code: null, signal: 'SIGKILL' });
  expect(a.stderr()).toMatch(/Killed the worker: its event loop was blocked/);
  const b = start(name, DISPATCH, env);
  expect((await b.exited).code).toBe(0);
  expect(await queue.snapshot()).toMatchObject({ succeeded: 1, retries: 1 });
  expect(await queue.result('blocker')).toMatchObject({ result: { attempt: 2 } });
});

test('kill -9 of a worker mid-item: another worker completes the item after the lease lapses', async () => {
  const { queue, name } = await aBatch(h.redis).withItem('long', { ms: 1500 }).closed().create();
  const env = { TASKBATCH_POOL_MODE: 'thread', TASKBATCH_POOL_SIZE: '1', TASKBATCH_LEASE_SECONDS: '1' };
  const a = start(name, fixture('slow'), env);
  await waitFor('the item to run', async () => (await queue.snapshot()).running === 1);
  a.kill('SIGKILL');
  await a.exited;
  const b = start(name, fixture('slow'), env);
  expect((await b.exited).code).toBe(0);
  expect(await queue.snapshot()).toMatchObject({ succeeded: 1, failed: 0, retries: 1, complete: true });
});

test("a stalled worker's late result is rejected (fencing): the item is recorded once", async () => {
  const { queue, name } = await aBatch(h.redis).withItem('contested', { ms: 2000 }).create();
  // Two workers side by side on one port, on different loopback addresses (as pods on the test node).
  const port = String(await freePort('127.0.0.2'));
  const env = { TASKBATCH_POOL_MODE: 'thread', TASKBATCH_POOL_SIZE: '1', TASKBATCH_LEASE_SECONDS: '1', TASKBATCH_WATCHDOG_SECONDS: '0', TASKBATCH_METRICS_PORT: port };
  const a = start(name, fixture('slow'), { ...env, TASKBATCH_METRICS_ADDR: '127.0.0.2' });
  await waitFor('A to run the item', async () => (await queue.snapshot()).running === 1);
  a.kill('SIGSTOP');
  await new Promise((r) => setTimeout(r, 1300)); // A's lease lapses
  const b = start(name, fixture('slow'), { ...env, TASKBATCH_METRICS_ADDR: '127.0.0.3' });
  await waitFor('B to reclaim the item', () => b.logs.some((l) => l.msg === 'Started worker') && queue.snapshot().then((s) => s.running === 1 && s.retries === 1));
  expect(await b.httpUrl()).toBe(`http://127.0.0.3:${port}`);
  expect((await httpGet(`${await b.httpUrl()}/healthz`)).status).toBe(200);
  a.kill('SIGCONT');
  expect((await httpGet(`${await a.httpUrl()}/healthz`)).status).toBe(200);
  // A finds out: its renewal reports the lease lost, or its completion is rejected.
  await a.waitForLog((l) => l.msg.startsWith('Lost the lease') || l.msg.startsWith('Discarded results'));
  await waitFor('B to finish', async () => (await queue.snapshot()).succeeded === 1);
  await queue.close();
  expect((await a.exited).code).toBe(0);
  expect((await b.exited).code).toBe(0);
  expect(await queue.snapshot()).toMatchObject({ total: 1, succeeded: 1, failed: 0, running: 0 });
});

test('a lease lost while running aborts the item; it is then run again', async () => {
  const { queue, name } = await aBatch(h.redis).withItem('fenced', { ms: 1500 }).closed().create();
  const w = start(name, fixture('slow'), { TASKBATCH_POOL_MODE: 'process', TASKBATCH_POOL_SIZE: '1', TASKBATCH_LEASE_SECONDS: '0.9' });
  await waitFor('the item to run', async () => (await queue.snapshot()).running === 1);
  // Expire the lease behind the worker's back and let the sweeper requeue it.
  // The worker renews every 0.3 s and may move the score back between the two calls: try again then.
  const [member] = await h.redis.zrange(queue.keys.running, 0, 0);
  await waitFor('the lease to be reclaimed', async () => {
    await h.redis.zadd(queue.keys.running, 'XX', 1, member as string);
    return (await queue.reclaimExpired()).reclaimed === 1;
  });
  await w.waitForLog((l) => l.msg.startsWith('Lost the lease'));
  expect((await w.exited).code).toBe(0);
  expect(await queue.snapshot()).toMatchObject({ succeeded: 1, retries: 1 });
  const metricsLine = w.logs.find((l) => l.msg.startsWith('Lost the lease'));
  expect(metricsLine).toMatchObject({ item: 'fenced', attempt: 1 });
});

test('SIGTERM: running items finish within the grace, unstarted ones are released; exit 0', async () => {
  const { queue, name } = await aBatch(h.redis)
    .withItems(Array.from({ length: 6 }, () => ({ ms: 700 })))
    .closed()
    .create();
  const w = start(name, fixture('slow'), { TASKBATCH_POOL_MODE: 'thread', TASKBATCH_POOL_SIZE: '2', TASKBATCH_SHUTDOWN_GRACE_SECONDS: '5' });
  await waitFor('two items to run', () => w.logs.some((l) => l.msg === 'Started worker') && queue.snapshot().then((s) => s.running >= 2));
  await new Promise((r) => setTimeout(r, 100));
  w.kill('SIGTERM');
  const t0 = Date.now();
  expect(await w.exited).toEqual({ code: 0, signal: null });
  expect(Date.now() - t0).toBeLessThan(3000);
  const s = await queue.snapshot();
  expect(s).toMatchObject({ total: 6, succeeded: 2, running: 0, pending: 4, failed: 0, retries: 0 });
  expect(await h.redis.hlen(queue.keys.att)).toBe(0); // released items keep their attempt count
});

test('SIGTERM: items still running after the grace are released, not failed; a second signal exits at once', async () => {
  const { queue, name } = await aBatch(h.redis)
    .withItems([{ ms: 30_000 }])
    .closed()
    .create();
  const w = start(name, fixture('slow'), { TASKBATCH_POOL_MODE: 'process', TASKBATCH_POOL_SIZE: '1', TASKBATCH_SHUTDOWN_GRACE_SECONDS: '0.3' });
  await waitFor('the item to run', async () => (await queue.snapshot()).running === 1);
  w.kill('SIGTERM');
  expect(await w.exited).toEqual({ code: 0, signal: null });
  expect(await queue.snapshot()).toMatchObject({ pending: 1, running: 0, failed: 0, retries: 0, handedBack: 1 });

  const w2 = start(name, fixture('slow'), { TASKBATCH_POOL_MODE: 'process', TASKBATCH_POOL_SIZE: '1', TASKBATCH_SHUTDOWN_GRACE_SECONDS: '60' });
  await waitFor('the item to run again', async () => (await queue.snapshot()).running === 1);
  w2.kill('SIGTERM');
  await w2.waitForLog((l) => l.msg === 'Began graceful shutdown');
  const t0 = Date.now();
  w2.kill('SIGTERM');
  expect((await w2.exited).code).toBe(143);
  expect(Date.now() - t0).toBeLessThan(2000);
});

test('presence: the registry lists live workers; a drain request stops claiming and lets running items finish; stale entries are pruned', async () => {
  const marker = join(mkdtempSync(join(tmpdir(), 'tb-presence-')), 'done');
  const { queue, name } = await aBatch(h.redis)
    .withItems(Array.from({ length: 4 }, () => ({ file: marker })))
    .closed()
    .create();
  const w = start(name, fixture('untilFile'), {
    TASKBATCH_POOL_MODE: 'async',
    TASKBATCH_POOL_SIZE: '2',
    TASKBATCH_SHUTDOWN_GRACE_SECONDS: '0.2',
    TASKBATCH_HEARTBEAT_SECONDS: '0.1',
    TASKBATCH_WORKER_ID: `pod-${name}`,
    POD_IP: '127.0.0.9',
  });
  const entry = await waitFor('the worker to report 2 running items', async () => (await listWorkers(queue)).find((x) => x.running === 2));
  expect(entry).toMatchObject({ id: `pod-${name}`, mode: 'async', capacity: 2, podIp: '127.0.0.9', draining: false, drainRequested: false });
  expect(entry.inflight).toBeGreaterThanOrEqual(2);
  expect(entry.ageMs).toBeLessThan(2000);

  // A ghost that stopped heartbeating disappears (the live worker beats every 100 ms).
  await heartbeat(queue, 'ghost', { inflight: 1, running: 1, capacity: 1, mode: 'thread', draining: false, startedAt: 0 });
  await new Promise((r) => setTimeout(r, 1000));
  expect((await listWorkers(queue, { staleMs: 700 })).map((x) => x.id)).toEqual([`pod-${name}`]);
  expect(await h.redis.hexists(queue.keys.workers, 'ghost')).toBe(0);

  expect(await requestDrain(queue, `pod-${name}`)).toBe(true);
  await w.waitForLog((l) => l.msg === 'Received a drain request');
  writeFileSync(marker, ''); // the two running items may end now; the unstarted two were handed back
  expect(await w.exited).toEqual({ code: 0, signal: null });
  expect(await queue.snapshot()).toMatchObject({ succeeded: 2, pending: 2, running: 0, retries: 0, failed: 0, handedBack: 2 });
  expect(await listWorkers(queue)).toEqual([]);
  expect(await h.redis.scard(queue.keys.drain)).toBe(0);
});

test('a handler that cannot be loaded: exit 3, nothing claimed', async () => {
  const { queue, name } = await aBatch(h.redis).withItems([1, 2]).closed().create();
  const w = start(name, JSON.stringify({ module: BAD_FIXTURE }), { TASKBATCH_POOL_MODE: 'thread', TASKBATCH_POOL_SIZE: '2' });
  expect((await w.exited).code).toBe(3);
  expect(w.logs.some((l) => l.msg === 'Failed to start the executors' && /this module cannot be loaded/.test(JSON.stringify(l.error)))).toBe(true);
  expect(await queue.snapshot()).toMatchObject({ pending: 2, running: 0, retries: 0 });
});

test('invalid configuration: exit 2, naming each variable', async () => {
  const w = spawnWorker({ TASKBATCH_REDIS_URL: h.server.url, TASKBATCH_POOL_SIZE: 'lots' });
  h.track(w);
  expect((await w.exited).code).toBe(2);
  expect(w.stderr()).toMatch(/TASKBATCH_BATCH \(--batch\) is required/);
  expect(w.stderr()).toMatch(/TASKBATCH_POOL_SIZE \(--pool-size\) must be an integer from 1 to 1024, got "lots"/);
  expect(w.stderr()).toMatch(/TASKBATCH_HANDLER \(--handler\) is required/);
});

test('a batch that does not exist: the worker waits (not ready), then exits 4', async () => {
  const w = start('never-created', fixture('ok'), { TASKBATCH_STATE_LOST_EXIT_SECONDS: '1' });
  const url = await w.httpUrl();
  expect((await httpGet(`${url}/readyz`)).status).toBe(503);
  expect((await w.exited).code).toBe(4);
  expect(w.logs.some((l) => l.msg === 'Waiting for the batch state in Redis')).toBe(true);
});
