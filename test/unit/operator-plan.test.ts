import type { BatchSnapshot, WorkerPresence } from '../../queue/index.js';
import type { TaskBatch, TaskBatchSpec } from '../../api/taskbatch.js';
import { emptyMemory, pendingReason, planBatch, type BatchPlan, type ObservedBatch, type PlanConfig, type QueueObservation } from '../../operator/reconcile/plan.js';
import type { Pod } from '../../kube/pod.js';
import { withOutcome } from '../../operator/reconcile/reconciler.js';
import { itemSource } from '../../api/items.js';

const NOW = Date.parse('2026-11-30T12:00:00Z');
const EPOCH = 'e1';

const config: PlanConfig = {
  worker: { image: 'w:1', command: ['node', 'w.js'], metricsPort: 9090, restrictedSecurityContext: true, podSecurity: 'restricted', terminationGracePeriodSeconds: 60 } as PlanConfig['worker'],
  pollIntervalMs: 1000,
  maxWorkerFailures: 3,
  maxBatchItems: 1_000_000,
  seedSliceItems: 1000,
  namespaceItemQuota: 0,
  podPendingTimeoutMs: 60_000,
  workerStartGraceMs: 30_000,
  finishedRecheckMs: 30_000,
};

function batch(spec: Partial<TaskBatchSpec> = {}, status: TaskBatch['status'] | null = { queueEpoch: EPOCH, seeded: true, startTime: iso(NOW - 10_000) }): TaskBatch {
  return {
    apiVersion: 'taskbatch.dev/v1alpha1',
    kind: 'TaskBatch',
    metadata: { name: 'b', namespace: 'ns', uid: 'u1', generation: 1, resourceVersion: '10', finalizers: ['taskbatch.dev/redis-cleanup'] },
    spec: { handler: { module: 'h.js' }, range: { end: 1000 }, ...spec } as TaskBatchSpec,
    ...(status ? { status } : {}),
  };
}

function snap(s: Partial<BatchSnapshot> = {}): BatchSnapshot {
  return {
    epoch: EPOCH,
    closed: true,
    total: 1000,
    pending: 0,
    delayed: 0,
    running: 0,
    succeeded: 0,
    failed: 0,
    retries: 0,
    dueDelayed: 0,
    seedCursor: '1000',
    handedBack: 0,
    changes: 0,
    complete: false,
    ...s,
  } as BatchSnapshot;
}

function pod(name: string, o: { phase?: NonNullable<Pod['status']>['phase']; ready?: boolean; ageMs?: number; epoch?: string; waiting?: string; terminating?: boolean } = {}): Pod {
  const created = iso(NOW - (o.ageMs ?? 120_000));
  const phase = o.phase ?? 'Running';
  return {
    metadata: {
      name,
      namespace: 'ns',
      uid: `uid-${name}`,
      creationTimestamp: created,
      labels: { 'taskbatch.dev/batch': 'b' },
      annotations: { 'taskbatch.dev/queue-epoch': o.epoch ?? EPOCH },
      ...(o.terminating ? { deletionTimestamp: iso(NOW) } : {}),
    },
    spec: { containers: [{ name: 'worker' }], nodeName: 'n1' },
    status: {
      phase,
      startTime: created,
      conditions: [{ type: 'Ready', status: o.ready === false || phase !== 'Running' ? 'False' : 'True' }],
      ...(o.waiting ? { containerStatuses: [{ name: 'worker', state: { waiting: { reason: o.waiting } } }] } : {}),
    },
  };
}

function worker(id: string, o: Partial<WorkerPresence> = {}): WorkerPresence {
  return { id, heartbeatAt: new Date(NOW), ageMs: 0, drainRequested: false, inflight: 0, running: 0, capacity: 4, mode: 'async', draining: false, startedAt: NOW - 60_000, ...o };
}

function observe(o: Partial<ObservedBatch> & { queue?: QueueObservation } = {}): ObservedBatch {
  return { batch: batch(), pods: [], queue: { kind: 'ok', snapshot: snap(), workers: [] }, heldByOthers: 0, now: NOW, memory: emptyMemory(), config, ...o };
}

const kinds = (p: BatchPlan): string[] => p.actions.map((a) => a.kind);
const cond = (p: BatchPlan, type: string) => p.status.conditions?.find((c) => c.type === type);
const created = (p: BatchPlan): number => p.actions.reduce((n, a) => n + (a.kind === 'createPods' ? a.count : 0), 0);

describe('planBatch: queue and seeding', () => {
  test('a new batch creates its queue first, then seeds in bounded slices, then closes it', () => {
    let p = planBatch(observe({ batch: batch({}, null), queue: { kind: 'absent' }, source: { kind: 'items', source: itemSource({ range: { end: 2500 } } as TaskBatchSpec)!, field: 'spec.range' } }));
    expect(kinds(p)).toEqual(['createQueue']);
    expect(p.status.state).toBe('Seeding');
    expect(p.requeueAfterMs).toBe(1);
    const source = { kind: 'items' as const, source: itemSource({ range: { end: 2500 } } as TaskBatchSpec)!, field: 'spec.range' };
    p = planBatch(observe({ batch: batch({ range: { end: 2500 } }, { queueEpoch: EPOCH }), source, queue: { kind: 'ok', snapshot: snap({ closed: false, total: 0, seedCursor: '' }), workers: [] } }));
    expect(p.actions).toEqual([expect.objectContaining({ kind: 'seed', from: 0, count: 1000, close: false })]);
    expect(cond(p, 'Progressing')?.message).toContain('0 of 2500 items seeded');
    p = planBatch(
      observe({
        batch: batch({ range: { end: 2500 } }, { queueEpoch: EPOCH }),
        source,
        queue: { kind: 'ok', snapshot: snap({ closed: false, total: 2000, pending: 2000, seedCursor: '2000' }), workers: [] },
      }),
    );
    expect(p.actions[0]).toEqual(expect.objectContaining({ kind: 'seed', from: 2000, count: 500, close: true }));
    // Workers start as soon as the first slice is in.
    expect(created(p)).toBe(10);
    p = planBatch(observe({ batch: batch({ range: { end: 2500 } }, { queueEpoch: EPOCH }), source, queue: { kind: 'ok', snapshot: snap({ total: 2500, pending: 2500 }), workers: [] } }));
    expect(p.status.seeded).toBe(true);
    expect(kinds(p)).not.toContain('seed');
  });

  test('nothing is seeded while suspended or over the namespace quota', () => {
    const source = { kind: 'items' as const, source: itemSource({ range: { end: 500 } } as TaskBatchSpec)!, field: 'spec.range' };
    const unseeded = { queueEpoch: EPOCH };
    const q: QueueObservation = { kind: 'ok', snapshot: snap({ closed: false, total: 0, seedCursor: '' }), workers: [] };
    expect(kinds(planBatch(observe({ batch: batch({ suspend: true }, unseeded), source, queue: q })))).toEqual([]);
    const over = planBatch(observe({ batch: batch({}, unseeded), source, queue: q, heldByOthers: 900, config: { ...config, namespaceItemQuota: 1000 } }));
    expect(kinds(over)).toEqual([]);
    expect(cond(over, 'QuotaExceeded')).toEqual(expect.objectContaining({ status: 'True', reason: 'NamespaceItemQuota' }));
  });

  test('too many items and spec errors fail the batch before anything reaches Redis', () => {
    const huge = { kind: 'items' as const, source: itemSource({ range: { end: 2_000_000 } } as TaskBatchSpec)!, field: 'spec.range' };
    const p = planBatch(observe({ batch: batch({}, null), queue: { kind: 'absent' }, source: huge }));
    expect(kinds(p)).toEqual([]);
    expect(cond(p, 'Failed')).toEqual(expect.objectContaining({ status: 'True', reason: 'TooManyItems' }));
    expect(cond(p, 'Failed')?.message).toContain('spec.range: 2000000 items');
    const missing = planBatch(
      observe({ batch: batch({}, null), queue: { kind: 'absent' }, source: { kind: 'error', reason: 'ItemsSourceNotFound', message: 'spec.itemsFrom: ConfigMap x not found in namespace ns' } }),
    );
    expect(cond(missing, 'Failed')?.reason).toBe('ItemsSourceNotFound');
    const refused = planBatch(observe({ queue: { kind: 'refused', reason: 'RedisConfigInvalid', message: 'spec.redis.url: not a redis:// URL' } }));
    expect(cond(refused, 'Failed')?.reason).toBe('RedisConfigInvalid');
    expect(refused.status.state).toBe('Failed');
  });

  test('lost state re-seeds under a new epoch; an open batch fails instead', () => {
    const p = planBatch(observe({ queue: { kind: 'lost', message: 'epoch e1 not found' }, memory: { ...emptyMemory(), expectedPods: { x: NOW } } }));
    expect(kinds(p)).toEqual(['resetQueue']);
    expect(p.status.seeded).toBe(false);
    expect(p.memory.expectedPods).toEqual({});
    expect(cond(p, 'QueueStateLost')).toEqual(expect.objectContaining({ status: 'False', reason: 'Reseeded' }));
    const open = planBatch(observe({ batch: batch({ open: true, range: undefined }), queue: { kind: 'lost', message: 'gone' } }));
    expect(kinds(open)).toEqual([]);
    expect(cond(open, 'Failed')?.reason).toBe('QueueStateLost');
  });

  test('a rollback (an older snapshot restored under the same epoch) is detected; seeding resumes from the restored cursor', () => {
    const status = { queueEpoch: EPOCH, seeded: true, items: { total: 20_000, succeeded: 4000 } };
    const restored: QueueObservation = { kind: 'ok', snapshot: snap({ total: 5000, pending: 2000, succeeded: 3000, closed: false, seedCursor: '5000' }), workers: [] };
    const p = planBatch(observe({ batch: batch({ range: { end: 20_000 } }, status), queue: restored }));
    expect(cond(p, 'QueueStateLost')).toEqual(expect.objectContaining({ status: 'True', reason: 'RolledBack', message: expect.stringContaining('item total 20000 → 5000; succeeded 4000 → 3000') }));
    expect(p.events.map((e) => e.reason)).toContain('QueueRolledBack');
    expect(p.status.seeded).toBe(false);
    expect(cond(p, 'Failed')).toBeUndefined();
    // The next pass reads the source and seeds from the restored cursor; nothing is seeded twice.
    const source = { kind: 'items' as const, source: itemSource({ range: { end: 20_000 } } as TaskBatchSpec)!, field: 'spec.range' };
    const next = planBatch(observe({ batch: batch({ range: { end: 20_000 } }, p.status), queue: restored, source }));
    expect(next.actions[0]).toEqual(expect.objectContaining({ kind: 'seed', from: 5000 }));
    expect(cond(next, 'QueueStateLost')?.reason).toBe('RolledBack');
    // Seeded again: the condition clears.
    const done = planBatch(observe({ batch: batch({ range: { end: 20_000 } }, next.status), queue: { kind: 'ok', snapshot: snap({ total: 20_000, pending: 17_000, succeeded: 3000 }), workers: [] } }));
    expect(cond(done, 'QueueStateLost')).toEqual(expect.objectContaining({ status: 'False', reason: 'RolledBackReseeded' }));
    expect(done.status.seeded).toBe(true);
  });

  test('a rollback after seeding only re-runs items; an open batch rolled back fails; a re-seeded epoch is not a rollback', () => {
    const after = planBatch(
      observe({
        batch: batch({}, { queueEpoch: EPOCH, seeded: true, items: { total: 1000, succeeded: 900 } }),
        queue: { kind: 'ok', snapshot: snap({ total: 1000, succeeded: 600, pending: 400 }), workers: [] },
      }),
    );
    expect(cond(after, 'QueueStateLost')).toEqual(expect.objectContaining({ status: 'False', reason: 'RolledBackReseeded' }));
    expect(after.status.seeded).toBe(true);
    expect(created(after)).toBeGreaterThan(0);
    const open = planBatch(
      observe({
        batch: batch({ open: true, range: undefined }, { queueEpoch: EPOCH, seeded: true, items: { total: 100 } }),
        queue: { kind: 'ok', snapshot: snap({ total: 50, pending: 50, closed: false }), workers: [] },
      }),
    );
    expect(cond(open, 'Failed')?.reason).toBe('QueueStateLost');
    const reset = planBatch(observe({ batch: batch({}, { queueEpoch: EPOCH, seeded: true, items: { total: 1000, succeeded: 900 }, queueChanges: 5000 }), queue: { kind: 'lost', message: 'gone' } }));
    expect(reset.status.items).toBeUndefined();
    expect(reset.status.queueChanges).toBeUndefined();
  });

  test('a rollback that undid only claims and retries (totals unchanged) shows in the state-change count', () => {
    const status = { queueEpoch: EPOCH, seeded: true, items: { total: 1000, succeeded: 0, running: 64 }, queueChanges: 1500 };
    const p = planBatch(observe({ batch: batch({}, status), queue: { kind: 'ok', snapshot: snap({ total: 1000, pending: 1000, changes: 1000 }), workers: [] } }));
    expect(cond(p, 'QueueStateLost')).toEqual(expect.objectContaining({ status: 'False', reason: 'RolledBackReseeded', message: expect.stringContaining('state changes 1500 → 1000') }));
    expect(p.events.map((e) => e.reason)).toContain('QueueRolledBack');
    expect(p.status.queueChanges).toBe(1000);
    // Growing again from there is no new rollback.
    const next = planBatch(observe({ batch: batch({}, p.status), queue: { kind: 'ok', snapshot: snap({ total: 1000, pending: 990, running: 10, changes: 1010 }), workers: [] } }));
    expect(next.events.map((e) => e.reason)).not.toContain('QueueRolledBack');
    expect(next.status.queueChanges).toBe(1010);
    // An open batch that lost no submitted item goes on (only a shrunken total fails it).
    const open = planBatch(
      observe({
        batch: batch({ open: true, range: undefined }, { ...status, items: { total: 1000, succeeded: 10 } }),
        queue: { kind: 'ok', snapshot: snap({ total: 1000, pending: 995, succeeded: 5, closed: false, changes: 1000 }), workers: [] },
      }),
    );
    expect(cond(open, 'Failed')).toBeUndefined();
    expect(cond(open, 'QueueStateLost')).toEqual(expect.objectContaining({ status: 'False', reason: 'RolledBackRecovered' }));
  });

  test('Redis unavailable: condition, event, requeue at the endpoint backoff, no scaling', () => {
    const p = planBatch(observe({ queue: { kind: 'unavailable', message: 'Redis at 127.0.0.1:1 refused the connection (ECONNREFUSED)', retryAfterMs: 4000 }, pods: [pod('w1')] }));
    expect(kinds(p)).toEqual([]);
    expect(cond(p, 'RedisUnavailable')).toEqual(expect.objectContaining({ status: 'True', message: expect.stringContaining('127.0.0.1:1') }));
    expect(p.requeueAfterMs).toBe(1000);
    expect(p.status.state).toBe('RedisUnavailable');
  });
});

describe('planBatch: worker pods', () => {
  const backlog = (n: number): QueueObservation => ({ kind: 'ok', snapshot: snap({ pending: n }), workers: [] });

  test('scales to the backlog; pods not yet in the cache count as supply', () => {
    expect(created(planBatch(observe({ queue: backlog(250) })))).toBe(3);
    expect(created(planBatch(observe({ queue: backlog(250), memory: { ...emptyMemory(), expectedPods: { a: NOW, b: NOW } } })))).toBe(1);
    // An expectation is met once the pod is in the cache in any state, even deleted.
    const p = planBatch(observe({ queue: backlog(250), pods: [pod('a', { terminating: true })], memory: { ...emptyMemory(), expectedPods: { a: NOW } } }));
    expect(p.memory.expectedPods).toEqual({});
  });

  test('fixed replicas are capped by workers.max', () => {
    const p = planBatch(observe({ batch: batch({ workers: { scaling: 'Replicas', replicas: 5, max: 4 } }), queue: backlog(0) }));
    expect(created(p)).toBe(4);
  });

  test('a failed pod is counted once, deleted, and replaced only after a backoff', () => {
    const p = planBatch(observe({ queue: backlog(100), pods: [pod('w1', { phase: 'Failed' })] }));
    expect(p.actions).toContainEqual({ kind: 'deletePod', name: 'w1', reason: 'Failed' });
    expect(p.status.workers?.failures).toBe(1);
    expect(created(p)).toBe(0);
    expect(p.events.map((e) => e.reason)).toContain('WorkerFailed');
    expect(cond(p, 'Degraded')).toEqual(expect.objectContaining({ status: 'True', reason: 'WorkerPodsFailing' }));
    const again = planBatch(observe({ batch: batch({}, p.status), queue: backlog(100), pods: [pod('w1', { phase: 'Failed' })], memory: p.memory }));
    expect(again.status.workers?.failures).toBe(1);
  });

  test('a pod that never starts is shown at once and counted as a failure after the pending timeout', () => {
    const young = planBatch(observe({ queue: backlog(100), pods: [pod('w1', { phase: 'Pending', waiting: 'ImagePullBackOff', ageMs: 5000 })] }));
    expect(cond(young, 'Degraded')).toEqual(expect.objectContaining({ status: 'True', reason: 'WorkerPodsPending', message: expect.stringContaining('w1: ImagePullBackOff') }));
    expect(kinds(young)).not.toContain('deletePod');
    const old = planBatch(observe({ queue: backlog(100), pods: [pod('w1', { phase: 'Pending', waiting: 'CreateContainerConfigError', ageMs: 61_000 })] }));
    expect(old.actions).toContainEqual({ kind: 'deletePod', name: 'w1', reason: 'PendingTooLong' });
    expect(old.status.workers?.failures).toBe(1);
    expect(old.events.find((e) => e.reason === 'WorkerPodStuck')?.message).toContain('CreateContainerConfigError');
  });

  test('the pending reason names scheduling problems too', () => {
    const p = pod('w1', { phase: 'Pending' });
    p.spec.nodeName = undefined;
    p.status!.conditions = [{ type: 'PodScheduled', status: 'False', reason: 'Unschedulable', message: '0/1 nodes are available' }];
    expect(pendingReason(p)).toBe('Unschedulable: 0/1 nodes are available');
  });

  test('too many failed pods in a row fail the batch and stop its pods', () => {
    const p = planBatch(observe({ batch: batch({}, { queueEpoch: EPOCH, seeded: true, workers: { failures: 2 } }), queue: backlog(100), pods: [pod('w1', { phase: 'Failed' }), pod('w2')] }));
    expect(cond(p, 'Failed')?.reason).toBe('WorkersCrashLooping');
    expect(p.actions).toContainEqual({ kind: 'deletePod', name: 'w2', reason: 'BatchFailed' });
  });

  test('progress resets the failure count', () => {
    const p = planBatch(
      observe({
        batch: batch({}, { queueEpoch: EPOCH, seeded: true, workers: { failures: 2 } }),
        queue: { kind: 'ok', snapshot: snap({ pending: 10, succeeded: 5 }), workers: [] },
        memory: { ...emptyMemory(), lastSucceeded: 3 },
      }),
    );
    expect(p.status.workers?.failures).toBe(0);
    expect(cond(p, 'Degraded')?.status).toBe('False');
  });

  test('pods of an old epoch and finished pods are deleted', () => {
    const p = planBatch(observe({ queue: backlog(0), pods: [pod('old', { epoch: 'e0' }), pod('done', { phase: 'Succeeded' })] }));
    expect(p.actions).toEqual(
      expect.arrayContaining([
        { kind: 'deletePod', name: 'old', reason: 'StaleEpoch' },
        { kind: 'deletePod', name: 'done', reason: 'Succeeded' },
      ]),
    );
  });

  test('scale-in drains the idle workers, never deletes one, and a drained worker is not mistaken for a new one', () => {
    const spec = { workers: { scaling: 'Replicas' as const, replicas: 1, max: 10 } };
    const pods = ['w1', 'w2', 'w3', 'w4', 'w5'].map((n) => pod(n));
    const busy = worker('w3', { inflight: 2, running: 2 });
    const p = planBatch(observe({ batch: batch(spec), queue: { kind: 'ok', snapshot: snap({ pending: 100 }), workers: [worker('w1'), worker('w2'), busy, worker('w4'), worker('w5')] }, pods }));
    const drained = p.actions.filter((a) => a.kind === 'drainWorker').map((a) => (a as { name: string }).name);
    expect(drained).toHaveLength(4);
    expect(drained).not.toContain('w3');
    expect(kinds(p)).not.toContain('deletePod');
    expect(created(p)).toBe(0);
    // The drained workers left (presence gone) but their pods still show Running: they are exiting.
    const next = planBatch(observe({ batch: batch(spec, p.status), queue: { kind: 'ok', snapshot: snap({ pending: 100 }), workers: [busy] }, pods, memory: p.memory }));
    expect(created(next)).toBe(0);
    expect(kinds(next)).not.toContain('drainWorker');
    expect(next.status.workers).toEqual(expect.objectContaining({ current: 5, draining: 4 }));
  });

  test('a drain asked of a worker that had not registered yet is asked again until its entry shows it', () => {
    const spec = { workers: { scaling: 'Replicas' as const, replicas: 1, max: 10 } };
    const pods = ['w1', 'w2'].map((n) => pod(n));
    // w2's pod runs but its worker has not registered: the drain request lands before it does.
    const p = planBatch(observe({ batch: batch(spec), queue: { kind: 'ok', snapshot: snap({ pending: 10 }), workers: [worker('w1', { inflight: 1 })] }, pods }));
    expect(p.actions).toEqual([{ kind: 'drainWorker', name: 'w2' }]);
    // A registry prune dropped the request before w2 registered: w2 shows up without it.
    const lost = planBatch(
      observe({ batch: batch(spec, p.status), queue: { kind: 'ok', snapshot: snap({ pending: 10 }), workers: [worker('w1', { inflight: 1 }), worker('w2')] }, pods, memory: p.memory }),
    );
    expect(lost.actions).toEqual([{ kind: 'drainWorker', name: 'w2' }]);
    expect(created(lost)).toBe(0);
    // Once the entry shows the request, nothing more is asked.
    const shown = planBatch(
      observe({
        batch: batch(spec, lost.status),
        queue: { kind: 'ok', snapshot: snap({ pending: 10 }), workers: [worker('w1', { inflight: 1 }), worker('w2', { drainRequested: true })] },
        pods,
        memory: lost.memory,
      }),
    );
    expect(kinds(shown)).not.toContain('drainWorker');
  });

  test('suspend deletes the pods, stops the deadline timer, keeps the items', () => {
    const p = planBatch(observe({ batch: batch({ suspend: true, activeDeadlineSeconds: 5 }), queue: backlog(100), pods: [pod('w1')] }));
    expect(p.actions).toEqual([{ kind: 'deletePod', name: 'w1', reason: 'Suspended' }]);
    expect(p.status.startTime).toBeUndefined();
    expect(cond(p, 'Failed')).toBeUndefined();
    expect(p.status.state).toBe('Suspended');
    // Resumed: the timer starts again now.
    const resumed = planBatch(observe({ batch: batch({ activeDeadlineSeconds: 5 }, p.status), queue: backlog(100) }));
    expect(resumed.status.startTime).toBe(iso(NOW));
    expect(cond(resumed, 'Failed')).toBeUndefined();
  });
});

describe('planBatch: outcome', () => {
  test('complete, or failed by the failure policy, or by the deadline', () => {
    const done = planBatch(observe({ queue: { kind: 'ok', snapshot: snap({ succeeded: 999, failed: 1, complete: true }), workers: [] } }));
    expect(cond(done, 'Failed')?.reason).toBe('FailurePolicyExceeded');
    const ok = planBatch(observe({ batch: batch({ failurePolicy: { maxFailedItems: 1 } }), queue: { kind: 'ok', snapshot: snap({ succeeded: 999, failed: 1, complete: true }), workers: [] } }));
    expect(cond(ok, 'Complete')?.status).toBe('True');
    expect(ok.status.state).toBe('Complete');
    const late = planBatch(observe({ batch: batch({ activeDeadlineSeconds: 5 }), queue: { kind: 'ok', snapshot: snap({ pending: 5 }), workers: [] } }));
    expect(cond(late, 'Failed')?.reason).toBe('DeadlineExceeded');
    const early = planBatch(observe({ batch: batch({ activeDeadlineSeconds: 60 }), queue: { kind: 'ok', snapshot: snap({ pending: 5 }), workers: [] } }));
    expect(early.requeueAfterMs).toBeLessThanOrEqual(50_000);
  });

  test('a finished batch deletes its pods, keeps its counts true, and is looked at again', () => {
    const status = {
      queueEpoch: EPOCH,
      seeded: true,
      completionTime: iso(NOW - 1000),
      items: { running: 3 },
      conditions: [{ type: 'Failed', status: 'True' as const, reason: 'DeadlineExceeded', message: 'x', lastTransitionTime: iso(NOW - 1000) }],
    };
    const p = planBatch(observe({ batch: batch({}, status), pods: [pod('w1')], queue: { kind: 'ok', snapshot: snap({ pending: 3 }), workers: [] } }));
    expect(p.actions).toEqual([{ kind: 'deletePod', name: 'w1', reason: 'BatchFinished' }]);
    expect(p.status.items?.running).toBe(0);
    expect(p.status.items?.pending).toBe(3);
    expect(cond(p, 'Failed')?.status).toBe('True'); // a deadline failure is not reopened
    expect(p.requeueAfterMs).toBe(30_000);
  });

  test('replayed items reopen a finished batch', () => {
    const status = {
      queueEpoch: EPOCH,
      seeded: true,
      completionTime: iso(NOW - 1000),
      conditions: [{ type: 'Failed', status: 'True' as const, reason: 'FailurePolicyExceeded', message: 'x', lastTransitionTime: iso(NOW - 1000) }],
    };
    const p = planBatch(observe({ batch: batch({}, status), queue: { kind: 'ok', snapshot: snap({ pending: 2, succeeded: 998 }), workers: [] } }));
    expect(cond(p, 'Failed')).toEqual(expect.objectContaining({ status: 'False', reason: 'Reopened' }));
    expect(p.status.completionTime).toBeUndefined();
    expect(p.events.map((e) => e.reason)).toEqual(['Reopened']);
    const next = planBatch(observe({ batch: batch({}, p.status), queue: { kind: 'ok', snapshot: snap({ pending: 2, succeeded: 998 }), workers: [] } }));
    expect(created(next)).toBe(1);
    expect(next.status.state).toBe('Pending');
  });

  test('ttlSecondsAfterFinished deletes the batch', () => {
    const status = {
      queueEpoch: EPOCH,
      seeded: true,
      completionTime: iso(NOW - 11_000),
      conditions: [{ type: 'Complete', status: 'True' as const, reason: 'AllItemsProcessed', message: 'x', lastTransitionTime: iso(NOW - 11_000) }],
    };
    expect(kinds(planBatch(observe({ batch: batch({ ttlSecondsAfterFinished: 10 }, status), queue: { kind: 'ok', snapshot: snap({ complete: true, succeeded: 1000 }), workers: [] } })))).toEqual([
      'deleteBatch',
    ]);
  });
});

describe('withOutcome', () => {
  test('a refused pod create becomes Degraded/PodCreateFailed with the API message', () => {
    const p = planBatch(observe({ queue: { kind: 'ok', snapshot: snap({ pending: 100 }), workers: [] } }));
    const s = withOutcome(p.status, { errors: [], createFailure: 'Error creating worker pod: pods "b-x" is forbidden: exceeded quota' }, batch(), NOW);
    expect(s.conditions?.find((c) => c.type === 'Degraded')).toEqual(expect.objectContaining({ status: 'True', reason: 'PodCreateFailed', message: expect.stringContaining('exceeded quota') }));
    expect(s.state).toBeDefined();
  });

  test('a refusal stays Degraded/PodCreateFailed through the create backoff, until no pod is wanted', () => {
    const refused = 'Error creating worker pod: pods "b-x" is forbidden: exceeded quota';
    const memory = { ...emptyMemory(), createFailures: 1, lastCreateFailureAt: NOW - 100, lastCreateFailure: refused };
    const p = planBatch(observe({ memory, queue: { kind: 'ok', snapshot: snap({ pending: 100 }), workers: [] } }));
    expect(created(p)).toBe(0);
    expect(cond(p, 'Degraded')).toEqual(expect.objectContaining({ status: 'True', reason: 'PodCreateFailed', message: refused }));
    const later = planBatch(observe({ memory: p.memory, now: NOW + 2000, queue: { kind: 'ok', snapshot: snap({ pending: 100 }), workers: [] } }));
    expect(created(later)).toBeGreaterThan(0);
    expect(cond(later, 'Degraded')?.reason).toBe('PodCreateFailed');
    const suspended = planBatch(observe({ memory: p.memory, batch: batch({ suspend: true }), queue: { kind: 'ok', snapshot: snap({ pending: 100 }), workers: [] } }));
    expect(suspended.memory.createFailures).toBe(0);
    expect(suspended.memory.lastCreateFailure).toBeUndefined();
  });

  test('the epoch just created is recorded; items invalid while seeding fail the batch', () => {
    const p = planBatch(observe({ batch: batch({}, null), queue: { kind: 'absent' } }));
    expect(withOutcome(p.status, { errors: [], epoch: 'e9' }, batch(), NOW).queueEpoch).toBe('e9');
    const s = withOutcome(p.status, { errors: [], terminal: { reason: 'InvalidItems', message: 'line 3 is not valid JSON' } }, batch(), NOW);
    expect(s.state).toBe('Failed');
  });
});

/** mulberry32: a small seeded PRNG so a failing seed can be replayed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('planBatch properties', () => {
  const phases = ['Pending', 'Running', 'Running', 'Running', 'Succeeded', 'Failed'] as const;

  function randomObserved(r: () => number): ObservedBatch {
    const int = (n: number): number => Math.floor(r() * n);
    const max = 1 + int(8);
    const spec: Partial<TaskBatchSpec> = {
      workers: r() < 0.3 ? { scaling: 'Replicas', replicas: int(12), max } : { min: int(max + 1), max, itemsPerWorker: 1 + int(50) },
      ...(r() < 0.15 ? { suspend: true } : {}),
      ...(r() < 0.2 ? { activeDeadlineSeconds: 1 + int(60) } : {}),
    };
    const nPods = int(max + 4);
    const pods: Pod[] = [];
    const workers: WorkerPresence[] = [];
    for (let i = 0; i < nPods; i++) {
      const name = `w${i}`;
      pods.push(
        pod(name, {
          phase: phases[int(phases.length)],
          ageMs: int(200_000),
          ...(r() < 0.1 ? { terminating: true } : {}),
          ...(r() < 0.1 ? { epoch: 'e0' } : {}),
          ...(r() < 0.2 ? { waiting: 'ImagePullBackOff' } : {}),
        }),
      );
      if (r() < 0.7) workers.push(worker(name, { inflight: int(3), draining: r() < 0.2, drainRequested: r() < 0.2 }));
    }
    const total = int(500);
    const succeeded = int(total + 1);
    const failed = int(total - succeeded + 1);
    const rest = total - succeeded - failed;
    const running = int(rest + 1);
    const pending = rest - running;
    const closed = r() < 0.8;
    const snapshot = snap({ total, succeeded, failed, running, pending, closed, complete: closed && rest === 0 });
    const kinds: QueueObservation[] = [
      { kind: 'ok', snapshot, workers },
      { kind: 'ok', snapshot, workers },
      { kind: 'ok', snapshot, workers },
      { kind: 'lost', message: 'gone' },
      { kind: 'lost', message: 'keys gone', partial: true },
      { kind: 'unavailable', message: 'down', retryAfterMs: 500 },
      { kind: 'misconfigured', message: 'evicts keys', retryAfterMs: 15_000 },
      { kind: 'absent' },
    ];
    const queue = kinds[int(kinds.length)]!;
    const seeded = r() < 0.7;
    const memory = { ...emptyMemory(), expectedPods: r() < 0.3 ? { [`x${int(3)}`]: NOW - int(90_000) } : {}, registeredPods: pods.filter(() => r() < 0.3).map((p) => p.metadata.name!) };
    return observe({
      batch: batch(spec, queue.kind === 'absent' ? null : { queueEpoch: EPOCH, seeded, startTime: iso(NOW - int(100_000)), workers: { failures: int(3) } }),
      pods,
      queue,
      memory,
      ...(seeded ? {} : { source: { kind: 'items', source: itemSource({ range: { end: Math.max(total, 1) } } as TaskBatchSpec)!, field: 'spec.range' } }),
    });
  }

  test('for random observed states the plan keeps its promises', () => {
    const r = rng(20261130);
    for (let run = 0; run < 3000; run++) {
      const o = randomObserved(r);
      const p = planBatch(o);
      const ctx = `run ${run}: ${JSON.stringify({ spec: o.batch.spec, queue: o.queue.kind, pods: o.pods.map((x) => [x.metadata.name, x.status?.phase, Boolean(x.metadata.deletionTimestamp)]) })}`;
      const max = o.batch.spec.workers?.max ?? 10;
      // Never more than workers.max pods: live pods that stay + expected + created.
      const deleted = new Set(p.actions.filter((a) => a.kind === 'deletePod').map((a) => (a as { name: string }).name));
      const live = o.pods.filter((x) => !x.metadata.deletionTimestamp && !deleted.has(x.metadata.name!)).length;
      const expected = Object.keys(p.memory.expectedPods).length;
      if (created(p) > 0) expect({ ctx, total: live + expected + created(p) <= max }).toEqual({ ctx, total: true });
      // Scale-in never deletes a pod (busy or not) and never starts replacements.
      for (const a of p.actions) {
        if (a.kind === 'deletePod')
          expect({ ctx, reason: ['Succeeded', 'Failed', 'StaleEpoch', 'PendingTooLong', 'Suspended', 'BatchFailed', 'BatchFinished'].includes(a.reason) }).toEqual({ ctx, reason: true });
      }
      if (p.actions.some((a) => a.kind === 'drainWorker')) expect({ ctx, created: created(p) }).toEqual({ ctx, created: 0 });
      // A Redis that evicts keys gets nothing written and no workers started.
      if (o.queue.kind === 'misconfigured') expect({ ctx, writes: p.actions.filter((a) => a.kind !== 'deletePod' && a.kind !== 'deleteBatch') }).toEqual({ ctx, writes: [] });
      // Never Complete while an item is unfinished or seeding is not done.
      if (cond(p, 'Complete')?.status === 'True' && o.queue.kind === 'ok') {
        const s = o.queue.snapshot;
        expect({ ctx, unfinished: s.pending + s.delayed + s.running, closed: s.closed }).toEqual({ ctx, unfinished: 0, closed: true });
      }
      // Status is never empty.
      expect({ ctx, state: typeof p.status.state, conditions: (p.status.conditions?.length ?? 0) > 0, gen: p.status.observedGeneration }).toEqual({ ctx, state: 'string', conditions: true, gen: 1 });
    }
  });

  test('scale-in over random interleavings of presence and pod states starts no new pod', () => {
    for (let seed = 1; seed <= 200; seed++) {
      const r = rng(seed);
      const from = 2 + Math.floor(r() * 5);
      const spec = { workers: { scaling: 'Replicas' as const, replicas: 1, max: 10 } };
      let status: TaskBatch['status'] = { queueEpoch: EPOCH, seeded: true, startTime: iso(NOW - 10_000) };
      let memory = emptyMemory();
      // Every pod registered earlier: scaled out to `from` before this scale-in.
      const pods = new Map(Array.from({ length: from }, (_, i) => [`w${i}`, { pod: pod(`w${i}`), present: true, drain: false, busy: Math.floor(r() * 3) }]));
      memory.registeredPods = [...pods.keys()];
      let createdPods = 0;
      for (let step = 0; step < 40; step++) {
        const workers = [...pods.entries()].filter(([, s]) => s.present).map(([id, s]) => worker(id, { drainRequested: s.drain, draining: s.drain, inflight: s.busy }));
        const p = planBatch(
          observe({ batch: batch(spec, status), pods: [...pods.values()].map((s) => s.pod), queue: { kind: 'ok', snapshot: snap({ pending: 500 }), workers }, memory, now: NOW + step * 1000 }),
        );
        createdPods += created(p);
        for (const a of p.actions) {
          if (a.kind === 'drainWorker') pods.get(a.name)!.drain = true;
          if (a.kind === 'deletePod') pods.delete(a.name);
        }
        status = p.status;
        memory = p.memory;
        // Random progress: a draining worker finishes an item, leaves, and later its pod succeeds.
        for (const s of pods.values()) {
          if (s.drain && s.busy > 0 && r() < 0.5) s.busy--;
          if (s.drain && s.busy === 0 && r() < 0.5) s.present = false;
          if (!s.present && r() < 0.3) s.pod = { ...s.pod, status: { ...s.pod.status, phase: 'Succeeded' } };
        }
      }
      expect({ seed, from, createdPods }).toEqual({ seed, from, createdPods: 0 });
      expect({ seed, left: [...pods.values()].filter((s) => !s.drain).length }).toEqual({ seed, left: 1 });
    }
  });
});

function iso(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}
