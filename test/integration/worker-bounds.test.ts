import { jest } from '@jest/globals';
import { aBatch, FIXTURES, httpGet, metricValue, spawnWorker, waitFor, workerEnv, useWorkerRedis } from '../support/worker-harness.js';

// Bounds on what crosses from a handler to the worker (issue 13, item 6), per pool mode on a
// real redis-server with a real worker process: an oversized result is refused in the executor
// that ran the handler (the error says which), and a handler's log lines are rate-limited per
// item, the rest dropped, counted in one summary line and a metric; a line's message and fields
// are cut to 16,384 characters each.

jest.setTimeout(180_000);

const DISPATCH = JSON.stringify({ module: FIXTURES, dispatch: 'fn' });
const MODES = ['thread', 'process', 'async'] as const;

const h = useWorkerRedis();

test.each(MODES)('%s mode: an over-limit result fails its item with ResultTooLarge, refused in the executor; the worker carries on', async (mode) => {
  const good = 5;
  const { queue, name } = await aBatch(h.redis)
    .withItem('big', { fn: 'bigResult', args: [{ chars: 5000 }] })
    .withItems(
      Array.from({ length: good }, (_, i) => ({ fn: 'ok', args: [{ n: i }] })),
      'good',
    )
    .closed()
    .create();
  const w = spawnWorker(workerEnv(h.server.url, name, DISPATCH, { TASKBATCH_POOL_MODE: mode, TASKBATCH_POOL_SIZE: '1', TASKBATCH_MAX_RESULT_BYTES: '1000' }));
  h.track(w);
  await waitFor('the batch to complete', async () => (await queue.snapshot()).complete, 60_000, 100);
  expect(await w.exited).toEqual({ code: 0, signal: null });

  // Not retried (the same result would be as large), the good items behind it on the same executor ran.
  expect(await queue.snapshot()).toMatchObject({ total: 1 + good, succeeded: good, failed: 1, retries: 0 });
  const dead = await queue.deadLetter('big');
  expect(dead?.attempts).toBe(1);
  expect(dead?.error.name).toBe('ResultTooLarge');
  expect(dead?.error.message).toContain('item "big": its result is 5002 bytes of JSON, over the limit of 1000 bytes (TASKBATCH_MAX_RESULT_BYTES)');
  // Where it was refused: the executor that ran the handler, not the worker's main thread.
  expect(dead?.error.message).toContain(`refused in the ${mode} executor before it was sent on`);
  expect(w.logs.filter((l) => l.msg === 'Replaced an executor')).toEqual([]);
  expect(w.logs.find((l) => l.msg === 'Item failed')).toMatchObject({ item: 'big', retryable: false, error: { name: 'ResultTooLarge' } });
});

test.each(MODES)('%s mode: a handler writing 100,000 log lines gets its burst and rate; the rest are dropped, summarised once and counted', async (mode) => {
  const lines = 100_000;
  const { queue, name } = await aBatch(h.redis)
    .withItem('chatty', { fn: 'chatty', args: [{ lines, huge: 1024 * 1024 }] })
    .create(); // not closed: the worker stays up for its metrics to be read
  const w = spawnWorker(
    workerEnv(h.server.url, name, DISPATCH, { TASKBATCH_POOL_MODE: mode, TASKBATCH_POOL_SIZE: '1', TASKBATCH_HANDLER_LOG_LINES_PER_SECOND: '1', TASKBATCH_HANDLER_LOG_BURST: '100' }),
  );
  h.track(w);
  const summary = await w.waitForLog((l) => l.msg === 'Dropped handler log lines over the rate limit', 60_000);
  await waitFor('the item to succeed', async () => (await queue.snapshot()).succeeded === 1, 30_000);

  const chatted = w.logs.filter((l) => l.msg.startsWith('Chatted') && l.source === 'handler');
  const written = chatted.length;
  // The first line's 1 MiB message and field were cut in the executor.
  expect(chatted[0]?.msg).toHaveLength(16_384);
  expect(chatted[0]?.msg.endsWith('… [truncated]')).toBe(true);
  expect(chatted[0]).toMatchObject({ fieldsTruncated: expect.stringMatching(/^\d+ characters of JSON, over the 16384 limit$/) });
  expect(chatted[0]?.blob).toBeUndefined();
  const dropped = summary.dropped as number;
  expect(summary).toMatchObject({ level: 'warn', item: 'chatty', attempt: 1, linesPerSecond: 1, burst: 100 });
  // Every line is accounted for: written or dropped. The burst got through; at 1 line/s, only a
  // run of over 15 minutes could let 1,000 more through.
  expect(written + dropped).toBe(lines);
  expect(written).toBeGreaterThanOrEqual(100);
  expect(dropped).toBeGreaterThan(lines - 1100);
  expect(w.logs.filter((l) => l.msg === 'Dropped handler log lines over the rate limit')).toHaveLength(1);
  expect(await queue.result('chatty')).toMatchObject({ result: { lines } });

  const metrics = await httpGet(`${await w.httpUrl()}/metrics`);
  expect(metricValue(metrics.body, 'taskbatch_worker_handler_log_lines_dropped_total')).toBe(dropped);
  w.kill('SIGTERM');
  expect(await w.exited).toEqual({ code: 0, signal: null });
});
