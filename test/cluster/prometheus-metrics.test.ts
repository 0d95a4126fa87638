/**
 * Debian's real `prometheus` scrapes the operator and the worker pods (every second, targets
 * from the pods' IPs through file_sd) while batches run on the local control plane, with the
 * chart's alert rules loaded. PromQL over its HTTP API must agree with the facts on the
 * TaskBatch's status; `promtool check metrics` must pass on both endpoints; a deleted batch's
 * series must go away.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { batchPath, type TaskBatch } from '../../api/taskbatch.js';
import type { Pod } from '../../kube/pod.js';
import { eventually, sleep } from '../support/batches.js';
import { CHART_DIR, getObject, helmTemplate } from '../support/helm-chart.js';
import { aTaskBatch, createNamespace, startOperator, startOperatorEnv, waitForCondition, type OperatorEnv, type OperatorProcess } from '../support/operator-env.js';
import { freePort } from '../../localcluster/ports.js';
import { promtool, ruleFileOf, scrape, startPrometheus, type Prometheus, type Target } from '../support/prometheus.js';

/** The job name the Prometheus Operator gives the chart's ServiceMonitor targets (release tb). */
const OPERATOR_JOB = 'tb-taskbatch-metrics';
const WORKER_JOB = 'taskbatch-workers';
const WORKER_PORT = 9090;
const TEST_TIMEOUT_MS = 120_000;
/** Labels taskbatch series may carry (plus Prometheus' job/instance and our pod): nothing per item. */
const ALLOWED_LABELS = new Set(['__name__', 'job', 'instance', 'pod', 'namespace', 'batch', 'state', 'kind', 'outcome', 'mode', 'reason', 'result', 'error', 'op', 'le']);

let env: OperatorEnv;
let op: OperatorProcess;
let prom: Prometheus;
let ns: string;
let stopSync = false;
let syncLoop: Promise<void> | undefined;
/** The latest /metrics text fetched from a running worker that had finished items. */
let workerMetricsText = '';

beforeAll(async () => {
  env = await startOperatorEnv();
  ns = await createNamespace(env.kube, 'metrics');
  const port = await freePort('127.0.0.1');
  op = await startOperator(env, { TASKBATCH_STATUS_INTERVAL_MS: '500' }, port);
  const rendered = await helmTemplate({ release: 'tb', apiVersions: ['monitoring.coreos.com/v1'] });
  const rules = ruleFileOf(getObject(rendered.objects, 'PrometheusRule', 'tb-taskbatch'));
  prom = await startPrometheus({
    jobs: [
      { name: OPERATOR_JOB, honorLabels: true },
      { name: WORKER_JOB, honorLabels: true },
    ],
    rules: [rules],
  });
  prom.setTargets(OPERATOR_JOB, [{ address: `127.0.0.1:${port}` }]);
  syncLoop = syncWorkerTargets();
}, 180_000);

afterAll(async () => {
  stopSync = true;
  await syncLoop;
  await prom?.stop();
  await op?.kill('SIGTERM');
  await env?.stop();
}, 60_000);

afterEach(() => {
  const state = expect.getState();
  if (state.assertionCalls !== state.numPassingAsserts) {
    console.log(`operator log tail:\n${op.logs().split('\n').slice(-30).join('\n')}\nprometheus log tail:\n${prom.log().split('\n').slice(-20).join('\n')}`);
  }
});

/**
 * Keeps the worker job's targets in step with the worker pods (as a PodMonitor would): every
 * pod seen keeps its target, so Prometheus takes every scrape it can before a worker exits.
 */
async function syncWorkerTargets(): Promise<void> {
  const seen = new Map<string, Target>();
  while (!stopSync) {
    try {
      for (const p of (await env.kube.list<Pod>(`/api/v1/namespaces/${ns}/pods`, { labelSelector: 'taskbatch.dev/batch' })).items) {
        const ip = p.status?.podIP;
        if (ip && !seen.has(p.metadata.name!)) seen.set(p.metadata.name!, { address: `${ip}:${WORKER_PORT}`, labels: { pod: p.metadata.name! } });
        if (ip && p.status?.phase === 'Running') {
          const text = await scrape(`http://${ip}:${WORKER_PORT}/metrics`).catch(() => '');
          if (/taskbatch_worker_items_total\{[^}]*outcome="succeeded"[^}]*\} [1-9]/.test(text)) workerMetricsText = text;
        }
      }
      prom.setTargets(WORKER_JOB, [...seen.values()]);
    } catch {
      // the API server is busy; try again
    }
    await sleep(250);
  }
}

async function apply(tb: TaskBatch): Promise<TaskBatch> {
  return env.kube.create<TaskBatch>(batchPath(ns), tb);
}

const q = (batch: string, extra = ''): string => `{namespace="${ns}",batch="${batch}"${extra}}`;

describe('a batch scraped by Prometheus', () => {
  const name = 'metered';
  const good = 400;
  const bad = 10;
  let done: TaskBatch;

  beforeAll(async () => {
    // 400 items of 100 ms and 10 that fail permanently ({ms: -1} is refused by the sleep
    // handler); 2 workers x 2 concurrent items: ~10 s of work, ten scrapes a worker at least.
    const items = [...Array.from({ length: good }, (_, i) => ({ ms: 100, i })), ...Array.from({ length: bad }, (_, i) => ({ ms: -1, i }))];
    await apply(
      aTaskBatch(ns, name, {
        items,
        handler: { builtin: 'sleep' },
        pool: { mode: 'async', size: 2 },
        workers: { max: 2, itemsPerWorker: 100 },
        failurePolicy: { maxFailedItems: bad },
      }),
    );
    done = await waitForCondition(env.kube, ns, name, 'Complete', 180_000);
  }, 200_000);

  test(
    'the status is what the facts below are checked against',
    () => {
      expect(done.status?.items).toMatchObject({ total: good + bad, succeeded: good, failed: bad, pending: 0, running: 0 });
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'item counts by state agree with the status; the queue depth gauge went up and came back to 0',
    async () => {
      const state = async (s: string): Promise<number | undefined> => prom.scalar(`taskbatch_batch_items${q(name, `,state="${s}"`)}`);
      await eventually(async () => (await state('succeeded')) === good, 30_000, 'Prometheus to see every item succeeded');
      expect(await state('total')).toBe(good + bad);
      expect(await state('failed')).toBe(bad);
      expect(await state('pending')).toBe(0);
      expect(await state('running')).toBe(0);
      expect(await state('delayed')).toBe(0);
      // During the run the backlog was scraped above zero, and running items too.
      expect(await prom.scalar(`max_over_time(taskbatch_batch_items${q(name, ',state="pending"')}[10m])`)).toBeGreaterThan(0);
      expect(await prom.scalar(`max_over_time(taskbatch_batch_items${q(name, ',state="running"')}[10m])`)).toBeGreaterThan(0);
      // Progress as the dashboard computes it.
      expect(await prom.scalar(`sum(taskbatch_batch_items${q(name, ',state=~"succeeded|failed"')}) / sum(taskbatch_batch_items${q(name, ',state="total"')})`)).toBe(1);
      expect(await prom.scalar(`max(taskbatch_batch_finished${q(name, ',outcome="complete"')})`)).toBe(1);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "workers desired and ready were scraped within the batch's bounds",
    async () => {
      expect(await prom.scalar(`max_over_time(taskbatch_batch_workers${q(name, ',kind="desired"')}[10m])`)).toBe(2);
      const ready = await prom.scalar(`max_over_time(taskbatch_batch_workers${q(name, ',kind="ready"')}[10m])`);
      expect(ready).toBeGreaterThanOrEqual(1);
      expect(ready).toBeLessThanOrEqual(2);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'the workers were scraped: item counters and the duration histogram agree with the items',
    async () => {
      const targets = (await prom.targets()).filter((t) => t.job === WORKER_JOB);
      expect(targets.length).toBeGreaterThanOrEqual(1);
      // Each worker instance was up at some point and reported this batch's series.
      expect(await prom.scalar(`count(max_over_time(up{job="${WORKER_JOB}"}[10m]) == 1)`)).toBe(targets.length);
      // The last scraped value of each worker's counter, summed. A worker exits as soon as the batch
      // is complete, so the items it finished after its last scrape are not seen: at most the
      // batch size, and never more (no double counting across pods).
      const succeeded = await prom.scalar(`sum(max_over_time(taskbatch_worker_items_total${q(name, ',outcome="succeeded"')}[10m]))`);
      expect(succeeded).toBeGreaterThan(good / 2);
      expect(succeeded).toBeLessThanOrEqual(good);
      const failed = (await prom.scalar(`sum(max_over_time(taskbatch_worker_items_total${q(name, ',outcome="failed"')}[10m]))`)) ?? 0;
      expect(failed).toBeLessThanOrEqual(bad);
      // Item duration: every item slept 100 ms, so the median is in the (0.1, 0.25] bucket.
      const p50 = await prom.scalar(`histogram_quantile(0.5, sum by (le) (max_over_time(taskbatch_worker_item_duration_seconds_bucket${q(name, ',outcome="succeeded"')}[10m])))`);
      expect(p50).toBeGreaterThan(0.1);
      expect(p50).toBeLessThanOrEqual(0.25);
      // The pool mode rides along as a label; the pool size is what the spec says.
      const pools = await prom.query(`last_over_time(taskbatch_worker_pool_size${q(name)}[10m])`);
      expect(pools.length).toBeGreaterThan(0);
      expect(pools.map((s) => [s.metric.mode, s.value])).toEqual(pools.map(() => ['async', 2]));
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "the operator's reconcile metrics and leadership were scraped",
    async () => {
      expect(await prom.scalar(`sum(taskbatch_operator_reconcile_total{job="${OPERATOR_JOB}",result="success"})`)).toBeGreaterThan(0);
      expect(await prom.scalar(`sum(taskbatch_operator_reconcile_duration_seconds_count{job="${OPERATOR_JOB}"})`)).toBeGreaterThan(0);
      expect(await prom.scalar(`sum(taskbatch_operator_leader{job="${OPERATOR_JOB}"})`)).toBe(1);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'labels stay low-cardinality: no per-item or per-claim labels, a bounded number of series per batch',
    async () => {
      // taskbatch's own series (the operator's Node.js runtime metrics share its prefix).
      const series = await prom.query(`{__name__=~"taskbatch_.+", __name__!~"taskbatch_operator_(nodejs|process)_.+"}`);
      expect(series.length).toBeGreaterThan(20);
      const labels = new Set(series.flatMap((s) => Object.keys(s.metric)));
      expect([...labels].filter((l) => !ALLOWED_LABELS.has(l))).toEqual([]);
      // The operator holds a fixed set of series per batch (8 item states, 4 worker kinds, 1 outcome).
      expect(await prom.scalar(`count({__name__=~"taskbatch_batch_.+", job="${OPERATOR_JOB}", batch="${name}"})`)).toBeLessThanOrEqual(13);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "the Grafana dashboard's queries run, and its progress panel shows the batch finished",
    async () => {
      const dash = JSON.parse(readFileSync(join(CHART_DIR, 'files/dashboards/taskbatch.json'), 'utf8')) as { panels: { title: string; type: string; targets?: { expr: string }[] }[] };
      const sub = (e: string): string => e.replaceAll('$namespace', ns).replaceAll('$batch', name).replaceAll('$__rate_interval', '1m');
      const empty: string[] = [];
      for (const p of dash.panels) {
        for (const t of p.targets ?? []) {
          const r = await prom.query(sub(t.expr)); // throws on a PromQL error
          if (r.length === 0) empty.push(p.title);
        }
      }
      const progress = dash.panels.find((p) => p.title === 'Progress' && p.type !== 'row')!.targets![0]!.expr;
      expect(await prom.query(sub(progress))).toEqual([{ metric: { namespace: ns, batch: name }, value: 1 }]);
      // Panels fed by the operator have data for a finished batch.
      expect(empty).not.toEqual(expect.arrayContaining(['Progress', 'Items by state', 'Workers desired / ready', 'Reconciles', 'Leader']));
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'no alert fires for a healthy batch',
    async () => {
      const firing = (await prom.alerts()).filter((a) => a.state === 'firing');
      expect(firing).toEqual([]);
    },
    TEST_TIMEOUT_MS,
  );
});

describe('promtool check metrics', () => {
  test(
    "passes on the operator's /metrics",
    async () => {
      const text = await scrape(op.metricsUrl);
      expect(text).toContain('taskbatch_batch_items');
      const r = await promtool(['check', 'metrics'], text);
      expect({ code: r.code, problems: (r.stdout + r.stderr).trim() }).toEqual({ code: 0, problems: '' });
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "passes on a worker's /metrics (fetched while it ran items)",
    async () => {
      expect(workerMetricsText).toContain('taskbatch_worker_items_total');
      const r = await promtool(['check', 'metrics'], workerMetricsText);
      expect({ code: r.code, problems: (r.stdout + r.stderr).trim() }).toEqual({ code: 0, problems: '' });
    },
    TEST_TIMEOUT_MS,
  );
});

test('a failed batch fires TaskBatchFailed; deleting batches removes their series and resolves it', async () => {
  const name = 'doomed';
  await apply(aTaskBatch(ns, name, { items: Array.from({ length: 5 }, () => ({ ms: -1 })), handler: { builtin: 'sleep' }, pool: { mode: 'async', size: 1 }, workers: { max: 1 } }));
  await waitForCondition(env.kube, ns, name, 'Failed', 120_000);
  const firing = await eventually(
    async () => {
      const a = (await prom.alerts()).filter((x) => x.state === 'firing' && x.labels.alertname === 'TaskBatchFailed');
      return a.length > 0 ? a : undefined;
    },
    30_000,
    'TaskBatchFailed to fire',
  );
  expect(firing.map((a) => a.labels)).toEqual([expect.objectContaining({ alertname: 'TaskBatchFailed', namespace: ns, batch: name, severity: 'warning' })]);

  for (const b of [name, 'metered']) await env.kube.delete(batchPath(ns, b));
  for (const b of [name, 'metered']) await eventually(async () => (await env.kube.find(batchPath(ns, b))) === undefined, 60_000, `TaskBatch ${b} gone`);
  // The operator stops exporting them...
  await eventually(async () => !/batch="(doomed|metered)"/.test(await scrape(op.metricsUrl)), 30_000, "the deleted batches' series to leave /metrics");
  // ... so Prometheus marks them stale, and the alert resolves.
  await eventually(async () => (await prom.query(`{__name__=~"taskbatch_batch_.+", namespace="${ns}"}`)).length === 0, 30_000, 'the series to go stale in Prometheus');
  await eventually(async () => (await prom.alerts()).every((a) => a.labels.batch !== name), 30_000, 'TaskBatchFailed to resolve');
}, 300_000);
