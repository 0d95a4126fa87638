import { jest } from '@jest/globals';
import { ERROR_NAME_MAX } from '../../worker/handler/error-info.js';
import { aBatch, FIXTURES, spawnWorker, waitFor, workerEnv, useWorkerRedis } from '../support/worker-harness.js';

// Async mode against a real redis-server: handlers that throw values which are not Errors,
// or break when read, fail their items with the attempt counted (retried, then
// dead-lettered); the worker keeps its one slot and finishes the batch.

jest.setTimeout(120_000);

const DISPATCH = JSON.stringify({ module: FIXTURES, dispatch: 'fn' });
const KINDS = ['nullProtoMessage', 'null', 'undefined', 'symbol', 'bigint', 'proxy', 'throwingGetters', 'throwingToString', 'circularCause', 'longName'];
const MAX_ATTEMPTS = 3;

const h = useWorkerRedis();

test('items that throw nasty values are retried and dead-lettered with attempts counted; the others succeed on a pool of one', async () => {
  const builder = aBatch(h.redis).maxAttempts(MAX_ATTEMPTS);
  // Nasty items first: on a pool of one, a leaked slot would stop every item behind them.
  for (const kind of KINDS) {
    builder.withItem(`sync-${kind}`, { fn: 'throwsNasty', args: [{ kind }] });
    builder.withItem(`async-${kind}`, { fn: 'throwsNasty', args: [{ kind, async: true }] });
  }
  const good = 20;
  builder.withItems(
    Array.from({ length: good }, (_, i) => ({ fn: 'ok', args: [{ n: i }] })),
    'good',
  );
  const { queue, name } = await builder.closed().create();
  const nasty = KINDS.length * 2;

  const w = spawnWorker(workerEnv(h.server.url, name, DISPATCH, { TASKBATCH_POOL_MODE: 'async', TASKBATCH_POOL_SIZE: '1' }));
  h.track(w);
  // Bounded so a hot loop (the item handed back without an attempt, forever) fails here, not at the jest timeout.
  await waitFor('the batch to complete', async () => (await queue.snapshot()).complete, 60_000, 100).catch(async (err: unknown) => {
    throw new Error(`${(err as Error).message}; snapshot ${JSON.stringify(await queue.snapshot())}; stderr: ${w.stderr().slice(-2000)}`);
  });
  expect(await w.exited).toEqual({ code: 0, signal: null });

  expect(await queue.snapshot()).toMatchObject({ total: nasty + good, succeeded: good, failed: nasty, retries: nasty * (MAX_ATTEMPTS - 1), running: 0, pending: 0, complete: true });
  const dead = (await queue.deadLetters('0', 1000)).items;
  expect(dead.map((d) => d.id).sort()).toEqual(KINDS.flatMap((k) => [`sync-${k}`, `async-${k}`]).sort());
  for (const d of dead) {
    expect(d.attempts).toBe(MAX_ATTEMPTS);
    expect(d.error).toEqual(expect.objectContaining({ name: expect.any(String), message: expect.any(String) }));
    expect(d.error.name.length).toBeLessThanOrEqual(ERROR_NAME_MAX);
  }
  const byId = new Map(dead.map((d) => [d.id, d.error]));
  expect(byId.get('sync-nullProtoMessage')).toMatchObject({ name: 'Error', message: '{}' });
  expect(byId.get('async-symbol')).toMatchObject({ name: 'Error', message: 'non-error value thrown: Symbol(nasty)' });
  expect(byId.get('sync-bigint')).toMatchObject({ message: `non-error value thrown: ${10n ** 30n}n` });
  expect(byId.get('async-circularCause')).toMatchObject({ name: 'Error', message: 'loop' });
  expect(byId.get('sync-longName')).toMatchObject({ message: 'named at length' });
  expect(await queue.result(`good-${nasty + good}`)).toMatchObject({ result: { echo: { n: 19 } } });
  expect(w.logs.some((l) => l.msg === 'Batch is complete')).toBe(true);
});
