// The peers bench/sdk-calls.ts measures in the same run as taskbatch's remote calls:
//  - Pyro5: bench/pyro5_square.py serves square(x) on loopback (threaded server, its own process)
//    and calls it from a second Python process; run with a venv created here on first use.
//  - BullMQ: a Worker in its own process (bench/sdk-peer-bullmq-worker.ts) answers jobs on the
//    benchmark's redis-server; callers in this process do queue.add + job.waitUntilFinished.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Queue, QueueEvents, type JobsOptions } from 'bullmq';
import { log, sleep, statCpuUs } from './queue-lib.js';
import { callersLabel, closedLoop, idleCpu, measureCalls, START_LATENCY_SCENARIO, startLatency, type CallRow, type IdleRow } from './sdk-bench-lib.js';

export interface PeerPlan {
  callers: readonly number[];
  seconds: number;
  startReps: number;
  idleSeconds: number;
}

export interface PeerResult {
  rows: CallRow[];
  idle: IdleRow[];
  note: string;
}

/** A child process and its stdout lines as they come. */
interface Child {
  proc: ChildProcess;
  lines: AsyncIterator<string>;
  exited: Promise<number | null>;
}

function start(cmd: string, args: readonly string[]): Child {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  if (!proc.stdout) throw new Error(`${cmd}: no stdout pipe`);
  const lines = createInterface({ input: proc.stdout })[Symbol.asyncIterator]();
  return { proc, lines, exited };
}

async function nextLine(child: Child, what: string): Promise<string> {
  const r = await child.lines.next();
  if (r.done) throw new Error(`${what} exited (code ${String(await child.exited)}) before printing a line; its stderr is above`);
  return r.value;
}

async function stop(child: Child): Promise<void> {
  if (child.proc.exitCode === null && child.proc.signalCode === null) child.proc.kill('SIGTERM');
  await child.exited;
}

const PYRO5_SCRIPT = fileURLToPath(new URL('../../bench/pyro5_square.py', import.meta.url));
const PYRO5_VENV = join(homedir(), '.cache', 'taskbatch', 'bench-venv-pyro5');

/** The venv's python with Pyro5 installed: created on first use, left alone when it already has Pyro5. */
export function ensurePyro5Venv(): string {
  const python = join(PYRO5_VENV, 'bin', 'python');
  if (!existsSync(python)) {
    log(`creating ${PYRO5_VENV} (python3 -m venv)`);
    execFileSync('python3', ['-m', 'venv', PYRO5_VENV], { stdio: ['ignore', 'inherit', 'inherit'] });
  }
  try {
    execFileSync(python, ['-c', 'import Pyro5'], { stdio: 'ignore' });
  } catch {
    log(`installing Pyro5 into ${PYRO5_VENV} (pip install Pyro5)`);
    execFileSync(python, ['-m', 'pip', 'install', '--quiet', 'Pyro5'], { stdio: ['ignore', 'inherit', 'inherit'] });
  }
  return python;
}

interface Pyro5Line {
  scenario: 'closed' | 'start';
  callers: number;
  calls: number;
  seconds: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  serverCpuUs: number;
  clientCpuUs: number;
}

export async function runPyro5(python: string, plan: PeerPlan): Promise<PeerResult> {
  const maxCallers = Math.max(...plan.callers);
  const server = start(python, [PYRO5_SCRIPT, 'serve', '--threads', String(maxCallers + 100)]);
  try {
    const info = JSON.parse(await nextLine(server, 'the Pyro5 server')) as { uri: string; pid: number; serverType: string; threadpool: number };
    const version = execFileSync(python, ['-c', 'import Pyro5; print(Pyro5.__version__)'], { encoding: 'utf8' }).trim();
    await sleep(500);
    const idle = await idleCpu('Pyro5', { 'Pyro5 server': info.pid }, plan.idleSeconds);
    const client = start(python, [
      PYRO5_SCRIPT,
      'call',
      '--uri',
      info.uri,
      '--server-pid',
      String(info.pid),
      '--callers',
      plan.callers.join(','),
      '--seconds',
      String(plan.seconds),
      '--start-reps',
      String(plan.startReps),
    ]);
    const rows: CallRow[] = [];
    for (;;) {
      const r = await client.lines.next();
      if (r.done) break;
      const l = JSON.parse(r.value) as Pyro5Line;
      const scenario = l.scenario === 'start' ? START_LATENCY_SCENARIO : callersLabel(l.callers);
      const cpu = `${(l.clientCpuUs / l.calls).toFixed(0)} / ${(l.serverCpuUs / l.calls).toFixed(0)} / -`;
      rows.push({ system: 'Pyro5', scenario, calls: l.calls, seconds: l.seconds, p50: l.p50, p90: l.p90, p99: l.p99, max: l.max, cpu });
      process.stderr.write(`[bench] Pyro5 ${scenario}: ${Math.round(l.calls / l.seconds)} calls/s, p50 ${l.p50.toFixed(2)} ms, p99 ${l.p99.toFixed(2)} ms\n`);
    }
    const code = await client.exited;
    if (code !== 0) throw new Error(`the Pyro5 client exited with code ${String(code)}; its stderr is above`);
    const note = `Pyro5 ${version}, server type "${info.serverType}" (the default: a pool thread per connected proxy; pool raised to ${info.threadpool} threads so 1,000 proxies can connect), one process; callers: a Python process with one thread and one proxy per caller; CPU client / server from /proc/<pid>/stat.`;
    return { rows, idle, note };
  } finally {
    await stop(server);
  }
}

const BULLMQ_PACKAGE = fileURLToPath(new URL('../../node_modules/bullmq/package.json', import.meta.url));
const BULLMQ_WORKER = fileURLToPath(new URL('./sdk-peer-bullmq-worker.js', import.meta.url));

export async function runBullmq(redisUrl: string, redisPid: number, concurrency: number, plan: PeerPlan): Promise<PeerResult> {
  const name = `sdk-bench-${process.pid}`;
  const url = new URL(redisUrl);
  const connection = { host: url.hostname, port: Number(url.port), maxRetriesPerRequest: null };
  const worker = start(process.execPath, [BULLMQ_WORKER, redisUrl, name, String(concurrency)]);
  // The events stream must hold every event of 1,000 calls in flight (5 or so each) until read.
  const queue = new Queue(name, { connection, streams: { events: { maxLen: 100_000 } } });
  queue.setMaxListeners(0); // each waiting call listens for the queue's 'closing'
  const events = new QueueEvents(name, { connection });
  try {
    if ((await nextLine(worker, 'the BullMQ worker')) !== 'ready') throw new Error('the BullMQ worker did not print "ready"');
    await events.waitUntilReady();
    // Keep the last completed jobs: waitUntilFinished reads a job that completed before it
    // subscribed back from Redis, and a job removed on completion reads as "missing".
    const opts: JobsOptions = { removeOnComplete: { count: 5000 }, removeOnFail: { count: 1000 } };
    const square = async (x: number): Promise<unknown> => (await queue.add('square', { x }, opts)).waitUntilFinished(events);
    const startedAtNs = async (): Promise<string> => String(await (await queue.add('startedAtNs', { x: 0 }, opts)).waitUntilFinished(events));
    const workerPid = worker.proc.pid as number;
    const probe = { client: () => process.cpuUsage().user + process.cpuUsage().system, server: () => statCpuUs(workerPid), redis: () => statCpuUs(redisPid) };
    await closedLoop(square, 100, 1)([]); // warm up
    const rows: CallRow[] = [];
    for (const c of plan.callers) rows.push(await measureCalls('BullMQ', callersLabel(c), probe, closedLoop(square, c, plan.seconds)));
    await sleep(1000);
    const idle = await idleCpu('BullMQ', { 'BullMQ worker': workerPid, 'redis-server': redisPid }, plan.idleSeconds);
    rows.push(await measureCalls('BullMQ', START_LATENCY_SCENARIO, probe, startLatency(startedAtNs, plan.startReps)));
    const version = (JSON.parse(readFileSync(BULLMQ_PACKAGE, 'utf8')) as { version: string }).version;
    const note = `BullMQ ${version}: one Worker process, concurrency ${concurrency}, on the same redis-server as taskbatch (after it); callers in the benchmark's process (queue.add + job.waitUntilFinished(queueEvents), one QueueEvents).`;
    return { rows, idle, note };
  } finally {
    await stop(worker);
    await events.close();
    await queue.obliterate({ force: true });
    await queue.close();
  }
}
