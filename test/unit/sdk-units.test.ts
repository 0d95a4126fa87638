import type { HandlerContext } from '../../worker/handler/api.js';
import type { TaskBatch } from '../../api/taskbatch.js';
import { redisEndpointFor, type KubeAccess } from '../../sdk/kube.js';
import { KubeApiError } from '../../kube/client.js';
import { createProxy, formatDuration, formatProgress, ProgressTracker, type CallArgs, type Remote } from '../../sdk/index.js';
import type * as MathModule from '../fixtures/sdk/math.js';

describe('progress', () => {
  test('rate over a sliding window and ETA', () => {
    let now = 0;
    const t = new ProgressTracker(10_000, () => now);
    const counts = (succeeded: number, failed = 0) => ({ total: 1000, pending: 1000 - succeeded - failed, delayed: 0, running: 0, succeeded, failed, retries: 0 });
    expect(t.update(counts(0))).toMatchObject({ done: 0, ratePerSec: 0, etaSeconds: undefined });
    now = 1000;
    expect(t.update(counts(100))).toMatchObject({ done: 100, ratePerSec: 100, etaSeconds: 9, elapsedMs: 1000 });
    now = 2000;
    const p = t.update(counts(290, 10));
    expect(p.ratePerSec).toBe(150);
    expect(p.etaSeconds).toBeCloseTo(700 / 150);
    now = 30_000; // old samples leave the window
    expect(t.update(counts(300, 10)).ratePerSec).toBeCloseTo((310 - 300) / 28);
    expect(t.update({ ...counts(990, 10), complete: true, closed: true })).toMatchObject({ etaSeconds: 0, complete: true });
  });

  test('the progress line', () => {
    const p = {
      total: 1000,
      pending: 460,
      delayed: 4,
      running: 4,
      succeeded: 530,
      failed: 2,
      retries: 5,
      done: 532,
      elapsedMs: 4000,
      ratePerSec: 812.4,
      etaSeconds: 35,
      complete: false,
      closed: true,
    };
    expect(formatProgress(p)).toBe('[#############-----------]  532/1000  53%  ok 530  failed 2  running 4  pending 464  retries 5  812/s  ETA 0:35');
    expect(formatProgress({ ...p, ratePerSec: 0.5, etaSeconds: undefined, retries: 0 })).toMatch(/ {2}30\.0\/min {2}ETA \?$/);
    expect(formatProgress({ ...p, done: 1000, succeeded: 1000, failed: 0, pending: 0, delayed: 0, running: 0, complete: true, elapsedMs: 83_000 })).toMatch(
      /^\[#{24}\] {2}1000\/1000 {2}100%.* done in 1:23$/,
    );
    expect(formatProgress({ ...p, total: 0, done: 0, complete: false })).toMatch(/^\[-{24}\] {2}0\/1000|^\[-{24}\] {2}0\/0 {2}0%/);
    expect(formatDuration(3725)).toBe('1:02:05');
    expect(formatDuration(-1)).toBe('?');
  });
});

describe('typed proxy', () => {
  test('Remote<T> keeps exported functions, drops the handler context, promises the awaited result', () => {
    type M = Remote<typeof MathModule>;
    const calls: [string, unknown[]][] = [];
    const m = createProxy<typeof MathModule>(async (fn, args) => {
      calls.push([fn, args]);
      return fn === 'add' ? 3 : undefined;
    });
    const add: (a: number, b: number) => Promise<number> = m.add;
    const sleep: (ms: number) => Promise<number> = m.sleep; // (ms, ctx) on the worker
    const whoami: () => Promise<{ id: string; attempt: number }> = m.whoami;
    const typeErrors = (): void => {
      // @ts-expect-error names starting with '_' are not callable
      void m._private;
      // @ts-expect-error wrong argument type
      void m.square('4');
    };
    void typeErrors;
    type Args = CallArgs<[x: number, ctx: HandlerContext]>;
    const a: Args = [1];
    expect(a).toEqual([1]);
    expect(typeof add).toBe('function');
    expect(typeof sleep).toBe('function');
    expect(typeof whoami).toBe('function');
    void (null as unknown as M);
    return add(1, 2).then((v) => {
      expect(v).toBe(3);
      expect(calls).toEqual([['add', [1, 2]]]);
      // Not thenable, no symbols.
      expect((m as unknown as { then?: unknown }).then).toBeUndefined();
      expect((m as unknown as Record<symbol, unknown>)[Symbol.iterator]).toBeUndefined();
    });
  });

  test('the package exports the SDK as taskbatch/sdk', async () => {
    const sdk = (await import('taskbatch/sdk' as string)) as Record<string, unknown>;
    for (const name of ['connect', 'TaskBatchClient', 'BatchHandle', 'RemoteCallError', 'CallTimeoutError', 'BatchNotFoundError', 'formatProgress']) expect(typeof sdk[name]).toBe('function');
  });
});

describe('the Redis a TaskBatch uses', () => {
  // A namespace without the operator's taskbatch-redis Secret (an unmanaged default Redis).
  const access = { kube: { find: async () => undefined }, namespace: 'ns', context: 'c', server: 'https://k' } as unknown as KubeAccess;
  const tb = (spec: Partial<TaskBatch['spec']>, status?: unknown): TaskBatch => ({
    metadata: { name: 'b', namespace: 'ns' },
    spec: { handler: { builtin: 'noop' }, ...spec },
    ...(status ? { status: status as TaskBatch['status'] } : {}),
  });

  test('spec.redis, then the recorded status.redis, then an override; never a guess', async () => {
    expect(await redisEndpointFor(access, tb({ redis: { url: 'redis://r:6379/2', username: 'u', cluster: true, tls: { enabled: true, insecureSkipVerify: true } } }))).toEqual({
      url: 'redis://r:6379/2',
      username: 'u',
      cluster: true,
      tls: { insecureSkipVerify: true },
    });
    expect(await redisEndpointFor(access, tb({}, { redis: { url: 'rediss://default-redis.tb.svc:6379', tls: true } }))).toEqual({ url: 'rediss://default-redis.tb.svc:6379', tls: {} });
    expect(await redisEndpointFor(access, tb({ redis: { url: 'redis://r:6379' } }), { url: 'redis://127.0.0.1:7000', password: 'pw' })).toEqual({ url: 'redis://127.0.0.1:7000', password: 'pw' });
    await expect(redisEndpointFor(access, tb({}))).rejects.toThrow(/uses the operator's default Redis, and its address is not recorded on the resource; pass it with --redis-url/);
  });

  test("spec.redis.sentinel: the sentinels, the primary's name and the database; the sentinels' password from the Secret", async () => {
    const b64 = (v: string): string => Buffer.from(v).toString('base64');
    const withSecret = { ...access, kube: { find: async () => ({ data: { password: b64('data-pw'), spw: b64('sentinel-pw') } }) } } as unknown as KubeAccess;
    const sentinel = { addresses: ['s-0.redis.svc:26379', '[fd00::5]:26380'], masterName: 'tb-primary', passwordKey: 'spw' };
    expect(await redisEndpointFor(withSecret, tb({ redis: { sentinel, secretRef: { name: 'creds' }, db: 2 } }))).toEqual({
      url: 'redis://tb-primary/2',
      password: 'data-pw',
      sentinel: {
        addresses: [
          { host: 's-0.redis.svc', port: 26379 },
          { host: 'fd00::5', port: 26380 },
        ],
        masterName: 'tb-primary',
        password: 'sentinel-pw',
      },
    });
    await expect(redisEndpointFor(access, tb({ redis: { sentinel: { addresses: ['s:0'], masterName: 'm' } } }))).rejects.toThrow(
      'TaskBatch ns/b spec.redis.sentinel.addresses[0]: "s:0" is not host:port with a port from 1 to 65535',
    );
  });

  test("on a managed default Redis: the namespace's user from Secret taskbatch-redis, read with the caller's rights", async () => {
    const read: string[] = [];
    const secret = { data: { username: Buffer.from('tb-ns-ns').toString('base64'), password: Buffer.from('ns-pw').toString('base64') } };
    const withSecret = {
      ...access,
      kube: {
        find: async (path: string) => {
          read.push(path);
          return secret;
        },
      },
    } as unknown as KubeAccess;
    expect(await redisEndpointFor(withSecret, tb({}, { redis: { url: 'redis://default:6379', username: 'admin' } }))).toEqual({ url: 'redis://default:6379', username: 'tb-ns-ns', password: 'ns-pw' });
    expect(read).toEqual(['/api/v1/namespaces/ns/secrets/taskbatch-redis']);
    // A batch with its own spec.redis never uses it; a password given by the caller wins.
    expect(await redisEndpointFor(withSecret, tb({ redis: { url: 'redis://mine:6379' } }))).toEqual({ url: 'redis://mine:6379' });
    expect(await redisEndpointFor(withSecret, tb({}, { redis: { url: 'redis://default:6379' } }), { password: 'given' })).toEqual({ url: 'redis://default:6379', password: 'given' });
    // A caller who may not read Secrets connects as before (and a managed Redis answers NOAUTH).
    const forbidden = {
      ...access,
      kube: {
        find: async () => {
          throw new KubeApiError(403, 'Forbidden', 'secrets "taskbatch-redis" is forbidden');
        },
      },
    } as unknown as KubeAccess;
    expect(await redisEndpointFor(forbidden, tb({}, { redis: { url: 'redis://default:6379' } }))).toEqual({ url: 'redis://default:6379' });
  });
});
