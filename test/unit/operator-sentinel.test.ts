/**
 * spec.redis.sentinel and spec.redis.durability, as pure units: the worker pod's environment
 * (read back by the worker's own config loader), the allow-list's checks of the sentinels and of
 * the primary they name, and the words of a sentinel's failure.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TaskBatch } from '../../api/taskbatch.js';
import { buildWorkerPod, REDIS_CREDENTIALS_DIR, type WorkerPodConfig } from '../../operator/reconcile/pods.js';
import { parseAllowedRedis, RedisGuard, RedisNotAllowedError } from '../../operator/reconcile/redis-allow.js';
import { describeFailure } from '../../operator/reconcile/redis-health.js';
import { loadConfig } from '../../worker/config.js';

const cfg: WorkerPodConfig = { image: 'w', command: ['node'], metricsPort: 9090, restrictedSecurityContext: true, podSecurity: 'restricted', terminationGracePeriodSeconds: 60 };

const batch = (redis: TaskBatch['spec']['redis']): TaskBatch => ({
  apiVersion: 'taskbatch.dev/v1alpha1',
  kind: 'TaskBatch',
  metadata: { name: 'b', namespace: 'team', uid: 'u' },
  spec: { handler: { builtin: 'noop' }, range: { end: 1 }, redis },
});

function workerOf(tb: TaskBatch) {
  const pod = buildWorkerPod(tb, 'e', cfg);
  const w = pod.spec.containers.find((c) => c.name === 'worker')!;
  const env: Record<string, unknown> = Object.fromEntries((w.env ?? []).map((e) => [e.name, e.value ?? e.valueFrom]));
  return { pod, env };
}

describe('worker pods of a batch on spec.redis.sentinel', () => {
  const sentinelBatch = batch({
    sentinel: { addresses: ['sentinel-0.redis.svc:26379', '[fd00::5]:26380'], masterName: 'tb-primary', passwordKey: 'sentinel-pw' },
    secretRef: { name: 'redis-creds', passwordKey: 'pw' },
    db: 3,
    durability: 'replicated',
  });

  test('get the sentinels, the primary name, the database and the durability, and no Redis URL', () => {
    const { env } = workerOf(sentinelBatch);
    expect(env).toMatchObject({
      TASKBATCH_REDIS_SENTINELS: 'sentinel-0.redis.svc:26379,[fd00::5]:26380',
      TASKBATCH_REDIS_SENTINEL_MASTER: 'tb-primary',
      TASKBATCH_REDIS_DB: '3',
      TASKBATCH_REDIS_DURABILITY: 'replicated',
      TASKBATCH_REDIS_PASSWORD_FILE: `${REDIS_CREDENTIALS_DIR}/password`,
      TASKBATCH_REDIS_SENTINEL_PASSWORD_FILE: `${REDIS_CREDENTIALS_DIR}/sentinel-password`,
    });
    expect(env).not.toHaveProperty('TASKBATCH_REDIS_URL');
    // Passwords by file only: an env var stays readable in /proc/<pid>/environ.
    expect(env).not.toHaveProperty('TASKBATCH_REDIS_SENTINEL_PASSWORD');
  });

  test("the sentinels' password comes from the same Secret volume as the data password", () => {
    expect(workerOf(sentinelBatch).pod.spec.volumes).toEqual([
      {
        name: 'taskbatch-redis-credentials',
        secret: {
          secretName: 'redis-creds',
          items: [
            { key: 'pw', path: 'password' },
            { key: 'sentinel-pw', path: 'sentinel-password' },
          ],
          optional: true,
        },
      },
    ]);
  });

  test("the worker's own config loader reads that environment as a Sentinel connection", () => {
    const dir = mkdtempSync(join(tmpdir(), 'tb-sentinel-unit-'));
    try {
      writeFileSync(join(dir, 'password'), 'data-pw\n');
      writeFileSync(join(dir, 'sentinel-password'), 'sentinel-pw\n');
      const env = Object.fromEntries(
        Object.entries(workerOf(sentinelBatch).env)
          .filter((e): e is [string, string] => typeof e[1] === 'string')
          .map(([k, v]) => [k, v.replace(REDIS_CREDENTIALS_DIR, dir)]),
      );
      const c = loadConfig({ ...env, TASKBATCH_HANDLER: 'noop' });
      expect(c.redis).toMatchObject({
        url: 'redis://tb-primary/3',
        password: 'data-pw',
        durability: 'replicated',
        sentinel: {
          addresses: [
            { host: 'sentinel-0.redis.svc', port: 26379 },
            { host: 'fd00::5', port: 26380 },
          ],
          masterName: 'tb-primary',
          password: 'sentinel-pw',
        },
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a missing sentinel password file fails the worker naming the variable', () => {
    expect(() =>
      loadConfig({
        TASKBATCH_BATCH: 'b',
        TASKBATCH_HANDLER: 'noop',
        TASKBATCH_REDIS_SENTINELS: 's:26379',
        TASKBATCH_REDIS_SENTINEL_MASTER: 'm',
        TASKBATCH_REDIS_SENTINEL_PASSWORD_FILE: '/nonexistent/sentinel-password',
      }),
    ).toThrow(/TASKBATCH_REDIS_SENTINEL_PASSWORD_FILE \(--redis-sentinel-password-file\) could not be read/);
  });

  test('without sentinel: durability alone reaches the worker; local is the default and adds nothing', () => {
    expect(workerOf(batch({ url: 'redis://r:6379', durability: 'replicated' })).env).toMatchObject({ TASKBATCH_REDIS_URL: 'redis://r:6379', TASKBATCH_REDIS_DURABILITY: 'replicated' });
    const local = workerOf(batch({ url: 'redis://r:6379', durability: 'local' })).env;
    expect(local).not.toHaveProperty('TASKBATCH_REDIS_DURABILITY');
    expect(local).not.toHaveProperty('TASKBATCH_REDIS_SENTINELS');
  });
});

describe('the allow-list and sentinels', () => {
  const guard = new RedisGuard(parseAllowedRedis('127.0.0.1:26379, 127.0.0.1:26380, 10.0.0.0/8:6379'), 'redis://default-redis.tb.svc:6379', 1 << 20);
  const sentinels = (...ports: number[]) => ports.map((port) => ({ host: '127.0.0.1', port }));

  test('every sentinel is checked, and the first one outside the list is named by its index', () => {
    expect(() => guard.checkSentinels(sentinels(26379, 26380))).not.toThrow();
    expect(() => guard.checkSentinels(sentinels(26379, 26381, 26382))).toThrow(
      new RedisNotAllowedError(
        `spec.redis.sentinel.addresses[1]: host "127.0.0.1" port 26381 is not in the installer's allowed Redis addresses (TASKBATCH_ALLOWED_REDIS), which must list every sentinel; the operator did not connect to it. Leave spec.redis unset to use the default Redis, or ask the installer to add the address (Helm value redis.allowedAddresses)`,
      ),
    );
  });

  test('the primary the sentinels name must be allowed too', () => {
    expect(() => guard.checkSentinelPrimary('m', '10.1.2.3', 6379)).not.toThrow();
    expect(() => guard.checkSentinelPrimary('m', 'default-redis.tb.svc', 6379)).not.toThrow();
    expect(() => guard.checkSentinelPrimary('m', '169.254.169.254', 80)).toThrow(
      /^spec\.redis\.sentinel: the sentinels name host "169\.254\.169\.254" port 80 as primary "m", which is not in the installer's allowed Redis addresses \(TASKBATCH_ALLOWED_REDIS\); the operator did not connect to it/,
    );
  });
});

describe("a sentinel's failure, in words", () => {
  const ctx = { connectTimeoutMs: 2000, tls: false };

  test('a refused primary, an unreachable sentinel and an unknown primary name', () => {
    const refused = describeFailure(new Error('failed to connect to sentinel 127.0.0.1:26379 because spec.redis.sentinel: the sentinels name host "x" port 1 as primary "m", which is not ...'), ctx);
    expect(refused).toEqual({ kind: 'other', code: 'PRIMARY_NOT_ALLOWED', text: 'is refused: spec.redis.sentinel: the sentinels name host "x" port 1 as primary "m", which is not ...' });
    expect(describeFailure(new Error('failed to connect to sentinel 127.0.0.1:1 because connect ECONNREFUSED 127.0.0.1:1'), ctx)).toEqual({
      kind: 'other',
      code: 'ECONNREFUSED',
      text: 'could not be found: sentinel 127.0.0.1:1 failed: connect ECONNREFUSED 127.0.0.1:1',
    });
    expect(describeFailure(new Error('connected to sentinel 127.0.0.1:26379 successfully, but got an invalid reply: null'), ctx)).toEqual({
      kind: 'other',
      code: 'NO_PRIMARY',
      text: 'could not be found: sentinel 127.0.0.1:26379 knows no primary of that name (check spec.redis.sentinel.masterName)',
    });
  });
});
