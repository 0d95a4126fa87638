import { jest } from '@jest/globals';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { startRedisServer, type RedisServer } from '../../localcluster/redis-server.js';
import { aBatch, FIXTURES, spawnWorker, waitFor, workerEnv, type SpawnedWorker } from '../support/worker-harness.js';

// Process mode: a handler's own children (grandchildren of the worker) live in their
// executor's process group and die with it — on a timeout and on the worker's shutdown —
// even when they ignore SIGTERM. A real redis-server, a real worker process.

jest.setTimeout(90_000);

const DISPATCH = JSON.stringify({ module: FIXTURES, dispatch: 'fn' });
let server: RedisServer;
let redis: Redis;
let dir: string;
const workers: SpawnedWorker[] = [];
const grandchildren: number[] = [];

/** The process exists (kill(pid, 0) succeeds). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
}

beforeAll(async () => {
  server = await startRedisServer();
  redis = new Redis(server.port, server.host);
  dir = mkdtempSync(join(tmpdir(), 'tb-pgroup-'));
});
afterAll(async () => {
  for (const w of workers.splice(0)) {
    w.kill('SIGKILL');
    await w.exited;
  }
  // A failed run must not leave `sleep 600` behind.
  for (const pid of grandchildren) if (alive(pid)) process.kill(pid, 'SIGKILL');
  redis.disconnect();
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('a timed-out item and a shutdown kill the processes a handler started, even ones that ignore SIGTERM; the other items run', async () => {
  const pidA = join(dir, 'a.pid');
  const pidB = join(dir, 'b.pid');
  const { queue, name } = await aBatch(redis)
    .withItem('stuck', { fn: 'spawnsStubbornGrandchild', args: [{ pidFile: pidA, hold: true }] })
    .withItems(Array.from({ length: 20 }, (_, i) => ({ fn: 'add', args: [i, 1] })))
    .maxAttempts(1)
    .create();
  const w = spawnWorker(
    workerEnv(server.url, name, DISPATCH, {
      TASKBATCH_POOL_MODE: 'process',
      TASKBATCH_POOL_SIZE: '2',
      TASKBATCH_ITEM_TIMEOUT_SECONDS: '1',
      TASKBATCH_ABORT_GRACE_SECONDS: '0.3',
    }),
  );
  workers.push(w);

  // The stuck item times out; its executor is killed after the grace, and with it the
  // grandchild that ignores SIGTERM (SIGKILLed after the grace).
  const a = await waitFor('the stuck item to start its grandchild', () => grandchildPid(pidA));
  grandchildren.push(a);
  await waitFor('the stuck item to be dead-lettered', async () => (await queue.snapshot()).failed === 1, 30_000);
  const dead = (await queue.deadLetters()).items;
  expect(dead).toEqual([expect.objectContaining({ id: 'stuck', error: expect.objectContaining({ name: 'TimeoutError' }) })]);
  await waitFor(`grandchild ${a} of the timed-out item to be gone`, () => !alive(a), 15_000);
  await waitFor('the other 20 items to succeed', async () => (await queue.snapshot()).succeeded === 20, 30_000);
  expect(await waitFor('the result of item-2', () => queue.result('item-2'))).toMatchObject({ result: 1 }); // add(0, 1): ids count from 2 after 'stuck'

  // An item that leaves a grandchild behind and succeeds: the grandchild lives with its
  // executor, and dies when the worker shuts down.
  await queue.enqueueMany([{ id: 'leaves-one', data: { fn: 'spawnsStubbornGrandchild', args: [{ pidFile: pidB }] } }]);
  const b = await waitFor('the second grandchild', () => grandchildPid(pidB));
  grandchildren.push(b);
  await waitFor('the item that leaves a grandchild to succeed', async () => (await queue.snapshot()).succeeded === 21, 30_000);
  expect(await waitFor('the result of leaves-one', () => queue.result('leaves-one'))).toMatchObject({ result: { pid: b } });
  expect(alive(b)).toBe(true);

  w.kill('SIGTERM');
  expect(await w.exited).toEqual({ code: 0, signal: null });
  await waitFor(`grandchild ${b} to be gone after the worker's shutdown`, () => !alive(b), 15_000);
  expect(await queue.snapshot()).toMatchObject({ total: 22, succeeded: 21, failed: 1, running: 0 });
});

/** The pid the fixture wrote to `file`, once it is there. */
function grandchildPid(file: string): number | undefined {
  try {
    const pid = Number(readFileSync(file, 'utf8').trim());
    return pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

test('a worker that is SIGKILLed takes the processes its handlers started with it (each executor kills its group when its channel closes)', async () => {
  const pidC = join(dir, 'c.pid');
  const { queue, name } = await aBatch(redis)
    .withItem('holds', { fn: 'spawnsStubbornGrandchild', args: [{ pidFile: pidC, hold: true }] })
    .create();
  const w = spawnWorker(workerEnv(server.url, name, DISPATCH, { TASKBATCH_POOL_MODE: 'process', TASKBATCH_POOL_SIZE: '1' }));
  workers.push(w);
  const c = await waitFor('the grandchild', () => grandchildPid(pidC));
  grandchildren.push(c);
  expect((await queue.snapshot()).running).toBe(1);
  expect(alive(c)).toBe(true);
  w.kill('SIGKILL');
  expect(await w.exited).toEqual({ code: null, signal: 'SIGKILL' });
  await waitFor(`grandchild ${c} to be gone after the worker was SIGKILLed`, () => !alive(c), 15_000);
});
