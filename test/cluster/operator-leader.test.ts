/**
 * Leader election on the real API server. (a) A rolling restart of two real operator processes
 * while a 2,000,000-item batch seeds slice by slice: kube-apiserver's audit log shows that the
 * old leader's last write was answered before the new leader's first one arrived. The replicas
 * authenticate as different users (client certificates), so the audit log tells them apart.
 * (b) A follower whose clock runs 60 s ahead never takes a lease that is being renewed, and does
 * take it once the holder goes silent. (c) The write fence itself: a client whose guard says no
 * sends no write and still reads.
 */
import { readFileSync } from 'node:fs';
import { startControlPlane, type ControlPlane } from '../../localcluster/index.js';
import { startRedisServer } from '../../localcluster/redis-server.js';
import { batchPath } from '../../api/taskbatch.js';
import { KubeClient, NotLeaderError } from '../../kube/client.js';
import { LEASE_DURATION_MS, LEASE_REQUEST_TIMEOUT_MS, LeaderElector, type Lease, type LeaseApi } from '../../operator/leader.js';
import { createLogger } from '../../operator/log.js';
import { systemClock } from '../../operator/workqueue.js';
import { eventually, sleep } from '../support/batches.js';
import { aTaskBatch, createNamespace, getBatch, installCrd, startOperator, type OperatorEnv, type OperatorProcess } from '../support/operator-env.js';

let cp: ControlPlane;
let env: OperatorEnv;
const operators: OperatorProcess[] = [];

beforeAll(async () => {
  cp = await startControlPlane({ audit: true });
  const kube = new KubeClient(cp.kubeConfig);
  await installCrd(kube);
  const redis = await startRedisServer();
  env = { cp, redis, kube, stop: async () => undefined };
}, 180_000);
afterAll(async () => {
  for (const op of operators) await op.kill('SIGKILL');
  await env?.redis.stop();
  await cp?.stop();
}, 60_000);
afterEach(() => {
  const state = expect.getState();
  if (state.assertionCalls !== state.numPassingAsserts) {
    for (const op of operators) console.log(`operator ${op.proc.pid} log tail:\n${op.logs().split('\n').slice(-40).join('\n')}`);
  }
});

interface AuditEvent {
  stage: string;
  verb: string;
  user: { username: string };
  objectRef?: { resource?: string; subresource?: string; namespace?: string; name?: string; apiGroup?: string };
  responseStatus?: { code?: number };
  /** RFC 3339 with microseconds, always six digits: compares as a string. */
  requestReceivedTimestamp: string;
  stageTimestamp: string;
}

function auditEvents(): AuditEvent[] {
  return readFileSync(cp.auditLogPath!, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as AuditEvent)
    .filter((e) => e.stage === 'ResponseComplete');
}

/** Writes the fence must stop: TaskBatches (and their status) and pods. */
const isObjectWrite = (e: AuditEvent): boolean => ['taskbatches', 'pods'].includes(e.objectRef?.resource ?? '') && ['create', 'update', 'patch', 'delete', 'deletecollection'].includes(e.verb);
const isLeaseWrite =
  (name: string) =>
  (e: AuditEvent): boolean =>
    e.objectRef?.resource === 'leases' && e.objectRef.name === name && e.verb !== 'get';

const show = (e: AuditEvent): string =>
  `${e.verb} ${e.objectRef?.resource}${e.objectRef?.subresource ? `/${e.objectRef.subresource}` : ''} ${e.objectRef?.name ?? ''} by ${e.user.username} received ${e.requestReceivedTimestamp} answered ${e.stageTimestamp} (${e.responseStatus?.code})`;

async function leaseHolder(name: string): Promise<string> {
  const lease = await env.kube.find<Lease>(`/apis/coordination.k8s.io/v1/namespaces/default/leases/${name}`);
  return lease?.spec.holderIdentity ?? '';
}

/** An operator replica authenticating as its own user (in system:masters, as the admin is). */
async function replica(name: string, extraEnv: Record<string, string>): Promise<{ op: OperatorProcess; user: string }> {
  const user = `taskbatch-operator-${name}`;
  const kc = await cp.createUserKubeconfig(user, ['system:masters']);
  const op = await startOperator(env, { KUBECONFIG: kc.path, POD_NAME: `replica-${name}`, TASKBATCH_LEADER_ELECTION: 'true', ...extraEnv });
  operators.push(op);
  return { op, user };
}

test("a rolling restart while a 2,000,000-item batch seeds: no write of the old leader after the new leader's first (audit log)", async () => {
  const ns = await createNamespace(env.kube, 'leader-roll');
  const settings = { TASKBATCH_LEASE_NAME: 'roll', TASKBATCH_SEED_SLICE_ITEMS: '100000', TASKBATCH_MAX_BATCH_ITEMS: '2000000' };
  const a = await replica('a', settings);
  await eventually(async () => (await leaseHolder('roll')) === 'replica-a', 60_000, 'replica a to lead');
  const b = await replica('b', settings);

  const total = 2_000_000;
  await env.kube.create(batchPath(ns), aTaskBatch(ns, 'big', { range: { start: 0, end: total }, handler: { builtin: 'noop' }, workers: { max: 1 } }));
  const seededBy = async (): Promise<number> => {
    const m = /(\d+) of (\d+) items seeded/.exec((await getBatch(env.kube, ns, 'big')).status?.conditions?.find((c) => c.type === 'Progressing')?.message ?? '');
    return m ? Number(m[1]) : 0;
  };
  // Mid-seed, with a slice in flight most of the time: roll the leader.
  const before = await eventually(
    async () => {
      const n = await seededBy();
      return n > 0 && n <= total / 2 ? n : undefined;
    },
    120_000,
    'seeding part-way',
  );
  // New small batches keep arriving meanwhile, so the new leader has writes to make at once
  // (finalizer, pods), while the old one is still inside a slice of the big batch.
  let creating = true;
  let created = 0;
  const creator = (async () => {
    while (creating) {
      await env.kube.create(batchPath(ns), aTaskBatch(ns, `small-${created++}`, { range: { start: 0, end: 10 }, handler: { builtin: 'noop' }, workers: { max: 1 } }));
      await sleep(250);
    }
  })();
  const sigtermAt = new Date().toISOString();
  try {
    await a.op.kill('SIGTERM');
    expect(a.op.proc.exitCode).toBe(0);
    await eventually(async () => (await leaseHolder('roll')) === 'replica-b', 60_000, 'replica b to lead');
    // b carries the seeding on (its own writes land in the audit log).
    await eventually(async () => (await seededBy()) > before && auditEvents().some((e) => e.user.username === b.user && isObjectWrite(e)), 120_000, 'replica b to write the batch');
  } finally {
    creating = false;
    await creator;
  }

  const events = auditEvents();
  const aWrites = events.filter((e) => e.user.username === a.user && isObjectWrite(e));
  const bWrites = events.filter((e) => e.user.username === b.user && isObjectWrite(e));
  expect(aWrites.length).toBeGreaterThan(0);
  expect(bWrites.length).toBeGreaterThan(0);
  const bFirst = bWrites.reduce((min, e) => (e.requestReceivedTimestamp < min.requestReceivedTimestamp ? e : min));
  const aLast = aWrites.reduce((max, e) => (e.stageTimestamp > max.stageTimestamp ? e : max));
  // Every write of a was answered before b's first write was received.
  expect(aWrites.filter((e) => e.stageTimestamp >= bFirst.requestReceivedTimestamp).map(show)).toEqual([]);
  // And the Lease changed hands in between: a's last Lease write (its release) after its last
  // object write, b's first Lease write (taking it) after that, b's first object write last.
  const aLeaseLast = events.filter((e) => e.user.username === a.user && isLeaseWrite('roll')(e)).at(-1)!;
  const bLeaseFirst = events.find((e) => e.user.username === b.user && isLeaseWrite('roll')(e))!;
  expect([
    aLast.stageTimestamp < aLeaseLast.requestReceivedTimestamp,
    aLeaseLast.stageTimestamp < bLeaseFirst.requestReceivedTimestamp,
    bLeaseFirst.stageTimestamp < bFirst.requestReceivedTimestamp,
  ]).toEqual([true, true, true]);
  // a shut down in that order: reconciles drained, then the Lease released.
  const log = a.op.logs();
  expect(log.indexOf('"msg":"Shutting down"')).toBeGreaterThan(-1);
  expect(log.indexOf('"msg":"Released leadership"')).toBeGreaterThan(log.indexOf('"msg":"Shutting down"'));
  const ms = (t: string): number => Date.parse(t);
  console.log(
    `rolling restart mid-seed: a's writes ${aWrites.length}, last answered ${ms(aLast.stageTimestamp) - ms(sigtermAt)} ms after SIGTERM; ` +
      `b took the Lease ${ms(bLeaseFirst.requestReceivedTimestamp) - ms(aLeaseLast.stageTimestamp)} ms after a released it; ` +
      `b's first write ${ms(bFirst.requestReceivedTimestamp) - ms(aLast.stageTimestamp)} ms after a's last (${show(bFirst)}); ${created} small batches created meanwhile`,
  );

  await b.op.kill('SIGTERM');
}, 600_000);

test('a follower whose clock is 60 s ahead never takes a lease that is renewed, and takes it once the holder falls silent', async () => {
  const name = 'skew';
  const log = createLogger({ test: 'skew' }, 'error');
  const leases = new KubeClient(cp.kubeConfig, { requestTimeoutMs: LEASE_REQUEST_TIMEOUT_MS });
  // The steady leader's API: real, until the test cuts it (a crash without release).
  let cut = false;
  const steadyApi: LeaseApi = {
    find: <T>(path: string) => (cut ? Promise.reject(new Error('cut')) : leases.find<T>(path)),
    create: <T>(path: string, body: unknown) => (cut ? Promise.reject(new Error('cut')) : leases.create<T>(path, body)),
    replace: <T>(path: string, body: unknown) => (cut ? Promise.reject(new Error('cut')) : leases.replace<T>(path, body)),
  };
  let steadyLost = 0;
  const steady = new LeaderElector(steadyApi, { namespace: 'default', name, identity: 'steady' }, log, { onStartedLeading: () => undefined, onStoppedLeading: () => steadyLost++ });
  let skewedStarted = 0;
  const ahead = { ...systemClock, now: () => Date.now() + 60_000 };
  const skewed = new LeaderElector(leases, { namespace: 'default', name, identity: 'skewed', clock: ahead }, log, { onStartedLeading: () => skewedStarted++, onStoppedLeading: () => undefined });

  const holders = new Set<string>();
  let renewals = 0;
  let staleRenewTime = false;
  const stopWatch = await env.kube.watch<Lease>(
    '/apis/coordination.k8s.io/v1/namespaces/default/leases',
    { fieldSelector: `metadata.name=${name}` },
    (e) => {
      holders.add(e.object.spec.holderIdentity ?? '');
      if (e.type === 'MODIFIED') renewals++;
      // What the old rule (renewTime + leaseDuration < now, by the follower's clock) would have called expired.
      if (Date.parse(e.object.spec.renewTime ?? '') + LEASE_DURATION_MS < ahead.now()) staleRenewTime = true;
    },
    () => undefined,
  );
  try {
    steady.start();
    await eventually(() => steady.isLeader, 30_000, 'steady to lead');
    skewed.start();
    // Three lease durations of renewals, each looking a minute stale to the skewed follower.
    await sleep(3 * LEASE_DURATION_MS);
    expect(renewals).toBeGreaterThan(5);
    expect(staleRenewTime).toBe(true);
    expect(skewedStarted).toBe(0);
    expect(skewed.isLeader).toBe(false);
    expect(steady.isLeader).toBe(true);
    expect(steadyLost).toBe(0);
    expect([...holders]).toEqual(['steady']);

    // The holder falls silent (no release): it fences itself at its deadline; the follower takes over.
    cut = true;
    await eventually(() => skewed.isLeader, 60_000, 'the skewed follower to take the silent lease');
    expect(steadyLost).toBe(1);
    expect(steady.isLeader).toBe(false);
    expect(await leaseHolder(name)).toBe('skewed');
    expect([...holders]).toEqual(['steady', 'skewed']);
  } finally {
    stopWatch();
    await steady.stop();
    await skewed.stop();
  }
}, 300_000);

test('the write fence: with the guard closed, create/patch/delete fail with NotLeaderError and change nothing; reads pass', async () => {
  const ns = await createNamespace(env.kube, 'leader-fence');
  const path = `/api/v1/namespaces/${ns}/configmaps`;
  let leading = true;
  const kube = new KubeClient(cp.kubeConfig);
  kube.setWriteGuard(() => leading);
  await kube.create(path, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'kept', namespace: ns }, data: { v: '1' } });

  leading = false;
  await expect(kube.create(path, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'refused', namespace: ns } })).rejects.toThrow(new NotLeaderError('POST', path));
  await expect(kube.patch(`${path}/kept`, { data: { v: '2' } })).rejects.toBeInstanceOf(NotLeaderError);
  await expect(kube.replace(`${path}/kept`, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'kept', namespace: ns }, data: { v: '3' } })).rejects.toBeInstanceOf(NotLeaderError);
  await expect(kube.delete(`${path}/kept`)).rejects.toThrow(/DELETE .*\/configmaps\/kept not sent: this operator replica no longer holds the leader Lease/);
  await kube.writesSettled();
  // Reads pass, and show that nothing was written.
  expect(await kube.find(`${path}/refused`)).toBeUndefined();
  expect((await kube.get<{ data: Record<string, string> }>(`${path}/kept`)).data).toEqual({ v: '1' });

  leading = true;
  await kube.patch(`${path}/kept`, { data: { v: '4' } });
  expect((await env.kube.get<{ data: Record<string, string> }>(`${path}/kept`)).data).toEqual({ v: '4' });
});
