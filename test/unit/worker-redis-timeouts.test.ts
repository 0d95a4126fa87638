import { ConfigError, loadConfig } from '../../worker/config.js';

// The Redis command timeout bounds how long a hung connection can hold a call (and, as the
// socket timeout, how long it lives): it must end before the leases it should renew lapse.

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

describe('the Redis command timeout and the lease', () => {
  test.each([
    ['30', 10_000],
    ['60', 10_000],
    ['5', 1666],
    ['0.6', 200],
  ])('unset, with a lease of %s s, it is a third of the lease, at most 10 s: %d ms', (lease, expected) => {
    expect(loadConfig({ ...base, TASKBATCH_LEASE_SECONDS: lease }).redis.commandTimeoutMs).toBe(expected);
  });

  test('a timeout a hung call would outlive the lease with is refused, naming the variable, the bound and the fix', () => {
    expect(problems({ TASKBATCH_LEASE_SECONDS: '5', TASKBATCH_REDIS_COMMAND_TIMEOUT_MS: '10000' })).toEqual([
      expect.stringMatching(
        /^TASKBATCH_REDIS_COMMAND_TIMEOUT_MS \(--redis-command-timeout-ms\) must be below two thirds of the lease \(TASKBATCH_LEASE_SECONDS \(--lease-seconds\) = 5 s, so below 3333\), got 10000: .*Unset it .* or raise the lease$/,
      ),
    ]);
    expect(problems({ TASKBATCH_LEASE_SECONDS: '5', TASKBATCH_REDIS_COMMAND_TIMEOUT_MS: '3333' })).toHaveLength(1);
  });

  test('a timeout below two thirds of the lease is kept as given', () => {
    expect(loadConfig({ ...base, TASKBATCH_LEASE_SECONDS: '5', TASKBATCH_REDIS_COMMAND_TIMEOUT_MS: '3332' }).redis.commandTimeoutMs).toBe(3332);
    expect(loadConfig({ ...base, TASKBATCH_REDIS_COMMAND_TIMEOUT_MS: '15000' }).redis.commandTimeoutMs).toBe(15_000);
  });
});
