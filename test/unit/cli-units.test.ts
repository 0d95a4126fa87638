import { exitCodeFor } from '../../cli/main.js';
import { age, EXIT, formatTable, parseDurationMs, truncate, UsageError } from '../../cli/common.js';
import { BatchClosedError, BatchStateLostError, InvalidArgumentError, ProtocolVersionError } from '../../queue/errors.js';
import { BatchNotFoundError, CallTimeoutError, ConnectionError, ForbiddenError, NotOpenError, PortForwardError, TaskBatchError, WaitTimeoutError } from '../../sdk/errors.js';

test('durations', () => {
  expect(parseDurationMs('1500ms', '--x')).toBe(1500);
  expect(parseDurationMs('30s', '--x')).toBe(30_000);
  expect(parseDurationMs('2.5m', '--x')).toBe(150_000);
  expect(parseDurationMs('1h', '--x')).toBe(3_600_000);
  expect(parseDurationMs('2d', '--x')).toBe(172_800_000);
  expect(parseDurationMs('45', '--x')).toBe(45_000);
  expect(() => parseDurationMs('soon', '--timeout')).toThrow(UsageError);
  expect(() => parseDurationMs('-1s', '--timeout')).toThrow(/--timeout "-1s" is not a duration/);
});

test('kubectl-style tables and ages', () => {
  expect(
    formatTable(
      ['NAME', 'STATUS', 'AGE'],
      [
        ['a-long-name', 'Running', '5m'],
        ['b', 'Complete', '2d'],
      ],
    ),
  ).toBe('NAME          STATUS     AGE\na-long-name   Running    5m\nb             Complete   2d\n');
  const now = Date.parse('2025-06-01T12:00:00Z');
  expect(age('2025-06-01T11:59:15Z', now)).toBe('45s');
  expect(age('2025-06-01T11:48:00Z', now)).toBe('12m');
  expect(age('2025-06-01T09:00:00Z', now)).toBe('3h');
  expect(age('2025-05-27T12:00:00Z', now)).toBe('5d');
  expect(age(undefined, now)).toBe('<unknown>');
  expect(truncate('a\n  b', 10)).toBe('a b');
  expect(truncate('abcdefghijk', 5)).toBe('abcd…');
});

test.each([
  [new UsageError('x'), EXIT.usage],
  [new TaskBatchError('Usage', 'x'), EXIT.usage],
  [new NotOpenError('x'), EXIT.usage],
  [new InvalidArgumentError('x'), EXIT.usage],
  [new BatchClosedError('x'), EXIT.usage],
  [new BatchNotFoundError('x'), EXIT.notFound],
  [new BatchStateLostError('x'), EXIT.notFound],
  [Object.assign(new Error('file missing'), { exitCode: EXIT.notFound }), EXIT.notFound],
  [new ConnectionError('x'), EXIT.unavailable],
  [new ForbiddenError('x'), EXIT.unavailable],
  [new PortForwardError('x'), EXIT.unavailable],
  [new CallTimeoutError('x', 'id', 'f'), EXIT.timeout],
  [new WaitTimeoutError('x'), EXIT.timeout],
  [Object.assign(new Error('interrupted'), { name: 'AbortError' }), EXIT.interrupted],
  [new ProtocolVersionError('x'), EXIT.error],
  [new Error('bug'), EXIT.error],
])('%s → exit %d', (err, code) => {
  expect(exitCodeFor(err)).toBe(code);
});
