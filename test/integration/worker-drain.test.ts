import { jest } from '@jest/globals';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { listWorkers, requestDrain } from '../../queue/presence.js';
import { startRedisServer, type RedisServer } from '../../localcluster/redis-server.js';
import { aBatch, fixture, spawnWorker, waitFor, workerEnv, type SpawnedWorker } from '../support/worker-harness.js';

// Scale-in keeps its promise (docs/worker.md, "Shutdown, drain and completion"): a worker asked
// to drain stops claiming, hands back what it has not started, and lets its running items
// finish however long they take — far past the shutdown grace, a SIGTERM included — bounded only
// by the item timeout. The worker is a real process against a real redis-server; items run until
// the test creates a marker file, so nothing depends on timing but the grace that must NOT cut
// them short.

jest.setTimeout(60_000);

const GRACE_SECONDS = '0.2';
let server: RedisServer;
let redis: Redis;
let dir: string;
const workers: SpawnedWorker[] = [];

beforeAll(async () => {
  server = await startRedisServer();
  redis = new Redis(server.port, server.host);
  dir = mkdtempSync(join(tmpdir(), 'tb-drain-'));
});
afterEach(async () => {
  for (const w of workers.splice(0)) {
    w.kill('SIGKILL');
    await w.exited;
  }
});
afterAll(async () => {
  redis.disconnect();
  await server.stop();
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** One long item (until `marker` exists) and `more` short ones behind it; one process executor. */
async function drainingWorker(name: string, marker: string, more: number, extra: Record<string, string> = {}) {
  const builder = aBatch(redis, name).withItem('long', { file: marker });
  for (let i = 0; i < more; i++) builder.withItem(`short-${i}`, { file: join(dir, 'exists') });
  const { queue } = await builder.closed().create();
  const id = `pod-${name}`;
  const w = spawnWorker(
    workerEnv(server.url, name, fixture('untilFile'), {
      TASKBATCH_POOL_MODE: 'process',
      TASKBATCH_POOL_SIZE: '1',
      TASKBATCH_SHUTDOWN_GRACE_SECONDS: GRACE_SECONDS,
      TASKBATCH_HEARTBEAT_SECONDS: '0.1',
      TASKBATCH_WORKER_ID: id,
      ...extra,
    }),
  );
  workers.push(w);
  await waitFor('the long item to run', async () => (await listWorkers(queue)).some((x) => x.id === id && x.running === 1));
  return { queue, w, id };
}

beforeAll(() => writeFileSync(join(dir, 'exists'), ''));

test('a drained worker finishes an item running far past the shutdown grace (attempt 1), hands back what it had not started, then exits 0', async () => {
  const marker = join(dir, 'drain-1');
  const { queue, w, id } = await drainingWorker('drain-long', marker, 3);
  const claimed = (await queue.snapshot()).running;
  expect(claimed).toBeGreaterThanOrEqual(1); // the long item, perhaps a prefetched short one

  expect(await requestDrain(queue, id)).toBe(true);
  await w.waitForLog((l) => l.msg === 'Began draining on request');
  // Ten times the shutdown grace: before the fix the item was released after 0.2 s.
  await sleep(2000);
  expect(w.logs.some((l) => /releasing them/.test(l.msg))).toBe(false);
  expect(await queue.snapshot()).toMatchObject({ running: 1, succeeded: 0, pending: 3, retries: 0 });
  expect((await listWorkers(queue)).find((x) => x.id === id)).toMatchObject({ draining: true, running: 1 });

  writeFileSync(marker, '');
  expect(await w.exited).toEqual({ code: 0, signal: null });
  // Nothing ran twice: no retries, and what was handed back had not started (the prefetched ones).
  expect(await queue.snapshot()).toMatchObject({ succeeded: 1, running: 0, pending: 3, failed: 0, retries: 0, handedBack: claimed - 1 });
  expect(await queue.result('long')).toMatchObject({ result: { attempt: 1 } });
  expect(w.logs.find((l) => l.msg === 'Stopped worker')).toMatchObject({ reason: 'drain', exitCode: 0 });
  expect(await listWorkers(queue)).toEqual([]);
});

test('a SIGTERM while draining (the pod deleted) does not cut the item short either', async () => {
  const marker = join(dir, 'drain-2');
  const { queue, w, id } = await drainingWorker('drain-sigterm', marker, 1);
  expect(await requestDrain(queue, id)).toBe(true);
  await w.waitForLog((l) => l.msg === 'Began draining on request');
  w.kill('SIGTERM');
  await w.waitForLog((l) => l.msg === 'Received a signal while draining; finishing the items in hand');
  await sleep(2000);
  expect(await queue.snapshot()).toMatchObject({ running: 1, succeeded: 0, retries: 0 });

  writeFileSync(marker, '');
  expect(await w.exited).toEqual({ code: 0, signal: null });
  expect(await queue.snapshot()).toMatchObject({ succeeded: 1, running: 0, pending: 1, failed: 0, retries: 0 });
  expect(await queue.result('long')).toMatchObject({ result: { attempt: 1 } });
});

test('the item timeout bounds a drain: an item that never ends times out (a failed attempt, retried), then the worker exits 0', async () => {
  const { queue, w, id } = await drainingWorker('drain-timeout', join(dir, 'never'), 0, { TASKBATCH_ITEM_TIMEOUT_SECONDS: '3' });
  expect(await requestDrain(queue, id)).toBe(true);
  expect(await w.exited).toEqual({ code: 0, signal: null });
  expect(await queue.snapshot()).toMatchObject({ succeeded: 0, running: 0, failed: 0, retries: 1 });
  expect(w.logs.some((l) => l.msg === 'Item timed out')).toBe(true);
});
