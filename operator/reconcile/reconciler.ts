import { BatchQueue, BatchStateLostError, type RedisClient, type WorkerPresence } from '../../queue/index.js';
import { listWorkers, requestDrain } from '../../queue/presence.js';
import { BATCH_LABEL, FINALIZER, batchPath, isFinished, type TaskBatch, type TaskBatchStatus } from '../../api/taskbatch.js';
import { isNotFound, KubeApiError, type KubeClient } from '../../kube/client.js';
import type { EventRecorder } from '../kube/events.js';
import type { ReconcileResult } from '../kube/controller-loop.js';
import { withFinalizer } from '../../kube/finalizer.js';
import type { Reflector } from '../kube/reflector.js';
import type { Logger } from '../log.js';
import type { OperatorMetrics } from '../metrics.js';
import type { Clock } from '../workqueue.js';
import { jsonEqual, setCondition, sortConditions } from './conditions.js';
import {
  createBackoff,
  emptyMemory,
  planBatch,
  stateWord,
  type BatchAction,
  type BatchPlan,
  type ObservedBatch,
  type PlanConfig,
  type PlanMemory,
  type QueueObservation,
  type SourceObservation,
} from './plan.js';
import type { Pod } from '../../kube/pod.js';
import { buildWorkerPod } from './pods.js';
import { itemsHeldByOthers, type HeldBatch } from './quota.js';
import { RedisNotAllowedError } from './redis-allow.js';
import { RedisConfigError, RedisUnavailableError, type RedisPool } from './redis-pool.js';
import { itemSource, itemsField, SeedError } from '../../api/items.js';
import { seedSlice } from './seed.js';
import { EvictionPolicies } from './redis-eviction.js';

export interface ReconcilerConfig extends PlanConfig {
  /** Minimum time between two progress-only status writes of one batch. */
  statusIntervalMs: number;
  /** Finalizer attempts to delete a batch's Redis keys before giving up (and saying so). */
  maxCleanupAttempts: number;
  /** A worker whose presence heartbeat is older than this is gone. */
  workerStaleMs: number;
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

/** Several actions of one pass failed; the first is the message, all are logged. */
class ApplyError extends Error {
  override name = 'ApplyError';
  constructor(readonly errors: { action: string; error: Error }[]) {
    super(errors.map((e) => `${e.action}: ${e.error.message}`).join('; '));
  }
}

/** What the reconciler remembers between passes of one batch; all of it can be lost safely. */
interface BatchMemory {
  plan: PlanMemory;
  lastStatusWrite: number;
  cleanupAttempts: number;
  redisFailures: number;
  /**
   * The resourceVersion our last status write was based on, and the one it produced: while the
   * cache still shows the former, it has not caught up with our own write, and a pass planned
   * from it would act on a stale status (re-creating a queue epoch it just replaced, say).
   */
  writeGate?: { based: string; wrote: string; at: number };
}

/** What applying a plan changed that its status must show. */
export interface Outcome {
  epoch?: string;
  /** A spec problem found while applying (items that are not valid JSON, too large). */
  terminal?: { reason: string; message: string };
  createFailure?: string;
  queueFailure?: string;
  errors: { action: string; error: Error }[];
}

/**
 * One reconcile pass for one TaskBatch: observe (the TaskBatch and its pods from the cache, its
 * Redis state, its item source — reads only), plan (planBatch, a pure function), apply each
 * action collecting errors, then write status once, always, with the resourceVersion the plan was
 * based on, and requeue.
 */
export class Reconciler {
  private readonly memory = new Map<string, BatchMemory>();
  private readonly evictionPolicies: EvictionPolicies;

  constructor(private readonly ctx: ReconcileContext) {
    this.evictionPolicies = new EvictionPolicies(() => ctx.clock.now());
  }

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
    const gate = mem.writeGate;
    if (gate && batch.metadata.resourceVersion === gate.based && this.ctx.clock.now() - gate.at < 10_000) {
      // Our last status write has not reached the cache yet; its watch event requeues us.
      return { requeueAfterMs: 200 };
    }
    mem.writeGate = undefined;
    const path = batchPath(batch.metadata.namespace!, batch.metadata.name);
    const result = await withFinalizer(this.ctx.kube, path, batch, FINALIZER, async (event) => (event.kind === 'cleanup' ? this.cleanup(batch, mem) : this.pass(batch, mem)));
    return result ?? {};
  }

  private async pass(batch: TaskBatch, mem: BatchMemory): Promise<ReconcileResult> {
    const observed = await this.observe(batch, mem);
    const plan = planBatch(observed);
    mem.plan = plan.memory;
    let outcome: Outcome = { errors: [] };
    let unexpected: unknown;
    try {
      outcome = await this.apply(batch, plan, mem);
    } catch (err) {
      unexpected = err;
    }
    // Status is written whatever happened while applying: a failure to act must be visible.
    const status = withOutcome(plan.status, outcome, batch, this.ctx.clock.now());
    for (const e of plan.events) void this.ctx.events.emit(batch, e.type, e.reason, e.message);
    if (outcome.terminal) void this.ctx.events.emit(batch, 'Warning', outcome.terminal.reason, outcome.terminal.message);
    if (outcome.createFailure) void this.ctx.events.emit(batch, 'Warning', 'FailedCreate', outcome.createFailure);
    this.recordMetrics(batch, status, plan);
    const wait = await this.writeStatus(batch, status, mem);
    if (unexpected) throw unexpected;
    if (outcome.errors.length > 0) {
      for (const e of outcome.errors) this.ctx.log.warn('Action failed', { batch: keyOf(batch), action: e.action, error: e.error.message });
      throw new ApplyError(outcome.errors);
    }
    let requeue = plan.requeueAfterMs;
    if (outcome.queueFailure) requeue = Math.min(requeue ?? 5000, redisRetryMs(mem.redisFailures++));
    if (wait > 0) requeue = Math.min(requeue ?? wait, wait);
    return requeue !== undefined ? { requeueAfterMs: requeue } : {};
  }

  /** Reads only: the cache, the batch's Redis, its ConfigMap of items. */
  private async observe(batch: TaskBatch, mem: BatchMemory): Promise<ObservedBatch> {
    const status = batch.status ?? {};
    const source = status.seeded ? undefined : await this.observeSource(batch);
    const queue = await this.observeQueue(batch, status, mem);
    return {
      batch,
      pods: this.podsOf(batch),
      queue,
      ...(source ? { source } : {}),
      heldByOthers: this.heldByOthers(batch),
      now: this.ctx.clock.now(),
      memory: mem.plan,
      config: this.ctx.config,
    };
  }

  private async observeSource(batch: TaskBatch): Promise<SourceObservation> {
    const spec = batch.spec;
    let data: string | undefined;
    if (spec.itemsFrom) {
      const ref = spec.itemsFrom.configMapKeyRef;
      const cm = await this.ctx.kube.find<{ data?: Record<string, string> }>(`/api/v1/namespaces/${batch.metadata.namespace}/configmaps/${ref.name}`);
      if (!cm) return { kind: 'error', reason: 'ItemsSourceNotFound', message: `spec.itemsFrom: ConfigMap ${ref.name} not found in namespace ${batch.metadata.namespace}` };
      data = cm.data?.[ref.key];
      if (data === undefined) return { kind: 'error', reason: 'ItemsSourceNotFound', message: `spec.itemsFrom: ConfigMap ${ref.name} has no key ${ref.key}` };
    }
    const source = itemSource(spec, data);
    if (!source) return { kind: 'none' };
    return { kind: 'items', source, field: itemsField(spec) };
  }

  private async observeQueue(batch: TaskBatch, status: TaskBatchStatus, mem: BatchMemory): Promise<QueueObservation> {
    let redis: RedisClient;
    try {
      redis = await this.ctx.redis.forBatch(batch);
    } catch (err) {
      return this.unavailable(batch, err, mem);
    }
    // A finished batch writes nothing more to its Redis: only running ones are held back.
    const problem = this.ctx.config.worker.allowEvictingRedis || isFinished(status) ? undefined : await this.evictionPolicies.problem(redis);
    if (problem) {
      const message = `${problem}, or install the operator with TASKBATCH_REDIS_ALLOW_EVICTION=true (Helm value redis.allowEviction) to accept the risk`;
      return { kind: 'misconfigured', message, retryAfterMs: EvictionPolicies.retryAfterMs };
    }
    if (!status.queueEpoch) return { kind: 'absent' };
    const queue = new BatchQueue(redis, refOf(batch), { expectedEpoch: status.queueEpoch });
    try {
      const snapshot = await queue.snapshot();
      const workers = isFinished(status) ? [] : await listWorkers(queue, { staleMs: this.ctx.config.workerStaleMs }).catch(() => [] as WorkerPresence[]);
      mem.redisFailures = 0;
      return { kind: 'ok', snapshot, workers };
    } catch (err) {
      if (err instanceof BatchStateLostError) return { kind: 'lost', message: err.message, partial: err.partial };
      return this.unavailable(batch, err, mem);
    }
  }

  private unavailable(batch: TaskBatch, err: unknown, mem: BatchMemory): QueueObservation {
    // Checked before connecting; the message names the field (and a Secret by name only).
    if (err instanceof RedisNotAllowedError) return { kind: 'refused', reason: 'RedisAddressNotAllowed', message: err.message };
    // Connection errors name hosts; a host taken from a Secret must not reach status or events.
    const message = this.ctx.redis.redact(batch, String((err as Error).message ?? err));
    if (err instanceof RedisConfigError) return { kind: 'refused', reason: 'RedisConfigInvalid', message };
    // The endpoint's own backoff says when to look again; other failures (ACL set-up, a Secret
    // read) back off per batch.
    const retryAfterMs = err instanceof RedisUnavailableError ? Math.max(100, err.retryAt - this.ctx.clock.now()) : redisRetryMs(mem.redisFailures);
    mem.redisFailures++;
    return { kind: 'unavailable', message, retryAfterMs };
  }

  /** Applies the plan's actions in order; a failed queue action skips the ones that depend on it. */
  private async apply(batch: TaskBatch, plan: BatchPlan, mem: BatchMemory): Promise<Outcome> {
    const out: Outcome = { errors: [] };
    let queue: BatchQueue | undefined;
    const queueFor = async (): Promise<BatchQueue> => {
      queue ??= new BatchQueue(await this.ctx.redis.forBatch(batch), refOf(batch), { expectedEpoch: out.epoch ?? batch.status?.queueEpoch ?? '', ...writesOf(batch) });
      return queue;
    };
    const ns = batch.metadata.namespace!;
    for (const action of plan.actions) {
      try {
        switch (action.kind) {
          case 'createQueue':
          case 'resetQueue': {
            const redis = await this.ctx.redis.forBatch(batch);
            if (action.kind === 'resetQueue') await new BatchQueue(redis, refOf(batch), writesOf(batch)).purge();
            const q = new BatchQueue(redis, refOf(batch), writesOf(batch));
            out.epoch = (await q.create({ maxAttempts: action.maxAttempts, backoff: action.backoff })).epoch;
            queue = q;
            break;
          }
          case 'seed': {
            const q = await queueFor();
            try {
              const slice = await seedSlice(q, action.source, action.from, action.count);
              if (slice.done && action.close) await q.close();
            } catch (err) {
              const name = (err as Error).name;
              if (err instanceof SeedError || name === 'InvalidArgument' || name === 'PayloadTooLarge') out.terminal = { reason: 'InvalidItems', message: (err as Error).message };
              else throw err;
            }
            break;
          }
          case 'createPods':
            for (let i = 0; i < action.count; i++) {
              const created = await this.ctx.kube.create<Pod>(`/api/v1/namespaces/${ns}/pods`, buildWorkerPod(batch, action.epoch, this.ctx.config.worker));
              mem.plan.expectedPods[created.metadata.name!] = this.ctx.clock.now();
              this.ctx.log.info('Created worker pod', { batch: keyOf(batch), pod: created.metadata.name });
            }
            mem.plan.createFailures = 0;
            mem.plan.lastCreateFailure = undefined;
            break;
          case 'deletePod':
            await this.ctx.kube.delete(`/api/v1/namespaces/${ns}/pods/${action.name}`).catch((err: unknown) => {
              if (!isNotFound(err)) throw err;
            });
            break;
          case 'drainWorker':
            await requestDrain(await queueFor(), action.name);
            this.ctx.log.info('Requested worker drain', { batch: keyOf(batch), pod: action.name });
            break;
          case 'deleteBatch':
            this.ctx.log.info('Deleting finished batch after ttlSecondsAfterFinished', { batch: keyOf(batch) });
            await this.ctx.kube.delete(batchPath(ns, batch.metadata.name), { propagationPolicy: 'Background' });
            break;
        }
      } catch (err) {
        const error = err instanceof Error ? err : new Error(String(err));
        if (action.kind === 'createPods' && err instanceof KubeApiError && err.status !== 409) {
          // The API refused the pod (admission, quota, an invalid template): the user's to fix.
          out.createFailure = `Error creating worker pod: ${err.message}`;
          mem.plan.createFailures++;
          mem.plan.lastCreateFailureAt = this.ctx.clock.now();
          mem.plan.lastCreateFailure = out.createFailure;
          this.ctx.log.warn('The API refused a worker pod', { batch: keyOf(batch), error: err.message, retryInMs: createBackoff(mem.plan.createFailures) });
        } else if (isQueueAction(action) && !(err instanceof KubeApiError)) {
          out.queueFailure = this.ctx.redis.redact(batch, error.message);
          break; // later queue actions depend on this one
        } else {
          out.errors.push({ action: action.kind, error });
        }
      }
    }
    return out;
  }

  /** Deletes the batch's Redis keys; the finalizer goes when this returns. */
  private async cleanup(batch: TaskBatch, mem: BatchMemory): Promise<void> {
    const key = keyOf(batch);
    let error = '';
    try {
      const redis = await this.ctx.redis.forBatch(batch);
      await new BatchQueue(redis, refOf(batch)).purge();
      // The namespace's last batch on the managed Redis: its ACL user and Secret go with it.
      const ns = batch.metadata.namespace!;
      // Batches being deleted do not count: each releases again (idempotently) when it finishes.
      const others = this.ctx.batches.list().filter((b) => b.metadata.namespace === ns && b.metadata.name !== batch.metadata.name && !b.spec.redis && !b.metadata.deletionTimestamp);
      if (others.length === 0) {
        await this.ctx.redis
          .releaseNamespace(batch, redis)
          .catch((err: unknown) => this.ctx.log.warn("Failed to release the namespace's Redis user", { namespace: ns, error: (err as Error).message }));
      }
      this.ctx.log.info("Removed the batch's Redis keys", { batch: key });
      return;
    } catch (err) {
      error = this.ctx.redis.redact(batch, String((err as Error).message ?? err));
      // Nothing to clean: a Redis the operator may not contact, a bad URL, or state never created.
      if (err instanceof RedisNotAllowedError || err instanceof RedisConfigError || !batch.status?.queueEpoch) {
        const why = err instanceof RedisNotAllowedError ? 'its Redis address is not allowed' : err instanceof RedisConfigError ? 'its Redis settings are invalid' : 'its queue was never created';
        this.ctx.log.info("Nothing of the batch's in Redis to delete", { batch: key, why });
        return;
      }
    }
    mem.cleanupAttempts++;
    if (mem.cleanupAttempts < this.ctx.config.maxCleanupAttempts) {
      const status = structuredClone(batch.status ?? {});
      status.conditions = sortConditions(
        setCondition(
          status.conditions ?? [],
          {
            type: 'CleanupBlocked',
            status: 'True',
            reason: 'RedisUnavailable',
            message: `Deleting the batch's Redis keys failed (attempt ${mem.cleanupAttempts} of ${this.ctx.config.maxCleanupAttempts}): ${error}`,
          },
          batch.metadata.generation ?? 0,
          new Date(this.ctx.clock.now()),
        ),
      );
      await this.ctx.kube.patch(`${batchPath(batch.metadata.namespace!, batch.metadata.name)}/status`, { status }).catch(() => undefined);
      throw new Error(`cleanup of ${key} failed: ${error}`);
    }
    void this.ctx.events.emit(
      batch,
      'Warning',
      'CleanupAbandoned',
      `Gave up deleting the batch's Redis keys after ${mem.cleanupAttempts} attempts (${error}); delete keys matching tb:{${key}}:* yourself`,
    );
  }

  /**
   * Writes status if it changed (progress-only changes at most once per statusIntervalMs), as a
   * merge patch carrying the resourceVersion the plan was based on: if the object changed since,
   * the API answers 409 and the pass is planned again from the newer object. Returns ms until a
   * deferred write is due.
   */
  private async writeStatus(batch: TaskBatch, status: TaskBatchStatus, mem: BatchMemory): Promise<number> {
    const old = batch.status ?? {};
    if (jsonEqual(old, status)) return 0;
    const structural = !jsonEqual(
      { ...old, items: undefined, progress: undefined, queueChanges: undefined, conditions: stripMessages(old.conditions) },
      { ...status, items: undefined, progress: undefined, queueChanges: undefined, conditions: stripMessages(status.conditions) },
    );
    const now = this.ctx.clock.now();
    const since = now - mem.lastStatusWrite;
    if (!structural && since < this.ctx.config.statusIntervalMs) return this.ctx.config.statusIntervalMs - since;
    const based = batch.metadata.resourceVersion ?? '';
    const written = await this.ctx.kube.patch<TaskBatch>(`${batchPath(batch.metadata.namespace!, batch.metadata.name)}/status`, {
      metadata: { resourceVersion: based },
      status: nullsFor(old, status),
    });
    mem.lastStatusWrite = now;
    const wrote = written.metadata.resourceVersion ?? '';
    if (wrote && wrote !== based) mem.writeGate = { based, wrote, at: now };
    this.ctx.metrics.statusWrites.inc();
    return 0;
  }

  private recordMetrics(batch: TaskBatch, status: TaskBatchStatus, plan: BatchPlan): void {
    const finished = isFinished(status);
    const failed = status.conditions?.some((c) => c.type === 'Failed' && c.status === 'True');
    this.ctx.metrics.setBatch(batch.metadata.namespace!, batch.metadata.name!, { ...(status.items ?? {}) }, plan.workers, finished ? (failed ? 'failed' : 'complete') : undefined);
  }

  private heldByOthers(batch: TaskBatch): number {
    if (this.ctx.config.namespaceItemQuota <= 0) return 0;
    const ns = batch.metadata.namespace!;
    const held: HeldBatch[] = this.ctx.batches
      .list()
      .filter((b) => b.metadata.namespace === ns)
      .map((b) => {
        const items = b.status?.items;
        const specTotal = b.spec.range || b.spec.items ? (itemSource(b.spec)?.total ?? 0) : 0;
        return { name: b.metadata.name!, finished: isFinished(b.status ?? {}), total: Math.max(specTotal, items?.total ?? 0), done: (items?.succeeded ?? 0) + (items?.failed ?? 0) };
      });
    return itemsHeldByOthers(held, batch.metadata.name!);
  }

  private podsOf(batch: TaskBatch): Pod[] {
    return this.ctx.pods
      .list()
      .filter(
        (p) =>
          p.metadata.namespace === batch.metadata.namespace && p.metadata.labels?.[BATCH_LABEL] === batch.metadata.name && (p.metadata.ownerReferences ?? []).some((o) => o.uid === batch.metadata.uid),
      );
  }

  private memoryFor(key: string): BatchMemory {
    let m = this.memory.get(key);
    if (!m) {
      m = { plan: emptyMemory(), lastStatusWrite: 0, cleanupAttempts: 0, redisFailures: 0 };
      this.memory.set(key, m);
    }
    return m;
  }
}

/**
 * The plan's status with what applying it changed: the queue epoch just created, a spec problem
 * found while seeding, a pod the API refused (Degraded/PodCreateFailed, as the Job controller's
 * FailedCreate), a Redis that failed mid-pass. Pure.
 */
export function withOutcome(planned: TaskBatchStatus, out: Outcome, batch: TaskBatch, now: number): TaskBatchStatus {
  const status = structuredClone(planned);
  const generation = batch.metadata.generation ?? 0;
  let conditions = status.conditions ?? [];
  const at = new Date(now);
  if (out.epoch) status.queueEpoch = out.epoch;
  if (out.terminal && !conditions.some((c) => c.type === 'Failed' && c.status === 'True')) {
    conditions = setCondition(conditions, { type: 'Failed', status: 'True', reason: out.terminal.reason, message: out.terminal.message }, generation, at);
    status.completionTime ??= new Date(now).toISOString().replace(/\.\d{3}Z$/, 'Z');
    conditions = setCondition(conditions, { type: 'Progressing', status: 'False', reason: 'Finished', message: 'The batch has finished' }, generation, at);
  }
  if (out.createFailure) {
    conditions = setCondition(conditions, { type: 'Degraded', status: 'True', reason: 'PodCreateFailed', message: out.createFailure }, generation, at);
  }
  if (out.queueFailure) {
    conditions = setCondition(conditions, { type: 'RedisUnavailable', status: 'True', reason: 'ConnectionFailed', message: out.queueFailure }, generation, at);
  }
  status.conditions = sortConditions(conditions);
  status.state = stateWord(status, batch.spec.suspend === true);
  return status;
}

/** Per-batch backoff for Redis failures the endpoint's own backoff does not cover: 0.5 s doubling to 5 s. */
function redisRetryMs(failures: number): number {
  return Math.min(5000, 500 * 2 ** Math.min(4, failures));
}

function isQueueAction(a: BatchAction): boolean {
  return a.kind === 'createQueue' || a.kind === 'resetQueue' || a.kind === 'seed' || a.kind === 'drainWorker';
}

/** A merge patch drops a field only when it is null: fields the plan removed become null. */
function nullsFor(old: TaskBatchStatus, next: TaskBatchStatus): Record<string, unknown> {
  const patch: Record<string, unknown> = { ...next };
  for (const k of Object.keys(old)) if ((next as Record<string, unknown>)[k] === undefined) patch[k] = null;
  return patch;
}

function stripMessages(conditions: TaskBatchStatus['conditions']): unknown {
  return (conditions ?? []).map((c) => ({ type: c.type, status: c.status, reason: c.reason }));
}

function refOf(batch: TaskBatch): { namespace: string; name: string } {
  return { namespace: batch.metadata.namespace!, name: batch.metadata.name! };
}

/**
 * How the operator's own writes (creating, resetting and seeding the queue) are acknowledged:
 * as the batch's workers' (spec.redis.durability), so a seed the operator recorded in status
 * survives a failover. Reads and the cleanup's purge need no replica.
 */
function writesOf(batch: TaskBatch): { durability: 'local' | 'replicated' } {
  return { durability: batch.spec.redis?.durability ?? 'local' };
}

function keyOf(batch: TaskBatch): string {
  return `${batch.metadata.namespace}/${batch.metadata.name}`;
}
