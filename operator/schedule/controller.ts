import { batchPath, type TaskBatch } from '../../api/taskbatch.js';
import { KubeApiError, isConflict, isNotFound, type KubeClient } from '../../kube/client.js';
import type { EventRecorder } from '../kube/events.js';
import { runReconcileLoop } from '../kube/controller-loop.js';
import { objectKey, Reflector } from '../kube/reflector.js';
import type { Logger } from '../log.js';
import { jsonEqual } from '../reconcile/conditions.js';
import { systemClock, WorkQueue, type Clock } from '../workqueue.js';
import { ALL_SCHEDULES_PATH, SCHEDULE_KIND, schedulePath, type TaskSchedule } from './api.js';
import { buildRun, iso, planSchedule } from './plan.js';
import { parseCron } from './cron.js';

export interface ScheduleControllerOptions {
  kube: KubeClient;
  /** The operator's TaskBatch cache (shared): runs are found there, and their changes wake their schedule. */
  batches: Reflector<TaskBatch>;
  events: EventRecorder;
  log: Logger;
  /** Namespace to watch; '' = all. */
  watchNamespace: string;
  clock?: Clock;
  /** How often to look for the TaskSchedule CRD while it is not installed (default 30 s). */
  crdPollMs?: number;
}

interface Memory {
  /** Latest tick a run was created for by this process (the cache may not show it yet). */
  lastScheduled: number;
  /** Generation whose template passed a dry-run create, and the error of the last one that did not. */
  validatedGeneration?: number;
  templateError?: string;
  templateGeneration?: number;
}

/**
 * The TaskSchedule controller: a reflector of TaskSchedules feeds keys into its own work queue
 * (one reconcile per key at a time); each pass plans with planSchedule() and applies the plan:
 * deletes, the create (a 409 AlreadyExists means the run for that tick exists — never a second
 * one), one status write when it changed, events, and a requeue at the next tick. Runs on the
 * leader only (it is started with the operator's Controller). When the TaskSchedule CRD is not
 * installed it stays idle and looks again now and then.
 */
export class ScheduleController {
  readonly queue: WorkQueue;
  readonly schedules: Reflector<TaskSchedule>;
  private readonly memory = new Map<string, Memory>();
  private readonly clock: Clock;
  private running = false;
  private enabled = false;
  private toldNotInstalled = false;
  private loop: Promise<void> | undefined;
  private probeTimer: NodeJS.Timeout | undefined;

  constructor(private readonly o: ScheduleControllerOptions) {
    this.clock = o.clock ?? systemClock;
    this.queue = new WorkQueue({ clock: this.clock });
    const ns = o.watchNamespace;
    this.schedules = new Reflector<TaskSchedule>(o.kube, { path: ns ? schedulePath(ns) : ALL_SCHEDULES_PATH }, o.log.child({ reflector: 'taskschedules' }));
    this.schedules.onChange((s) => this.queue.add(objectKey(s)));
    o.batches.onChange((tb) => {
      const owner = tb.metadata.ownerReferences?.find((r) => r.kind === SCHEDULE_KIND && r.controller);
      if (owner) this.queue.add(`${tb.metadata.namespace}/${owner.name}`);
    });
  }

  /** True while the TaskSchedule API exists and its cache is synced (or while it is not installed). */
  get synced(): boolean {
    return !this.enabled || this.schedules.hasSynced;
  }

  /**
   * Looks for the TaskSchedule API and, when it is there, resolves once the reconcile loop runs:
   * after the TaskSchedule cache and the shared TaskBatch cache (which the caller starts) synced.
   */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    await this.probe();
  }

  stop(): void {
    this.running = false;
    clearTimeout(this.probeTimer);
    this.queue.shutdown();
    this.schedules.stop();
  }

  /** Waits for the reconcile loop to end after stop(). */
  async stopped(): Promise<void> {
    await this.loop;
  }

  private async probe(): Promise<void> {
    if (!this.running || this.enabled) return;
    let installed = false;
    try {
      await this.o.kube.list(this.o.watchNamespace ? schedulePath(this.o.watchNamespace) : ALL_SCHEDULES_PATH, { limit: 1 });
      installed = true;
    } catch (err) {
      if (!(err instanceof KubeApiError && err.status === 404)) this.o.log.warn('Could not list TaskSchedules; retrying', { error: String((err as Error).message ?? err) });
      else if (!this.toldNotInstalled) {
        // Said once: the probe repeats every 30 s while the CRD is absent, a normal state.
        this.toldNotInstalled = true;
        this.o.log.info('TaskSchedule API not installed; schedules are off until it is', {});
      }
    }
    if (!this.running) return;
    if (!installed) {
      this.probeTimer = setTimeout(() => void this.probe(), this.o.crdPollMs ?? 30_000);
      this.probeTimer.unref();
      return;
    }
    this.enabled = true;
    // Reconcile only from complete caches: a schedule whose runs are not all in the TaskBatch
    // cache yet would look as if its tick had no run. start() resolves false if stopped first.
    const synced = (await this.schedules.start()) && (await this.o.batches.waitForSync());
    if (!synced || !this.running) return;
    this.loop = this.run();
    this.o.log.info('Schedule controller started', {});
  }

  private run(): Promise<void> {
    return runReconcileLoop({
      queue: this.queue,
      reconcile: async (key) => {
        const requeueAfterMs = await this.reconcile(key);
        return requeueAfterMs !== undefined ? { requeueAfterMs } : {};
      },
      isRunning: () => this.running,
      log: this.o.log,
      kind: 'TaskSchedule',
    });
  }

  /** One pass for one TaskSchedule; returns when to look again (ms), if at all. */
  async reconcile(key: string): Promise<number | undefined> {
    const schedule = this.schedules.get(key);
    if (!schedule) {
      this.memory.delete(key);
      return undefined;
    }
    if (schedule.metadata.deletionTimestamp) return undefined; // its runs go with it (ownerReferences)
    const mem = this.memory.get(key) ?? { lastScheduled: 0 };
    this.memory.set(key, mem);
    const ns = schedule.metadata.namespace!;
    const children = this.o.batches.list().filter((b) => b.metadata.namespace === ns && (b.metadata.ownerReferences ?? []).some((r) => r.uid === schedule.metadata.uid && r.controller));
    const generation = schedule.metadata.generation ?? 0;
    if (mem.validatedGeneration !== generation && mem.templateGeneration !== generation) await this.validateTemplate(schedule, mem);
    const now = this.clock.now();
    const plan = planSchedule({
      schedule,
      children,
      now,
      lastScheduledFloor: mem.lastScheduled,
      ...(mem.templateGeneration === generation && mem.templateError ? { templateError: mem.templateError } : {}),
    });

    for (const name of [...plan.deleteActive, ...plan.deleteHistory]) {
      await this.o.kube.delete(batchPath(ns, name), { propagationPolicy: 'Background' });
      this.o.log.info(plan.deleteActive.includes(name) ? 'Deleted an active run (concurrencyPolicy Replace)' : 'Deleted an old run (history limit)', { schedule: key, run: name });
    }
    for (const name of plan.deleteHistory) void this.o.events.emit(withKind(schedule), 'Normal', 'SuccessfulDelete', `Deleted old run ${name}`);
    if (plan.create) {
      try {
        const created = await this.o.kube.create<TaskBatch>(batchPath(ns), plan.create.body);
        const entry = plan.status.active?.find((a) => a.name === plan.create!.name);
        if (entry && created.metadata.uid) entry.uid = created.metadata.uid;
        this.o.log.info('Created a scheduled run', { schedule: key, run: plan.create.name, tick: iso(plan.create.scheduledAt) });
        void this.o.events.emit(withKind(schedule), 'Normal', 'SuccessfulCreate', `Created TaskBatch ${plan.create.name} for ${iso(plan.create.scheduledAt)}`);
      } catch (err) {
        if (isConflict(err)) {
          // AlreadyExists: another replica, or this one before a restart, created it.
          this.o.log.info('The run for this tick exists already', { schedule: key, run: plan.create.name });
        } else if (err instanceof KubeApiError && (err.status === 422 || err.status === 400)) {
          mem.templateGeneration = generation;
          mem.templateError = err.message;
          throw err; // re-plans with the template error (a Ready=False condition)
        } else {
          throw err;
        }
      }
      mem.lastScheduled = Math.max(mem.lastScheduled, plan.create.scheduledAt);
    }
    const old = schedule.status ?? {};
    if (!jsonEqual(old, plan.status)) {
      // A merge patch keeps fields it does not name: clear the ones the plan no longer sets
      // (waitingScheduleTime once the tick started, nextScheduleTime while suspended).
      const cleared = Object.fromEntries(
        Object.keys(old)
          .filter((k) => !(k in plan.status))
          .map((k) => [k, null]),
      );
      try {
        await this.o.kube.patch(`${schedulePath(ns, schedule.metadata.name)}/status`, { status: { ...cleared, ...plan.status } });
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    }
    // After the status write: the plan emits a state's event only when the persisted status
    // does not show that state yet (RunAlreadyActive), so emitting once it is persisted keeps
    // the next pass, here or on a new leader, from repeating it; a failed write emits nothing
    // and the retry plans the event again.
    for (const e of plan.events) void this.o.events.emit(withKind(schedule), e.type, e.reason, e.message);
    return plan.requeueAfterMs;
  }

  /** Dry-run create of a run from the template: the TaskBatch API's own validation, once per generation. */
  private async validateTemplate(schedule: TaskSchedule, mem: Memory): Promise<void> {
    const generation = schedule.metadata.generation ?? 0;
    let withSeconds = false;
    try {
      withSeconds = parseCron(schedule.spec.schedule).withSeconds;
    } catch {
      return; // the plan reports the schedule itself
    }
    const body = buildRun(schedule, Math.floor(this.clock.now() / 60_000) * 60_000, withSeconds);
    try {
      await this.o.kube.create(batchPath(schedule.metadata.namespace!), body, { dryRun: 'All' });
      mem.validatedGeneration = generation;
      mem.templateError = undefined;
      mem.templateGeneration = undefined;
    } catch (err) {
      if (err instanceof KubeApiError && (err.status === 422 || err.status === 400)) {
        mem.templateGeneration = generation;
        mem.templateError = err.message.replace(/^POST \S+: \d+ /, '');
      } else if (isConflict(err)) {
        mem.validatedGeneration = generation; // a run of this very tick exists: the template was valid
      }
      // Other errors (API unavailable): validate on the next pass.
    }
  }
}

function withKind(s: TaskSchedule): TaskSchedule {
  return { ...s, apiVersion: s.apiVersion ?? 'taskbatch.dev/v1alpha1', kind: s.kind ?? SCHEDULE_KIND };
}
