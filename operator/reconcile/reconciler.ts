import {
  BatchQueue,
  BatchStateLostError,
  type BatchSnapshot,
  type RedisClient,
} from '../../queue/index.js';
import { listWorkers, requestDrain, type WorkerPresence } from '../../queue/presence.js';
import {
  ALL_BATCHES_PATH,
  BATCH_LABEL,
  EPOCH_ANNOTATION,
  FINALIZER,
  batchPath,
  findCondition,
  isFinished,
  type Condition,
  type TaskBatch,
  type TaskBatchStatus,
} from '../api/taskbatch.js';
import type { KubeClient } from '../kube/client.js';
import type { EventRecorder } from '../kube/events.js';
import type { Reflector } from '../kube/reflector.js';
import type { Logger } from '../log.js';
import type { OperatorMetrics } from '../metrics.js';
import type { Clock } from '../workqueue.js';
import { jsonEqual, setCondition, sortConditions, type ConditionInput } from './conditions.js';
import { describeViolations } from './pod-security.js';
import { buildWorkerPod, isPodReady, isPodTerminating, podExitCode, podTemplateViolations, type Pod, type WorkerPodConfig } from './pods.js';
import { RedisNotAllowedError } from './redis-allow.js';
import { RedisConfigError, type RedisPool } from './redis-pool.js';
import { workerResourceViolations } from './worker-resources.js';
import { chooseWorkersToDrain, desiredWorkers, type Recommendations, type WorkerPodView } from './scaling.js';
import { itemSource, seedSlice, SeedError } from './seed.js';
import { itemsHeldByOthers, quotaDecision, type HeldBatch, type QuotaDecision } from './quota.js';

/** How far seeding got: `cursor` of `total` items enqueued. */
interface SeedProgress {
  cursor: number;
  total: number;
}

export interface ReconcilerConfig {
  worker: WorkerPodConfig;
  /** Minimum time between two progress-only status writes of one batch. */
  statusIntervalMs: number;
  /** How often a running batch is re-read from Redis. */
  pollIntervalMs: number;
  /** Consecutive failed worker pods (without item progress) that fail the batch. */
  maxWorkerFailures: number;
  /** Finalizer attempts to delete a batch's Redis keys before giving up (and saying so). */
  maxCleanupAttempts: number;
  /** A worker whose presence heartbeat is older than this is gone. */
  workerStaleMs: number;
  /** Most items one batch may hold; more is refused (TooManyItems). */
  maxBatchItems: number;
  /** Most items seeded per reconcile of one batch. */
  seedSliceItems: number;
  /** Most unfinished items all batches of one namespace may hold in Redis (0 = no quota). */
  namespaceItemQuota: number;
}

export interface ReconcileContext {
  kube: KubeClient;
  batches: Reflector<TaskBatch>;
  pods: Reflector<Pod>;
  redis: RedisPool;
  events: EventRecorder;
  metrics: OperatorMetrics;
  clock: Clock;
  log: Logger;
  config: ReconcilerConfig;
}

export interface ReconcileResult {
  requeueAfterMs?: number;
}

/** A terminal problem with the spec: reported in a condition, not retried. */
export class TerminalError extends Error {
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(message);
    this.name = 'TerminalError';
  }
}

/** What the reconciler remembers between passes; all of it can be lost safely. */
interface BatchMemory {
  scaleHistory: Recommendations;
  /** Pods created but not yet seen in the cache (so they are not created twice). */
  expectedPods: Map<string, number>;
  lastStatusWrite: number;
  cleanupAttempts: number;
  redisFailures: number;
  countedFailedPods: Set<string>;
  lastFailureAt: number;
  lastSucceeded: number;
}

const DEFAULT_MEMORY = (): BatchMemory => ({
  scaleHistory: [],
  expectedPods: new Map(),
  lastStatusWrite: 0,
  cleanupAttempts: 0,
  redisFailures: 0,
  countedFailedPods: new Set(),
  lastFailureAt: 0,
  lastSucceeded: -1,
});

/**
 * One reconcile pass for one TaskBatch: observe (the TaskBatch, its pods, its Redis state),
 * compute the desired state with pure functions, apply the difference, write status once.
 */
export class Reconciler {
  private readonly memory = new Map<string, BatchMemory>();

  constructor(private readonly ctx: ReconcileContext) {}

  async reconcile(key: string): Promise<ReconcileResult> {
    const batch = this.ctx.batches.get(key);
    if (!batch) {
      this.memory.delete(key);
      this.ctx.redis.forget(key);
      const [ns, name] = key.split('/') as [string, string];
      this.ctx.metrics.forgetBatch(ns, name);
      return {};
    }
    const mem = this.memoryFor(key);
    if (batch.metadata.deletionTimestamp) return this.finalize(batch, mem);
    if (!(batch.metadata.finalizers ?? []).includes(FINALIZER)) {
      await this.ctx.kube.patch(batchPath(batch.metadata.namespace!, batch.metadata.name), {
        metadata: { finalizers: [...(batch.metadata.finalizers ?? []), FINALIZER], resourceVersion: batch.metadata.resourceVersion },
      });
      return {};
    }

    const now = this.ctx.clock.now();
    const status: TaskBatchStatus = structuredClone(batch.status ?? {});
    let conditions: Condition[] = structuredClone(status.conditions ?? []);
    const generation = batch.metadata.generation ?? 0;
    const cond = (c: ConditionInput): void => {
      conditions = setCondition(conditions, c, generation, new Date(now));
    };
    const pods = this.podsOf(batch);
    status.selector = `${BATCH_LABEL}=${batch.metadata.name}`;
    const defaultRedis = this.ctx.config.worker.defaultRedis;
    if (!batch.spec.redis && defaultRedis) {
      status.redis = {
        url: defaultRedis.url,
        ...(defaultRedis.username ? { username: defaultRedis.username } : {}),
        ...(defaultRedis.tls ? { tls: true } : {}),
        ...(defaultRedis.cluster ? { cluster: true } : {}),
      };
    }

    if (isFinished(status)) return this.afterFinish(batch, status, pods, mem, now);

    // Observe Redis.
    let snapshot: BatchSnapshot | undefined;
    let queue: BatchQueue | undefined;
    let requeueAfterMs = this.ctx.config.pollIntervalMs;
    let seeding: SeedProgress | undefined;
    // Resources over the installer's maximum (or a pool too big for the memory limit) are refused
    // before anything reaches Redis or a pod: a spec error, terminal like TooManyItems.
    const overLimits = this.ctx.config.worker.resources ? workerResourceViolations(batch, this.ctx.config.worker.resources) : [];
    try {
      if (overLimits.length > 0) throw new TerminalError('ResourcesRejected', overLimits.join('; '));
      const redis = await this.ctx.redis.forBatch(batch);
      ({ queue, snapshot, seeding } = await this.observeQueue(batch, redis, status, cond));
      // More to seed: come back at once (after other batches' turns), writing status between slices.
      if (seeding && !batch.spec.suspend) requeueAfterMs = 1;
      cond({ type: 'RedisUnavailable', status: 'False', reason: 'Connected', message: 'The batch\'s Redis is reachable' });
    } catch (err) {
      if (err instanceof TerminalError) {
        this.fail(batch, status, cond, err.reason, err.message, now);
      } else if (err instanceof RedisNotAllowedError) {
        // Checked before connecting; the message names the field (and a Secret by name only).
        this.fail(batch, status, cond, 'RedisAddressNotAllowed', err.message, now);
      } else {
        const reason = err instanceof RedisConfigError ? 'RedisConfigInvalid' : 'ConnectionFailed';
        // Connection errors name hosts; a host taken from a Secret must not reach status or events.
        const message = this.ctx.redis.redact(batch, String((err as Error).message ?? err));
        cond({ type: 'RedisUnavailable', status: 'True', reason, message });
        void this.ctx.events.emit(batch, 'Warning', 'RedisUnavailable', message);
        // Checking again is cheap: retry within seconds so recovery shows up promptly.
        requeueAfterMs = Math.min(5000, 500 * 2 ** Math.min(4, mem.redisFailures++));
      }
    }
    if (snapshot) mem.redisFailures = 0;

    // Workers.
    const epoch = status.queueEpoch ?? '';
    const suspended = batch.spec.suspend === true;
    const finishedNow = findCondition({ conditions }, 'Failed')?.status === 'True';
    const workers = queue && snapshot ? await listWorkers(queue, { staleMs: this.ctx.config.workerStaleMs }).catch(() => [] as WorkerPresence[]) : [];
    const presence = new Map(workers.map((w) => [w.id, w]));
    const active: Pod[] = [];
    for (const pod of pods) {
      if (isPodTerminating(pod)) continue;
      const stale = pod.metadata.annotations?.[EPOCH_ANNOTATION] !== epoch;
      const phase = pod.status?.phase;
      if (phase === 'Succeeded' || (stale && epoch)) {
        await this.deletePod(pod);
      } else if (phase === 'Failed') {
        if (!mem.countedFailedPods.has(pod.metadata.uid!)) {
          mem.countedFailedPods.add(pod.metadata.uid!);
          status.workers = { ...(status.workers ?? {}), failures: (status.workers?.failures ?? 0) + 1 };
          mem.lastFailureAt = now;
          void this.ctx.events.emit(batch, 'Warning', 'WorkerFailed', `Worker pod ${pod.metadata.name} failed (exit code ${podExitCode(pod) ?? 'unknown'})`);
        }
        await this.deletePod(pod);
      } else {
        active.push(pod);
      }
    }
    if (snapshot && snapshot.succeeded > mem.lastSucceeded && mem.lastSucceeded >= 0 && (status.workers?.failures ?? 0) > 0) {
      status.workers = { ...(status.workers ?? {}), failures: 0 };
    }
    if (snapshot) mem.lastSucceeded = snapshot.succeeded;
    const failures = status.workers?.failures ?? 0;
    if (failures >= this.ctx.config.maxWorkerFailures && !finishedNow) {
      this.fail(batch, status, cond, 'WorkersCrashLooping', `${failures} worker pods failed in a row without progress; see the worker pods' logs and events`, now);
    }
    // A template the workerPodSecurity level refuses fails the batch before any pod is built
    // (buildWorkerPod would throw on it too): a spec error, so terminal, like InvalidItems.
    const rejected = podTemplateViolations(batch, this.ctx.config.worker);
    if (rejected.length > 0 && findCondition({ conditions }, 'Failed')?.status !== 'True') {
      this.fail(batch, status, cond, 'PodTemplateRejected', describeViolations(this.ctx.config.worker.podSecurity, rejected), now);
    }
    for (const [name, at] of mem.expectedPods) if (active.some((p) => p.metadata.name === name) || now - at > 60_000) mem.expectedPods.delete(name);

    const failedNow = findCondition({ conditions }, 'Failed')?.status === 'True';
    const backlog = snapshot ? snapshot.pending + snapshot.dueDelayed + snapshot.running : 0;
    const { desired, history } = desiredWorkers(
      batch.spec.workers ?? {},
      // Seeding goes in slices: workers start as soon as the first slice is in.
      { backlog, suspended, finished: failedNow || Boolean(snapshot?.complete), seeding: !snapshot || (!status.seeded && backlog === 0) },
      mem.scaleHistory,
      now,
    );
    mem.scaleHistory = history;
    const views: WorkerPodView[] = active.map((p) => {
      const w = presence.get(p.metadata.name!);
      return {
        name: p.metadata.name!,
        starting: !w,
        draining: Boolean(w?.draining || w?.drainRequested),
        inFlight: w?.inflight ?? 0,
        createdAt: Date.parse(p.metadata.creationTimestamp ?? '') || now,
      };
    });
    const draining = views.filter((v) => v.draining).length;
    const supply = views.length - draining + mem.expectedPods.size;

    if (suspended || failedNow) {
      for (const p of active) await this.deletePod(p);
    } else if (queue && snapshot && desired > supply) {
      const backoffMs = failures > 0 ? Math.min(300_000, 2000 * 2 ** (failures - 1)) : 0;
      const wait = mem.lastFailureAt + backoffMs - now;
      if (wait > 0) {
        requeueAfterMs = Math.min(requeueAfterMs, wait);
      } else {
        for (let i = supply; i < desired; i++) {
          const created = await this.ctx.kube.create<Pod>(`/api/v1/namespaces/${batch.metadata.namespace}/pods`, buildWorkerPod(batch, epoch, this.ctx.config.worker));
          mem.expectedPods.set(created.metadata.name!, now);
          this.ctx.log.info('Created worker pod', { batch: key, pod: created.metadata.name });
        }
        void this.ctx.events.emit(batch, 'Normal', 'ScaledUp', `Scaled workers to ${desired}`);
      }
    } else if (queue && desired < supply) {
      for (const name of chooseWorkersToDrain(views, desired)) {
        await requestDrain(queue, name);
        this.ctx.log.info('Requested worker drain', { batch: key, pod: name });
      }
    }

    // Outcome.
    if (snapshot && !failedNow) {
      if (snapshot.complete) {
        const allowed = allowedFailures(batch, snapshot.total);
        if (snapshot.failed > allowed) {
          this.fail(batch, status, cond, 'FailurePolicyExceeded', `${snapshot.failed} of ${snapshot.total} items failed permanently (allowed: ${allowed}); list them with: taskbatch failures ${batch.metadata.name} -n ${batch.metadata.namespace}`, now);
        } else {
          status.completionTime = iso(now);
          cond({ type: 'Complete', status: 'True', reason: 'AllItemsProcessed', message: `${snapshot.succeeded} of ${snapshot.total} items succeeded, ${snapshot.failed} failed` });
          void this.ctx.events.emit(batch, 'Normal', 'Completed', `All ${snapshot.total} items processed: ${snapshot.succeeded} succeeded, ${snapshot.failed} failed`);
        }
      } else if (batch.spec.activeDeadlineSeconds && status.startTime && now - Date.parse(status.startTime) > batch.spec.activeDeadlineSeconds * 1000) {
        this.fail(batch, status, cond, 'DeadlineExceeded', `The batch ran longer than activeDeadlineSeconds (${batch.spec.activeDeadlineSeconds}s)`, now);
      }
    }

    // Status.
    const finished = isFinished({ conditions });
    if (snapshot) {
      status.items = { total: snapshot.total, pending: snapshot.pending, delayed: snapshot.delayed, running: snapshot.running, succeeded: snapshot.succeeded, failed: snapshot.failed, retries: snapshot.retries };
      status.progress = `${snapshot.succeeded + snapshot.failed}/${snapshot.total}`;
    }
    const ready = active.filter((p) => isPodReady(p)).length;
    const shownDesired = finished ? 0 : desired;
    status.workers = { ...(status.workers ?? {}), desired: shownDesired, current: active.length, ready, draining, summary: `${ready}/${shownDesired}` };
    if (suspended) {
      cond({ type: 'Suspended', status: 'True', reason: 'Suspended', message: 'spec.suspend is true: no worker pods run; items stay queued' });
    } else if (findCondition({ conditions }, 'Suspended')) {
      cond({ type: 'Suspended', status: 'False', reason: 'Resumed', message: 'spec.suspend is false' });
    }
    if (finished) {
      cond({ type: 'Progressing', status: 'False', reason: 'Finished', message: 'The batch has finished' });
    } else if (suspended) {
      cond({ type: 'Progressing', status: 'False', reason: 'Suspended', message: 'The batch is suspended' });
    } else if (snapshot) {
      const seeded = seeding ? `; ${seeding.cursor} of ${seeding.total} items seeded` : '';
      cond({ type: 'Progressing', status: 'True', reason: !status.seeded ? 'Seeding' : ready > 0 ? 'ItemsRunning' : 'WaitingForWorkers', message: `${status.progress} items finished; ${ready} of ${desired} workers ready${seeded}` });
    }
    cond(
      failures > 0
        ? { type: 'Degraded', status: 'True', reason: 'WorkerPodsFailing', message: `${failures} worker pods failed since items last made progress` }
        : { type: 'Degraded', status: 'False', reason: 'AsExpected', message: 'Workers are healthy' },
    );
    status.conditions = sortConditions(conditions);
    status.state = stateWord(status, suspended);
    status.observedGeneration = generation;
    this.ctx.metrics.setBatch(batch.metadata.namespace!, batch.metadata.name!, { ...(status.items ?? {}) }, { desired: shownDesired, current: active.length, ready, draining }, finished ? (findCondition(status, 'Failed')?.status === 'True' ? 'failed' : 'complete') : undefined);

    const wait = await this.writeStatus(batch, status, mem, now);
    if (finished) return { requeueAfterMs: 1000 };
    if (suspended) return wait > 0 ? { requeueAfterMs: wait } : {};
    return { requeueAfterMs: wait > 0 ? Math.min(wait, requeueAfterMs) : requeueAfterMs };
  }

  /** Creates the batch's Redis state, detects lost state, and seeds items (resumably). */
  private async observeQueue(batch: TaskBatch, redis: RedisClient, status: TaskBatchStatus, cond: (c: ConditionInput) => void): Promise<{ queue: BatchQueue; snapshot: BatchSnapshot; seeding?: SeedProgress }> {
    let seeding: SeedProgress | undefined;
    const ref = { namespace: batch.metadata.namespace!, name: batch.metadata.name! };
    const retry = batch.spec.retry ?? {};
    const create = async (): Promise<BatchQueue> => {
      const q = new BatchQueue(redis, ref);
      const { epoch } = await q.create({ maxAttempts: retry.maxAttempts ?? 3, backoff: { ...(retry.backoff ?? {}) } });
      status.queueEpoch = epoch;
      status.startTime ??= iso(this.ctx.clock.now());
      return q;
    };
    let queue: BatchQueue;
    if (!status.queueEpoch) {
      queue = await create();
    } else {
      queue = new BatchQueue(redis, ref, { expectedEpoch: status.queueEpoch });
    }
    let snapshot: BatchSnapshot;
    try {
      snapshot = await queue.snapshot();
    } catch (err) {
      if (!(err instanceof BatchStateLostError)) throw err;
      cond({ type: 'QueueStateLost', status: 'True', reason: 'StateMissing', message: `Redis lost this batch's state (${err.message})` });
      void this.ctx.events.emit(batch, 'Warning', 'QueueStateLost', `Redis lost this batch's state: ${err.message}`);
      if (batch.spec.open) {
        throw new TerminalError('QueueStateLost', `Redis lost the state of this open batch (items submitted by producers cannot be recovered from the spec): ${err.message}`);
      }
      // Re-seed from the spec under a new epoch. Items that had already succeeded run again
      // (at-least-once); the old epoch's leftovers, if any, are purged first.
      await new BatchQueue(redis, ref).purge();
      queue = await create();
      status.seeded = false;
      cond({ type: 'QueueStateLost', status: 'False', reason: 'Reseeded', message: `Redis lost this batch's state at ${iso(this.ctx.clock.now())}; items were re-seeded from the spec and may run again` });
      snapshot = await queue.snapshot();
    }
    if (!status.seeded) {
      const spec = batch.spec;
      let cmData: string | undefined;
      if (spec.itemsFrom) {
        const ref2 = spec.itemsFrom.configMapKeyRef;
        const cm = await this.ctx.kube.find<{ data?: Record<string, string> }>(`/api/v1/namespaces/${batch.metadata.namespace}/configmaps/${ref2.name}`);
        if (!cm) throw new TerminalError('ItemsSourceNotFound', `spec.itemsFrom: ConfigMap ${ref2.name} not found in namespace ${batch.metadata.namespace}`);
        cmData = cm.data?.[ref2.key];
        if (cmData === undefined) throw new TerminalError('ItemsSourceNotFound', `spec.itemsFrom: ConfigMap ${ref2.name} has no key ${ref2.key}`);
      }
      const source = itemSource(spec, cmData);
      if (!source) {
        status.seeded = true;
      } else {
        const max = this.ctx.config.maxBatchItems;
        if (source.total > max) {
          const field = spec.range ? 'spec.range' : spec.items ? 'spec.items' : 'spec.itemsFrom';
          throw new TerminalError('TooManyItems', `${field}: ${source.total} items exceed this installation's limit of ${max} items per batch (operator setting TASKBATCH_MAX_BATCH_ITEMS); split the work into several batches or ask the installer to raise the limit`);
        }
        const quota = this.quotaFor(batch, source.total, snapshot);
        if (quota.kind === 'never') throw new TerminalError('TooManyItems', quota.message);
        if (quota.kind === 'wait') {
          cond({ type: 'QuotaExceeded', status: 'True', reason: 'NamespaceItemQuota', message: quota.message });
        } else if (status.conditions?.some((c) => c.type === 'QuotaExceeded' && c.status === 'True')) {
          cond({ type: 'QuotaExceeded', status: 'False', reason: 'WithinQuota', message: 'The batch fits in its namespace\'s item quota' });
        }
        // Never while suspended or over quota; one bounded slice per reconcile otherwise (see seedSlice).
        if (!batch.spec.suspend && quota.kind === 'fits') {
          let slice;
          try {
            slice = await seedSlice(queue, source, Number(snapshot.seedCursor || 0), this.ctx.config.seedSliceItems);
          } catch (err) {
            if (err instanceof SeedError || (err as Error).name === 'InvalidArgument' || (err as Error).name === 'PayloadTooLarge') throw new TerminalError('InvalidItems', (err as Error).message);
            throw err;
          }
          if (slice.done) {
            await queue.close();
            status.seeded = true;
          }
          seeding = { cursor: slice.cursor, total: source.total };
        } else {
          seeding = { cursor: Number(snapshot.seedCursor || 0), total: source.total };
        }
      }
      snapshot = await queue.snapshot();
    }
    return { queue, snapshot, ...(seeding && !status.seeded ? { seeding } : {}) };
  }

  /** The namespace item quota's verdict for this batch, from the batches the operator sees. */
  private quotaFor(batch: TaskBatch, total: number, snapshot: BatchSnapshot): QuotaDecision {
    const quota = this.ctx.config.namespaceItemQuota;
    if (quota <= 0) return { kind: 'fits' };
    const ns = batch.metadata.namespace!;
    const held: HeldBatch[] = this.ctx.batches
      .list()
      .filter((b) => b.metadata.namespace === ns)
      .map((b) => {
        const items = b.status?.items;
        const specTotal = b.spec.range || b.spec.items ? (itemSource(b.spec)?.total ?? 0) : 0;
        return { name: b.metadata.name!, finished: isFinished(b.status ?? {}), total: Math.max(specTotal, items?.total ?? 0), done: (items?.succeeded ?? 0) + (items?.failed ?? 0) };
      });
    const field = batch.spec.range ? 'spec.range' : batch.spec.items ? 'spec.items' : 'spec.itemsFrom';
    return quotaDecision(quota, ns, field, total, total - (snapshot.succeeded + snapshot.failed), itemsHeldByOthers(held, batch.metadata.name!));
  }

  private async afterFinish(batch: TaskBatch, status: TaskBatchStatus, pods: Pod[], mem: BatchMemory, now: number): Promise<ReconcileResult> {
    for (const p of pods) if (!isPodTerminating(p)) await this.deletePod(p);
    // Keep the worker counts true while the last pods go away (their deletions requeue us).
    const remaining = pods.length;
    status.workers = { ...(status.workers ?? {}), desired: 0, current: remaining, ready: 0, draining: remaining, summary: '0/0' };
    await this.writeStatus(batch, status, mem, now);
    const ttl = batch.spec.ttlSecondsAfterFinished;
    const finishedAt = Date.parse(status.completionTime ?? findCondition(status, 'Complete')?.lastTransitionTime ?? findCondition(status, 'Failed')?.lastTransitionTime ?? '');
    if (ttl !== undefined && Number.isFinite(finishedAt)) {
      const left = finishedAt + ttl * 1000 - now;
      if (left <= 0) {
        this.ctx.log.info('Deleting finished batch after ttlSecondsAfterFinished', { batch: `${batch.metadata.namespace}/${batch.metadata.name}` });
        await this.ctx.kube.delete(batchPath(batch.metadata.namespace!, batch.metadata.name), { propagationPolicy: 'Background' });
        return {};
      }
      return { requeueAfterMs: left };
    }
    return {};
  }

  /** Deletes the batch's Redis keys, then lets the TaskBatch go. */
  private async finalize(batch: TaskBatch, mem: BatchMemory): Promise<ReconcileResult> {
    if (!(batch.metadata.finalizers ?? []).includes(FINALIZER)) return {};
    const key = `${batch.metadata.namespace}/${batch.metadata.name}`;
    let cleaned = false;
    let error = '';
    try {
      const redis = await this.ctx.redis.forBatch(batch);
      await new BatchQueue(redis, { namespace: batch.metadata.namespace!, name: batch.metadata.name! }).purge();
      cleaned = true;
      // The namespace's last batch on the managed Redis: its ACL user and Secret go with it.
      const ns = batch.metadata.namespace!;
      // Batches being deleted do not count: each releases again (idempotently) when it finishes.
      const others = this.ctx.batches.list().filter((b) => b.metadata.namespace === ns && b.metadata.name !== batch.metadata.name && !b.spec.redis && !b.metadata.deletionTimestamp);
      if (others.length === 0) {
        await this.ctx.redis.releaseNamespace(batch, redis).catch((err: unknown) => this.ctx.log.warn('Failed to release the namespace\'s Redis user', { namespace: ns, error: (err as Error).message }));
      }
    } catch (err) {
      // A Redis the operator may not contact holds nothing it wrote: nothing to clean up.
      if (err instanceof RedisNotAllowedError) cleaned = true;
      error = this.ctx.redis.redact(batch, String((err as Error).message ?? err));
    }
    if (!cleaned) {
      mem.cleanupAttempts++;
      if (mem.cleanupAttempts < this.ctx.config.maxCleanupAttempts) {
        const status = structuredClone(batch.status ?? {});
        status.conditions = sortConditions(
          setCondition(status.conditions ?? [], { type: 'CleanupBlocked', status: 'True', reason: 'RedisUnavailable', message: `Deleting the batch's Redis keys failed (attempt ${mem.cleanupAttempts} of ${this.ctx.config.maxCleanupAttempts}): ${error}` }, batch.metadata.generation ?? 0, new Date(this.ctx.clock.now())),
        );
        await this.ctx.kube.patch(`${batchPath(batch.metadata.namespace!, batch.metadata.name)}/status`, { status }).catch(() => undefined);
        throw new Error(`cleanup of ${key} failed: ${error}`);
      }
      void this.ctx.events.emit(batch, 'Warning', 'CleanupAbandoned', `Gave up deleting the batch's Redis keys after ${mem.cleanupAttempts} attempts (${error}); delete keys matching tb:{${key}}:* yourself`);
    }
    await this.ctx.kube.patch(batchPath(batch.metadata.namespace!, batch.metadata.name), {
      metadata: { finalizers: (batch.metadata.finalizers ?? []).filter((f) => f !== FINALIZER), resourceVersion: batch.metadata.resourceVersion },
    });
    this.ctx.log.info('Removed the batch\'s Redis keys and finalizer', { batch: key, cleaned });
    return {};
  }

  private fail(batch: TaskBatch, status: TaskBatchStatus, cond: (c: ConditionInput) => void, reason: string, message: string, now: number): void {
    cond({ type: 'Failed', status: 'True', reason, message });
    status.completionTime ??= iso(now);
    void this.ctx.events.emit(batch, 'Warning', reason, message);
  }

  /** Writes status if it changed; progress-only changes at most once per statusIntervalMs. Returns ms until a deferred write is due. */
  private async writeStatus(batch: TaskBatch, status: TaskBatchStatus, mem: BatchMemory, now: number): Promise<number> {
    const old = batch.status ?? {};
    if (jsonEqual(old, status)) return 0;
    const structural = !jsonEqual(
      { ...old, items: undefined, progress: undefined, conditions: stripMessages(old.conditions) },
      { ...status, items: undefined, progress: undefined, conditions: stripMessages(status.conditions) },
    );
    const since = now - mem.lastStatusWrite;
    if (!structural && since < this.ctx.config.statusIntervalMs) return this.ctx.config.statusIntervalMs - since;
    await this.ctx.kube.patch(`${batchPath(batch.metadata.namespace!, batch.metadata.name)}/status`, { status });
    mem.lastStatusWrite = now;
    this.ctx.metrics.statusWrites.inc();
    return 0;
  }

  private podsOf(batch: TaskBatch): Pod[] {
    return this.ctx.pods.list().filter(
      (p) => p.metadata.namespace === batch.metadata.namespace && p.metadata.labels?.[BATCH_LABEL] === batch.metadata.name && (p.metadata.ownerReferences ?? []).some((o) => o.uid === batch.metadata.uid),
    );
  }

  private async deletePod(pod: Pod): Promise<void> {
    await this.ctx.kube.delete(`/api/v1/namespaces/${pod.metadata.namespace}/pods/${pod.metadata.name}`);
  }

  private memoryFor(key: string): BatchMemory {
    let m = this.memory.get(key);
    if (!m) {
      m = DEFAULT_MEMORY();
      this.memory.set(key, m);
    }
    return m;
  }
}

function stripMessages(conditions: Condition[] | undefined): unknown {
  return (conditions ?? []).map((c) => ({ type: c.type, status: c.status, reason: c.reason }));
}

function allowedFailures(batch: TaskBatch, total: number): number {
  const p = batch.spec.failurePolicy;
  if (!p || (p.maxFailedItems === undefined && p.maxFailedPercent === undefined)) return 0;
  const byCount = p.maxFailedItems ?? Number.POSITIVE_INFINITY;
  const byPercent = p.maxFailedPercent !== undefined ? Math.floor((total * p.maxFailedPercent) / 100) : Number.POSITIVE_INFINITY;
  return Math.min(byCount, byPercent);
}

function stateWord(status: TaskBatchStatus, suspended: boolean): string {
  if (findCondition(status, 'Failed')?.status === 'True') return 'Failed';
  if (findCondition(status, 'Complete')?.status === 'True') return 'Complete';
  if (suspended) return 'Suspended';
  if (findCondition(status, 'RedisUnavailable')?.status === 'True') return 'RedisUnavailable';
  if (!status.seeded) return 'Seeding';
  return (status.workers?.ready ?? 0) > 0 ? 'Running' : 'Pending';
}

function iso(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export { ALL_BATCHES_PATH };
