// A TaskSchedule's state events survive a leader change without repeating: RunAlreadyActive
// (concurrencyPolicy Forbid, a tick waiting for the active run) is emitted once per waiting tick,
// judged from the status the previous leader wrote (status.waitingScheduleTime), not from the
// memory of the process that happens to lead. Real API server, real operator processes.
import { jest } from '@jest/globals';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { repoRoot } from '../../localcluster/index.js';
import { batchPath, type TaskBatch } from '../../api/taskbatch.js';
import { SCHEDULE_LABEL, SCHEDULED_AT_ANNOTATION, schedulePath, type TaskSchedule } from '../../operator/schedule/api.js';
import { eventually } from '../support/batches.js';
import { aTaskBatch, createNamespace, startOperator, startOperatorEnv, type OperatorEnv, type OperatorProcess } from '../support/operator-env.js';

jest.setTimeout(180_000);

let env: OperatorEnv;
let op: OperatorProcess | undefined;
const NS = 'sched-events';

beforeAll(async () => {
  env = await startOperatorEnv({ nodeAgent: false });
  const crd = parse(readFileSync(join(repoRoot(), 'crds/taskbatch.dev_taskschedules.yaml'), 'utf8')) as { metadata: { name: string } };
  const path = '/apis/apiextensions.k8s.io/v1/customresourcedefinitions';
  await env.kube.patch(`${path}/${crd.metadata.name}`, crd, 'apply', { fieldManager: 'taskbatch-tests', force: true });
  await eventually(
    async () => {
      const got = await env.kube.get<{ status?: { conditions?: { type: string; status: string }[] } }>(`${path}/${crd.metadata.name}`);
      return got.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True');
    },
    30_000,
    'TaskSchedule CRD Established',
  );
  await createNamespace(env.kube, NS);
  op = await startOperator(env);
});

afterAll(async () => {
  await op?.kill('SIGTERM');
  await env?.stop();
});

afterEach(() => {
  const state = expect.getState();
  if (op && state.assertionCalls !== state.numPassingAsserts) console.log(`operator log tail:\n${op.logs().split('\n').slice(-30).join('\n')}`);
});

async function runAlreadyActive(name: string): Promise<number> {
  const events = (await env.kube.list<{ reason: string; count?: number; involvedObject: { name: string; kind: string } }>(`/api/v1/namespaces/${NS}/events`)).items;
  return events.filter((e) => e.involvedObject.kind === 'TaskSchedule' && e.involvedObject.name === name && e.reason === 'RunAlreadyActive').reduce((n, e) => n + (e.count ?? 1), 0);
}

/** Changes the schedule's spec and waits until the leading operator wrote status for that generation: one pass done. */
async function nudge(name: string, limit: number): Promise<void> {
  const s = await env.kube.patch<TaskSchedule>(schedulePath(NS, name), { spec: { successfulRunsHistoryLimit: limit } });
  await eventually(
    async () => (await env.kube.get<TaskSchedule>(schedulePath(NS, name))).status?.observedGeneration === s.metadata.generation,
    60_000,
    `a pass over generation ${s.metadata.generation}`,
  );
}

test('Forbid: RunAlreadyActive once for a waiting tick, also after the leader changes', async () => {
  const name = 'hourly';
  // Hourly, so the waiting tick stays the most recent one for the whole test.
  const schedule = await env.kube.create<TaskSchedule>(schedulePath(NS), {
    apiVersion: 'taskbatch.dev/v1alpha1',
    kind: 'TaskSchedule',
    metadata: { name, namespace: NS },
    spec: { schedule: '0 * * * *', concurrencyPolicy: 'Forbid', suspend: true, batchTemplate: { spec: { range: { end: 2 }, handler: { builtin: 'noop' }, suspend: true } } },
  });
  // A run of two hours ago, still active (suspended): the last hourly tick must wait for it.
  const twoHoursAgo = new Date(Date.now() - 2 * 3_600_000).toISOString().replace(/\.\d{3}Z$/, 'Z');
  const run: TaskBatch = aTaskBatch(NS, `${name}-earlier`, { range: { end: 2 }, suspend: true });
  run.metadata = {
    ...run.metadata,
    labels: { [SCHEDULE_LABEL]: name },
    annotations: { [SCHEDULED_AT_ANNOTATION]: twoHoursAgo },
    ownerReferences: [{ apiVersion: 'taskbatch.dev/v1alpha1', kind: 'TaskSchedule', name, uid: schedule.metadata.uid!, controller: true }],
  };
  await env.kube.create(batchPath(NS), run);
  await env.kube.patch(schedulePath(NS, name), { spec: { suspend: false } });

  const waiting = await eventually(async () => (await env.kube.get<TaskSchedule>(schedulePath(NS, name))).status?.waitingScheduleTime, 60_000, 'status.waitingScheduleTime');
  expect(Date.parse(waiting)).toBeGreaterThan(Date.parse(twoHoursAgo));
  await eventually(async () => (await runAlreadyActive(name)) === 1, 30_000, 'one RunAlreadyActive event');
  await nudge(name, 4); // the same leader, more passes
  expect(await runAlreadyActive(name)).toBe(1);

  // A leader change: a new operator process, with no memory of the event.
  await op!.kill('SIGTERM');
  op = await startOperator(env);
  await nudge(name, 5);
  await nudge(name, 6);
  expect(await runAlreadyActive(name)).toBe(1);
  const after = await env.kube.get<TaskSchedule>(schedulePath(NS, name));
  expect(after.status).toMatchObject({ waitingScheduleTime: waiting, activeCount: 1 });
  expect((await env.kube.list<TaskBatch>(batchPath(NS), { labelSelector: `${SCHEDULE_LABEL}=${name}` })).items).toHaveLength(1); // nothing started
});
