// Charge only what ran (issue 13, item 3): a worker killed by one poison item charges an attempt
// to that item (it started) and to nothing it had merely prefetched. Real redis-server, real
// worker processes; maxAttempts 1, so any charged item is dead-lettered at once and a wrongly
// charged neighbour shows as a second failure.
import { aBatch, fixture, spawnWorker, waitFor, workerEnv, useWorkerRedis } from '../support/worker-harness.js';

const h = useWorkerRedis();

/** One worker killed by the poison item (item-501) of 1,000, then a second that finishes the batch. */
async function killedByPoison(env: Record<string, string>) {
  const items = Array.from({ length: 1000 }, (_, i) => (i === 500 ? { poison: true } : { i }));
  const { queue, name } = await aBatch(h.redis).withItems(items).maxAttempts(1).closed().create();
  const first = spawnWorker(workerEnv(h.server.url, name, fixture('killsWorkerOnPoison'), env));
  h.track(first);
  expect((await first.exited).signal).toBe('SIGKILL');
  // The dead worker still holds the poison item and what it had prefetched, until the leases lapse.
  const held = (await queue.snapshot()).running;
  const second = spawnWorker(workerEnv(h.server.url, name, fixture('killsWorkerOnPoison'), env));
  h.track(second);
  expect((await second.exited).code).toBe(0);
  const done = await queue.snapshot();
  const { items: dead } = await queue.deadLetters('0', 1000);
  return { queue, held, done, dead };
}

test('one poison item among 1,000 kills its worker; only it is dead-lettered, the items the worker had prefetched go back uncharged', async () => {
  // Pool size 1: the poison item is the only one running when the process dies; fast items make
  // the worker prefetch (up to TASKBATCH_PREFETCH_MAX) ahead of it.
  const env = { TASKBATCH_POOL_MODE: 'async', TASKBATCH_POOL_SIZE: '1', TASKBATCH_LEASE_SECONDS: '1', TASKBATCH_PREFETCH_MAX: '64', TASKBATCH_CHARGE_ONLY_STARTED: 'true' };
  const { queue, held, done, dead } = await killedByPoison(env);
  expect(held).toBeGreaterThan(1);
  console.log(`poison item: the killed worker held ${held} leases (1 running, ${held - 1} prefetched)`);
  expect(done).toMatchObject({ total: 1000, succeeded: 999, failed: 1, complete: true });
  expect(done.handedBack).toBe(held - 1);
  expect(dead.map((d) => d.id)).toEqual(['item-501']);
  expect(JSON.stringify(dead[0])).toContain('LeaseExpired');
  await waitFor('no lease left', async () => (await queue.snapshot()).running === 0);
});

test('by default in thread mode, a dead worker is charged only what its executor held (running or pipelined), not its prefetch', async () => {
  // No TASKBATCH_CHARGE_ONLY_STARTED: the default. The poison item SIGKILLs the worker process
  // from its thread. Fast items fill the executor's pipeline (at most 32 deep) and the prefetch.
  const env = { TASKBATCH_POOL_MODE: 'thread', TASKBATCH_POOL_SIZE: '1', TASKBATCH_LEASE_SECONDS: '1', TASKBATCH_PREFETCH_MAX: '256', TASKBATCH_ACK_MAX_ITEMS: '8' };
  const { held, done, dead } = await killedByPoison(env);
  console.log(`poison item, thread mode by default: the killed worker held ${held} leases; ${done.failed} charged and dead-lettered, ${done.handedBack} handed back uncharged`);
  expect(done).toMatchObject({ total: 1000, succeeded: 1000 - done.failed, complete: true });
  expect(dead.map((d) => d.id)).toContain('item-501');
  // Charged: what had started — the poison item, what was pipelined behind it in the one
  // executor (at most 32 deep), and items that had finished but whose acknowledgement had not
  // landed (8 waiting, 8 more in flight at most). Never the prefetch.
  expect(done.failed).toBeLessThanOrEqual(32 + 16);
  expect(done.handedBack).toBe(held - done.failed);
  expect(done.handedBack).toBeGreaterThan(0);
});
