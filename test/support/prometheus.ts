/**
 * A real Prometheus server (Debian's `prometheus` package) for tests: a free loopback port, a
 * temp storage dir, file_sd target files the test rewrites as pods come and go, optional rule
 * files, and a small client for its HTTP API. Also `promtool`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { runCommand, type ToolResult } from '../../localcluster/index.js';
import { freePort } from '../../localcluster/ports.js';

export interface ScrapeJob {
  name: string;
  /** Keep the targets' own labels (namespace, batch) rather than renaming clashes to exported_*. */
  honorLabels?: boolean;
  metricsPath?: string;
}

export interface Target {
  /** host:port */
  address: string;
  labels?: Record<string, string>;
}

export interface PrometheusOptions {
  jobs: ScrapeJob[];
  scrapeIntervalSeconds?: number;
  /** Rule files' contents (Prometheus rule-file YAML: {groups: [...]}). */
  rules?: unknown[];
  binary?: string;
}

export interface Sample {
  metric: Record<string, string>;
  value: number;
}

export interface Prometheus {
  url: string;
  dir: string;
  /** Replaces a job's targets (file_sd; Prometheus picks the change up within a second). */
  setTargets(job: string, targets: Target[]): void;
  /** An instant query; throws on a PromQL error (with Prometheus' message). */
  query(expr: string, time?: Date): Promise<Sample[]>;
  /** The single value of a query returning one sample (undefined when it returns none). */
  scalar(expr: string): Promise<number | undefined>;
  /** Active targets with their health, as /api/v1/targets reports them. */
  targets(): Promise<{ job: string; instance: string; health: string; lastError: string; labels: Record<string, string> }[]>;
  /** Alerts as /api/v1/alerts reports them. */
  alerts(): Promise<{ labels: Record<string, string>; state: string }[]>;
  log(): string;
  stop(): Promise<void>;
}

export function prometheusBinary(): string {
  return process.env.TASKBATCH_PROMETHEUS ?? 'prometheus';
}

export function promtoolBinary(): string {
  return process.env.TASKBATCH_PROMTOOL ?? 'promtool';
}

export function promtool(args: string[], input?: string, cwd?: string): Promise<ToolResult> {
  return runCommand(promtoolBinary(), args, { ...(input !== undefined ? { input } : {}), ...(cwd ? { cwd } : {}), env: process.env });
}

/** Starts Prometheus scraping `jobs` every scrapeIntervalSeconds (default 1) and waits until it is ready. */
export async function startPrometheus(o: PrometheusOptions): Promise<Prometheus> {
  const dir = mkdtempSync(join(tmpdir(), 'tb-prometheus-'));
  const interval = `${o.scrapeIntervalSeconds ?? 1}s`;
  const sdFile = (job: string): string => join(dir, `targets-${job}.json`);
  const setTargets = (job: string, targets: Target[]): void => {
    const tmp = `${sdFile(job)}.tmp`;
    writeFileSync(tmp, JSON.stringify(targets.map((t) => ({ targets: [t.address], labels: t.labels ?? {} }))));
    renameSync(tmp, sdFile(job)); // atomic: Prometheus never reads half a file
  };
  const ruleFiles = (o.rules ?? []).map((r, i) => {
    const p = join(dir, `rules-${i}.yml`);
    writeFileSync(p, stringify(r));
    return p;
  });
  for (const job of o.jobs) setTargets(job.name, []);
  const config = {
    global: { scrape_interval: interval, scrape_timeout: interval, evaluation_interval: interval },
    rule_files: ruleFiles,
    scrape_configs: o.jobs.map((j) => ({
      job_name: j.name,
      honor_labels: j.honorLabels ?? false,
      metrics_path: j.metricsPath ?? '/metrics',
      file_sd_configs: [{ files: [sdFile(j.name)], refresh_interval: '1s' }],
    })),
  };
  const configFile = join(dir, 'prometheus.yml');
  writeFileSync(configFile, stringify(config));
  const check = await promtool(['check', 'config', configFile]);
  if (check.code !== 0) throw new Error(`promtool check config failed:\n${check.stdout}${check.stderr}`);

  const port = await freePort('127.0.0.1');
  const logFile = join(dir, 'prometheus.log');
  let out = '';
  const proc: ChildProcess = spawn(
    o.binary ?? prometheusBinary(),
    [`--config.file=${configFile}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--storage.tsdb.retention.time=1h', '--log.level=warn'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const collect = (b: Buffer): void => {
    out += b.toString();
    if (out.length > 1_000_000) out = out.slice(-500_000);
  };
  proc.stdout?.on('data', collect);
  proc.stderr?.on('data', collect);
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`prometheus exited with ${proc.exitCode}:\n${out}`);
    try {
      if ((await fetch(`${url}/-/ready`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`prometheus was not ready in 30 s:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }

  const api = async <T>(path: string, params: Record<string, string> = {}): Promise<T> => {
    const res = await fetch(`${url}${path}?${new URLSearchParams(params).toString()}`);
    const body = (await res.json()) as { status: string; data: T; error?: string; errorType?: string };
    if (body.status !== 'success') throw new Error(`Prometheus ${path} ${JSON.stringify(params)}: ${body.errorType}: ${body.error}`);
    return body.data;
  };
  const query = async (expr: string, time?: Date): Promise<Sample[]> => {
    const data = await api<{ resultType: string; result: unknown }>('/api/v1/query', { query: expr, ...(time ? { time: String(time.getTime() / 1000) } : {}) });
    if (data.resultType === 'scalar') return [{ metric: {}, value: Number((data.result as [number, string])[1]) }];
    if (data.resultType !== 'vector') throw new Error(`query ${expr} returned a ${data.resultType}, not a vector`);
    return (data.result as { metric: Record<string, string>; value: [number, string] }[]).map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
  };
  return {
    url,
    dir,
    setTargets,
    query,
    scalar: async (expr) => {
      const r = await query(expr);
      if (r.length > 1) throw new Error(`query ${expr} returned ${r.length} samples, expected one: ${JSON.stringify(r)}`);
      return r[0]?.value;
    },
    targets: async () => {
      const data = await api<{ activeTargets: { labels: Record<string, string>; scrapePool: string; health: string; lastError: string }[] }>('/api/v1/targets', { state: 'active' });
      return data.activeTargets.map((t) => ({ job: t.scrapePool, instance: t.labels.instance ?? '', health: t.health, lastError: t.lastError, labels: t.labels }));
    },
    alerts: async () => (await api<{ alerts: { labels: Record<string, string>; state: string }[] }>('/api/v1/alerts')).alerts,
    log: () => out,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        await new Promise<void>((resolve) => {
          const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
          proc.once('exit', () => {
            clearTimeout(t);
            resolve();
          });
          proc.kill('SIGTERM');
        });
      }
      try {
        writeFileSync(logFile, out);
        if (process.env.TASKBATCH_KEEP_PROMETHEUS !== '1') rmSync(dir, { recursive: true, force: true });
      } catch {
        // best effort
      }
    },
  };
}

/** The rule groups of a rendered PrometheusRule, as a Prometheus rule file. */
export function ruleFileOf(prometheusRule: object): { groups: unknown[] } {
  const spec = (prometheusRule as { spec?: { groups?: unknown[] } }).spec;
  if (!spec?.groups) throw new Error('the PrometheusRule has no spec.groups');
  return { groups: spec.groups };
}

/** Fetches a /metrics endpoint's text. */
export async function scrape(url: string): Promise<string> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`GET ${url}: ${res.status}`);
  return res.text();
}
