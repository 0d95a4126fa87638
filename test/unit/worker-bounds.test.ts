import { ConfigError, loadConfig } from '../../worker/config.js';
import { boundLogFields, boundLogMessage, LOG_FIELDS_MAX, LogBudget } from '../../worker/handler/log-budget.js';
import { limitResult } from '../../worker/handler/result-limit.js';
import { ManualClock } from '../support/manual-clock.js';

const base = { TASKBATCH_REDIS_URL: 'redis://127.0.0.1:6379', TASKBATCH_BATCH: 'demo', TASKBATCH_HANDLER: 'noop' };

function problems(env: Record<string, string>): string[] {
  try {
    loadConfig({ ...base, ...env });
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

describe('LogBudget (per-item handler log lines)', () => {
  test('lets a burst through, then the rate; counts what it refuses', () => {
    const clock = new ManualClock();
    const b = new LogBudget({ linesPerSecond: 10, burst: 5 }, () => clock.now());
    const taken = (n: number): number => Array.from({ length: n }, () => b.take()).filter(Boolean).length;
    expect(taken(8)).toBe(5);
    expect(b.dropped).toBe(3);
    clock.advance(250); // 2.5 lines' worth
    expect(taken(4)).toBe(2);
    clock.advance(60_000); // refills up to the burst, no further
    expect(taken(10)).toBe(5);
    expect(b.dropped).toBe(3 + 2 + 5);
  });

  test('a rate of 0 means no limit', () => {
    const b = new LogBudget({ linesPerSecond: 0, burst: 1 }, () => 0);
    expect(Array.from({ length: 1000 }, () => b.take()).every(Boolean)).toBe(true);
    expect(b.dropped).toBe(0);
  });
});

describe('one handler log line is bounded', () => {
  test('messages are cut to 16,384 code units without splitting a surrogate pair', () => {
    expect(boundLogMessage('short')).toBe('short');
    const cut = boundLogMessage('m'.repeat(100_000));
    expect(cut).toHaveLength(16_384);
    expect(cut.endsWith('… [truncated]')).toBe(true);
    // A pair straddling the cut is dropped whole, not halved (compared by length: a failure here
    // should not print 16 KiB).
    const keep = 16_384 - '… [truncated]'.length - 1;
    const straddling = boundLogMessage(`${'m'.repeat(keep)}😀${'m'.repeat(100)}`);
    expect(straddling.length).toBe(keep + '… [truncated]'.length);
    expect(straddling.endsWith(`m… [truncated]`)).toBe(true);
  });

  test('fields over the bound are replaced by a note of their size; within it, copied or passed through', () => {
    const small = { a: 1, nested: { b: 'x' } };
    expect(boundLogFields(small, false)).toBe(small);
    const copied = boundLogFields(small, true);
    expect(copied).toEqual(small);
    expect(copied).not.toBe(small);
    expect(boundLogFields({ blob: 'b'.repeat(LOG_FIELDS_MAX) }, true)).toEqual({ fieldsTruncated: `${LOG_FIELDS_MAX + 11} characters of JSON, over the ${LOG_FIELDS_MAX} limit` });
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(boundLogFields(cyclic, true)).toEqual({ fields: '[unserializable]' });
  });
});

describe('limitResult (the executors’ result size check)', () => {
  const ok = (json: string | undefined) => ({ ok: true as const, json, ms: 3 });

  test('passes results within the limit and failures untouched', () => {
    expect(limitResult(ok('"abc"'), 'i', 5, 'thread executor')).toEqual(ok('"abc"'));
    expect(limitResult(ok(undefined), 'i', 5, 'thread executor')).toEqual(ok(undefined));
    const failed = { ok: false as const, error: { name: 'E', message: 'm' }, retryable: true, ms: 1 };
    expect(limitResult(failed, 'i', 1, 'process executor')).toBe(failed);
  });

  test('counts UTF-8 bytes, not UTF-16 code units', () => {
    // 4 code units, 8 bytes: within a limit of 8, over a limit of 7.
    expect(limitResult(ok('éééé'), 'i', 8, 'async executor').ok).toBe(true);
    expect(limitResult(ok('éééé'), 'i', 7, 'async executor').ok).toBe(false);
  });

  test('an oversized result becomes a non-retryable ResultTooLarge naming the item, size, limit, setting and where it was refused', () => {
    const r = limitResult(ok(`"${'x'.repeat(998)}"`), 'item-7', 100, 'process executor');
    expect(r).toEqual({ ok: false, retryable: false, ms: 3, error: { name: 'ResultTooLarge', message: expect.any(String) } });
    const message = r.ok ? '' : r.error.message;
    expect(message).toContain('item "item-7"');
    expect(message).toContain('1000 bytes of JSON, over the limit of 100 bytes (TASKBATCH_MAX_RESULT_BYTES)');
    expect(message).toContain('refused in the process executor');
  });
});

describe('worker settings for bounds', () => {
  test('defaults: 8 MiB claims, 1 MiB results, 100 handler log lines/s after a burst of 1000', () => {
    expect(loadConfig(base)).toMatchObject({ claimMaxBytes: 8 * 1024 * 1024, maxResultBytes: 1024 * 1024, handlerLog: { linesPerSecond: 100, burst: 1000 } });
  });

  test('overrides are read and invalid values named with their bounds', () => {
    expect(
      loadConfig({
        ...base,
        TASKBATCH_CLAIM_MAX_BYTES: '4194304',
        TASKBATCH_MAX_RESULT_BYTES: '2048',
        TASKBATCH_HANDLER_LOG_LINES_PER_SECOND: '0',
        TASKBATCH_HANDLER_LOG_BURST: '7',
      }),
    ).toMatchObject({ claimMaxBytes: 4_194_304, maxResultBytes: 2048, handlerLog: { linesPerSecond: 0, burst: 7 } });
    expect(problems({ TASKBATCH_CLAIM_MAX_BYTES: '8MiB', TASKBATCH_MAX_RESULT_BYTES: '0', TASKBATCH_HANDLER_LOG_BURST: '0', TASKBATCH_HANDLER_LOG_LINES_PER_SECOND: '-1' })).toEqual([
      'TASKBATCH_CLAIM_MAX_BYTES (--claim-max-bytes) must be an integer from 1024 to 536870912, got "8MiB"',
      'TASKBATCH_MAX_RESULT_BYTES (--max-result-bytes) must be an integer from 16 to 67108864, got "0"',
      'TASKBATCH_HANDLER_LOG_LINES_PER_SECOND (--handler-log-lines-per-second) must be an integer from 0 to 1000000, got "-1"',
      'TASKBATCH_HANDLER_LOG_BURST (--handler-log-burst) must be an integer from 1 to 1000000, got "0"',
    ]);
  });
});
