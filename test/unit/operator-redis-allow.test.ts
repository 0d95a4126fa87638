import { isRedisAddressAllowed, parseAllowedRedis, RedisAllowListError, RedisGuard, RedisNotAllowedError } from '../../operator/reconcile/redis-allow.js';
import { loadConfig, ConfigError } from '../../operator/config.js';

describe('TASKBATCH_ALLOWED_REDIS', () => {
  const rules = parseAllowedRedis('redis.team-a.svc, cache.example:7000, 10.0.0.0/8, 192.168.1.0/24:6380, [fd00::1]:6379, fd00:abcd::/32');

  test.each<[string, string, number, boolean]>([
    ['a listed Service, any port', 'redis.team-a.svc', 6390, true],
    ['the same Service by its cluster.local name', 'redis.team-a.svc.cluster.local', 6379, true],
    ['upper case and a trailing dot', 'REDIS.team-a.svc.', 6379, true],
    ["another namespace's Service", 'redis.team-b.svc', 6379, false],
    ["the short name (resolved in the operator's own namespace)", 'redis', 6379, false],
    ['host:port on its port', 'cache.example', 7000, true],
    ['host:port on another port', 'cache.example', 6379, false],
    ['inside a CIDR', '10.1.2.3', 6379, true],
    ['outside it', '11.0.0.1', 6379, false],
    ['a hostname is never resolved to match a CIDR', 'ten.example', 6379, false],
    ['CIDR with a port, on it', '192.168.1.77', 6380, true],
    ['CIDR with a port, on another', '192.168.1.77', 6379, false],
    ['an IPv6 host:port', 'fd00::1', 6379, true],
    ['an IPv6 host:port written longer', 'fd00:0:0:0:0:0:0:1', 6379, true],
    ['inside an IPv6 CIDR', 'fd00:abcd:1::5', 6379, true],
    ['outside it', 'fd00:abce::5', 6379, false],
    ['loopback', '127.0.0.99', 6379, false],
  ])('%s', (_what, host, port, allowed) => {
    expect(isRedisAddressAllowed(rules, host, port)).toBe(allowed);
  });

  test('* allows everything; empty allows nothing', () => {
    expect(isRedisAddressAllowed(parseAllowedRedis('*'), '127.0.0.99', 1)).toBe(true);
    expect(isRedisAddressAllowed(parseAllowedRedis(''), 'redis', 6379)).toBe(false);
  });

  test.each(['redis://cache:6379', 'cache:0', 'cache:99999', '10.0.0.0/40', 'not a host', 'x/8'])('refuses the entry %s, naming the setting', (entry) => {
    expect(() => parseAllowedRedis(entry)).toThrow(RedisAllowListError);
    expect(() => parseAllowedRedis(entry)).toThrow(`TASKBATCH_ALLOWED_REDIS: entry ${JSON.stringify(entry)} is invalid`);
    expect(() => loadConfig({ TASKBATCH_ALLOWED_REDIS: entry })).toThrow(ConfigError);
  });
});

describe('RedisGuard.check: before any connection', () => {
  const guard = new RedisGuard(parseAllowedRedis('127.0.0.1'), 'redis://default-redis.tb.svc:6379', 1 << 20);
  const batch = (redis?: Record<string, unknown>) => ({ metadata: { namespace: 'team-a' }, spec: redis ? { redis } : {} });

  test('batches on the default Redis and allowed addresses pass', () => {
    expect(() => guard.check(batch(), 'redis://anything:1')).not.toThrow();
    expect(() => guard.check(batch({ url: 'redis://127.0.0.1:7777' }), 'redis://127.0.0.1:7777')).not.toThrow();
    expect(() => guard.check(batch({ url: 'redis://default-redis.tb.svc.cluster.local:6379' }), 'redis://default-redis.tb.svc.cluster.local:6379')).not.toThrow();
  });

  test('a literal URL outside the list names the field, host and port', () => {
    expect(() => guard.check(batch({ url: 'redis://127.0.0.99:6379' }), 'redis://127.0.0.99:6379')).toThrow(
      new RedisNotAllowedError(
        'spec.redis.url: host "127.0.0.99" port 6379 is not in the installer\'s allowed Redis addresses (TASKBATCH_ALLOWED_REDIS); the operator did not connect to it. Leave spec.redis unset to use the default Redis, or ask the installer to add the address (Helm value redis.allowedAddresses)',
      ),
    );
    expect(() => guard.check(batch({ url: 'redis://default-redis.tb.svc:6380' }), 'redis://default-redis.tb.svc:6380')).toThrow(RedisNotAllowedError);
  });

  test('a URL from a Secret names the Secret and key, never the value', () => {
    let message = '';
    try {
      guard.check(batch({ secretRef: { name: 'creds', urlKey: 'url' } }), 'redis://secret-host.internal:6379');
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toContain("spec.redis.secretRef: the URL in key url of Secret team-a/creds names a Redis address that is not in the installer's allowed Redis addresses");
    expect(message).not.toContain('secret-host');
  });
});
