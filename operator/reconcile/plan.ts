import type { BatchSnapshot, WorkerPresence } from '../../queue/index.js';
import { BATCH_LABEL, EPOCH_ANNOTATION, canReopen, findCondition, isFinished, type Condition, type TaskBatch, type TaskBatchStatus } from '../../api/taskbatch.js';
import { setCondition, sortConditions, type ConditionInput } from './conditions.js';
import { describeViolations } from './pod-security.js';
import type { Pod } from '../../kube/pod.js';
import { isPodReady, isPodTerminating, podExitCode, podTemplateViolations, type WorkerPodConfig } from './pods.js';
import { quotaDecision } from './quota.js';
import { chooseWorkersToDrain, desiredWorkers, type Recommendations, type WorkerPodView } from './scaling.js';
import { allowedFailures } from '../../api/failure-policy.js';
import type { ItemSource } from '../../api/items.js';
import { SPEC_DEFAULTS } from '../../api/types.generated.js';
import { workerResourceViolations } from './worker-resources.js';

/**
 * The TaskBatch controller's decision for one pass, as a pure function of what it observed (the
 * TaskBatch and its pods from the cache, the batch's Redis state, the item source, the time and
 * what the controller remembers): the actions to apply, the status to write, the events to emit
 * and when to look again. Nothing here reads or writes anything; reconciler.ts observes, applies
 * the actions (collecting errors) and always writes the status.
 */

/** What the batch's Redis showed this pass. */
export type QueueObservation =
  /** status.queueEpoch is unset: the batch's state was never created (Redis is reachable). */
  | { kind: 'absent' }
  | { kind: 'ok'; snapshot: BatchSnapshot; workers: WorkerPresence[] }
  /** The recorded epoch is gone from Redis (flushed, restarted empty, evicted). */
  | { kind: 'lost'; message: string; partial?: boolean }
  /** Not reachable now; `retryAfterMs` from the endpoint's own backoff. */
  | { kind: 'unavailable'; message: string; retryAfterMs: number }
  /** Reachable, but set up to lose batches (an evicting maxmemory-policy); looked at again after `retryAfterMs`. */
  | { kind: 'misconfigured'; message: string; retryAfterMs: number }
  /** A spec problem that retrying cannot fix (bad URL, an address not allowed). */
  | { kind: 'refused'; reason: string; message: string };

/** The batch's item source (read only while seeding). */
export type SourceObservation = { kind: 'none' } | { kind: 'items'; source: ItemSource; field: string } | { kind: 'error'; reason: string; message: string };

/** What the controller remembers between passes of one batch; all of it may be lost safely. */
export interface PlanMemory {
  scaleHistory: Recommendations;
  /** Pods created and not yet seen in the cache, by name → creation time (so they are not created twice). */
  expectedPods: Record<string, number>;
  /** Failed or stuck pods already counted as worker failures (by uid). */
  countedPods: string[];
  /** Worker pods that registered presence at least once: without presence now, they are exiting, not starting. */
  registeredPods: string[];
  /** Workers this controller asked to drain (by pod name). */
  drainRequested: string[];
  lastFailureAt: number;
  /** Succeeded count last seen, -1 before the first snapshot. */
  lastSucceeded: number;
  /** Consecutive pod-create failures, for the create backoff. */
  createFailures: number;
  lastCreateFailureAt: number;
  /** The API's refusal of the last pod create, shown as Degraded until a create succeeds. */
  lastCreateFailure?: string;
}

/** How long after the n-th refused pod create in a row the next is tried: 1 s doubling to 5 min. */
export function createBackoff(failures: number): number {
  return failures > 0 ? Math.min(300_000, 1000 * 2 ** (failures - 1)) : 0;
}

export function emptyMemory(): PlanMemory {
  return { scaleHistory: [], expectedPods: {}, countedPods: [], registeredPods: [], drainRequested: [], lastFailureAt: 0, lastSucceeded: -1, createFailures: 0, lastCreateFailureAt: 0 };
}

export interface PlanConfig {
  worker: WorkerPodConfig;
  pollIntervalMs: number;
  maxWorkerFailures: number;
  maxBatchItems: number;
  seedSliceItems: number;
  namespaceItemQuota: number;
  /** A worker pod Pending longer than this counts as a failed worker (its reason is reported). */
  podPendingTimeoutMs: number;
  /** A running pod without presence for this long after it started is not "starting" any more. */
  workerStartGraceMs: number;
  /** How often a finished batch's Redis is looked at again (replayed items reopen it). */
  finishedRecheckMs: number;
}

export interface ObservedBatch {
  batch: TaskBatch;
  /** Pods owned by the batch, from the cache, in any state. */
  pods: Pod[];
  queue: QueueObservation;
  /** Present only when seeding is not finished. */
  source?: SourceObservation;
  /** Unfinished items the namespace's other batches hold (for the item quota). */
  heldByOthers: number;
  now: number;
  memory: PlanMemory;
  config: PlanConfig;
}

export type BatchAction =
  | { kind: 'createQueue'; maxAttempts: number; backoff: Record<string, number> }
  /** Purge what is left of the lost epoch and create a new one. */
  | { kind: 'resetQueue'; maxAttempts: number; backoff: Record<string, number> }
  | { kind: 'seed'; source: ItemSource; from: number; count: number; close: boolean }
  | { kind: 'createPods'; count: number; epoch: string }
  | { kind: 'deletePod'; name: string; reason: string }
  | { kind: 'drainWorker'; name: string }
  | { kind: 'deleteBatch' };

export interface BatchEvent {
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
}

export interface BatchPlan {
  actions: BatchAction[];
  status: TaskBatchStatus;
  events: BatchEvent[];
  memory: PlanMemory;
  /** Look again after this long; undefined = only on changes. */
  requeueAfterMs?: number;
  /** Counts for metrics. */
  workers: { desired: number; current: number; ready: number; draining: number };
}

export function planBatch(o: ObservedBatch): BatchPlan {
  const p = new Planner(o);
  return isFinished(o.batch.status) ? p.finished() : p.running();
}

/** Accumulates one plan; each method is one step of the decision. */
class Planner {
  readonly status: TaskBatchStatus;
  readonly actions: BatchAction[] = [];
  readonly events: BatchEvent[] = [];
  readonly memory: PlanMemory;
  private conditions: Condition[];
  private requeue: number | undefined;
  private readonly generation: number;

  constructor(private readonly o: ObservedBatch) {
    this.status = structuredClone(o.batch.status ?? {});
    this.conditions = structuredClone(this.status.conditions ?? []);
    this.memory = structuredClone(o.memory);
    this.generation = o.batch.metadata.generation ?? 0;
    this.status.selector = `${BATCH_LABEL}=${o.batch.metadata.name}`;
    const def = o.config.worker.defaultRedis;
    if (!o.batch.spec.redis && def) {
      this.status.redis = { url: def.url, ...(def.username ? { username: def.username } : {}), ...(def.tls ? { tls: true } : {}), ...(def.cluster ? { cluster: true } : {}) };
    }
  }

  private cond(c: ConditionInput): void {
    this.conditions = setCondition(this.conditions, c, this.generation, new Date(this.o.now));
  }

  private isTrue(type: Condition['type']): boolean {
    return this.conditions.some((c) => c.type === type && c.status === 'True');
  }

  private after(ms: number): void {
    this.requeue = this.requeue === undefined ? ms : Math.min(this.requeue, ms);
  }

  private fail(reason: string, message: string): void {
    if (this.isTrue('Failed')) return;
    this.cond({ type: 'Failed', status: 'True', reason, message });
    this.status.completionTime ??= iso(this.o.now);
    this.events.push({ type: 'Warning', reason, message });
  }

  private get spec(): TaskBatch['spec'] {
    return this.o.batch.spec;
  }

  /** A running (not finished) batch. */
  running(): BatchPlan {
    const { o } = this;
    this.after(o.config.pollIntervalMs);
    this.specErrors();
    const q = o.queue;
    let snapshot: BatchSnapshot | undefined;
    let workers: WorkerPresence[] = [];
    let seeding: { cursor: number; total: number } | undefined;
    if (q.kind === 'unavailable') {
      this.cond({ type: 'RedisUnavailable', status: 'True', reason: 'ConnectionFailed', message: q.message });
      this.events.push({ type: 'Warning', reason: 'RedisUnavailable', message: q.message });
      this.after(q.retryAfterMs);
    } else if (q.kind === 'refused') {
      this.fail(q.reason, q.message);
    } else if (q.kind === 'misconfigured') {
      // Nothing is written to that Redis (no queue, no seeding) and nothing is scaled until it is fixed.
      this.cond({ type: 'RedisUnavailable', status: 'False', reason: 'Connected', message: "The batch's Redis is reachable" });
      this.cond({ type: 'RedisMisconfigured', status: 'True', reason: 'EvictionPolicy', message: q.message });
      this.events.push({ type: 'Warning', reason: 'RedisMisconfigured', message: q.message });
      this.after(q.retryAfterMs);
    } else {
      this.cond({ type: 'RedisUnavailable', status: 'False', reason: 'Connected', message: "The batch's Redis is reachable" });
      if (this.isTrue('RedisMisconfigured')) this.cond({ type: 'RedisMisconfigured', status: 'False', reason: 'NoEviction', message: "The batch's Redis does not evict keys" });
      if (q.kind === 'absent') {
        if (!this.isTrue('Failed')) {
          this.actions.push({ kind: 'createQueue', ...this.retryOptions() });
          this.after(1);
        }
      } else if (q.kind === 'lost') {
        this.lost(q.message, q.partial === true);
      } else {
        snapshot = q.snapshot;
        workers = q.workers;
        this.rolledBack(snapshot);
        seeding = this.seed(snapshot);
      }
    }
    if (!this.spec.suspend && snapshot) this.status.startTime ??= iso(o.now);
    if (this.spec.suspend) delete this.status.startTime; // Job semantics: the deadline's timer restarts on resume.

    const workerCounts = this.workers(snapshot, workers);
    if (snapshot && !this.isTrue('Failed')) this.outcome(snapshot);
    return this.finish(snapshot, workerCounts, seeding);
  }

  private retryOptions(): { maxAttempts: number; backoff: Record<string, number> } {
    const retry = this.spec.retry ?? {};
    return { maxAttempts: retry.maxAttempts ?? SPEC_DEFAULTS['retry.maxAttempts'], backoff: { ...(retry.backoff ?? {}) } as Record<string, number> };
  }

  /** Spec errors found without Redis: terminal, like a Job's invalid template. */
  private specErrors(): void {
    const { o } = this;
    const overLimits = o.config.worker.resources ? workerResourceViolations(o.batch, o.config.worker.resources) : [];
    if (overLimits.length > 0) this.fail('ResourcesRejected', overLimits.join('; '));
    const rejected = podTemplateViolations(o.batch, o.config.worker);
    if (rejected.length > 0) this.fail('PodTemplateRejected', describeViolations(o.config.worker.podSecurity, rejected));
    const src = o.source;
    if (src?.kind === 'error') this.fail(src.reason, src.message);
    if (src?.kind === 'items' && src.source.total > o.config.maxBatchItems) {
      this.fail(
        'TooManyItems',
        `${src.field}: ${src.source.total} items exceed this installation's limit of ${o.config.maxBatchItems} items per batch (operator setting TASKBATCH_MAX_BATCH_ITEMS); split the work into several batches or ask the installer to raise the limit`,
      );
    }
  }

  private lost(message: string, partial: boolean): void {
    // Partial: some keys went (evicted, deleted) while the meta hash stayed; recovered the same way.
    this.cond({ type: 'QueueStateLost', status: 'True', reason: partial ? 'KeysMissing' : 'StateMissing', message: `Redis lost this batch's state (${message})` });
    this.events.push({ type: 'Warning', reason: 'QueueStateLost', message: `Redis lost this batch's state: ${message}` });
    if (this.spec.open) {
      this.fail('QueueStateLost', `Redis lost the state of this open batch (items submitted by producers cannot be recovered from the spec): ${message}`);
      return;
    }
    if (this.isTrue('Failed')) return;
    // Re-seed from the spec under a new epoch (at-least-once: items that had succeeded run again).
    // Pods of the old epoch are deleted next pass, when the new epoch is in status.
    this.actions.push({ kind: 'resetQueue', ...this.retryOptions() });
    this.status.seeded = false;
    // The old epoch's counts must not be compared with the new one's (see rolledBack).
    delete this.status.items;
    delete this.status.progress;
    delete this.status.queueChanges;
    this.memory.expectedPods = {};
    this.memory.drainRequested = [];
    this.cond({ type: 'QueueStateLost', status: 'False', reason: 'Reseeded', message: `Redis lost this batch's state at ${iso(this.o.now)}; items were re-seeded from the spec and may run again` });
    this.after(1);
  }

  /**
   * Redis holding less than this batch last saw under the same epoch: restored from an older
   * snapshot, or failed over to a lagging replica. Whole-batch loss changes the epoch; a rollback
   * keeps it, so it shows only as facts that never shrink shrinking: the item total, the
   * succeeded count, a closed queue open again. Recovery: the queue's own seed cursor was rolled
   * back with it, so seeding resumes from there (ids are positional: nothing is enqueued twice),
   * and items finished after the rollback point run again (at-least-once). An open batch cannot
   * get back what producers submitted since, so it fails.
   */
  private rolledBack(snapshot: BatchSnapshot): void {
    const before = this.o.batch.status?.items;
    const lost: string[] = [];
    const itemsGone = before?.total !== undefined && snapshot.total < before.total;
    if (itemsGone) lost.push(`item total ${before.total} → ${snapshot.total}`);
    if (before?.succeeded !== undefined && snapshot.succeeded < before.succeeded) lost.push(`succeeded ${before.succeeded} → ${snapshot.succeeded}`);
    // Catches what the counts above miss: claims, retries and completions undone while the totals held.
    const seenChanges = this.o.batch.status?.queueChanges;
    if (seenChanges !== undefined && snapshot.changes < seenChanges) lost.push(`state changes ${seenChanges} → ${snapshot.changes}`);
    const sourced = !this.spec.open;
    if (sourced && this.o.batch.status?.seeded && !snapshot.closed) lost.push('the queue, closed after seeding, is open again');
    const recovering = this.conditions.some((c) => c.type === 'QueueStateLost' && c.status === 'True' && c.reason === 'RolledBack');
    if (lost.length === 0) {
      if (recovering && snapshot.closed) {
        this.cond({
          type: 'QueueStateLost',
          status: 'False',
          reason: 'RolledBackReseeded',
          message: 'Redis was rolled back; the items missing since were seeded again (items finished after the rollback point ran again)',
        });
      }
      return;
    }
    const message = `Redis holds less than this batch last saw (${lost.join('; ')}): it was restored from an older snapshot or failed over to a lagging replica`;
    this.events.push({ type: 'Warning', reason: 'QueueRolledBack', message });
    if (!sourced && itemsGone) {
      this.cond({ type: 'QueueStateLost', status: 'True', reason: 'RolledBack', message });
      this.fail('QueueStateLost', `${message}; items submitted to this open batch since that point cannot be recovered from the spec`);
      return;
    }
    if (!sourced) {
      // Every submitted item is still there: what was undone (claims, retries, completions) runs again.
      this.cond({ type: 'QueueStateLost', status: 'False', reason: 'RolledBackRecovered', message: `${message}; no submitted item was lost: items finished after the rollback point run again` });
      return;
    }
    this.cond({
      type: 'QueueStateLost',
      status: snapshot.closed ? 'False' : 'True',
      reason: snapshot.closed ? 'RolledBackReseeded' : 'RolledBack',
      message: `${message}; ${snapshot.closed ? 'items finished after the rollback point run again' : 'the missing items are being seeded again; items finished after the rollback point run again'}`,
    });
    if (!snapshot.closed) this.status.seeded = false;
  }

  /** Seeding: one bounded slice per pass, never while suspended, over quota or failed. */
  private seed(snapshot: BatchSnapshot): { cursor: number; total: number } | undefined {
    const { o } = this;
    const src = o.source;
    if (snapshot.closed || src?.kind === 'none' || (this.status.seeded && !src)) {
      this.status.seeded = true;
      return undefined;
    }
    // Unseeded without a source observed: a rollback was just found; the next pass reads it.
    if (!src) return undefined;
    if (src.kind !== 'items' || this.isTrue('Failed')) return undefined;
    const total = src.source.total;
    const cursor = Number(snapshot.seedCursor || 0);
    const quota = quotaDecision(o.config.namespaceItemQuota, o.batch.metadata.namespace!, src.field, total, total - (snapshot.succeeded + snapshot.failed), o.heldByOthers);
    if (quota.kind === 'never') {
      this.fail('TooManyItems', quota.message);
      return undefined;
    }
    if (quota.kind === 'wait') {
      this.cond({ type: 'QuotaExceeded', status: 'True', reason: 'NamespaceItemQuota', message: quota.message });
    } else if (this.isTrue('QuotaExceeded')) {
      this.cond({ type: 'QuotaExceeded', status: 'False', reason: 'WithinQuota', message: "The batch fits in its namespace's item quota" });
    }
    if (!this.spec.suspend && quota.kind === 'fits') {
      const count = Math.max(0, Math.min(o.config.seedSliceItems, total - cursor));
      this.actions.push({ kind: 'seed', source: src.source, from: cursor, count, close: cursor + count >= total });
      // More to seed: come back at once (after other batches' turns).
      this.after(1);
    }
    return { cursor, total };
  }

  /** Worker pods: clean up, count failures, scale. Returns the counts shown in status. */
  private workers(snapshot: BatchSnapshot | undefined, presence: WorkerPresence[]): BatchPlan['workers'] {
    const { o, memory: mem } = this;
    const now = o.now;
    const epoch = this.status.queueEpoch ?? '';
    const byId = new Map(presence.map((w) => [w.id, w]));
    const counted = new Set(mem.countedPods);
    let failures = this.status.workers?.failures ?? 0;
    const live: Pod[] = [];
    const stuck: string[] = [];
    for (const pod of o.pods) {
      if (isPodTerminating(pod)) continue;
      const name = pod.metadata.name!;
      const phase = pod.status?.phase;
      const stale = Boolean(epoch) && pod.metadata.annotations?.[EPOCH_ANNOTATION] !== epoch;
      if (phase === 'Succeeded' || stale) {
        this.actions.push({ kind: 'deletePod', name, reason: stale ? 'StaleEpoch' : 'Succeeded' });
        continue;
      }
      const pending = phase === 'Pending' || phase === undefined;
      const pendingFor = now - (Date.parse(pod.metadata.creationTimestamp ?? '') || now);
      if (phase === 'Failed' || (pending && pendingFor > o.config.podPendingTimeoutMs)) {
        if (!counted.has(pod.metadata.uid ?? name)) {
          counted.add(pod.metadata.uid ?? name);
          failures++;
          mem.lastFailureAt = now;
          this.events.push(
            phase === 'Failed'
              ? { type: 'Warning', reason: 'WorkerFailed', message: `Worker pod ${name} failed (exit code ${podExitCode(pod) ?? 'unknown'})` }
              : {
                  type: 'Warning',
                  reason: 'WorkerPodStuck',
                  message: `Worker pod ${name} did not start within ${Math.round(o.config.podPendingTimeoutMs / 1000)}s (${pendingReason(pod)}); deleted and counted as a failed worker`,
                },
          );
        }
        this.actions.push({ kind: 'deletePod', name, reason: phase === 'Failed' ? 'Failed' : 'PendingTooLong' });
        continue;
      }
      if (pending) {
        const why = pendingReason(pod);
        if (why !== 'ContainerCreating' && why !== 'PodInitializing' && why !== 'Scheduling') stuck.push(`${name}: ${why}`);
      }
      live.push(pod);
    }
    mem.countedPods = [...counted].filter((uid) => o.pods.some((p) => (p.metadata.uid ?? p.metadata.name) === uid));
    if (snapshot && mem.lastSucceeded >= 0 && snapshot.succeeded > mem.lastSucceeded) failures = 0;
    if (snapshot) mem.lastSucceeded = snapshot.succeeded;
    this.status.workers = { ...(this.status.workers ?? {}), failures };
    if (failures >= o.config.maxWorkerFailures) {
      this.fail('WorkersCrashLooping', `${failures} worker pods failed in a row without progress; see the worker pods' logs and events`);
    }

    // Expectations: a created pod is expected until the cache shows it (in any state).
    const seenNames = new Set(o.pods.map((p) => p.metadata.name!));
    for (const [name, at] of Object.entries(mem.expectedPods)) if (seenNames.has(name) || now - at > 60_000) delete mem.expectedPods[name];
    for (const w of presence) if (seenNames.has(w.id) && !mem.registeredPods.includes(w.id)) mem.registeredPods.push(w.id);
    mem.registeredPods = mem.registeredPods.filter((n) => seenNames.has(n));
    mem.drainRequested = mem.drainRequested.filter((n) => seenNames.has(n));

    const views: WorkerPodView[] = live.map((pod) => {
      const name = pod.metadata.name!;
      const w = byId.get(name);
      // A worker that registered and left is exiting (drained, or stopped): never a new one starting.
      const exited = !w && mem.registeredPods.includes(name);
      const startedAt = Date.parse(pod.status?.startTime ?? pod.metadata.creationTimestamp ?? '') || now;
      return {
        name,
        starting: !w && !exited && (pod.status?.phase !== 'Running' || now - startedAt < o.config.workerStartGraceMs),
        draining: exited || Boolean(w?.draining || w?.drainRequested) || mem.drainRequested.includes(name),
        inFlight: w?.inflight ?? 0,
        createdAt: Date.parse(pod.metadata.creationTimestamp ?? '') || now,
      };
    });
    const draining = views.filter((v) => v.draining).length;
    // Level-triggered drains: a request made before the worker registered is dropped when any
    // registry prune runs first, so it is made again until the worker's entry shows it.
    const unconfirmedDrains = mem.drainRequested.filter((name) => {
      const w = byId.get(name);
      if (!views.some((v) => v.name === name)) return false;
      return w ? !w.drainRequested && !w.draining : !mem.registeredPods.includes(name);
    });
    const expected = Object.keys(mem.expectedPods).length;
    const supply = views.length - draining + expected;

    const failed = this.isTrue('Failed');
    const suspended = this.spec.suspend === true;
    const backlog = snapshot ? snapshot.pending + snapshot.dueDelayed + snapshot.running : 0;
    const spec = this.spec.workers ?? {};
    const max = spec.max ?? SPEC_DEFAULTS['workers.max'];
    const { desired: wanted, history } = desiredWorkers(
      spec,
      // Seeding goes in slices: workers start as soon as the first slice is in.
      { backlog, suspended, finished: failed || Boolean(snapshot?.complete), seeding: !snapshot || (!this.status.seeded && backlog === 0) },
      mem.scaleHistory,
      now,
    );
    mem.scaleHistory = history;
    // Without a snapshot (Redis unreachable) nothing is scaled; show the last decision meanwhile.
    const desired = snapshot || !this.status.workers?.desired ? Math.min(wanted, max) : this.status.workers.desired;

    if (suspended || failed) {
      for (const p of live) this.actions.push({ kind: 'deletePod', name: p.metadata.name!, reason: suspended ? 'Suspended' : 'BatchFailed' });
      mem.expectedPods = {};
    } else if (snapshot && desired > supply) {
      const backoffMs = failures > 0 ? Math.min(300_000, 2000 * 2 ** (failures - 1)) : 0;
      const createBackoffMs = createBackoff(mem.createFailures);
      const wait = Math.max(mem.lastFailureAt + backoffMs, mem.lastCreateFailureAt + createBackoffMs) - now;
      // Never more pods than workers.max, counting pods that are still draining or exiting.
      const room = max - (live.length + expected);
      const count = Math.min(desired - supply, room);
      if (wait > 0) this.after(wait);
      else if (count > 0) {
        this.actions.push({ kind: 'createPods', count, epoch: this.status.queueEpoch ?? '' });
        this.events.push({ type: 'Normal', reason: 'ScaledUp', message: `Scaled workers to ${desired}` });
      }
    } else if (snapshot && desired < supply) {
      // Scale-in only drains: a drained worker stops claiming and finishes what it holds.
      // Pods not in the cache yet count as supply: drain so that running + expected = desired.
      for (const name of chooseWorkersToDrain(views, Math.max(0, desired - expected))) {
        this.actions.push({ kind: 'drainWorker', name });
        mem.drainRequested.push(name);
      }
    }
    if (snapshot && !suspended && !failed) for (const name of unconfirmedDrains) this.actions.push({ kind: 'drainWorker', name });
    if (suspended || failed || (snapshot && desired <= supply)) {
      // No pod is wanted now: an old refusal no longer says anything about the batch.
      mem.createFailures = 0;
      mem.lastCreateFailure = undefined;
    }

    if (stuck.length > 0) this.stuckPods = stuck;
    const ready = live.filter((p) => isPodReady(p)).length;
    return { desired, current: live.length, ready, draining };
  }

  private stuckPods: string[] = [];

  /** Complete, failure policy, deadline. */
  private outcome(snapshot: BatchSnapshot): void {
    const { o } = this;
    if (snapshot.complete && this.status.seeded) {
      const allowed = allowedFailures(o.batch.spec, snapshot.total);
      if (snapshot.failed > allowed) {
        this.fail(
          'FailurePolicyExceeded',
          `${snapshot.failed} of ${snapshot.total} items failed permanently (allowed: ${allowed}); list them with: taskbatch failures ${o.batch.metadata.name} -n ${o.batch.metadata.namespace}`,
        );
      } else {
        this.status.completionTime = iso(o.now);
        this.cond({ type: 'Complete', status: 'True', reason: 'AllItemsProcessed', message: `${snapshot.succeeded} of ${snapshot.total} items succeeded, ${snapshot.failed} failed` });
        this.events.push({ type: 'Normal', reason: 'Completed', message: `All ${snapshot.total} items processed: ${snapshot.succeeded} succeeded, ${snapshot.failed} failed` });
      }
      return;
    }
    const deadline = this.spec.activeDeadlineSeconds;
    const started = Date.parse(this.status.startTime ?? '');
    if (deadline && Number.isFinite(started)) {
      const left = started + deadline * 1000 - o.now;
      if (left <= 0) this.fail('DeadlineExceeded', `The batch ran longer than activeDeadlineSeconds (${deadline}s)`);
      else this.after(left);
    }
  }

  private finish(snapshot: BatchSnapshot | undefined, w: BatchPlan['workers'], seeding: { cursor: number; total: number } | undefined): BatchPlan {
    const finished = this.isTrue('Complete') || this.isTrue('Failed');
    const suspended = this.spec.suspend === true;
    if (snapshot) this.setItems(snapshot);
    const shownDesired = finished ? 0 : w.desired;
    this.status.workers = { ...(this.status.workers ?? {}), desired: shownDesired, current: w.current, ready: w.ready, draining: w.draining, summary: `${w.ready}/${shownDesired}` };
    if (suspended) {
      this.cond({ type: 'Suspended', status: 'True', reason: 'Suspended', message: 'spec.suspend is true: no worker pods run; items stay queued' });
    } else if (this.conditions.some((c) => c.type === 'Suspended')) {
      this.cond({ type: 'Suspended', status: 'False', reason: 'Resumed', message: 'spec.suspend is false' });
    }
    if (finished) {
      this.cond({ type: 'Progressing', status: 'False', reason: 'Finished', message: 'The batch has finished' });
    } else if (suspended) {
      this.cond({ type: 'Progressing', status: 'False', reason: 'Suspended', message: 'The batch is suspended' });
    } else if (snapshot) {
      const seeded = seeding ? `; ${seeding.cursor} of ${seeding.total} items seeded` : '';
      this.cond({
        type: 'Progressing',
        status: 'True',
        reason: !this.status.seeded ? 'Seeding' : w.ready > 0 ? 'ItemsRunning' : 'WaitingForWorkers',
        message: `${this.status.progress ?? '0/0'} items finished; ${w.ready} of ${w.desired} workers ready${seeded}`,
      });
    }
    this.degraded();
    return this.done({ ...w, desired: shownDesired });
  }

  private degraded(): void {
    const failures = this.status.workers?.failures ?? 0;
    const refused = this.memory.createFailures > 0 ? this.memory.lastCreateFailure : undefined;
    // A refusal stays visible through the create backoff, not only on the pass that met it.
    if (refused) {
      this.cond({ type: 'Degraded', status: 'True', reason: 'PodCreateFailed', message: refused });
    } else if (failures > 0) {
      this.cond({ type: 'Degraded', status: 'True', reason: 'WorkerPodsFailing', message: `${failures} worker pods failed since items last made progress` });
    } else if (this.stuckPods.length > 0) {
      this.cond({ type: 'Degraded', status: 'True', reason: 'WorkerPodsPending', message: `Worker pods are not starting: ${this.stuckPods.join('; ')}` });
    } else {
      this.cond({ type: 'Degraded', status: 'False', reason: 'AsExpected', message: 'Workers are healthy' });
    }
  }

  private setItems(snapshot: BatchSnapshot): void {
    this.status.items = {
      total: snapshot.total,
      pending: snapshot.pending,
      delayed: snapshot.delayed,
      running: snapshot.running,
      succeeded: snapshot.succeeded,
      failed: snapshot.failed,
      retries: snapshot.retries,
      handedBack: snapshot.handedBack,
    };
    this.status.progress = `${snapshot.succeeded + snapshot.failed}/${snapshot.total}`;
    this.status.queueChanges = snapshot.changes;
  }

  private done(workers: BatchPlan['workers']): BatchPlan {
    this.status.conditions = sortConditions(this.conditions);
    this.status.state = stateWord(this.status, this.spec.suspend === true);
    this.status.observedGeneration = this.generation;
    return { actions: this.actions, status: this.status, events: this.events, memory: this.memory, workers, ...(this.requeue !== undefined ? { requeueAfterMs: this.requeue } : {}) };
  }

  /** A finished batch: its pods go, counts follow Redis, replayed items reopen it, the TTL deletes it. */
  finished(): BatchPlan {
    const { o } = this;
    const live = o.pods.filter((p) => !isPodTerminating(p));
    for (const p of live) this.actions.push({ kind: 'deletePod', name: p.metadata.name!, reason: 'BatchFinished' });
    const q = o.queue;
    if (q.kind === 'ok') {
      this.setItems(q.snapshot);
      if (!q.snapshot.complete && q.snapshot.closed && canReopen(this.status)) return this.reopen(q.snapshot);
    }
    // Pods still going away are shown as draining, so the counts stay true until they are gone.
    this.status.workers = { ...(this.status.workers ?? {}), desired: 0, current: o.pods.length, ready: 0, draining: o.pods.length, summary: '0/0' };
    const ttl = this.spec.ttlSecondsAfterFinished;
    const finishedAt = Date.parse(this.status.completionTime ?? findCondition(this.status, 'Complete')?.lastTransitionTime ?? findCondition(this.status, 'Failed')?.lastTransitionTime ?? '');
    this.requeue = o.config.finishedRecheckMs;
    if (ttl !== undefined && Number.isFinite(finishedAt)) {
      const left = finishedAt + ttl * 1000 - o.now;
      if (left <= 0) {
        this.actions.push({ kind: 'deleteBatch' });
        this.requeue = undefined;
      } else {
        this.after(left);
      }
    }
    this.status.conditions = sortConditions(this.conditions);
    this.status.state = stateWord(this.status, this.spec.suspend === true);
    return {
      actions: this.actions,
      status: this.status,
      events: this.events,
      memory: this.memory,
      workers: { desired: 0, current: o.pods.length, ready: 0, draining: o.pods.length },
      ...(this.requeue !== undefined ? { requeueAfterMs: this.requeue } : {}),
    };
  }

  /** Items came back after the batch finished (taskbatch replay): it runs again. */
  private reopen(snapshot: BatchSnapshot): BatchPlan {
    const back = snapshot.pending + snapshot.delayed + snapshot.running;
    const message = `${back} items were queued again after the batch finished (taskbatch replay); workers scale up again`;
    for (const type of ['Complete', 'Failed'] as const) {
      if (this.conditions.some((c) => c.type === type)) this.cond({ type, status: 'False', reason: 'Reopened', message });
    }
    delete this.status.completionTime;
    delete this.status.startTime;
    this.status.workers = { ...(this.status.workers ?? {}), failures: 0 };
    this.events.push({ type: 'Normal', reason: 'Reopened', message });
    this.actions.length = 0; // the finished batch's pods are not deleted: they are needed again
    this.requeue = 1;
    this.status.conditions = sortConditions(this.conditions);
    this.status.state = stateWord(this.status, this.spec.suspend === true);
    this.status.observedGeneration = this.generation;
    return { actions: [], status: this.status, events: this.events, memory: this.memory, workers: { desired: 0, current: 0, ready: 0, draining: 0 }, requeueAfterMs: 1 };
  }
}

/** Why a pod is not running yet, in Kubernetes' words (a container's waiting reason, or scheduling). */
export function pendingReason(pod: Pod): string {
  for (const cs of pod.status?.containerStatuses ?? []) {
    const waiting = cs.state?.waiting;
    if (waiting?.reason) return waiting.message ? `${waiting.reason}: ${waiting.message}` : waiting.reason;
  }
  const scheduled = pod.status?.conditions?.find((c) => c.type === 'PodScheduled');
  if (scheduled?.status === 'False') return scheduled.reason ? `${scheduled.reason}${scheduled.message ? `: ${scheduled.message}` : ''}` : 'Unschedulable';
  if (!pod.spec.nodeName) return 'Scheduling';
  return 'ContainerCreating';
}

export function stateWord(status: TaskBatchStatus, suspended: boolean): string {
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
