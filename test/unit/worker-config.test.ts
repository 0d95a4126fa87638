import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ConfigError, loadConfig, parseFlags, SETTINGS } from '../../worker/config.js';

const base = { TASKBATCH_REDIS_URL: 'redis://127.0.0.1:6379', TASKBATCH_BATCH: 'demo', TASKBATCH_HANDLER: 'noop' };

function problems(env: Record<string, string>, argv: string[] = []): string[] {
  try {
    loadConfig(env, parseFlags(argv).flags);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

describe('worker configuration', () => {
  test('defaults from a minimal environment', () => {
    const c = loadConfig(base);
    expect(c).toMatchObject({
      redis: { url: 'redis://127.0.0.1:6379', prefix: 'tb', cluster: false },
      batch: { namespace: 'default', name: 'demo' },
      handler: { builtin: 'noop' },
      pool: { mode: 'thread', maxItemsPerExecutor: 0, maxMemoryMiB: 0 },
      itemTimeoutMs: 600_000, // as the CRD's spec.itemTimeoutSeconds default
      leaseMs: 30_000,
      shutdownGraceMs: 20_000,
      http: { host: '', port: 9464 },
      logLevel: 'info',
    });
    expect(c.pool.size).toBeGreaterThanOrEqual(1);
    expect(c.watchdogMs).toBe(31_000);
    expect(Object.isFrozen(c) && Object.isFrozen(c.pool) && Object.isFrozen(c.redis)).toBe(true);
  });

  test('flags override environment variables', () => {
    const c = loadConfig({ ...base, TASKBATCH_POOL_MODE: 'process', TASKBATCH_POOL_SIZE: '3' }, parseFlags(['--pool-mode', 'async', '--pool-size=7', '--redis-tls']).flags);
    expect(c.pool).toMatchObject({ mode: 'async', size: 7 });
    expect(c.redis.tls).toEqual({});
    expect(c.watchdogMs).toBe(31_000);
  });

  test('every problem is reported at once, naming the variable, its flag and the expected form', () => {
    const p = problems({ TASKBATCH_POOL_SIZE: 'many', TASKBATCH_LEASE_SECONDS: '-1', TASKBATCH_POOL_MODE: 'fibers', TASKBATCH_HANDLER: 'shell' });
    expect(p).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^TASKBATCH_REDIS_URL \(--redis-url\) is required \(redis:\/\/host:port/),
        expect.stringMatching(/^TASKBATCH_BATCH \(--batch\) is required/),
        expect.stringMatching(/^TASKBATCH_POOL_SIZE \(--pool-size\) must be an integer from 1 to 1024, got "many"/),
        expect.stringMatching(/^TASKBATCH_LEASE_SECONDS \(--lease-seconds\) must be a number of seconds/),
        expect.stringMatching(/^TASKBATCH_POOL_MODE \(--pool-mode\) must be one of thread, process, async, got "fibers"/),
        expect.stringMatching(/^TASKBATCH_HANDLER \(--handler\): shell handler needs command/),
      ]),
    );
  });

  test('validates names, URLs, credentials and cross-field rules', () => {
    expect(problems({ ...base, TASKBATCH_BATCH: 'Not_Valid' })[0]).toMatch(/^TASKBATCH_BATCH \(--batch\): batch name "Not_Valid" is invalid/);
    expect(problems({ ...base, TASKBATCH_REDIS_URL: 'redis://u:secret@h:1' })[0]).toMatch(/must not contain a password/);
    expect(problems({ ...base, TASKBATCH_REDIS_HOST: 'h' })[0]).toMatch(/either TASKBATCH_REDIS_URL .* or TASKBATCH_REDIS_HOST/);
    expect(problems({ ...base, TASKBATCH_MAX_MEMORY_MIB: '8' })[0]).toMatch(/^TASKBATCH_MAX_MEMORY_MIB \(--max-memory-mib\) must be 0 \(no limit\) or at least 16/);
    expect(problems({ ...base, TASKBATCH_HEARTBEAT_SECONDS: '10', TASKBATCH_PRESENCE_STALE_SECONDS: '15' })[0]).toMatch(/at least twice/);
    expect(problems({ ...base, TASKBATCH_HANDLER: './no/such/file.js' })[0]).toMatch(/^TASKBATCH_HANDLER .*does not exist/);
    expect(problems(base, ['--no-such-flag'])[0]).toMatch(/no-such-flag/);
  });

  test('settings the CRD allows but that make little sense are accepted with a warning', () => {
    const c = loadConfig({ ...base, TASKBATCH_POOL_MODE: 'async', TASKBATCH_MAX_ITEMS_PER_EXECUTOR: '5', TASKBATCH_MAX_MEMORY_MIB: '128' });
    expect(c.pool).toMatchObject({ mode: 'async', maxItemsPerExecutor: 0, maxMemoryMiB: 0 });
    expect(c.warnings).toEqual([expect.stringMatching(/ignored in async mode/)]);
    expect(loadConfig({ ...base, TASKBATCH_POOL_MODE: 'process', TASKBATCH_MAX_MEMORY_MIB: '32' }).warnings[0]).toMatch(/replaced after nearly every item/);
  });

  test('a stdio handler runs in process mode: the default for it, and thread or async is refused with the fix', () => {
    const stdio = JSON.stringify({ command: ['python3', '-u', 'app.py'], protocol: 'stdio' });
    expect(loadConfig({ ...base, TASKBATCH_HANDLER: stdio }).pool.mode).toBe('process');
    expect(loadConfig({ ...base, TASKBATCH_HANDLER: stdio, TASKBATCH_POOL_MODE: 'process' }).handler).toEqual({ command: ['python3', '-u', 'app.py'], protocol: 'stdio' });
    for (const mode of ['thread', 'async']) {
      expect(problems({ ...base, TASKBATCH_HANDLER: stdio, TASKBATCH_POOL_MODE: mode })).toEqual([
        `TASKBATCH_POOL_MODE (--pool-mode) is "${mode}", but the handler is a stdio command, which runs only in process pool mode (one handler process per slot): set TASKBATCH_POOL_MODE=process or leave it unset`,
      ]);
    }
  });

  test('host/port form, password file, metrics off', () => {
    const dir = fileURLToPath(new URL('.', import.meta.url));
    const c = loadConfig(
      {
        TASKBATCH_REDIS_HOST: '10.0.0.5',
        TASKBATCH_REDIS_PORT: '6380',
        TASKBATCH_REDIS_DB: '2',
        TASKBATCH_REDIS_PASSWORD_FILE: fileURLToPath(import.meta.url),
        TASKBATCH_BATCH: 'b',
        TASKBATCH_HANDLER: '{"builtin":"shell","command":["echo","{{item}}"]}',
        TASKBATCH_METRICS_PORT: 'off',
      },
      {},
      dir,
    );
    expect(c.redis.url).toBe('redis://10.0.0.5:6380/2');
    expect(c.redis.password?.length).toBeGreaterThan(10);
    expect(c.http).toBeUndefined();
    expect(c.handler).toEqual({ builtin: 'shell', command: ['echo', '{{item}}'] });
  });

  test('sentinels instead of a URL: addresses, primary name, database and durability', () => {
    const env = {
      TASKBATCH_BATCH: 'demo',
      TASKBATCH_HANDLER: 'noop',
      TASKBATCH_REDIS_SENTINELS: 'sentinel-0:26379, [::1]:26380',
      TASKBATCH_REDIS_SENTINEL_MASTER: 'tb-primary',
      TASKBATCH_REDIS_DB: '2',
    };
    const c = loadConfig({ ...env, TASKBATCH_REDIS_DURABILITY: 'replicated', TASKBATCH_REDIS_SENTINEL_PASSWORD: 's3cret' });
    expect(c.redis).toMatchObject({
      url: 'redis://tb-primary/2',
      sentinel: {
        addresses: [
          { host: 'sentinel-0', port: 26379 },
          { host: '::1', port: 26380 },
        ],
        masterName: 'tb-primary',
        password: 's3cret',
      },
      durability: 'replicated',
      replicaTimeoutMs: 1000,
    });
    expect(loadConfig(base).redis).toMatchObject({ durability: 'local' });
    expect(loadConfig(base).redis.sentinel).toBeUndefined();
  });

  test('sentinel and durability settings are checked, naming the variable and the expected form', () => {
    const sentinels = { TASKBATCH_REDIS_SENTINELS: 'a:26379', TASKBATCH_REDIS_SENTINEL_MASTER: 'm' };
    const { TASKBATCH_REDIS_URL: _url, ...noUrl } = base;
    expect(problems({ ...noUrl, TASKBATCH_REDIS_SENTINELS: 'a:26379,b', TASKBATCH_REDIS_SENTINEL_MASTER: 'm' }).join('\n')).toMatch(
      /TASKBATCH_REDIS_SENTINELS \(--redis-sentinels\) must be host:port\[,host:port\.\.\.\].*"b" is not host:port/,
    );
    expect(problems({ ...noUrl, TASKBATCH_REDIS_SENTINELS: 'a:26379' }).join('\n')).toContain('TASKBATCH_REDIS_SENTINEL_MASTER (--redis-sentinel-master) is required with TASKBATCH_REDIS_SENTINELS');
    expect(problems({ ...base, ...sentinels }).join('\n')).toContain('set either TASKBATCH_REDIS_SENTINELS (--redis-sentinels) or TASKBATCH_REDIS_URL (--redis-url), not both');
    expect(problems({ ...noUrl, ...sentinels, TASKBATCH_REDIS_CLUSTER: 'true' }).join('\n')).toContain('exclude each other');
    expect(problems({ ...noUrl, ...sentinels, TASKBATCH_REDIS_TLS: 'true' }).join('\n')).toContain('TLS through Redis Sentinel is not supported yet');
    expect(problems({ ...base, TASKBATCH_REDIS_SENTINEL_MASTER: 'm' }).join('\n')).toContain('TASKBATCH_REDIS_SENTINELS (--redis-sentinels) is not');
    expect(problems({ ...base, TASKBATCH_REDIS_DURABILITY: 'quorum' })).toEqual(['TASKBATCH_REDIS_DURABILITY (--redis-durability) must be one of local, replicated, got "quorum"']);
    expect(problems({ ...base, TASKBATCH_REDIS_COMMAND_TIMEOUT_MS: '2000', TASKBATCH_REDIS_REPLICA_TIMEOUT_MS: '2000' }).join('\n')).toContain(
      'TASKBATCH_REDIS_REPLICA_TIMEOUT_MS (--redis-replica-timeout-ms) must be below TASKBATCH_REDIS_COMMAND_TIMEOUT_MS (--redis-command-timeout-ms) (2000), got 2000',
    );
    // The default follows a short command timeout down.
    expect(loadConfig({ ...base, TASKBATCH_LEASE_SECONDS: '1.5' }).redis.replicaTimeoutMs).toBe(250);
  });

  test('docs/worker.md documents every environment variable', () => {
    const doc = readFileSync(fileURLToPath(new URL('../../../docs/worker.md', import.meta.url)), 'utf8');
    const missing = SETTINGS.filter((s) => !doc.includes(`\`${s.env}\``)).map((s) => s.env);
    expect(missing).toEqual([]);
  });
});
