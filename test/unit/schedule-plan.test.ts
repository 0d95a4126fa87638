import type { TaskBatch } from '../../api/taskbatch.js';
import { SCHEDULE_LABEL, SCHEDULED_AT_ANNOTATION, type TaskSchedule, type TaskScheduleSpec } from '../../operator/schedule/api.js';
import { planSchedule, runName, type PlanInput } from '../../operator/schedule/plan.js';

const T = (s: string): number => Date.parse(s);

function aSchedule(spec: Partial<TaskScheduleSpec> = {}, status: TaskSchedule['status'] = {}, created = '2025-06-01T09:00:00Z'): TaskSchedule {
  return {
    apiVersion: 'taskbatch.dev/v1alpha1',
    kind: 'TaskSchedule',
    metadata: { name: 'nightly', namespace: 'ns', uid: 'sched-uid', generation: 2, creationTimestamp: created },
    spec: { schedule: '*/10 * * * *', batchTemplate: { metadata: { labels: { team: 'a' } }, spec: { range: { end: 10 }, handler: { builtin: 'noop' } } }, ...spec },
    status,
  };
}

function aRun(tick: string, outcome: 'active' | 'Complete' | 'Failed' = 'active', finished?: string, extra: Partial<TaskBatch['metadata']> = {}): TaskBatch {
  const t = T(tick);
  return {
    metadata: {
      name: runName('nightly', t, false),
      namespace: 'ns',
      uid: `uid-${t}`,
      annotations: { [SCHEDULED_AT_ANNOTATION]: tick },
      labels: { [SCHEDULE_LABEL]: 'nightly' },
      ownerReferences: [{ apiVersion: 'taskbatch.dev/v1alpha1', kind: 'TaskSchedule', name: 'nightly', uid: 'sched-uid', controller: true }],
      ...extra,
    },
    spec: { handler: { builtin: 'noop' } },
    status: outcome === 'active' ? {} : { completionTime: finished ?? tick, conditions: [{ type: outcome, status: 'True', reason: 'X', lastTransitionTime: finished ?? tick }] },
  };
}

function plan(p: Partial<Omit<PlanInput, 'now'>> & { now: string }): ReturnType<typeof planSchedule> {
  return planSchedule({ schedule: aSchedule(), children: [], ...p, now: T(p.now) } as PlanInput);
}

describe('planSchedule', () => {
  test('the first tick after creation creates a run named for the tick, from the template, owned by the schedule', () => {
    const p = plan({ now: '2025-06-01T09:10:00.200Z' });
    expect(p.tick).toBe(T('2025-06-01T09:10:00Z'));
    expect(p.create?.name).toBe(`nightly-${T('2025-06-01T09:10:00Z') / 60_000}`);
    expect(p.create?.body).toEqual({
      apiVersion: 'taskbatch.dev/v1alpha1',
      kind: 'TaskBatch',
      metadata: {
        name: p.create!.name,
        namespace: 'ns',
        labels: { team: 'a', 'taskbatch.dev/schedule': 'nightly' },
        annotations: { 'taskbatch.dev/scheduled-at': '2025-06-01T09:10:00Z' },
        ownerReferences: [{ apiVersion: 'taskbatch.dev/v1alpha1', kind: 'TaskSchedule', name: 'nightly', uid: 'sched-uid', controller: true }],
      },
      spec: { range: { end: 10 }, handler: { builtin: 'noop' } },
    });
    expect(p.status).toMatchObject({
      observedGeneration: 2,
      lastScheduleTime: '2025-06-01T09:10:00Z',
      nextScheduleTime: '2025-06-01T09:20:00Z',
      activeCount: 1,
      active: [{ name: p.create!.name, scheduledTime: '2025-06-01T09:10:00Z' }],
      conditions: [{ type: 'Ready', status: 'True', reason: 'Scheduled', message: 'Next run at 2025-06-01T09:20:00Z' }],
    });
    expect(p.requeueAfterMs).toBe(T('2025-06-01T09:20:00Z') - T('2025-06-01T09:10:00.200Z') + 50);
  });

  test('before the first tick: nothing to do, wake up at the tick', () => {
    const p = plan({ now: '2025-06-01T09:05:00Z' });
    expect(p.create).toBeUndefined();
    expect(p.requeueAfterMs).toBe(5 * 60_000 + 50);
    expect(p.status.nextScheduleTime).toBe('2025-06-01T09:10:00Z');
  });

  test('a tick whose run exists (another replica, or before a restart) is not created again', () => {
    const run = aRun('2025-06-01T09:10:00Z');
    const p = plan({ now: '2025-06-01T09:10:01Z', children: [run] });
    expect(p.create).toBeUndefined();
    expect(p.status.lastScheduleTime).toBe('2025-06-01T09:10:00Z'); // learnt from the run, though status lagged
    // ... even when the cache does not show it yet, the process remembers.
    expect(plan({ now: '2025-06-01T09:10:01Z', lastScheduledFloor: T('2025-06-01T09:10:00Z') }).create).toBeUndefined();
  });

  test('after an outage only the most recent missed tick runs', () => {
    const p = planSchedule({ schedule: aSchedule({}, { lastScheduleTime: '2025-06-01T09:10:00Z' }), children: [], now: T('2025-06-01T11:47:00Z') });
    expect(p.create?.scheduledAt).toBe(T('2025-06-01T11:40:00Z'));
  });

  test('startingDeadlineSeconds: a tick missed by more than that is not started', () => {
    const s = aSchedule({ startingDeadlineSeconds: 60 }, { lastScheduleTime: '2025-06-01T09:10:00Z' });
    let p = planSchedule({ schedule: s, children: [], now: T('2025-06-01T09:21:30Z') });
    expect(p.create).toBeUndefined();
    expect(p.events).toEqual([{ type: 'Warning', reason: 'MissedSchedule', message: 'Missed the run of 2025-06-01T09:20:00Z: more than startingDeadlineSeconds (60) late' }]);
    expect(p.status.lastScheduleTime).toBe('2025-06-01T09:10:00Z');
    p = planSchedule({ schedule: s, children: [], now: T('2025-06-01T09:20:59Z') });
    expect(p.create?.scheduledAt).toBe(T('2025-06-01T09:20:00Z'));
  });

  test.each([
    ['Allow', 1, [], 2],
    ['Forbid', 0, [], 1],
    ['Replace', 1, ['active'], 1],
  ] as const)('concurrencyPolicy %s with a run still active: creates %d, deletes %j', (policy, creates, deletes, active) => {
    const running = aRun('2025-06-01T09:10:00Z');
    const p = planSchedule({ schedule: aSchedule({ concurrencyPolicy: policy }, { lastScheduleTime: '2025-06-01T09:10:00Z' }), children: [running], now: T('2025-06-01T09:20:00.100Z') });
    expect(p.create ? 1 : 0).toBe(creates);
    expect(p.deleteActive).toEqual(deletes.length ? [running.metadata.name] : []);
    expect(p.status.activeCount).toBe(active);
    if (policy === 'Forbid') {
      expect(p.events[0]).toMatchObject({ reason: 'RunAlreadyActive' });
      expect(p.status.lastScheduleTime).toBe('2025-06-01T09:10:00Z'); // the tick waits
    }
  });

  test('Forbid: a tick that waited starts when the run finishes (within the deadline)', () => {
    const s = aSchedule({ concurrencyPolicy: 'Forbid' }, { lastScheduleTime: '2025-06-01T09:10:00Z' });
    const p = planSchedule({ schedule: s, children: [aRun('2025-06-01T09:10:00Z', 'Complete', '2025-06-01T09:23:00Z')], now: T('2025-06-01T09:23:00Z') });
    expect(p.create?.scheduledAt).toBe(T('2025-06-01T09:20:00Z'));
    const late = planSchedule({
      schedule: { ...s, spec: { ...s.spec, startingDeadlineSeconds: 120 } },
      children: [aRun('2025-06-01T09:10:00Z', 'Complete', '2025-06-01T09:23:00Z')],
      now: T('2025-06-01T09:23:00Z'),
    });
    expect(late.create).toBeUndefined();
  });

  test('Forbid: RunAlreadyActive once per waiting tick, judged from the persisted status, so a new leader (no memory) does not repeat it', () => {
    const running = aRun('2025-06-01T09:10:00Z');
    const s = aSchedule({ concurrencyPolicy: 'Forbid' }, { lastScheduleTime: '2025-06-01T09:10:00Z' });
    const first = planSchedule({ schedule: s, children: [running], now: T('2025-06-01T09:20:00.100Z') });
    expect(first.events.map((e) => e.reason)).toEqual(['RunAlreadyActive']);
    expect(first.events[0]!.message).toMatch(/Not starting the run of 2025-06-01T09:20:00Z yet: nightly-\d+ still running and concurrencyPolicy is Forbid; it starts when that finishes/);
    expect(first.status.waitingScheduleTime).toBe('2025-06-01T09:20:00Z');
    // Any later pass, in this process or another that never saw the first, reads that status.
    const persisted = { ...s, status: first.status };
    const again = planSchedule({ schedule: persisted, children: [running], now: T('2025-06-01T09:25:00Z') });
    expect(again.events).toEqual([]);
    expect(again.status.waitingScheduleTime).toBe('2025-06-01T09:20:00Z');
    // A newer tick that has to wait is news again.
    const newer = planSchedule({ schedule: persisted, children: [running], now: T('2025-06-01T09:30:00.100Z') });
    expect(newer.events.map((e) => e.reason)).toEqual(['RunAlreadyActive']);
    expect(newer.status.waitingScheduleTime).toBe('2025-06-01T09:30:00Z');
    // Once the run finished, the waiting tick starts late and nothing waits any more.
    const started = planSchedule({ schedule: { ...s, status: newer.status }, children: [aRun('2025-06-01T09:10:00Z', 'Complete', '2025-06-01T09:33:00Z')], now: T('2025-06-01T09:33:00Z') });
    expect(started.create?.scheduledAt).toBe(T('2025-06-01T09:30:00Z'));
    expect(started.events).toEqual([]);
    expect(started.status.waitingScheduleTime).toBeUndefined();
  });

  test('terminating runs (being deleted) are not active', () => {
    const going = aRun('2025-06-01T09:10:00Z', 'active', undefined, { deletionTimestamp: '2025-06-01T09:19:00Z' });
    const p = planSchedule({ schedule: aSchedule({ concurrencyPolicy: 'Forbid' }, { lastScheduleTime: '2025-06-01T09:10:00Z' }), children: [going], now: T('2025-06-01T09:20:00Z') });
    expect(p.create?.scheduledAt).toBe(T('2025-06-01T09:20:00Z'));
  });

  test('history limits delete the oldest finished runs beyond them; lastSuccessfulTime', () => {
    const runs = [
      aRun('2025-06-01T09:10:00Z', 'Complete', '2025-06-01T09:11:00Z'),
      aRun('2025-06-01T09:20:00Z', 'Complete', '2025-06-01T09:21:00Z'),
      aRun('2025-06-01T09:30:00Z', 'Complete', '2025-06-01T09:31:00Z'),
      aRun('2025-06-01T09:40:00Z', 'Failed', '2025-06-01T09:41:00Z'),
      aRun('2025-06-01T09:50:00Z', 'Failed', '2025-06-01T09:51:00Z'),
      aRun('2025-06-01T10:00:00Z', 'active'),
    ];
    const p = planSchedule({
      schedule: aSchedule({ successfulRunsHistoryLimit: 1, failedRunsHistoryLimit: 1 }, { lastScheduleTime: '2025-06-01T10:00:00Z' }),
      children: runs,
      now: T('2025-06-01T10:05:00Z'),
    });
    expect(p.deleteHistory).toEqual([runs[0]!.metadata.name, runs[1]!.metadata.name, runs[3]!.metadata.name]);
    expect(p.status.lastSuccessfulTime).toBe('2025-06-01T09:31:00Z');
    expect(p.status.active).toEqual([{ name: runs[5]!.metadata.name, uid: runs[5]!.metadata.uid, scheduledTime: '2025-06-01T10:00:00Z' }]);
    expect(planSchedule({ schedule: aSchedule({ successfulRunsHistoryLimit: 0, failedRunsHistoryLimit: 0 }), children: runs, now: T('2025-06-01T10:05:00Z') }).deleteHistory).toHaveLength(5);
  });

  test('suspend: no runs, history still trimmed, Ready says so', () => {
    const p = planSchedule({ schedule: aSchedule({ suspend: true, successfulRunsHistoryLimit: 0 }), children: [aRun('2025-06-01T09:10:00Z', 'Complete')], now: T('2025-06-01T11:00:00Z') });
    expect(p.create).toBeUndefined();
    expect(p.deleteHistory).toHaveLength(1);
    expect(p.requeueAfterMs).toBeUndefined();
    expect(p.status.conditions?.[0]).toMatchObject({ type: 'Ready', status: 'True', reason: 'Suspended' });
  });

  test.each([
    [{ schedule: '61 * * * *' }, 'InvalidSchedule', /spec\.schedule "61 \* \* \* \*": minute field: 61 is out of range 0-59/],
    [{ timeZone: 'Moon/Base' }, 'InvalidTimeZone', /spec\.timeZone: time zone "Moon\/Base" is not a known IANA time zone/],
  ])('invalid %j: Ready=False %s, an event once, no runs', (spec, reason, message) => {
    const p = planSchedule({ schedule: aSchedule(spec), children: [], now: T('2025-06-01T11:00:00Z') });
    expect(p.create).toBeUndefined();
    expect(p.requeueAfterMs).toBeUndefined();
    expect(p.status.conditions?.[0]).toMatchObject({ type: 'Ready', status: 'False', reason, message: expect.stringMatching(message) });
    expect(p.events).toEqual([{ type: 'Warning', reason, message: expect.stringMatching(message) }]);
    const again = planSchedule({ schedule: aSchedule(spec, p.status), children: [], now: T('2025-06-01T11:01:00Z') });
    expect(again.events).toEqual([]);
    expect(again.status.conditions?.[0]?.lastTransitionTime).toBe(p.status.conditions?.[0]?.lastTransitionTime);
  });

  test("an invalid template (the dry run's message) blocks runs", () => {
    const p = planSchedule({ schedule: aSchedule(), children: [], now: T('2025-06-01T11:00:00Z'), templateError: 'spec.handler: Required value' });
    expect(p.create).toBeUndefined();
    expect(p.status.conditions?.[0]).toMatchObject({ status: 'False', reason: 'InvalidTemplate', message: 'spec.batchTemplate is not a valid TaskBatch: spec.handler: Required value' });
  });

  test('six-field schedules name runs by seconds; time zones apply', () => {
    const p = planSchedule({ schedule: aSchedule({ schedule: '*/5 * * * * *' }), children: [], now: T('2025-06-01T09:00:07.5Z') });
    expect(p.create?.name).toBe(`nightly-${T('2025-06-01T09:00:05Z') / 1000}`);
    const berlin = planSchedule({ schedule: aSchedule({ schedule: '30 2 * * *', timeZone: 'Europe/Berlin' }, {}, '2025-06-01T00:00:00Z'), children: [], now: T('2025-06-02T00:30:00Z') });
    expect(berlin.create?.scheduledAt).toBe(T('2025-06-02T00:30:00Z'));
    expect(berlin.status.nextScheduleTime).toBe('2025-06-03T00:30:00Z');
    expect(berlin.status.conditions?.[0]?.message).toBe('Next run at 2025-06-03T00:30:00Z (Europe/Berlin)');
  });
});
