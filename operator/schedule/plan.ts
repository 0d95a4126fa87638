import { API_VERSION as BATCH_API_VERSION, KIND as BATCH_KIND, findCondition, type TaskBatch, type TaskBatchSpec } from '../../api/taskbatch.js';
import { type CronError, mostRecentTick, nextTick, parseCron, validateTimeZone, type CronSchedule } from './cron.js';
import { SCHEDULE_API_VERSION, SCHEDULE_KIND, SCHEDULE_LABEL, SCHEDULED_AT_ANNOTATION, type ScheduleCondition, type TaskSchedule, type TaskScheduleStatus } from './api.js';

/**
 * The schedule controller's decision for one TaskSchedule, as a pure function of what it
 * observed (the schedule, the TaskBatches it owns, the time): which run to create, which runs to
 * delete, the status to write, events, and when to look again. CronJob's semantics:
 *
 * - Only the most recent tick since the last run is considered; older missed ticks are dropped.
 * - startingDeadlineSeconds: a tick older than that is not started (MissedSchedule).
 * - Forbid: while a run is active the tick waits (status.waitingScheduleTime); it starts late,
 *   when the run finishes, if still within the deadline and still the most recent tick (a newer
 *   one replaces it). Replace: the active runs are deleted and the new one created.
 * - Events that report a state (RunAlreadyActive) are derived from the status the previous pass
 *   wrote, not from this process's memory, so a new leader does not repeat them.
 * - A run's name is <schedule>-<tick in minutes since the epoch> (seconds for 6-field schedules),
 *   so creating it twice for one tick is impossible: the API server refuses the second create.
 *   That makes the controller safe across restarts and with two replicas writing at once.
 */

export interface ScheduleEvent {
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
}

export interface PlanInput {
  schedule: TaskSchedule;
  /** TaskBatches the schedule owns (controller ownerReference), from the cache. */
  children: TaskBatch[];
  now: number;
  /** The latest tick this process knows it created a run for (its cache may lag its own writes). */
  lastScheduledFloor?: number;
  /** A reason the batch template is invalid (from a dry-run create), if any. */
  templateError?: string;
}

export interface SchedulePlan {
  create?: { name: string; scheduledAt: number; body: TaskBatch };
  /** Active runs to delete (Replace). */
  deleteActive: string[];
  /** Finished runs beyond the history limits, oldest first. */
  deleteHistory: string[];
  status: TaskScheduleStatus;
  events: ScheduleEvent[];
  /** Look again after this long (the next tick); undefined = only on changes. */
  requeueAfterMs?: number;
  /** The tick the plan is about, if any (for logs). */
  tick?: number;
}

const MAX_REQUEUE_MS = 3_600_000;

export function runName(scheduleName: string, tick: number, withSeconds: boolean): string {
  return `${scheduleName}-${withSeconds ? Math.floor(tick / 1000) : Math.floor(tick / 60_000)}`;
}

export function iso(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function parseTime(s: string | undefined): number | undefined {
  if (!s) return undefined;
  const t = Date.parse(s);
  return Number.isFinite(t) ? t : undefined;
}

/** When a child was scheduled: its annotation, else its creation time. */
function scheduledTimeOf(tb: TaskBatch): number {
  return parseTime(tb.metadata.annotations?.[SCHEDULED_AT_ANNOTATION]) ?? parseTime(tb.metadata.creationTimestamp) ?? 0;
}

type Outcome = 'active' | 'succeeded' | 'failed';

function outcomeOf(tb: TaskBatch): Outcome {
  if (findCondition(tb.status, 'Complete')?.status === 'True') return 'succeeded';
  if (findCondition(tb.status, 'Failed')?.status === 'True') return 'failed';
  return 'active';
}

function finishedAt(tb: TaskBatch): number {
  return (
    parseTime(tb.status?.completionTime) ??
    parseTime(findCondition(tb.status, 'Complete')?.lastTransitionTime) ??
    parseTime(findCondition(tb.status, 'Failed')?.lastTransitionTime) ??
    scheduledTimeOf(tb)
  );
}

function setCondition(conditions: ScheduleCondition[], c: { type: string; status: 'True' | 'False'; reason: string; message: string }, generation: number, now: number): ScheduleCondition[] {
  const existing = conditions.find((x) => x.type === c.type);
  const message = c.message.length > 1024 ? `${c.message.slice(0, 1023)}…` : c.message;
  const next: ScheduleCondition = {
    type: c.type,
    status: c.status,
    reason: c.reason,
    message,
    observedGeneration: generation,
    lastTransitionTime: existing && existing.status === c.status ? existing.lastTransitionTime : iso(now),
  };
  return [...conditions.filter((x) => x.type !== c.type), next];
}

/** The TaskBatch a tick creates: the template, named for the tick, owned by the schedule. */
export function buildRun(schedule: TaskSchedule, tick: number, withSeconds: boolean): TaskBatch {
  const name = runName(schedule.metadata.name!, tick, withSeconds);
  const t = schedule.spec.batchTemplate;
  return {
    apiVersion: BATCH_API_VERSION,
    kind: BATCH_KIND,
    metadata: {
      name,
      namespace: schedule.metadata.namespace!,
      labels: { ...(t.metadata?.labels ?? {}), [SCHEDULE_LABEL]: schedule.metadata.name! },
      annotations: { ...(t.metadata?.annotations ?? {}), [SCHEDULED_AT_ANNOTATION]: iso(tick) },
      ownerReferences: [{ apiVersion: SCHEDULE_API_VERSION, kind: SCHEDULE_KIND, name: schedule.metadata.name!, uid: schedule.metadata.uid!, controller: true }],
    },
    spec: structuredClone(t.spec) as unknown as TaskBatchSpec,
  };
}

export function planSchedule(input: PlanInput): SchedulePlan {
  const { schedule, now } = input;
  const spec = schedule.spec;
  const generation = schedule.metadata.generation ?? 0;
  const old = schedule.status ?? {};
  let conditions = [...(old.conditions ?? [])];
  const events: ScheduleEvent[] = [];
  const plan: SchedulePlan = { deleteActive: [], deleteHistory: [], status: {}, events };

  // Observe the runs.
  const live = input.children.filter((c) => !c.metadata.deletionTimestamp);
  const byOutcome = { active: [] as TaskBatch[], succeeded: [] as TaskBatch[], failed: [] as TaskBatch[] };
  for (const c of live) byOutcome[outcomeOf(c)].push(c);
  byOutcome.active.sort((a, b) => scheduledTimeOf(a) - scheduledTimeOf(b));
  const limits = { succeeded: spec.successfulRunsHistoryLimit ?? 3, failed: spec.failedRunsHistoryLimit ?? 1 };
  for (const kind of ['succeeded', 'failed'] as const) {
    const done = [...byOutcome[kind]].sort((a, b) => finishedAt(a) - finishedAt(b));
    plan.deleteHistory.push(...done.slice(0, Math.max(0, done.length - limits[kind])).map((c) => c.metadata.name!));
  }
  const lastSuccess = Math.max(...byOutcome.succeeded.map(finishedAt), parseTime(old.lastSuccessfulTime) ?? 0);
  let lastScheduled = Math.max(parseTime(old.lastScheduleTime) ?? 0, input.lastScheduledFloor ?? 0, ...input.children.map(scheduledTimeOf));
  let active = byOutcome.active;

  const finish = (): SchedulePlan => {
    plan.status = {
      observedGeneration: generation,
      ...(lastScheduled > 0 ? { lastScheduleTime: iso(lastScheduled) } : {}),
      ...(lastSuccess > 0 ? { lastSuccessfulTime: iso(lastSuccess) } : {}),
      ...(plan.status.nextScheduleTime ? { nextScheduleTime: plan.status.nextScheduleTime } : {}),
      ...(plan.status.waitingScheduleTime ? { waitingScheduleTime: plan.status.waitingScheduleTime } : {}),
      activeCount: active.length,
      active: active.map((c) => ({ name: c.metadata.name!, ...(c.metadata.uid ? { uid: c.metadata.uid } : {}), scheduledTime: iso(scheduledTimeOf(c)) })),
      conditions,
    };
    return plan;
  };
  const invalid = (reason: string, message: string): SchedulePlan => {
    conditions = setCondition(conditions, { type: 'Ready', status: 'False', reason, message }, generation, now);
    if (findReady(old.conditions)?.reason !== reason) events.push({ type: 'Warning', reason, message });
    return finish();
  };

  // Validate.
  let cron: CronSchedule;
  try {
    cron = parseCron(spec.schedule);
  } catch (err) {
    return invalid('InvalidSchedule', `spec.schedule ${JSON.stringify(spec.schedule)}: ${(err as Error).message}`);
  }
  const tz = spec.timeZone || 'UTC';
  try {
    validateTimeZone(tz);
  } catch (err) {
    return invalid('InvalidTimeZone', `spec.timeZone: ${(err as CronError).message}`);
  }
  if (input.templateError) return invalid('InvalidTemplate', `spec.batchTemplate is not a valid TaskBatch: ${input.templateError}`);
  const next = nextTick(cron, now, tz);

  if (spec.suspend) {
    conditions = setCondition(conditions, { type: 'Ready', status: 'True', reason: 'Suspended', message: 'spec.suspend is true: no new runs are created' }, generation, now);
    return finish();
  }

  // The tick to act on: the latest one since the last run (or since the schedule was created).
  const since = lastScheduled || parseTime(schedule.metadata.creationTimestamp) || now;
  const tick = mostRecentTick(cron, since, now, tz);
  if (next !== undefined) {
    plan.status.nextScheduleTime = iso(next);
    plan.requeueAfterMs = Math.min(MAX_REQUEUE_MS, Math.max(50, next - now + 50));
  }
  const readyMessage = next !== undefined ? `Next run at ${iso(next)}${tz !== 'UTC' ? ` (${tz})` : ''}` : 'The schedule has no future ticks';
  conditions = setCondition(conditions, { type: 'Ready', status: 'True', reason: next !== undefined ? 'Scheduled' : 'NoFutureTicks', message: readyMessage }, generation, now);
  if (tick === undefined) return finish();
  plan.tick = tick;

  const name = runName(schedule.metadata.name!, tick, cron.withSeconds);
  if (input.children.some((c) => c.metadata.name === name)) {
    // Created already (this process, another replica, or before a restart).
    lastScheduled = Math.max(lastScheduled, tick);
    return finish();
  }
  const deadline = spec.startingDeadlineSeconds;
  if (deadline !== undefined && now - tick > deadline * 1000) {
    events.push({ type: 'Warning', reason: 'MissedSchedule', message: `Missed the run of ${iso(tick)}: more than startingDeadlineSeconds (${deadline}) late` });
    return finish();
  }
  const policy = spec.concurrencyPolicy ?? 'Allow';
  if (policy === 'Forbid' && active.length > 0) {
    plan.status.waitingScheduleTime = iso(tick);
    // Once per waiting tick: a pass (of this or any replica) that already recorded it told the user.
    if (old.waitingScheduleTime !== iso(tick)) {
      events.push({
        type: 'Normal',
        reason: 'RunAlreadyActive',
        message: `Not starting the run of ${iso(tick)} yet: ${active.map((c) => c.metadata.name).join(', ')} still running and concurrencyPolicy is Forbid; it starts when that finishes${deadline !== undefined ? `, if within startingDeadlineSeconds (${deadline})` : ''}`,
      });
    }
    return finish();
  }
  if (policy === 'Replace' && active.length > 0) {
    plan.deleteActive = active.map((c) => c.metadata.name!);
    events.push({ type: 'Normal', reason: 'ReplacedRuns', message: `Deleting ${plan.deleteActive.join(', ')} to start the run of ${iso(tick)} (concurrencyPolicy Replace)` });
    active = [];
  }
  const body = buildRun(schedule, tick, cron.withSeconds);
  plan.create = { name, scheduledAt: tick, body };
  lastScheduled = tick;
  active = [...active, { ...body, metadata: { ...body.metadata, creationTimestamp: iso(now) } }];
  return finish();
}

function findReady(conditions: ScheduleCondition[] | undefined): ScheduleCondition | undefined {
  return conditions?.find((c) => c.type === 'Ready');
}
