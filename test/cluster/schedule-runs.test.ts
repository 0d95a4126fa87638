// TaskSchedules against a real API server, with the real operator (a process) and worker pods:
// a schedule firing every 2 seconds (a 6-field cron) with each concurrency policy, history limits,
// exactly one run per tick with two schedule controllers acting at once, and an operator killed
// and restarted across ticks.
import { jest } from '@jest/globals';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { repoRoot } from '../../localcluster/index.js';
import { batchPath, type TaskBatch } from '../../api/taskbatch.js';
import { EventRecorder } from '../../operator/kube/events.js';
import { Reflector } from '../../operator/kube/reflector.js';
import { createLogger } from '../../operator/log.js';
import { SCHEDULED_AT_ANNOTATION, schedulePath, type TaskSchedule } from '../../operator/schedule/api.js';
import { ScheduleController } from '../../operator/schedule/controller.js';
import { eventually, sleep } from '../support/batches.js';
import { taskbatch } from '../support/cli-run.js';
import { createNamespace, startOperator, startOperatorEnv, type OperatorEnv, type OperatorProcess } from '../support/operator-env.js';

jest.setTimeout(180_000);

let env: OperatorEnv;
let op: OperatorProcess | undefined;
const NS = 'sched';

async function installScheduleCrd(): Promise<void> {
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
}

beforeAll(async () => {
  env = await startOperatorEnv();
  await installScheduleCrd();
  await createNamespace(env.kube, NS);
  op = await startOperator(env, { TASKBATCH_STATUS_INTERVAL_MS: '500' });
});

afterAll(async () => {
  await op?.kill('SIGTERM');
  await env?.stop();
});

afterEach(() => {
  const state = expect.getState();
  if (op && state.assertionCalls !== state.numPassingAsserts)
    console.log(
      `operator log tail:\n${op
        .logs()
        .split('\n')
        .filter((l) => l.includes('taskschedules') || l.includes('"warn"') || l.includes('"error"'))
        .slice(-30)
        .join('\n')}`,
    );
});

/** A schedule every `everySeconds` seconds whose runs stay active (suspended) unless `runs` says otherwise. */
function aSchedule(name: string, spec: Partial<TaskSchedule['spec']> & { everySeconds?: number; suspendedRuns?: boolean } = {}): TaskSchedule {
  const { everySeconds = 2, suspendedRuns = true, ...rest } = spec;
  return {
    apiVersion: 'taskbatch.dev/v1alpha1',
    kind: 'TaskSchedule',
    metadata: { name, namespace: NS },
    spec: {
      schedule: `*/${everySeconds} * * * * *`,
      batchTemplate: { metadata: { labels: { suite: 'schedules' } }, spec: { range: { end: 2 }, handler: { builtin: 'noop' }, suspend: suspendedRuns, workers: { max: 1 } } },
      ...rest,
    },
  };
}

async function runsOf(schedule: string): Promise<TaskBatch[]> {
  const all = (await env.kube.list<TaskBatch>(batchPath(NS), { labelSelector: `taskbatch.dev/schedule=${schedule}` })).items;
  return all.sort((a, b) => a.metadata.name!.localeCompare(b.metadata.name!));
}

function tickOf(tb: TaskBatch): number {
  return Date.parse(tb.metadata.annotations![SCHEDULED_AT_ANNOTATION]!);
}

function live(runs: TaskBatch[]): TaskBatch[] {
  return runs.filter((r) => !r.metadata.deletionTimestamp);
}

async function getSchedule(name: string): Promise<TaskSchedule> {
  return env.kube.get<TaskSchedule>(schedulePath(NS, name));
}

async function events(name: string): Promise<{ reason: string; message: string }[]> {
  return (await env.kube.list<{ reason: string; message: string; involvedObject: { name: string; kind: string } }>(`/api/v1/namespaces/${NS}/events`)).items.filter(
    (e) => e.involvedObject.name === name && e.involvedObject.kind === 'TaskSchedule',
  );
}

async function suspendSchedule(name: string): Promise<void> {
  await env.kube.patch(schedulePath(NS, name), { spec: { suspend: true } });
}

test('Allow: a run per tick, named for the tick, runs overlap; status and printer columns follow', async () => {
  const name = 'allow';
  await env.kube.create(schedulePath(NS), aSchedule(name));
  await eventually(async () => (await runsOf(name)).length >= 3, 30_000, 'three runs');
  await suspendSchedule(name);
  await sleep(500);
  const runs = await runsOf(name);
  const ticks = runs.map(tickOf);
  for (const r of runs) {
    expect(r.metadata.name).toBe(`${name}-${tickOf(r) / 1000}`);
    expect(tickOf(r) % 2000).toBe(0);
    expect(r.metadata.labels).toMatchObject({ suite: 'schedules', 'taskbatch.dev/schedule': name });
    expect(r.metadata.ownerReferences).toEqual([expect.objectContaining({ kind: 'TaskSchedule', name, controller: true })]);
  }
  expect(new Set(ticks).size).toBe(ticks.length);
  // Consecutive ticks, none skipped.
  for (let i = 1; i < ticks.length; i++) expect(ticks[i]! - ticks[i - 1]!).toBe(2000);
  const s = await getSchedule(name);
  expect(s.status).toMatchObject({
    lastScheduleTime: new Date(Math.max(...ticks)).toISOString().replace('.000Z', 'Z'),
    conditions: [expect.objectContaining({ type: 'Ready', status: 'True', reason: 'Suspended' })],
  });
  await eventually(async () => (await getSchedule(name)).status?.activeCount === runs.length, 10_000, 'activeCount');
  const get = await env.cp.kubectl(['get', 'taskschedules', name, '-n', NS]);
  expect(get.stdout).toMatch(/^NAME\s+SCHEDULE\s+TIMEZONE\s+SUSPEND\s+ACTIVE\s+LAST SCHEDULE\s+AGE\n/);
  expect(get.stdout).toMatch(new RegExp(`${name}\\s+\\*/2 \\* \\* \\* \\* \\*\\s+true\\s+${runs.length}\\s`));
  expect((await events(name)).some((e) => e.reason === 'SuccessfulCreate')).toBe(true);
  // The runs are TaskBatches like any other: the CLI lists them by name.
  const c = await taskbatch(['status', runs[0]!.metadata.name!, '-n', NS, '-o', 'json', '--redis-url', env.redis.url, '--kubeconfig', env.cp.kubeconfigPath]);
  expect(JSON.parse(c.stdout)).toMatchObject({ taskBatch: { suspended: true } });
});

test('Forbid: one run at a time; the waiting tick starts when it finishes; finished runs beyond the history limit go', async () => {
  const name = 'forbid';
  await env.kube.create(schedulePath(NS), aSchedule(name, { concurrencyPolicy: 'Forbid', successfulRunsHistoryLimit: 0 }));
  await eventually(async () => (await runsOf(name)).length === 1, 30_000, 'the first run');
  await sleep(5000); // two more ticks
  let runs = await runsOf(name);
  expect(runs).toHaveLength(1);
  expect((await events(name)).some((e) => e.reason === 'RunAlreadyActive')).toBe(true);
  const first = runs[0]!;
  // Let the first run finish: it completes (a worker pod runs its items), is deleted by the
  // history limit (0), and the tick that waited starts at once.
  await env.kube.patch(batchPath(NS, first.metadata.name!), { spec: { suspend: false } });
  await eventually(async () => (await getSchedule(name)).status?.lastSuccessfulTime !== undefined, 90_000, 'lastSuccessfulTime');
  await eventually(
    async () => {
      runs = await runsOf(name);
      return live(runs).length === 1 && live(runs)[0]!.metadata.name !== first.metadata.name;
    },
    30_000,
    'the next run, alone',
  );
  await suspendSchedule(name);
  await eventually(async () => (await env.kube.find(batchPath(NS, first.metadata.name!))) === undefined, 60_000, 'the finished run deleted (history limit 0)');
  const second = live(runs)[0]!;
  expect(tickOf(second)).toBeGreaterThan(tickOf(first));
});

test('Replace: a new run per tick replaces the active one', async () => {
  const name = 'replace';
  await env.kube.create(schedulePath(NS), aSchedule(name, { concurrencyPolicy: 'Replace' }));
  const names = new Set<string>();
  let maxLive = 0;
  const until = Date.now() + 9000;
  while (Date.now() < until) {
    const runs = await runsOf(name);
    for (const r of runs) names.add(r.metadata.name!);
    maxLive = Math.max(maxLive, live(runs).length);
    await sleep(200);
  }
  await suspendSchedule(name);
  expect(names.size).toBeGreaterThanOrEqual(3);
  expect(maxLive).toBe(1);
  expect((await events(name)).some((e) => e.reason === 'ReplacedRuns')).toBe(true);
  // Replaced runs are deleted for good (the operator's finalizer cleans their Redis keys).
  await eventually(async () => (await runsOf(name)).length === 1, 60_000, 'only the last run left');
});

test('exactly one run per tick with two schedule controllers acting at once (no leader election between them)', async () => {
  const name = 'twice';
  // A second controller in this process, next to the operator's: both create runs for each tick.
  const log = createLogger({ test: 'second-controller' }, 'warn');
  const batches = new Reflector<TaskBatch>(env.kube, { path: '/apis/taskbatch.dev/v1alpha1/taskbatches' }, log);
  const second = new ScheduleController({ kube: env.kube, batches, events: new EventRecorder(env.kube, 'second', log), log, watchNamespace: NS });
  await batches.start();
  await second.start();
  try {
    await env.kube.create(schedulePath(NS), aSchedule(name, { everySeconds: 1 }));
    await eventually(async () => (await runsOf(name)).length >= 6, 30_000, 'six runs');
  } finally {
    second.stop();
    batches.stop();
    await second.stopped();
  }
  await suspendSchedule(name);
  await sleep(1500);
  const ticks = (await runsOf(name)).map(tickOf).sort((a, b) => a - b);
  expect(new Set(ticks).size).toBe(ticks.length); // one TaskBatch per tick
  for (let i = 1; i < ticks.length; i++) expect(ticks[i]! - ticks[i - 1]!).toBe(1000); // and no tick lost
});

test('an operator killed and restarted across ticks: no tick runs twice; of the missed ticks only the latest runs (CronJob semantics)', async () => {
  const name = 'restart';
  await env.kube.create(schedulePath(NS), aSchedule(name));
  await eventually(async () => (await runsOf(name)).length >= 2, 30_000, 'two runs');
  await op!.kill('SIGKILL');
  const killedAt = Date.now();
  await sleep(5000); // two or three ticks pass with no operator
  op = await startOperator(env, { TASKBATCH_STATUS_INTERVAL_MS: '500' });
  const restartedAt = Date.now();
  await eventually(async () => (await runsOf(name)).some((r) => tickOf(r) > restartedAt + 2000), 60_000, 'a run after the restart');
  await suspendSchedule(name);
  await sleep(1000);
  const ticks = (await runsOf(name)).map(tickOf).sort((a, b) => a - b);
  expect(new Set(ticks).size).toBe(ticks.length);
  const during = ticks.filter((t) => t > killedAt + 2000 && t <= restartedAt);
  expect(during.length).toBeLessThanOrEqual(1); // the missed ticks collapse into (at most) one late run
  const after = ticks.filter((t) => t > restartedAt + 2000);
  for (let i = 1; i < after.length; i++) expect(after[i]! - after[i - 1]!).toBe(2000);
});

test('an invalid schedule, time zone or template is reported on the Ready condition', async () => {
  await env.kube.create(schedulePath(NS), { ...aSchedule('bad-tz'), spec: { ...aSchedule('bad-tz').spec, timeZone: 'Atlantis/Capital' } });
  await env.kube.create(schedulePath(NS), { ...aSchedule('bad-template'), spec: { ...aSchedule('bad-template').spec, batchTemplate: { spec: { range: { end: 1 } } } } });
  await eventually(async () => (await getSchedule('bad-tz')).status?.conditions?.find((c) => c.type === 'Ready')?.reason === 'InvalidTimeZone', 30_000, 'InvalidTimeZone');
  const bad = await eventually(
    async () => {
      const s = await getSchedule('bad-template');
      const c = s.status?.conditions?.find((x) => x.type === 'Ready');
      return c?.reason === 'InvalidTemplate' ? c : undefined;
    },
    30_000,
    'InvalidTemplate',
  );
  expect(bad).toMatchObject({ status: 'False', message: expect.stringMatching(/spec\.batchTemplate is not a valid TaskBatch: .*handler/) });
  expect(await runsOf('bad-template')).toEqual([]);
  // The API server itself refuses a schedule without the right number of fields (CEL).
  const err = await env.kube.create(schedulePath(NS), { ...aSchedule('bad-cron'), spec: { ...aSchedule('bad-cron').spec, schedule: '* * *' } }).catch((e: unknown) => e);
  expect(String((err as Error).message)).toMatch(/spec\.schedule must have 5 fields/);
  // ... and a name too long for its runs' names (<name>-<10 digits> must fit in 63 characters).
  const long = await env.kube.create(schedulePath(NS), aSchedule('x'.repeat(53))).catch((e: unknown) => e);
  expect(String((long as Error).message)).toMatch(/metadata\.name: Too long: may not be (longer than|more than) 52/);
});
