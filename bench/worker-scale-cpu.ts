// CPU accounting for bench/worker-scale.ts: process trees (a worker in process mode runs its
// executors as child processes) and the machine as a whole, both read from /proc.
import { readdirSync, readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { machineBusyUs, procCpuUs } from './queue-lib.js';

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

/** CPU µs per pid of the trees under `roots`; a pid that is gone is left out. */
export function treeCpuUs(roots: readonly number[]): Map<number, number> {
  const out = new Map<number, number>();
  for (const pid of processTree(roots)) {
    try {
      out.set(pid, procCpuUs(pid));
    } catch {
      // exited since the scan (an executor being replaced, a worker that saw the batch complete)
    }
  }
  return out;
}

/**
 * CPU used between two treeCpuUs samples. A pid born after the first sample counts from zero
 * (its whole life is inside the window); a pid gone by the second is missed, so sample before
 * the workers exit.
 */
export function treeDeltaUs(before: Map<number, number>, after: Map<number, number>): number {
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

export function sampleCpu(redisPids: readonly number[], workerPids: readonly number[]): CpuSample {
  const c = process.cpuUsage();
  return {
    atMs: performance.now(),
    machineBusyUs: machineBusyUs(),
    redisUs: redisPids.map((pid) => procCpuUs(pid)),
    workers: treeCpuUs(workerPids),
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
 * ceiling (Redis runs commands on one thread); otherwise the machine near all its cores busy is
 * the CPU ceiling; otherwise neither is saturated and the workers wait on round trips.
 */
export function ceilingOf(s: CpuShares): string {
  const busiest = Math.max(...s.redisCores);
  if (busiest >= 0.85) return `Redis (${pct(busiest)} of a core)`;
  if (s.machineBusyCores >= 0.9 * s.machineCores) {
    return `CPU (${s.machineBusyCores.toFixed(2)} of ${s.machineCores} cores busy${s.otherCores >= 0.25 ? `, ${s.otherCores.toFixed(2)} by other processes` : ''})`;
  }
  return `neither (${s.machineBusyCores.toFixed(2)} of ${s.machineCores} cores busy, Redis ${pct(busiest)}): round-trip latency`;
}

export function pct(cores: number): string {
  return `${Math.round(cores * 100)} %`;
}
