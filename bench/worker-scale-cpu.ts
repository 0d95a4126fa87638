// CPU accounting for bench/worker-scale.ts: process trees (a worker in process mode runs its
// executors as child processes) and the machine as a whole, both read from /proc.
import { readdirSync, readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { machineBusyUs, procCpuUs, statCpuUs } from './queue-lib.js';

/** Every pid under the given roots (roots included), from the ppid field of /proc/<pid>/stat. */
function processTree(roots: readonly number[]): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(entry));
      children.set(ppid, list);
    } catch {
      // exited between readdir and read
    }
  }
  const out: number[] = [];
  const todo = [...roots];
  for (let pid = todo.pop(); pid !== undefined; pid = todo.pop()) {
    out.push(pid);
    todo.push(...(children.get(pid) ?? []));
  }
  return out;
}

/**
 * CPU of the process trees under the workers' pids, in µs, kept per pid as last seen: a worker
 * exits as soon as it sees its batch complete, and in the three-batch runs one batch finishes
 * before the others, so a pid read only at the end of the window would lose its whole drain.
 * Read from /proc/<pid>/stat (utime + stime: every thread of the process, exited ones
 * included; 10 ms ticks), refreshed on every poll; the tree is rescanned for new executor
 * child processes at most once a second (a child that lives less than that is missed).
 */
export class WorkerCpuTracker {
  private readonly lastUs = new Map<number, number>();
  private scannedAtMs = -Infinity;

  constructor(private readonly roots: readonly number[]) {}

  refresh(forceScan = false): void {
    const now = performance.now();
    if (forceScan || now - this.scannedAtMs >= 1000) {
      this.scannedAtMs = now;
      for (const pid of processTree(this.roots)) if (!this.lastUs.has(pid)) this.lastUs.set(pid, 0);
    }
    for (const pid of this.lastUs.keys()) {
      try {
        this.lastUs.set(pid, statCpuUs(pid));
      } catch {
        // exited: keep what it had used when last seen
      }
    }
  }

  /** Per-pid CPU µs as last seen. A pid first seen later counts from zero (born inside the window). */
  snapshot(): Map<number, number> {
    return new Map(this.lastUs);
  }
}

function treeDeltaUs(before: Map<number, number>, after: Map<number, number>): number {
  let us = 0;
  for (const [pid, end] of after) us += end - (before.get(pid) ?? 0);
  return us;
}

export interface CpuSample {
  atMs: number;
  machineBusyUs: number;
  redisUs: number[];
  workers: Map<number, number>;
  selfUs: number;
}

export function sampleCpu(redisPids: readonly number[], workers: WorkerCpuTracker): CpuSample {
  const c = process.cpuUsage();
  workers.refresh(true);
  return {
    atMs: performance.now(),
    machineBusyUs: machineBusyUs(),
    redisUs: redisPids.map((pid) => procCpuUs(pid)),
    workers: workers.snapshot(),
    selfUs: c.user + c.system,
  };
}

/** CPU over a window, in cores (1.0 = one core busy for the whole window). */
export interface CpuShares {
  seconds: number;
  /** One entry per redis-server. */
  redisCores: number[];
  workerCores: number;
  /** This bench process (polling the batch's counts). */
  benchCores: number;
  /** Everything else on the machine: other users' jobs, the kernel's work for other processes. */
  otherCores: number;
  machineBusyCores: number;
  machineCores: number;
  redisUsTotal: number[];
  workerUsTotal: number;
}

export function cpuShares(a: CpuSample, b: CpuSample): CpuShares {
  const us = (b.atMs - a.atMs) * 1000;
  const redisUsTotal = b.redisUs.map((end, i) => end - (a.redisUs[i] ?? 0));
  const workerUsTotal = treeDeltaUs(a.workers, b.workers);
  const benchUs = b.selfUs - a.selfUs;
  const machineUs = b.machineBusyUs - a.machineBusyUs;
  const ours = redisUsTotal.reduce((s, x) => s + x, 0) + workerUsTotal + benchUs;
  return {
    seconds: us / 1e6,
    redisCores: redisUsTotal.map((x) => x / us),
    workerCores: workerUsTotal / us,
    benchCores: benchUs / us,
    otherCores: Math.max(0, machineUs - ours) / us,
    machineBusyCores: machineUs / us,
    machineCores: cpus().length,
    redisUsTotal,
    workerUsTotal,
  };
}

/**
 * Where the ceiling is, from the measured shares: a redis-server near a whole core is the Redis
 * ceiling (Redis runs commands on one thread); otherwise the machine with 85 % or more of its cores busy is
 * the CPU ceiling; otherwise neither is saturated and the workers wait on round trips.
 */
export function ceilingOf(s: CpuShares): string {
  const busiest = Math.max(...s.redisCores);
  if (busiest >= 0.85) return `Redis (${pct(busiest)} of a core)`;
  if (s.machineBusyCores >= 0.85 * s.machineCores) {
    return `CPU (${s.machineBusyCores.toFixed(2)} of ${s.machineCores} cores busy${s.otherCores >= 0.25 ? `, ${s.otherCores.toFixed(2)} by other processes` : ''})`;
  }
  return `neither (${s.machineBusyCores.toFixed(2)} of ${s.machineCores} cores busy, Redis ${pct(busiest)}): round-trip latency`;
}

export function pct(cores: number): string {
  return `${Math.round(cores * 100)} %`;
}
