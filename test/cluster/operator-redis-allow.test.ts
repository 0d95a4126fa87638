/**
 * The installer's bounds, enforced by a real operator process against a real API server
 * (issue 11, items 5 and 6): a TaskBatch may name only the allowed Redis addresses
 * (TASKBATCH_ALLOWED_REDIS) — refused ones are never connected to, whether the URL is literal or
 * comes from a Secret — and worker pods get the installer's resources, within its maximum, with
 * spec.pool.size bounded by the memory limit.
 */
import { createServer, type Server } from 'node:net';
import { batchPath } from '../../api/taskbatch.js';
import { connectRedis } from '../../queue/index.js';
import { startRedisServer, type RedisServer } from '../../localcluster/redis-server.js';
import { eventually } from '../support/batches.js';
import { aTaskBatch, createNamespace, getBatch, startOperator, startOperatorEnv, waitForCondition, workerPods, type OperatorEnv, type OperatorProcess } from '../support/operator-env.js';

const REFUSED_HOST = '127.0.0.99';
let env: OperatorEnv;
let op: OperatorProcess;
let allowed: RedisServer;
let ns: string;
/** A plain TCP listener where a refused Redis would be: it must never see a connection. */
let trap: Server;
let trapPort: number;
let trapConnections = 0;

beforeAll(async () => {
  env = await startOperatorEnv({ nodeAgent: false });
  allowed = await startRedisServer();
  trap = createServer((socket) => {
    trapConnections++;
    socket.destroy();
  });
  trapPort = await new Promise<number>((resolve, reject) => {
    trap.once('error', () => trap.listen(0, REFUSED_HOST, () => resolve((trap.address() as { port: number }).port)));
    trap.listen(6379, REFUSED_HOST, () => {
      trap.removeAllListeners('error');
      resolve(6379);
    });
    setTimeout(() => reject(new Error('trap did not listen')), 5000);
  });
  ns = await createNamespace(env.kube, 'redis-allow');
  op = await startOperator(env, {
    TASKBATCH_ALLOWED_REDIS: `${new URL(allowed.url).host}`,
    TASKBATCH_WORKER_RESOURCES: JSON.stringify({ requests: { cpu: '100m', memory: '256Mi' }, limits: { memory: '1Gi' } }),
    TASKBATCH_WORKER_MAX_RESOURCES: JSON.stringify({ cpu: '4', memory: '8Gi' }),
  });
}, 120_000);
afterAll(async () => {
  await op?.kill('SIGTERM');
  await new Promise((r) => trap?.close(r));
  await allowed?.stop();
  await env?.stop();
}, 60_000);

const refusedUrl = (): string => `redis://${REFUSED_HOST}:${trapPort}`;

async function failed(name: string): Promise<{ reason: string; message: string }> {
  const b = await waitForCondition(env.kube, ns, name, 'Failed', 60_000);
  const c = b.status!.conditions!.find((x) => x.type === 'Failed')!;
  return { reason: c.reason, message: c.message ?? '' };
}

describe('Redis addresses', () => {
  test('an allowed address (a real redis-server): the batch is seeded there', async () => {
    await env.kube.create(batchPath(ns), aTaskBatch(ns, 'allowed', { range: { end: 10 }, redis: { url: allowed.url } }));
    const b = await eventually(
      async () => {
        const got = await getBatch(env.kube, ns, 'allowed');
        return got.status?.items?.total === 10 ? got : undefined;
      },
      60_000,
      'seeded in the allowed Redis',
    );
    expect(b.status?.conditions?.find((c) => c.type === 'RedisUnavailable')).toMatchObject({ status: 'False', reason: 'Connected' });
    const redis = connectRedis({ url: allowed.url });
    try {
      expect((await redis.keys(`tb:{${ns}/allowed}:*`)).length).toBeGreaterThan(0);
    } finally {
      redis.disconnect();
    }
  }, 90_000);

  test('a literal URL outside the list: Failed naming spec.redis.url, and no TCP connection is ever attempted', async () => {
    await env.kube.create(batchPath(ns), aTaskBatch(ns, 'literal', { range: { end: 10 }, redis: { url: refusedUrl() } }));
    const f = await failed('literal');
    expect(f).toEqual({
      reason: 'RedisAddressNotAllowed',
      message: `spec.redis.url: host "${REFUSED_HOST}" port ${trapPort} is not in the installer's allowed Redis addresses (TASKBATCH_ALLOWED_REDIS); the operator did not connect to it. Leave spec.redis unset to use the default Redis, or ask the installer to add the address (Helm value redis.allowedAddresses)`,
    });
    const b = await getBatch(env.kube, ns, 'literal');
    expect(b.status?.queueEpoch).toBeUndefined();
    expect(await workerPods(env.kube, ns, 'literal')).toEqual([]);
    const events = await env.kube.list<{ reason?: string; involvedObject?: { name?: string } }>(`/api/v1/namespaces/${ns}/events`);
    expect(events.items.some((e) => e.reason === 'RedisAddressNotAllowed' && e.involvedObject?.name === 'literal')).toBe(true);
    // Deleting it does not wait on a cleanup the operator may not do.
    await env.kube.delete(batchPath(ns, 'literal'));
    await eventually(async () => !(await env.kube.find(batchPath(ns, 'literal'))), 30_000, 'the refused batch deleted');
    expect(trapConnections).toBe(0);
  }, 90_000);

  test('a URL from a Secret outside the list: Failed naming the Secret and key, never the value, and no connection', async () => {
    await env.kube.create(`/api/v1/namespaces/${ns}/secrets`, { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'elsewhere' }, stringData: { url: refusedUrl(), password: 'PASSWORD-SECRET-1' } });
    await env.kube.create(batchPath(ns), aTaskBatch(ns, 'from-secret', { range: { end: 10 }, redis: { secretRef: { name: 'elsewhere', urlKey: 'url' } } }));
    const f = await failed('from-secret');
    expect(f.reason).toBe('RedisAddressNotAllowed');
    expect(f.message).toBe(
      `spec.redis.secretRef: the URL in key url of Secret ${ns}/elsewhere names a Redis address that is not in the installer's allowed Redis addresses (TASKBATCH_ALLOWED_REDIS; the value is not shown); the operator did not connect to it. Leave spec.redis unset to use the default Redis, or ask the installer to add the address (Helm value redis.allowedAddresses)`,
    );
    const seen = [JSON.stringify((await getBatch(env.kube, ns, 'from-secret')).status), op.logs()].join('\n');
    expect(seen).not.toContain(REFUSED_HOST);
    expect(seen).not.toContain('PASSWORD-SECRET-1');
    // Give the operator time for any retry it might (wrongly) make.
    await new Promise((r) => setTimeout(r, 3000));
    expect(trapConnections).toBe(0);
  }, 90_000);
});

describe('worker resources', () => {
  test("a batch within the maximum: its worker pod gets the installer's defaults where the template sets none", async () => {
    await env.kube.create(
      batchPath(ns),
      aTaskBatch(ns, 'sized', { range: { end: 100 }, workers: { scaling: 'Replicas', replicas: 1 }, template: { spec: { containers: [{ name: 'worker', resources: { requests: { cpu: '2' } } }] } } }),
    );
    const [pod] = await eventually(
      async () => {
        const pods = await workerPods(env.kube, ns, 'sized');
        return pods.length > 0 ? pods : undefined;
      },
      60_000,
      'a worker pod',
    );
    expect(pod!.spec.containers[0]!.resources).toEqual({ requests: { cpu: '2', memory: '256Mi' }, limits: { memory: '1Gi' } });
  }, 90_000);

  test('a pool too big for the memory limit: Failed naming spec.pool.size, before Redis or pods', async () => {
    await env.kube.create(batchPath(ns), aTaskBatch(ns, 'big-pool', { range: { end: 10 }, pool: { mode: 'thread', size: 64 } }));
    expect(await failed('big-pool')).toEqual({
      reason: 'ResourcesRejected',
      message:
        "spec.pool.size: 64 thread executors need about 1632Mi (96Mi + 24Mi each), more than the worker container's memory limit of 1Gi holds (at most 38); lower spec.pool.size, or raise the worker container's resources.limits.memory in spec.template (up to the installer's maximum of 8Gi)",
    });
    const b = await getBatch(env.kube, ns, 'big-pool');
    expect(b.status?.queueEpoch).toBeUndefined();
    expect(await workerPods(env.kube, ns, 'big-pool')).toEqual([]);
  }, 90_000);

  test('resources over the maximum: Failed naming the field', async () => {
    await env.kube.create(batchPath(ns), aTaskBatch(ns, 'greedy', { range: { end: 10 }, template: { spec: { containers: [{ name: 'worker', resources: { limits: { memory: '64Gi' } } }] } } }));
    expect(await failed('greedy')).toEqual({
      reason: 'ResourcesRejected',
      message: "spec.template.spec.containers[0].resources.limits.memory: 64Gi exceeds the installer's maximum of 8Gi (worker.maxResources, TASKBATCH_WORKER_MAX_RESOURCES)",
    });
    expect(await workerPods(env.kube, ns, 'greedy')).toEqual([]);
  }, 90_000);
});
