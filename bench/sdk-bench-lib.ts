// Scenarios shared by the systems bench/sdk-calls.ts compares (taskbatch, BullMQ; Pyro5 runs the
// same ones in bench/pyro5_square.py): closed-loop callers, start latency, idle CPU.
import { procCpuUs, sleep, statCpuUs } from './queue-lib.js';

export type System = 'taskbatch' | 'Pyro5' | 'BullMQ';

/** One measured scenario of one system. Latencies in ms; CPU in µs per call. */
export interface CallRow {
  system: System;
  scenario: string;
  calls: number;
  seconds: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  /** "client / server / redis" µs per call, or a note. */
  cpu: string;
}

/** CPU (µs) of the processes a scenario involves, read before and after it. */
export interface CpuProbe {
  client: () => number;
  server: () => number;
  redis?: () => number;
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

/** Runs a scenario and turns its latencies (ms) into a row, with CPU per call from /proc. */
export async function measureCalls(system: System, scenario: string, probe: CpuProbe | undefined, run: (lat: number[]) => Promise<number>): Promise<CallRow> {
  const lat: number[] = [];
  const before = probe ? [probe.client(), probe.server(), probe.redis?.() ?? 0] : [];
  const t0 = performance.now();
  const calls = await run(lat);
  const seconds = (performance.now() - t0) / 1000;
  const after = probe ? [probe.client(), probe.server(), probe.redis?.() ?? 0] : [];
  lat.sort((a, b) => a - b);
  const per = (i: number): string => (((after[i] as number) - (before[i] as number)) / calls).toFixed(0);
  const cpu = probe ? `${per(0)} / ${per(1)} / ${probe.redis ? per(2) : '-'}` : '-';
  const row: CallRow = { system, scenario, calls, seconds, p50: percentile(lat, 50), p90: percentile(lat, 90), p99: percentile(lat, 99), max: lat[lat.length - 1] ?? NaN, cpu };
  process.stderr.write(`[bench] ${system} ${scenario}: ${Math.round(calls / seconds)} calls/s, p50 ${row.p50.toFixed(2)} ms, p99 ${row.p99.toFixed(2)} ms\n`);
  return row;
}

/** `concurrency` callers, each calling back to back for `seconds`; pushes each call's latency (ms). */
export function closedLoop(call: (i: number) => Promise<unknown>, concurrency: number, seconds: number): (lat: number[]) => Promise<number> {
  return async (lat) => {
    const until = performance.now() + seconds * 1000;
    let calls = 0;
    await Promise.all(
      Array.from({ length: concurrency }, async (_, k) => {
        let i = k;
        while (performance.now() < until) {
          const t = performance.now();
          await call(i++);
          lat.push(performance.now() - t);
          calls++;
        }
      }),
    );
    return calls;
  };
}

export function callersLabel(c: number): string {
  return `${c.toLocaleString('en-US')} concurrent caller${c === 1 ? '' : 's'}, back to back`;
}

export const START_LATENCY_SCENARIO = 'start latency: one item, idle worker, after 5–50 ms';

/**
 * Start latency on an idle worker: after a random 5–50 ms gap, note CLOCK_MONOTONIC, submit one
 * item whose handler returns its own CLOCK_MONOTONIC reading (ns, as a string), and push the
 * difference (ms). The caller waits for the result before the next gap, so the worker is idle
 * again each time (as idle as a 5–50 ms gap makes it).
 */
export function startLatency(submit: () => Promise<string>, reps: number): (lat: number[]) => Promise<number> {
  return async (lat) => {
    for (let i = 0; i < reps; i++) {
      await sleep(5 + Math.random() * 45);
      const t0 = process.hrtime.bigint();
      const startedNs = BigInt(await submit());
      lat.push(Number(startedNs - t0) / 1e6);
    }
    return reps;
  };
}

/** One process's CPU over an idle period, as % of one core. */
export interface IdleRow {
  system: System;
  process: string;
  seconds: number;
  percentOfCore: number;
}

/**
 * Waits `seconds` with nothing to do and reports each process's CPU over it, as % of one core,
 * from /proc: per-thread schedstat (ns) when the thread set stays the same, else utime+stime.
 */
export async function idleCpu(system: System, pids: Record<string, number>, seconds: number): Promise<IdleRow[]> {
  const read = (pid: number): { sched: number; stat: number } => ({ sched: procCpuUs(pid), stat: statCpuUs(pid) });
  const before = Object.entries(pids).map(([name, pid]) => ({ name, pid, at: read(pid) }));
  const t0 = performance.now();
  await sleep(seconds * 1000);
  const wallUs = (performance.now() - t0) * 1000;
  return before.map(({ name, pid, at }) => {
    const now = read(pid);
    const sched = now.sched - at.sched;
    const us = sched >= 0 ? sched : now.stat - at.stat;
    const row: IdleRow = { system, process: name, seconds: wallUs / 1e6, percentOfCore: (100 * us) / wallUs };
    process.stderr.write(`[bench] ${system} idle ${name}: ${row.percentOfCore.toFixed(3)} % of a core\n`);
    return row;
  });
}
