/**
 * A value read from a user's Secret never reaches the batch's status, its Events or the
 * operator's log: errors name the Secret and the key, not the value (issue 11, item 2 in part).
 */
import { batchPath } from '../../api/taskbatch.js';
import { eventually } from '../support/batches.js';
import { aTaskBatch, createNamespace, getBatch, startOperator, startOperatorEnv, type OperatorEnv, type OperatorProcess } from '../support/operator-env.js';

let env: OperatorEnv;
let op: OperatorProcess;
let ns: string;

beforeAll(async () => {
  env = await startOperatorEnv({ nodeAgent: false });
  ns = await createNamespace(env.kube, 'secrets');
  op = await startOperator(env);
}, 120_000);
afterAll(async () => {
  await op?.kill('SIGTERM');
  await env?.stop();
}, 60_000);

const b64 = (s: string): string => Buffer.from(s).toString('base64');

async function secretWith(name: string, data: Record<string, string>): Promise<void> {
  await env.kube.create(`/api/v1/namespaces/${ns}/secrets`, { apiVersion: 'v1', kind: 'Secret', metadata: { name }, data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, b64(v)])) });
}

async function everythingVisible(batch: string): Promise<string> {
  const b = await getBatch(env.kube, ns, batch);
  const events = await env.kube.list<{ message?: string }>(`/api/v1/namespaces/${ns}/events`);
  return [JSON.stringify(b.status ?? {}), ...events.items.map((e) => e.message ?? ''), op.logs()].join('\n');
}

test('a Secret value that is not a Redis URL is reported by Secret and key, never by value', async () => {
  const planted = 'not-a-url-SECRET-VALUE-123';
  await secretWith('creds-bad-url', { url: planted, password: 'PASSWORD-SECRET-456' });
  await env.kube.create(batchPath(ns), aTaskBatch(ns, 'bad-url', { range: { end: 10 }, handler: { builtin: 'noop' }, redis: { secretRef: { name: 'creds-bad-url', urlKey: 'url' } } }));
  // A URL that is not one is the user's to fix: terminal, not a connection retried forever.
  const cond = await eventually(async () => (await getBatch(env.kube, ns, 'bad-url')).status?.conditions?.find((c) => c.type === 'Failed' && c.status === 'True'), 60_000, 'Failed');
  expect(cond.reason).toBe('RedisConfigInvalid');
  expect(cond.message).toContain(`spec.redis.secretRef: key url of Secret ${ns}/creds-bad-url is not a Redis URL`);
  await eventually(async () => /creds-bad-url is not a Redis URL/.test(await everythingVisible('bad-url')), 30_000, 'the Event written');
  const seen = await everythingVisible('bad-url');
  expect(seen).not.toContain(planted);
  expect(seen).not.toContain('SECRET-VALUE');
  expect(seen).not.toContain('PASSWORD-SECRET-456');
});

test('a host taken from a Secret does not appear in connection errors', async () => {
  // A loopback address nothing listens on: the connection is refused at once.
  await secretWith('creds-host', { url: 'redis://127.0.0.77:1', password: 'PASSWORD-SECRET-789' });
  await env.kube.create(batchPath(ns), aTaskBatch(ns, 'secret-host', { range: { end: 10 }, handler: { builtin: 'noop' }, redis: { secretRef: { name: 'creds-host', urlKey: 'url' } } }));
  const cond = await eventually(
    async () => (await getBatch(env.kube, ns, 'secret-host')).status?.conditions?.find((c) => c.type === 'RedisUnavailable' && c.status === 'True'),
    60_000,
    'RedisUnavailable',
  );
  expect(cond.reason).toBe('ConnectionFailed');
  const seen = await everythingVisible('secret-host');
  expect(seen).not.toContain('127.0.0.77');
  expect(seen).not.toContain('PASSWORD-SECRET-789');
});
