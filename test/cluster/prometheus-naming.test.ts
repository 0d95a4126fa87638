/**
 * Every metric the operator and the worker register follows Prometheus' naming conventions,
 * carries only low-cardinality labels, and is documented in docs/metrics.md with its type and
 * labels (and the docs list nothing that does not exist).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Registry } from 'prom-client';
import { repoRoot } from '../../localcluster/index.js';
import { OperatorMetrics } from '../../operator/metrics.js';
import { WorkerMetrics } from '../../worker/metrics.js';

interface MetricInfo {
  name: string;
  type: string;
  help: string;
  labels: string[];
  source: 'operator' | 'worker';
}

/** Labels every worker series carries (set once as default labels), and the per-batch pair. */
const COMMON_LABELS = new Set(['namespace', 'batch', 'mode']);
const ALLOWED_LABELS = new Set(['namespace', 'batch', 'mode', 'state', 'kind', 'outcome', 'reason', 'result', 'error', 'op']);

async function ownMetrics(registry: Registry, source: MetricInfo['source']): Promise<MetricInfo[]> {
  const json = await registry.getMetricsAsJSON();
  return registry
    .getMetricsAsArray()
    .filter((m) => {
      const name = (m as unknown as { name: string }).name;
      return name.startsWith('taskbatch_') && !/^taskbatch_operator_(process|nodejs)_/.test(name);
    })
    .map((m) => {
      const name = (m as unknown as { name: string }).name;
      const j = json.find((x) => x.name === name)!;
      return { name, type: String(j.type), help: j.help, labels: [...((m as unknown as { labelNames?: string[] }).labelNames ?? [])], source };
    });
}

let metrics: MetricInfo[];
beforeAll(async () => {
  const op = new OperatorMetrics();
  const worker = new WorkerMetrics({ namespace: 'ns', batch: 'b', mode: 'thread' }, { defaultMetrics: false });
  metrics = [...(await ownMetrics(op.registry, 'operator')), ...(await ownMetrics(worker.registry, 'worker'))];
});

test('names follow the conventions: counters _total, durations as _seconds histograms, gauges without _total', () => {
  expect(metrics.length).toBeGreaterThan(20);
  const wrong: string[] = [];
  for (const m of metrics) {
    if (!/^taskbatch_(batch|operator|worker)_[a-z0-9_]+$/.test(m.name)) wrong.push(`${m.name}: not taskbatch_{batch,operator,worker}_snake_case`);
    if (m.type === 'counter' && !m.name.endsWith('_total')) wrong.push(`${m.name}: a counter without _total`);
    if (m.type !== 'counter' && m.name.endsWith('_total')) wrong.push(`${m.name}: a ${m.type} ending in _total`);
    if (m.type === 'histogram' && !/_(seconds|bytes)$/.test(m.name)) wrong.push(`${m.name}: a histogram without a base unit suffix`);
    if (/_(ms|milliseconds|minutes|hours)(_|$)/.test(m.name)) wrong.push(`${m.name}: not in base units`);
    if (!m.help || m.help.length < 10) wrong.push(`${m.name}: no help text`);
  }
  expect(wrong).toEqual([]);
});

test('labels are low-cardinality: no item, claim or worker ids', () => {
  const wrong = metrics.flatMap((m) => m.labels.filter((l) => !ALLOWED_LABELS.has(l)).map((l) => `${m.name}{${l}}`));
  expect(wrong).toEqual([]);
});

test('docs/metrics.md documents every metric with its type and labels, and nothing else', () => {
  const doc = readFileSync(join(repoRoot(), 'docs/metrics.md'), 'utf8');
  const rows = new Map<string, { type: string; labels: string }>();
  for (const line of doc.split('\n')) {
    const m = /^\| `(taskbatch_[a-z0-9_]+)` \| (counter|gauge|histogram|summary) \|([^|]*)\|/.exec(line);
    if (m) rows.set(m[1]!, { type: m[2]!, labels: m[3]! });
  }
  const problems: string[] = [];
  for (const m of metrics) {
    const row = rows.get(m.name);
    if (!row) {
      problems.push(`${m.name} (${m.source}) is not in docs/metrics.md`);
      continue;
    }
    if (row.type !== m.type) problems.push(`${m.name} is a ${m.type}, documented as a ${row.type}`);
    for (const l of m.labels.filter((x) => !COMMON_LABELS.has(x))) if (!row.labels.includes(`\`${l}\``)) problems.push(`${m.name}: label ${l} not documented`);
  }
  for (const name of rows.keys()) if (!metrics.some((m) => m.name === name)) problems.push(`docs/metrics.md documents ${name}, which no component registers`);
  expect(problems).toEqual([]);
});
