import {
  batchKeys,
  connectRedis,
  parseRedisUrl,
  resolveBatchOptions,
  resolveLimits,
  validateBatchRef,
  InvalidArgumentError,
  translateScriptError,
  BatchStateLostError,
  ProtocolVersionError,
  BatchClosedError,
} from '../../queue/index.js';

describe('batch references and keys', () => {
  test('every key of a batch shares one hash tag', () => {
    const keys = batchKeys({ namespace: 'prod', name: 'resize.images' });
    for (const k of Object.values(keys)) expect(k).toMatch(/^tb:\{prod\/resize\.images\}:[a-z-]+$/);
    expect(new Set(Object.values(keys)).size).toBe(Object.keys(keys).length);
  });

  test.each([
    [{ namespace: 'Prod', name: 'x' }, /namespace "Prod" is invalid/],
    [{ namespace: 'a'.repeat(64), name: 'x' }, /namespace .* is invalid: use at most 63/],
    [{ namespace: 'ns', name: 'has}brace' }, /batch name "has}brace" is invalid/],
    [{ namespace: 'ns', name: '' }, /batch name "" is invalid/],
    [{ namespace: 'ns', name: '-x' }, /batch name "-x" is invalid/],
  ])('rejects %j', (ref, message) => {
    expect(() => validateBatchRef(ref)).toThrow(InvalidArgumentError);
    expect(() => validateBatchRef(ref)).toThrow(message);
  });

  test('accepts Kubernetes-valid names', () => {
    expect(() => validateBatchRef({ namespace: 'team-a', name: 'nightly.2026-11-26' })).not.toThrow();
  });
});

describe('options', () => {
  test('defaults', () => {
    expect(resolveBatchOptions()).toEqual({ maxAttempts: 3, backoff: { initialMs: 1000, factor: 2, maxMs: 60_000, jitter: 0.2 }, resultTtlSeconds: 86_400 });
    expect(resolveLimits()).toEqual({ maxPayloadBytes: 1048576, maxResultBytes: 1048576, maxErrorBytes: 16384 });
  });

  test.each([
    [{ maxAttempts: 1.5 }, /maxAttempts must be an integer between 1 and 1000, got 1.5/],
    [{ maxAttempts: Number.NaN }, /maxAttempts must be an integer/],
    [{ backoff: { factor: 0.5 } }, /backoff.factor must be a number between 1 and 100, got 0.5/],
    [{ backoff: { jitter: 2 } }, /backoff.jitter must be a number between 0 and 1, got 2/],
    [{ resultTtlSeconds: 0 }, /resultTtlSeconds must be an integer between 1 and/],
  ])('rejects %j', (input, message) => {
    expect(() => resolveBatchOptions(input)).toThrow(message);
  });

  test('limits are bounded', () => {
    expect(() => resolveLimits({ maxPayloadBytes: 1024 ** 3 })).toThrow(/limits.maxPayloadBytes must be an integer between 16 and 67108864/);
  });
});

describe('Redis URLs', () => {
  test('parses standalone and TLS URLs', () => {
    expect(parseRedisUrl('redis://10.0.0.5:6380/2')).toEqual({ host: '10.0.0.5', port: 6380, db: 2, tls: false });
    expect(parseRedisUrl('rediss://redis.example')).toEqual({ host: 'redis.example', port: 6379, db: 0, tls: true });
    expect(parseRedisUrl('redis://[::1]:7000')).toEqual({ host: '::1', port: 7000, db: 0, tls: false });
  });

  test.each([
    ['redis.example:6379', /not supported|not a URL/],
    ['http://redis.example', /scheme "http:" is not supported; use redis:\/\/ or rediss:\/\//],
    ['redis://user:pw@redis.example', /must not contain a password/],
    ['redis://redis.example/x', /database "\/x" must be a non-negative integer/],
  ])('rejects %s', (url, message) => {
    expect(() => parseRedisUrl(url)).toThrow(message);
  });

  test('TLS through sentinels is refused before anything is dialled, rather than sent in plain text', () => {
    const sentinel = { addresses: [{ host: '127.0.0.1', port: 1 }], masterName: 'm' };
    expect(() => connectRedis({ url: 'rediss://m/0', sentinel })).toThrow(/TLS through Redis Sentinel is not supported yet/);
    expect(() => connectRedis({ url: 'redis://m/0', sentinel, tls: {} })).toThrow(InvalidArgumentError);
  });
});

describe('script errors', () => {
  test('tagged replies become typed errors naming the batch', () => {
    const lost = translateScriptError(new Error('TBLOST batch state not found in Redis'), 'ns/b');
    expect(lost).toBeInstanceOf(BatchStateLostError);
    expect((lost as Error).message).toBe('batch ns/b: batch state not found in Redis');
    expect(translateScriptError(new Error('TBVERSION v2'), 'ns/b')).toBeInstanceOf(ProtocolVersionError);
    expect(translateScriptError(new Error('TBCLOSED closed'), 'ns/b')).toBeInstanceOf(BatchClosedError);
    const other = new Error('ERR something');
    expect(translateScriptError(other, 'ns/b')).toBe(other);
  });
});
