/**
 * The chart's PrometheusRule, rendered by the real helm CLI (with the Prometheus Operator API
 * declared), checked by the real promtool: `promtool check rules` for syntax and conventions,
 * and `promtool test rules` for behaviour (each alert fires on the series it is about, with its
 * annotations fully expanded, and stays quiet on a healthy batch).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { getObject, helmTemplate } from '../support/helm-chart.js';
import { promtool, ruleFileOf } from '../support/prometheus.js';

const TEST_TIMEOUT_MS = 60_000;

interface Rule {
  alert: string;
  expr: string;
  for?: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tb-rules-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function renderRules(values: unknown = {}): Promise<{ groups: { name: string; rules: Rule[] }[] }> {
  const r = await helmTemplate({ release: 'tb', namespace: 'taskbatch-system', apiVersions: ['monitoring.coreos.com/v1'], values });
  expect(r.stderr).toBe('');
  return ruleFileOf(getObject(r.objects, 'PrometheusRule', 'tb-taskbatch')) as { groups: { name: string; rules: Rule[] }[] };
}

function write(name: string, content: unknown): string {
  const p = join(dir, name);
  writeFileSync(p, typeof content === 'string' ? content : stringify(content));
  return p;
}

/** What an annotation template expands to, for the templates our rules use. */
function expand(template: string, labels: Record<string, string>, value?: string): string {
  return template.replace(/\{\{\s*(\$labels\.(\w+)|\$value \| humanizePercentage)\s*\}\}/g, (_m, _all, label: string | undefined) => {
    if (label === undefined) {
      if (value === undefined) throw new Error(`template ${template} needs a value`);
      return value;
    }
    const v = labels[label];
    if (v === undefined) throw new Error(`annotation ${JSON.stringify(template)} uses $labels.${label}, which the alert does not carry (${JSON.stringify(labels)})`);
    return v;
  });
}

test(
  'promtool check rules passes on the rendered rules, defaults and customised',
  async () => {
    for (const [name, values] of [
      ['defaults', {}],
      ['custom', { monitoring: { prometheusRule: { alertLabels: { team: 'data', severity_override: 'x' }, failureRatioThreshold: 0.25, stalledMinutes: 30 } } }],
    ] as const) {
      const rules = await renderRules(values);
      const file = write(`rules-${name}.yml`, rules);
      const r = await promtool(['check', 'rules', file]);
      expect({ name, code: r.code, out: r.stdout + r.stderr }).toEqual({ name, code: 0, out: expect.stringMatching(/SUCCESS: \d+ rules found/) });
      // Every alert has a severity, a summary and a description; for-durations are sane.
      for (const rule of rules.groups.flatMap((g) => g.rules)) {
        expect([rule.alert, rule.labels.severity]).toEqual([rule.alert, expect.stringMatching(/^(warning|critical)$/)]);
        expect([rule.alert, Object.keys(rule.annotations).sort()]).toEqual([rule.alert, ['description', 'summary']]);
        if (name === 'custom') expect(rule.labels.team).toBe('data');
      }
    }
  },
  TEST_TIMEOUT_MS,
);

test(
  'promtool test rules: each alert fires on what it is about, and not on a healthy batch',
  async () => {
    const rules = await renderRules();
    const byName = new Map(rules.groups.flatMap((g) => g.rules).map((r) => [r.alert, r]));
    const rulesFile = write('rules.yml', rules);
    const b = { namespace: 'jobs', batch: 'etl' };
    const sel = (extra = ''): string => `{namespace="jobs",batch="etl"${extra}}`;
    /** The alert as promtool reports it: rule labels + the expression's labels; annotations expanded. */
    const alert = (name: string, exprLabels: Record<string, string>, value?: string) => {
      const rule = byName.get(name);
      if (!rule) throw new Error(`no alert ${name} in the rendered rules`);
      const labels = { ...rule.labels, ...exprLabels };
      return { exp_labels: labels, exp_annotations: Object.fromEntries(Object.entries(rule.annotations).map(([k, t]) => [k, expand(t, labels, value)])) };
    };
    const tests = [
      {
        // A failed batch; and a complete one that must not alert.
        interval: '1m',
        input_series: [
          { series: `taskbatch_batch_finished${sel(',outcome="failed"')}`, values: '1x10' },
          { series: 'taskbatch_batch_finished{namespace="jobs",batch="fine",outcome="complete"}', values: '1x10' },
        ],
        alert_rule_test: [{ eval_time: '1m', alertname: 'TaskBatchFailed', exp_alerts: [alert('TaskBatchFailed', b)] }],
      },
      {
        // Half the attempts fail for 30 minutes.
        interval: '1m',
        input_series: [
          { series: `taskbatch_worker_items_total${sel(',outcome="succeeded",mode="thread",instance="w1"')}`, values: '0+10x40' },
          { series: `taskbatch_worker_items_total${sel(',outcome="failed",mode="thread",instance="w1"')}`, values: '0+10x40' },
          { series: 'taskbatch_worker_items_total{namespace="jobs",batch="fine",outcome="succeeded",mode="thread",instance="w2"}', values: '0+10x40' },
          { series: 'taskbatch_worker_items_total{namespace="jobs",batch="fine",outcome="failed",mode="thread",instance="w2"}', values: '0+0x40' },
        ],
        alert_rule_test: [
          { eval_time: '5m', alertname: 'TaskBatchItemsFailing', exp_alerts: [] },
          { eval_time: '30m', alertname: 'TaskBatchItemsFailing', exp_alerts: [alert('TaskBatchItemsFailing', b, '50%')] },
        ],
      },
      {
        // Items pending, workers wanted, nothing finishes: stalled. A suspended batch (no workers
        // wanted) and a progressing one stay quiet.
        interval: '1m',
        input_series: [
          { series: `taskbatch_batch_items${sel(',state="pending"')}`, values: '100x40' },
          { series: `taskbatch_batch_items${sel(',state="running"')}`, values: '4x40' },
          { series: `taskbatch_batch_items${sel(',state="succeeded"')}`, values: '50x40' },
          { series: `taskbatch_batch_items${sel(',state="failed"')}`, values: '0x40' },
          { series: `taskbatch_batch_workers${sel(',kind="desired"')}`, values: '2x40' },
          { series: `taskbatch_batch_workers${sel(',kind="ready"')}`, values: '2x40' },
          { series: 'taskbatch_batch_items{namespace="jobs",batch="paused",state="pending"}', values: '100x40' },
          { series: 'taskbatch_batch_items{namespace="jobs",batch="paused",state="succeeded"}', values: '50x40' },
          { series: 'taskbatch_batch_workers{namespace="jobs",batch="paused",kind="desired"}', values: '0x40' },
          { series: 'taskbatch_batch_items{namespace="jobs",batch="moving",state="pending"}', values: '1000-10x40' },
          { series: 'taskbatch_batch_items{namespace="jobs",batch="moving",state="succeeded"}', values: '0+10x40' },
          { series: 'taskbatch_batch_workers{namespace="jobs",batch="moving",kind="desired"}', values: '2x40' },
          { series: 'taskbatch_batch_workers{namespace="jobs",batch="moving",kind="ready"}', values: '2x40' },
        ],
        alert_rule_test: [
          { eval_time: '10m', alertname: 'TaskBatchQueueNotDraining', exp_alerts: [alert('TaskBatchQueueNotDraining', b)] },
          { eval_time: '30m', alertname: 'TaskBatchQueueNotDraining', exp_alerts: [alert('TaskBatchQueueNotDraining', b)] },
          { eval_time: '30m', alertname: 'TaskBatchWorkersNotReady', exp_alerts: [] },
        ],
      },
      {
        // Fewer ready workers than desired for 20 minutes.
        interval: '1m',
        input_series: [
          { series: `taskbatch_batch_workers${sel(',kind="desired"')}`, values: '3x30' },
          { series: `taskbatch_batch_workers${sel(',kind="ready"')}`, values: '1x30' },
        ],
        alert_rule_test: [
          { eval_time: '10m', alertname: 'TaskBatchWorkersNotReady', exp_alerts: [] },
          { eval_time: '20m', alertname: 'TaskBatchWorkersNotReady', exp_alerts: [alert('TaskBatchWorkersNotReady', b)] },
        ],
      },
      {
        // Executors crash every minute.
        interval: '1m',
        input_series: [{ series: `taskbatch_worker_executor_restarts_total${sel(',reason="crashed",mode="process",instance="w1"')}`, values: '0+1x30' }],
        alert_rule_test: [{ eval_time: '25m', alertname: 'TaskBatchExecutorsCrashLooping', exp_alerts: [alert('TaskBatchExecutorsCrashLooping', b)] }],
      },
      {
        // One worker lost Redis; its lease renewals fail.
        interval: '1m',
        input_series: [
          { series: `taskbatch_worker_redis_up${sel(',mode="async",instance="10.0.0.7:9090"')}`, values: '1 1 0x10' },
          { series: `taskbatch_worker_redis_up${sel(',mode="async",instance="10.0.0.8:9090"')}`, values: '1x12' },
          { series: `taskbatch_worker_lease_renewals_failed_total${sel(',mode="async",instance="10.0.0.7:9090"')}`, values: '0 0 0+3x10' },
        ],
        alert_rule_test: [
          { eval_time: '3m', alertname: 'TaskBatchRedisUnreachable', exp_alerts: [] },
          { eval_time: '6m', alertname: 'TaskBatchRedisUnreachable', exp_alerts: [alert('TaskBatchRedisUnreachable', { ...b, instance: '10.0.0.7:9090' })] },
          { eval_time: '10m', alertname: 'TaskBatchLeaseRenewalsFailing', exp_alerts: [alert('TaskBatchLeaseRenewalsFailing', b)] },
        ],
      },
      {
        // No operator is scraped at all: no leader. Then one leads.
        interval: '1m',
        input_series: [{ series: 'taskbatch_operator_leader{job="tb-taskbatch-metrics",instance="10.0.0.2:8080"}', values: '_x10 1x10' }],
        alert_rule_test: [
          { eval_time: '8m', alertname: 'TaskBatchOperatorNoLeader', exp_alerts: [alert('TaskBatchOperatorNoLeader', {})] },
          { eval_time: '20m', alertname: 'TaskBatchOperatorNoLeader', exp_alerts: [] },
        ],
      },
      {
        // Reconciles keep failing (409 conflicts are routine and ignored).
        interval: '1m',
        input_series: [
          { series: 'taskbatch_operator_reconcile_errors_total{job="tb-taskbatch-metrics",error="RedisConfigError"}', values: '0+60x30' },
          { series: 'taskbatch_operator_reconcile_errors_total{job="tb-taskbatch-metrics",error="KubeApi409"}', values: '0+60x30' },
        ],
        alert_rule_test: [
          { eval_time: '25m', alertname: 'TaskBatchOperatorReconcileErrors', exp_alerts: [alert('TaskBatchOperatorReconcileErrors', { job: 'tb-taskbatch-metrics', error: 'RedisConfigError' })] },
        ],
      },
    ];
    const testFile = write('rules.test.yml', { rule_files: [rulesFile], evaluation_interval: '1m', tests });
    const r = await promtool(['test', 'rules', testFile]);
    expect({ code: r.code, out: r.stdout + r.stderr }).toEqual({ code: 0, out: expect.stringContaining('SUCCESS') });
    // Every alert of the chart has a case above.
    const tested = new Set(tests.flatMap((t) => t.alert_rule_test.map((a) => a.alertname)));
    expect([...byName.keys()].filter((a) => !tested.has(a))).toEqual([]);
  },
  TEST_TIMEOUT_MS,
);
