import type { KubeClient } from '../../kube/client.js';
import type { TaskBatch } from '../../api/taskbatch.js';
import { backoffDelayMs, backoffStepMs, DEFAULT_BACKOFF, describeFailure, EndpointHealth, RedisUnavailableError, seconds, type RedisFailure } from '../../operator/reconcile/redis-health.js';
import { RedisConfigError, RedisPool, redisUrlProblem } from '../../operator/reconcile/redis-pool.js';
import { ManualClock } from '../support/manual-clock.js';

// The per-Redis health bookkeeping (operator/reconcile/redis-health.ts) with an injected clock
// and random source, and the settings checks that make every malformed Redis URL a
// RedisConfigError before any socket is opened.

const plain = { connectTimeoutMs: 2000, tls: false };
const refused: RedisFailure = { kind: 'refused', code: 'ECONNREFUSED', text: 'refused the connection' };

describe('backoff', () => {
  test.each<[number, number]>([
    [0, 0],
    [1, 500],
    [2, 1000],
    [3, 2000],
    [4, 4000],
    [5, 8000],
    [6, 16_000],
    [7, 30_000],
    [8, 30_000],
    [1000, 30_000],
  ])('after %i failures the step is %i ms (0.5 s doubling to 30 s)', (failures, step) => {
    expect(backoffStepMs(failures, DEFAULT_BACKOFF)).toBe(step);
  });

  test('jitter only shortens a delay, by at most its fraction, so a message announcing the step is never late', () => {
    for (const failures of [1, 3, 7, 20]) {
      const step = backoffStepMs(failures, DEFAULT_BACKOFF);
      expect(backoffDelayMs(failures, DEFAULT_BACKOFF, () => 0)).toBe(step);
      expect(backoffDelayMs(failures, DEFAULT_BACKOFF, () => 0.999_999)).toBe(Math.round(step * 0.8));
      expect(backoffDelayMs(failures, DEFAULT_BACKOFF, () => 0.5)).toBe(Math.round(step * 0.9));
    }
  });

  test.each<[number, string]>([
    [500, '0.5s'],
    [1000, '1s'],
    [4000, '4s'],
    [30_000, '30s'],
    [1499, '1s'],
  ])('%i ms reads %s', (ms, text) => {
    expect(seconds(ms)).toBe(text);
  });
});

describe('EndpointHealth', () => {
  const clock = new ManualClock();
  const health = (): EndpointHealth => new EndpointHealth(DEFAULT_BACKOFF, () => 0);

  test('each failure in a row doubles the wait; the next attempt is at now + delay; the message names the address, the cause and the step', () => {
    const h = health();
    const now = clock.now();
    expect(h.backingOff(now)).toBe(false);
    expect([1, 2, 3, 4].map(() => h.failed(refused, now))).toEqual([500, 1000, 2000, 4000]);
    expect(h.consecutiveFailures).toBe(4);
    expect(h.retryAt).toBe(now + 4000);
    expect(h.backingOff(now + 3999)).toBe(true);
    expect(h.backingOff(now + 4000)).toBe(false);
    const err = h.unavailable('127.0.0.1:6390', now + 1000, 0, 2000);
    expect(err).toBeInstanceOf(RedisUnavailableError);
    expect(err.message).toBe('Redis at 127.0.0.1:6390 refused the connection (ECONNREFUSED); next attempt within 4s');
    expect(err).toMatchObject({ name: 'RedisUnavailableError', address: '127.0.0.1:6390', cause: refused, retryAt: now + 4000 });
  });

  test('the message is the same on every pass within one step (Events and status do not churn)', () => {
    const h = health();
    const now = clock.now();
    h.failed(refused, now);
    h.failed(refused, now);
    const a = h.unavailable('r:1', now + 10, 0, 2000).message;
    const b = h.unavailable('r:1', now + 990, 0, 2000).message;
    expect(a).toBe(b);
  });

  test('while an attempt is in flight, retryAt is its end and the message says so', () => {
    const h = health();
    const now = clock.now();
    h.failed(refused, now);
    const err = h.unavailable('r:1', now + 600, now + 2500, 2000);
    expect(err.retryAt).toBe(now + 2500);
    expect(err.message).toBe('Redis at r:1 refused the connection (ECONNREFUSED); trying again now (up to 2s)');
  });

  test("before any failure (the first attempt still running): a CONNECTING cause, retry at the attempt's end", () => {
    const h = health();
    const now = clock.now();
    const err = h.unavailable('r:1', now, now + 2000, 2000);
    expect(err.cause).toMatchObject({ kind: 'connecting', code: 'CONNECTING' });
    expect(err.retryAt).toBe(now + 2000);
    expect(err.message).toBe('Redis at r:1 has not answered yet; the operator keeps connecting in the background (each attempt up to 2s)');
  });

  test('a success resets the count: the next failure waits the first step again', () => {
    const h = health();
    const now = clock.now();
    for (let i = 0; i < 6; i++) h.failed(refused, now);
    h.succeeded();
    expect(h.consecutiveFailures).toBe(0);
    expect(h.lastFailure).toBeUndefined();
    expect(h.backingOff(now)).toBe(false);
    expect(h.failed(refused, now)).toBe(500);
  });

  test('refine replaces the cause of a recorded failure, never invents one', () => {
    const h = health();
    const better: RedisFailure = { kind: 'dns', code: 'ENOTFOUND', text: 'could not be found' };
    h.refine(better);
    expect(h.lastFailure).toBeUndefined();
    h.failed({ kind: 'closed', code: 'CONNECTION_CLOSED', text: 'closed the connection' }, clock.now());
    h.refine(better);
    expect(h.lastFailure).toEqual(better);
    expect(h.consecutiveFailures).toBe(1);
  });
});

describe('describeFailure: the cause in words a user understands', () => {
  const sys = (code: string, message = `connect ${code} 10.0.0.1:6379`): Error => Object.assign(new Error(message), { code });
  const reply = (message: string): Error => Object.assign(new Error(message), { name: 'ReplyError' });
  test.each<[string, unknown, Partial<RedisFailure>, { tls?: boolean }]>([
    ['refused', sys('ECONNREFUSED'), { kind: 'refused', code: 'ECONNREFUSED', text: 'refused the connection' }, {}],
    ['connect timeout', sys('ETIMEDOUT', 'connect ETIMEDOUT'), { kind: 'timeout', code: 'ETIMEDOUT', text: 'did not accept the connection within 2s' }, {}],
    [
      'connect timeout with TLS',
      sys('ETIMEDOUT', 'connect ETIMEDOUT'),
      { kind: 'timeout', text: 'did not complete the connection and TLS handshake within 2s: is TLS enabled on that port?' },
      { tls: true },
    ],
    [
      'silent after connecting',
      Object.assign(sys('ETIMEDOUT', 'the Redis handshake timed out'), { phase: 'handshake' }),
      { kind: 'timeout', text: 'accepted the connection but did not answer as Redis within 2s: is this the Redis port?' },
      {},
    ],
    ['unknown host', sys('ENOTFOUND', 'getaddrinfo ENOTFOUND redis.nowhere'), { kind: 'dns', code: 'ENOTFOUND', text: 'could not be found: its host name does not resolve' }, {}],
    ['DNS down', sys('EAI_AGAIN', 'getaddrinfo EAI_AGAIN redis.x'), { kind: 'dns', code: 'EAI_AGAIN' }, {}],
    ['no route', sys('EHOSTUNREACH'), { kind: 'unreachable', code: 'EHOSTUNREACH', text: "is unreachable from the operator's network" }, {}],
    ['reset', sys('ECONNRESET', 'read ECONNRESET'), { kind: 'closed', code: 'ECONNRESET', text: 'closed the connection' }, {}],
    ['closed without an error', undefined, { kind: 'closed', code: 'CONNECTION_CLOSED' }, {}],
    ['wrong password', reply('WRONGPASS invalid username-password pair or user is disabled.'), { kind: 'auth', code: 'WRONGPASS' }, {}],
    ['no password', reply('NOAUTH Authentication required.'), { kind: 'auth', code: 'NOAUTH', text: 'requires a password and none was given: set spec.redis.secretRef with a password key' }, {}],
    ['ACL', reply("NOPERM this user has no permissions to run the 'info' command"), { kind: 'auth', code: 'NOPERM' }, {}],
    [
      'self-signed',
      sys('DEPTH_ZERO_SELF_SIGNED_CERT', 'self-signed certificate'),
      { kind: 'tls', code: 'DEPTH_ZERO_SELF_SIGNED_CERT', text: 'presented a self-signed certificate the operator does not trust: set spec.redis.tls.caSecretRef to its CA' },
      {},
    ],
    ['wrong host name', sys('ERR_TLS_CERT_ALTNAME_INVALID', "Hostname/IP does not match certificate's altnames"), { kind: 'tls', text: 'presented a TLS certificate for another host name' }, {}],
    [
      'TLS to a plain port',
      sys('ERR_SSL_WRONG_VERSION_NUMBER', 'tls_validate_record_header:wrong version number'),
      { kind: 'tls', code: 'ERR_SSL_WRONG_VERSION_NUMBER', text: 'failed the TLS handshake: is TLS enabled on that port? (spec.redis.tls, or rediss://)' },
      {},
    ],
    ["a cluster's seed refused", Object.assign(new Error('Failed to refresh slots cache.'), { lastNodeError: sys('ECONNREFUSED') }), { kind: 'refused', code: 'ECONNREFUSED' }, {}],
    [
      'a cluster\'s "Connection is closed."',
      Object.assign(new Error('Failed to refresh slots cache.'), { lastNodeError: new Error('Connection is closed.') }),
      { kind: 'closed', code: 'CONNECTION_CLOSED' },
      {},
    ],
    ['a reply over the bound', Object.assign(new Error('a Redis reply exceeded 65536 bytes'), { name: 'ReplyTooLargeError' }), { kind: 'protocol', code: 'REPLY_TOO_LARGE' }, {}],
    ['not Redis', new Error('Protocol error, got "H" as reply type byte'), { kind: 'protocol', code: 'PROTOCOL' }, {}],
    ['anything else', new Error('something odd'), { kind: 'other', code: 'Error', text: 'failed: something odd' }, {}],
  ])('%s', (_what, err, expected, ctx) => {
    expect(describeFailure(err, { ...plain, ...ctx })).toMatchObject(expected);
  });
});

describe('malformed Redis URLs are settings errors, never connection errors', () => {
  test.each<[string, string | undefined]>([
    ['redis://redis.team-a.svc:6379', undefined],
    ['rediss://redis.team-a.svc', undefined],
    ['redis://[fd00::1]:6379/2', undefined],
    ['redis://user@redis:6379', undefined],
    ['not a url', 'is not a URL'],
    ['redis://:6379', 'is not a URL'],
    ['redis://h:70000', 'is not a URL'],
    ['http://redis:6379', 'does not start with redis:// or rediss://'],
    ['redis-host:6379', 'does not start with redis:// or rediss://'],
    ['redis://', 'names no host'],
    ['redis:host', 'names no host'],
    ['redis:///0', 'names no host'],
    ['redis://redis:0', 'names port 0'],
    ['redis://u:hunter2@redis:6379', "contains a password (give it in a Secret's password key instead)"],
    ['redis://redis:6379/x', 'has a database path that is not a non-negative integer'],
  ])('%s', (url, problem) => {
    expect(redisUrlProblem(url)).toBe(problem);
  });

  const secrets = new Map<string, { data: Record<string, string> }>();
  const kube = { find: async (path: string) => secrets.get(path) } as unknown as KubeClient;
  const b64 = (s: string): string => Buffer.from(s).toString('base64');
  const batch = (redis: Record<string, unknown>): TaskBatch =>
    ({ apiVersion: 'taskbatch.dev/v1alpha1', kind: 'TaskBatch', metadata: { namespace: 'ns', name: 'b' }, spec: { handler: { builtin: 'noop' }, redis } }) as TaskBatch;
  let pool: RedisPool;
  beforeEach(() => {
    pool = new RedisPool(kube, undefined);
  });
  afterEach(() => pool.close());

  test.each([
    ['redis://', 'spec.redis.url names no host; expected redis://host:port[/db] or rediss://host:port[/db] (TLS)'],
    ['http://127.0.0.1:6379', 'spec.redis.url does not start with redis:// or rediss://; expected redis://host:port[/db] or rediss://host:port[/db] (TLS)'],
    ['redis://127.0.0.1:0', 'spec.redis.url names port 0; expected redis://host:port[/db] or rediss://host:port[/db] (TLS)'],
  ])('spec.redis.url %s: RedisConfigError naming the field', async (url, message) => {
    const err = await pool.forBatch(batch({ url })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RedisConfigError);
    expect((err as Error).message).toBe(message);
  });

  test('a URL from a Secret: RedisConfigError naming the Secret, the key and the problem, never the value', async () => {
    secrets.set('/api/v1/namespaces/ns/secrets/creds', { data: { url: b64('redis://secret-host-XYZ:0') } });
    const err = await pool.forBatch(batch({ secretRef: { name: 'creds', urlKey: 'url' } })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RedisConfigError);
    expect((err as Error).message).toBe(
      'spec.redis.secretRef: key url of Secret ns/creds is not a Redis URL: it names port 0 (expected redis://host:port or rediss://host:port; its value is not shown)',
    );
  });

  test('a CA that holds no certificate: RedisConfigError naming the Secret and key', async () => {
    secrets.set('/api/v1/namespaces/ns/secrets/ca', { data: { 'ca.crt': b64('not a certificate') } });
    const err = await pool.forBatch(batch({ url: 'rediss://127.0.0.1:6379', tls: { enabled: true, caSecretRef: { name: 'ca' } } })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RedisConfigError);
    expect((err as Error).message).toBe('spec.redis.tls.caSecretRef: key ca.crt of Secret ns/ca holds no PEM certificate (expected -----BEGIN CERTIFICATE----- blocks)');
  });

  test('options are checked when the pool is made, naming the option', () => {
    expect(() => new RedisPool(kube, undefined, undefined, undefined, { idleMs: 0 })).toThrow('RedisPool options.idleMs must be a positive number of milliseconds, got 0');
    expect(() => new RedisPool(kube, undefined, undefined, undefined, { backoff: { initialMs: 1000, maxMs: 10, jitter: 0 } })).toThrow(/options.backoff/);
  });
});
