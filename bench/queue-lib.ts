// Shared helpers for the queue-protocol benchmarks (bench/queue-drain.ts, bench/queue-memory.ts):
// our own redis-server, CPU accounting from /proc, load, flags, and table printing.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { Redis } from 'ioredis';
import { startRedisServer, type RedisServer } from '../localcluster/redis-server.js';

export interface BenchRedis {
  server: RedisServer;
  /** redis-server's pid, from INFO server (process_id). */
  pid: number;
  /** A plain client for INFO, FLUSHALL and counters (not used by the measured code). */
  admin: Redis;
  version: string;
  stop(): Promise<void>;
}

/** Starts a private redis-server (loopback, free port, no RDB/AOF) and finds its pid. */
export async function startBenchRedis(): Promise<BenchRedis> {
  const server = await startRedisServer();
  const admin = new Redis({ host: server.host, port: server.port, maxRetriesPerRequest: null, lazyConnect: false });
  const info = parseInfo(await admin.info('server'));
  const pid = Number(info.process_id);
  if (!Number.isInteger(pid) || pid <= 0) throw new Error('INFO server gave no process_id');
  // Never leave the server behind, even when the benchmark crashes or is interrupted.
  const onExit = (): void => {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
    rmSync(server.dir, { recursive: true, force: true });
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    process.stderr.write(`[bench] ${signal}: stopping redis-server ${pid}\n`);
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.once('exit', onExit);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  return {
    server,
    pid,
    admin,
    version: info.redis_version ?? '?',
    stop: async () => {
      process.off('exit', onExit);
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      admin.disconnect();
      await server.stop();
    },
  };
}

export function parseInfo(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i > 0 && !line.startsWith('#')) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

/** INFO memory used_memory, after letting lazy frees finish. */
export async function usedMemory(admin: Redis): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const m = parseInfo(await admin.info('memory'));
    if (Number(m.lazyfree_pending_objects ?? 0) === 0) return Number(m.used_memory);
    await sleep(20);
  }
  return Number(parseInfo(await admin.info('memory')).used_memory);
}

let clkTck: number | undefined;
function ticksPerSecond(): number {
  if (clkTck === undefined) {
    try {
      clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

/**
 * CPU time a process has used, in µs: the sum of its threads' on-CPU time from
 * /proc/<pid>/task/<tid>/schedstat (ns resolution); falls back to utime+stime of
 * /proc/<pid>/stat (clock ticks, 10 ms) where schedstat is unavailable.
 */
export function procCpuUs(pid: number): number {
  try {
    let ns = 0;
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      } catch {
        // thread exited between readdir and read
      }
    }
    if (ns > 0) return ns / 1000;
  } catch {
    // no schedstat: use stat
  }
  return statCpuUs(pid);
}

/** Machine-wide CPU busy time (µs summed over CPUs) from /proc/stat, to tell how much of the machine others used. */
export function machineBusyUs(): number {
  const f = (readFileSync('/proc/stat', 'utf8').split('\n')[0] as string).trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = f;
  return ((user + nice + system + irq + softirq + steal) * 1e6) / ticksPerSecond();
}

/** utime+stime (fields 14 and 15) of /proc/<pid>/stat, in µs. */
export function statCpuUs(pid: number | 'self'): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state); utime is field 14, stime field 15.
  return ((Number(fields[11]) + Number(fields[12])) * 1e6) / ticksPerSecond();
}

export interface Measured<T> {
  value: T;
  wallMs: number;
  /** This Node process (all threads: JS, GC, libuv), from process.cpuUsage() (= /proc/self/stat utime+stime). */
  nodeCpuUs: number;
  /** redis-server, all threads, from /proc. */
  redisCpuUs: number;
}

/** Runs fn, measuring wall time and the CPU used by this process and by redis-server. */
export async function measure<T>(redisPid: number, fn: () => Promise<T>): Promise<Measured<T>> {
  gc();
  const r0 = procCpuUs(redisPid);
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const value = await fn();
  const t1 = process.hrtime.bigint();
  const c1 = process.cpuUsage(c0);
  const r1 = procCpuUs(redisPid);
  return { value, wallMs: Number(t1 - t0) / 1e6, nodeCpuUs: c1.user + c1.system, redisCpuUs: r1 - r0 };
}

/** Runs a full GC when node was started with --expose-gc (hack/bench.sh does), so one phase's garbage is not billed to the next. */
export function gc(): void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g) {
    g();
    g();
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

/** One line describing the machine and its load right now. */
export function machineLine(): string {
  const la = readFileSync('/proc/loadavg', 'utf8').trim();
  const c = cpus();
  return `${c.length} CPU(s) ${c[0]?.model ?? '?'}; /proc/loadavg: ${la}; node ${process.version}`;
}

/** Load average over the last minute, for "was the machine busy" notes. */
export function load1(): number {
  return loadavg()[0] ?? 0;
}

/** Integer flag from --name=V / --name V or env, else a default. Accepts 1e6, 100k, 1m, 1_000_000. */
export function intOption(argv: readonly string[], flag: string, env: string, fallback: number): number {
  let raw: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === `--${flag}`) raw = argv[i + 1];
    else if (a.startsWith(`--${flag}=`)) raw = a.slice(flag.length + 3);
  }
  raw ??= process.env[env];
  if (raw === undefined || raw === '') return fallback;
  const m = /^([0-9][0-9_.]*(?:e[0-9]+)?)([km]?)$/i.exec(raw.trim());
  const n = m ? Number((m[1] as string).replace(/_/g, '')) * ({ '': 1, k: 1e3, m: 1e6 }[(m[2] as string).toLowerCase()] ?? 1) : NaN;
  if (!Number.isFinite(n) || n < 0) throw new Error(`--${flag} / ${env}: not a count: ${JSON.stringify(raw)}`);
  return Math.round(n);
}

export function boolOption(argv: readonly string[], flag: string, env: string): boolean {
  if (argv.includes(`--${flag}`)) return true;
  if (argv.includes(`--no-${flag}`)) return false;
  const v = process.env[env];
  return v !== undefined && v !== '' && v !== '0' && v !== 'false';
}

/** Prints rows as an aligned text table (first column left-aligned, the rest right-aligned). */
export function printTable(headers: readonly string[], rows: readonly (readonly string[])[]): void {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const fmt = (r: readonly string[]): string =>
    r
      .map((c, i) => (i === 0 ? c.padEnd(widths[i] as number) : c.padStart(widths[i] as number)))
      .join('  ')
      .trimEnd();
  console.log(fmt(headers));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of rows) console.log(fmt(r));
}

export function fmtInt(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

export function fmt1(n: number): string {
  return n.toFixed(1);
}

export function fmtRatio(n: number): string {
  return Number.isFinite(n) ? `${n.toFixed(2)}x` : 'n/a';
}

export function fmtBytes(n: number): string {
  const a = Math.abs(n);
  if (a >= 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  if (a >= 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${Math.round(n)} B`;
}

export function log(msg: string): void {
  process.stderr.write(`[bench] ${msg}\n`);
}
