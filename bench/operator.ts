// The operator under load: N TaskBatches of 10 no-op items each, N = 10, 100, 1,000, on the
// local control plane (kube-apiserver + etcd, no controller manager), one redis-server, the real
// operator process (node dist/operator/main.js, leader election on, default settings, log level
// info). Worker pods are played by bench/operator-kubelet.ts (binding, pod status, and the
// batch's items drained through the real queue API with presence records); see bench/operator.md.
//
//   node dist/bench/operator.js [--n 10,100,1000] [--items 10] [--timeout-min 20] [--svg bench/operator.svg]
//
// Per N, on a fresh control plane, measured from the operator being ready and idle to the last
// batch observed Complete:
//   operator CPU      utime+stime of the operator process (/proc/<pid>/stat), after − before
//   peak RSS          VmHWM of the operator process (/proc/<pid>/status): its high-water mark
//   reconcile p50/p99 from the operator's taskbatch_operator_reconcile_duration_seconds buckets
//                     (after − before), interpolated within a bucket as histogram_quantile does
//   API req/s         apiserver_request_total (API server /metrics), after − before, ÷ wall time;
//                     the operator's own share from the API server's audit log (its user only)
//   time to Complete  first TaskBatch created → last one seen with Complete=True
import { HttpMethod, RequestContext, type KubeConfig } from '@kubernetes/client-node';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { fetch, type Dispatcher } from 'undici';
import { startControlPlane, type ControlPlane } from '../localcluster/index.js';
import { startRedisServer, type RedisServer } from '../localcluster/redis-server.js';
import { batchPath, type TaskBatch } from '../api/taskbatch.js';
import { KubeClient } from '../kube/client.js';
import { Reflector } from '../operator/kube/reflector.js';
import { createLogger } from '../operator/log.js';
import { aTaskBatch, createNamespace, installCrd, startOperator, type OperatorEnv, type OperatorProcess } from '../test/support/operator-env.js';
import { startBenchKubelet, type BenchKubelet } from './operator-kubelet.js';
import { renderSvg } from './operator-plot.js';
import { intOption, log, machineBusyUs, machineLine, printTable, sleep, statCpuUs } from './queue-lib.js';

const argv = process.argv.slice(2);
const NS_LIST = listOption('n', 'BENCH_OPERATOR_N', [10, 100, 1000]);
const ITEMS = intOption(argv, 'items', 'BENCH_OPERATOR_ITEMS', 10);
const TIMEOUT_MS = intOption(argv, 'timeout-min', 'BENCH_OPERATOR_TIMEOUT_MIN', 20) * 60_000;
const SVG = stringOption('svg', 'BENCH_OPERATOR_SVG', 'bench/operator.svg');
const NAMESPACE = 'bench';
const OPERATOR_USER = 'taskbatch-operator';
const CREATE_CONCURRENCY = 10;
const REPLOT = stringOption('replot', 'BENCH_OPERATOR_REPLOT', '');
/** The commit measured: BENCH_COMMIT (e.g. when run from a `git archive` export), else git's HEAD. */
const COMMIT = process.env.BENCH_COMMIT ?? gitHead();

interface Histogram {
  buckets: [number, number][];
  sum: number;
  count: number;
}

interface Result {
  n: number;
  completed: number;
  failed: number;
  timedOut: boolean;
  wallS: number;
  operatorCpuS: number;
  /** VmHWM: the process's RSS high-water mark since it started. */
  peakRssMb: number;
  /** VmRSS when the operator was ready and idle, before the first batch. */
  readyRssMb: number;
  /** Largest VmRSS sampled every 250 ms during the window. */
  windowPeakRssMb: number;
  /** V8 heap in use and memory outside it (buffers, TLS contexts) when the last batch completed, from the operator's /metrics. */
  heapUsedMb: number;
  externalMb: number;
  reconciles: number;
  reconcileErrors: number;
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
  apiRequests: number;
  apiReqPerS: number;
  operatorRequests: number;
  operatorReqPerS: number;
  operatorRequestsByKind: Record<string, number>;
  kubeletRequests: number;
  kubeletRequestsByKind: Record<string, number>;
  apiServerCpuS: number;
  etcdCpuS: number;
  benchCpuS: number;
  machineBusyS: number;
  batchP50S: number;
  batchP99S: number;
  workerOutcomes: Record<string, number>;
}

async function main(): Promise<void> {
  if (REPLOT) {
    const saved = JSON.parse(readFileSync(REPLOT, 'utf8')) as { measuredAt: string; commit: string; results: Result[] };
    writeFileSync(SVG, plot(saved.results, saved.measuredAt, saved.commit));
    log(`plot: ${SVG} (from ${REPLOT})`);
    return;
  }
  const startedAt = new Date().toISOString();
  const stamp = startedAt.replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  console.log(`machine at start: ${machineLine()}`);
  console.log(`commit ${COMMIT}`);
  console.log(`N = ${NS_LIST.join(', ')}; ${ITEMS} items per batch; timeout ${TIMEOUT_MS / 60_000} min per N`);
  const results: Result[] = [];
  for (const n of NS_LIST) {
    log(`N=${n}: starting a control plane`);
    const r = await runOnce(n);
    results.push(r);
    log(`N=${n}: ${r.completed}/${n} Complete in ${r.wallS.toFixed(1)} s, operator CPU ${r.operatorCpuS.toFixed(2)} s, peak RSS ${r.peakRssMb.toFixed(0)} MB`);
    if (r.timedOut) {
      log(`N=${n} did not finish within the timeout; larger N are skipped`);
      break;
    }
  }
  console.log(`\nmachine at end: ${machineLine()}\n`);
  printTable(
    ['N', 'Complete', 'wall s', 'op CPU s', 'op CPU ms/batch', 'peak RSS MB', 'reconciles', 'p50 ms', 'p99 ms', 'API req/s', 'op req/s', 'op req/batch', 'batch p50 s', 'batch p99 s'],
    results.map((r) => [
      String(r.n),
      `${r.completed}/${r.n}${r.timedOut ? ' (timeout)' : ''}`,
      r.wallS.toFixed(1),
      r.operatorCpuS.toFixed(2),
      ((r.operatorCpuS * 1000) / r.n).toFixed(1),
      r.peakRssMb.toFixed(0),
      String(r.reconciles),
      r.p50Ms.toFixed(1),
      r.p99Ms.toFixed(1),
      r.apiReqPerS.toFixed(0),
      r.operatorReqPerS.toFixed(0),
      (r.operatorRequests / r.n).toFixed(1),
      r.batchP50S.toFixed(1),
      r.batchP99S.toFixed(1),
    ]),
  );
  console.log('');
  printTable(
    [
      'N',
      'RSS ready MB',
      'RSS peak in window MB',
      'heap used MB',
      'external MB',
      'API server CPU s',
      'etcd CPU s',
      'bench CPU s',
      'machine busy s',
      'kubelet req',
      'reconcile errors',
      'workers complete/drained/deleted/failed',
    ],
    results.map((r) => [
      String(r.n),
      (r.readyRssMb ?? NaN).toFixed(0),
      (r.windowPeakRssMb ?? NaN).toFixed(0),
      (r.heapUsedMb ?? NaN).toFixed(0),
      (r.externalMb ?? NaN).toFixed(0),
      r.apiServerCpuS.toFixed(1),
      r.etcdCpuS.toFixed(1),
      r.benchCpuS.toFixed(1),
      r.machineBusyS.toFixed(1),
      String(r.kubeletRequests),
      String(r.reconcileErrors),
      ['complete', 'drained', 'deleted', 'failed'].map((k) => r.workerOutcomes[k] ?? 0).join('/'),
    ]),
  );
  for (const r of results) {
    const top = Object.entries(r.operatorRequestsByKind).sort((a, b) => b[1] - a[1]);
    console.log(`\nN=${r.n} operator requests by verb and resource: ${top.map(([k, v]) => `${k} ${v}`).join(', ')}`);
    console.log(
      `N=${r.n} emulated scheduler+kubelet requests: ${Object.entries(r.kubeletRequestsByKind ?? {})
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')}`,
    );
  }
  mkdirSync('.tmp/bench', { recursive: true });
  const json = `.tmp/bench/operator-${stamp}.json`;
  writeFileSync(json, `${JSON.stringify({ machine: machineLine(), measuredAt: startedAt, commit: COMMIT, items: ITEMS, results }, null, 2)}\n`);
  log(`results: ${json}`);
  if (SVG && results.length > 0) {
    writeFileSync(SVG, plot(results, startedAt, COMMIT));
    log(`plot: ${SVG}`);
  }
}

/** The SVG of a run's results (also from a saved JSON: --replot .tmp/bench/operator-<time>.json). */
function plot(results: Result[], measuredAt: string, commit: string): string {
  const ns = results.map((r) => r.n);
  return renderSvg(
    'taskbatch operator: N TaskBatches of 10 no-op items',
    `local kube-apiserver + etcd, 2 vCPU; emulated worker pods; commit ${commit}; measured ${measuredAt.slice(0, 16).replace('T', ' ')} UTC`,
    ns,
    [
      { title: 'Operator CPU (user+sys)', unit: 's', series: [{ label: 'CPU s', values: results.map((r) => r.operatorCpuS), color: '#1f77b4' }] },
      {
        title: 'Operator RSS',
        unit: 'MB',
        linearReference: false,
        series: [
          { label: 'peak (VmHWM)', values: results.map((r) => r.peakRssMb), color: '#9467bd' },
          { label: 'idle, before the batches', values: results.map((r) => r.readyRssMb ?? NaN), color: '#bcbd22' },
        ],
      },
      {
        title: 'Reconcile duration',
        unit: 'ms',
        series: [
          { label: 'p99', values: results.map((r) => r.p99Ms), color: '#d62728' },
          { label: 'p50', values: results.map((r) => r.p50Ms), color: '#2ca02c' },
        ],
      },
      {
        title: 'API requests per second',
        unit: 'req/s',
        series: [
          { label: 'all clients', values: results.map((r) => r.apiReqPerS), color: '#ff7f0e' },
          { label: 'operator only', values: results.map((r) => r.operatorReqPerS), color: '#8c564b' },
        ],
      },
      { title: 'Time until all Complete', unit: 's', series: [{ label: 'wall s', values: results.map((r) => r.wallS), color: '#17becf' }] },
      { title: 'Operator CPU per batch', unit: 'ms', linearReference: false, series: [{ label: 'ms/batch', values: results.map((r) => (r.operatorCpuS * 1000) / r.n), color: '#7f7f7f' }] },
    ],
  );
}

async function runOnce(n: number): Promise<Result> {
  const dir = mkdtempSync(join(tmpdir(), 'tb-bench-operator-'));
  const auditLog = join(dir, 'audit.log');
  // Metadata of the operator's requests only, one line per finished request.
  writeFileSync(
    join(dir, 'audit-policy.yaml'),
    `apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived, ResponseStarted]\nrules:\n- level: Metadata\n  users: [${OPERATOR_USER}]\n- level: None\n`,
  );
  let cp: ControlPlane | undefined;
  let redis: RedisServer | undefined;
  let workerRedis: Redis | undefined;
  let kubelet: BenchKubelet | undefined;
  let op: OperatorProcess | undefined;
  let batches: Reflector<TaskBatch> | undefined;
  try {
    cp = await startControlPlane({
      controllerManager: false,
      extraApiServerArgs: [`--audit-policy-file=${join(dir, 'audit-policy.yaml')}`, `--audit-log-path=${auditLog}`, '--audit-log-format=json', '--audit-log-maxsize=0'],
    });
    const kube = new KubeClient(cp.kubeConfig);
    await installCrd(kube);
    await createNamespace(kube, NAMESPACE);
    redis = await startRedisServer();
    workerRedis = new Redis({ host: redis.host, port: redis.port, maxRetriesPerRequest: null });
    kubelet = await startBenchKubelet({ kube, redis: workerRedis, namespace: NAMESPACE, nodeName: 'bench-node' });
    // The operator gets an identity of its own, so the audit log tells its requests apart.
    const operatorKubeconfig = await cp.createUserKubeconfig(OPERATOR_USER, ['system:masters']);
    const env: OperatorEnv = { cp, redis, kube, stop: async () => undefined };
    op = await startOperator(env, {
      KUBECONFIG: operatorKubeconfig.path,
      TASKBATCH_LOG_LEVEL: 'info',
      // e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" to see where the operator's CPU goes.
      ...(process.env.BENCH_OPERATOR_NODE_OPTIONS ? { NODE_OPTIONS: process.env.BENCH_OPERATOR_NODE_OPTIONS } : {}),
    });
    const pid = op.proc.pid!;
    const readyz = op.metricsUrl.replace(/\/metrics$/, '/readyz');
    await until(
      async () => (await fetch(readyz).catch(() => undefined))?.ok === true && /^taskbatch_operator_leader 1$/m.test(await text(op!.metricsUrl)),
      60_000,
      'the operator to lead and be ready',
    );
    await sleep(2000); // start-up done: the window measures the batches only

    const created = new Map<string, number>();
    const finished = new Map<string, number>();
    let failed = 0;
    batches = new Reflector<TaskBatch>(kube, { path: batchPath(NAMESPACE) }, createLogger({ component: 'bench' }, 'warn'));
    batches.onChange((tb) => {
      const name = tb.metadata.name!;
      if (finished.has(name)) return;
      const conds = tb.status?.conditions ?? [];
      if (conds.some((c) => c.type === 'Complete' && c.status === 'True')) finished.set(name, Date.now());
      else if (conds.some((c) => c.type === 'Failed' && c.status === 'True')) {
        finished.set(name, Date.now());
        failed++;
      }
    });
    await batches.start();

    const pids = cp.processIds();
    const before = {
      t: Date.now(),
      iso: new Date().toISOString(),
      cpu: statCpuUs(pid),
      api: sumCounter(await rawGet(cp.kubeConfig, cp.server, '/metrics'), 'apiserver_request_total'),
      hist: histogram(await text(op.metricsUrl), 'taskbatch_operator_reconcile_duration_seconds'),
      reconciles: counterByLabel(await text(op.metricsUrl), 'taskbatch_operator_reconcile_total', 'result'),
      apiServer: statCpuUs(pids['kube-apiserver']!),
      etcd: statCpuUs(pids.etcd!),
      bench: process.cpuUsage(),
      machine: machineBusyUs(),
      kubelet: total(kubelet.requests),
    };
    const readyRssMb = rssMb(pid, 'VmRSS');
    let windowPeakRssMb = readyRssMb;
    const rssSampler = setInterval(() => {
      windowPeakRssMb = Math.max(windowPeakRssMb, rssMb(pid, 'VmRSS'));
    }, 250);
    const names = Array.from({ length: n }, (_, i) => `b-${String(i).padStart(5, '0')}`);
    let next = 0;
    await Promise.all(
      Array.from({ length: CREATE_CONCURRENCY }, async () => {
        while (next < names.length) {
          const name = names[next++]!;
          created.set(name, Date.now());
          await kube.create(batchPath(NAMESPACE), aTaskBatch(NAMESPACE, name, { range: { end: ITEMS }, workers: { max: 1 } }));
        }
      }),
    );
    let timedOut = false;
    try {
      await until(() => finished.size >= n, TIMEOUT_MS, `${n} batches to finish`, 200);
    } catch {
      timedOut = true;
    }
    const t1 = Date.now();
    const iso1 = new Date().toISOString();
    const cpu1 = statCpuUs(pid);
    const metrics1 = await text(op.metricsUrl);
    const api1 = sumCounter(await rawGet(cp.kubeConfig, cp.server, '/metrics'), 'apiserver_request_total');
    const apiServer1 = statCpuUs(pids['kube-apiserver']!);
    const etcd1 = statCpuUs(pids.etcd!);
    const bench1 = process.cpuUsage(before.bench);
    const machine1 = machineBusyUs();
    const kubelet1 = total(kubelet.requests);
    clearInterval(rssSampler);
    windowPeakRssMb = Math.max(windowPeakRssMb, rssMb(pid, 'VmRSS'));
    const peakRssMb = rssMb(pid, 'VmHWM');

    const hist = diffHistogram(histogram(metrics1, 'taskbatch_operator_reconcile_duration_seconds'), before.hist);
    const rec1 = counterByLabel(metrics1, 'taskbatch_operator_reconcile_total', 'result');
    const wallS = (t1 - before.t) / 1000;
    // The audit log is written as requests finish; give the last ones a moment to land.
    await sleep(1000);
    const byKind: Record<string, number> = {};
    let operatorRequests = 0;
    for (const line of readFileSync(auditLog, 'utf8').split('\n')) {
      if (!line) continue;
      const e = JSON.parse(line) as { stage: string; stageTimestamp: string; verb: string; user: { username: string }; objectRef?: { resource?: string; subresource?: string } };
      if (e.user.username !== OPERATOR_USER || e.stage !== 'ResponseComplete' || e.stageTimestamp < before.iso || e.stageTimestamp > iso1) continue;
      operatorRequests++;
      const kind = `${e.verb} ${e.objectRef?.resource ?? '?'}${e.objectRef?.subresource ? `/${e.objectRef.subresource}` : ''}`;
      byKind[kind] = (byKind[kind] ?? 0) + 1;
    }
    const batchTimes = [...finished].map(([name, at]) => (at - (created.get(name) ?? at)) / 1000);
    return {
      n,
      completed: finished.size - failed,
      failed,
      timedOut,
      wallS,
      operatorCpuS: (cpu1 - before.cpu) / 1e6,
      peakRssMb,
      readyRssMb,
      windowPeakRssMb,
      heapUsedMb: gauge(metrics1, 'taskbatch_operator_nodejs_heap_size_used_bytes') / 1e6,
      externalMb: gauge(metrics1, 'taskbatch_operator_nodejs_external_memory_bytes') / 1e6,
      reconciles: (rec1.success ?? 0) + (rec1.error ?? 0) - (before.reconciles.success ?? 0) - (before.reconciles.error ?? 0),
      reconcileErrors: (rec1.error ?? 0) - (before.reconciles.error ?? 0),
      p50Ms: quantile(hist, 0.5) * 1000,
      p99Ms: quantile(hist, 0.99) * 1000,
      meanMs: hist.count ? (hist.sum / hist.count) * 1000 : NaN,
      apiRequests: api1 - before.api,
      apiReqPerS: (api1 - before.api) / wallS,
      operatorRequests,
      operatorReqPerS: operatorRequests / wallS,
      operatorRequestsByKind: byKind,
      kubeletRequests: kubelet1 - before.kubelet,
      kubeletRequestsByKind: Object.fromEntries(kubelet.requests),
      apiServerCpuS: (apiServer1 - before.apiServer) / 1e6,
      etcdCpuS: (etcd1 - before.etcd) / 1e6,
      benchCpuS: (bench1.user + bench1.system) / 1e6,
      machineBusyS: (machine1 - before.machine) / 1e6,
      batchP50S: exactQuantile(batchTimes, 0.5),
      batchP99S: exactQuantile(batchTimes, 0.99),
      workerOutcomes: { ...kubelet.outcomes },
    };
  } finally {
    batches?.stop();
    await op?.kill();
    await kubelet?.stop();
    workerRedis?.disconnect();
    await redis?.stop();
    await cp?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A /proc/<pid>/status memory field (VmRSS, VmHWM) in MB (10^6 bytes). */
function rssMb(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const kb = Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
  return (kb * 1024) / 1e6;
}

/** GET with the kubeconfig's credentials, returning the body as text (for /metrics). */
async function rawGet(kc: KubeConfig, server: string, path: string): Promise<string> {
  const ctx = new RequestContext(`${server}${path}`, HttpMethod.GET);
  await kc.applySecurityAuthentication(ctx);
  const r = await fetch(`${server}${path}`, { headers: ctx.getHeaders(), dispatcher: ctx.getDispatcher() as Dispatcher | undefined });
  if (!r.ok) throw new Error(`GET ${server}${path}: ${r.status}`);
  return r.text();
}

async function text(url: string): Promise<string> {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`GET ${url}: ${r.status}`);
  return r.text();
}

function gauge(metrics: string, name: string): number {
  return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(metrics)?.[1] ?? NaN);
}

function sumCounter(metrics: string, name: string): number {
  let sum = 0;
  for (const line of metrics.split('\n')) if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  return sum;
}

function counterByLabel(metrics: string, name: string, label: string): Record<string, number> {
  const out: Record<string, number> = {};
  const re = new RegExp(`^${name}\\{[^}]*${label}="([^"]*)"[^}]*\\} (\\S+)$`, 'gm');
  for (const m of metrics.matchAll(re)) out[m[1]!] = (out[m[1]!] ?? 0) + Number(m[2]);
  return out;
}

function histogram(metrics: string, name: string): Histogram {
  const buckets: [number, number][] = [];
  for (const m of metrics.matchAll(new RegExp(`^${name}_bucket\\{le="([^"]+)"\\} (\\S+)$`, 'gm'))) buckets.push([m[1] === '+Inf' ? Infinity : Number(m[1]), Number(m[2])]);
  const sum = Number(new RegExp(`^${name}_sum (\\S+)$`, 'm').exec(metrics)?.[1] ?? 0);
  const count = Number(new RegExp(`^${name}_count (\\S+)$`, 'm').exec(metrics)?.[1] ?? 0);
  return { buckets: buckets.sort((a, b) => a[0] - b[0]), sum, count };
}

function diffHistogram(a: Histogram, b: Histogram): Histogram {
  const before = new Map(b.buckets);
  return { buckets: a.buckets.map(([le, c]) => [le, c - (before.get(le) ?? 0)]), sum: a.sum - b.sum, count: a.count - b.count };
}

/** histogram_quantile: linear interpolation inside the bucket holding the q-th observation. */
function quantile(h: Histogram, q: number): number {
  const totalCount = h.buckets[h.buckets.length - 1]?.[1] ?? 0;
  if (totalCount === 0) return NaN;
  const rank = q * totalCount;
  let prevLe = 0;
  let prevCount = 0;
  for (const [le, c] of h.buckets) {
    if (c >= rank) {
      if (le === Infinity) return prevLe;
      return prevLe + ((le - prevLe) * (rank - prevCount)) / Math.max(1e-12, c - prevCount);
    }
    prevLe = le;
    prevCount = c;
  }
  return prevLe;
}

function exactQuantile(xs: number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!;
}

function total(m: Map<string, number>): number {
  let t = 0;
  for (const v of m.values()) t += v;
  return t;
}

async function until(check: () => boolean | Promise<boolean>, timeoutMs: number, what: string, everyMs = 500): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

function gitHead(): string {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return 'unknown';
  }
}

function listOption(flag: string, env: string, fallback: number[]): number[] {
  const raw = stringOption(flag, env, '');
  if (!raw) return fallback;
  const ns = raw.split(',').map((s) => Number(s.trim().replace(/_/g, '')));
  if (ns.some((n) => !Number.isInteger(n) || n <= 0)) throw new Error(`--${flag} / ${env}: expected a comma-separated list of positive integers, got ${JSON.stringify(raw)}`);
  return ns;
}

function stringOption(flag: string, env: string, fallback: string): string {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === `--${flag}`) return argv[i + 1] ?? '';
    if (a.startsWith(`--${flag}=`)) return a.slice(flag.length + 3);
  }
  return process.env[env] ?? fallback;
}

main().catch((err: unknown) => {
  process.stderr.write(`[bench] ${String((err as Error).stack ?? err)}\n`);
  process.exit(1);
});
