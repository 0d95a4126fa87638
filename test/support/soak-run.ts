import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { startRedisServer, type RedisServer } from '../../localcluster/redis-server.js';
import { BatchQueue, type ItemInput } from '../../queue/index.js';
import type { JournaledItem } from '../fixtures/journaled-handler.js';
import { checkItems, emptyFaultLog, type FaultLog, type ItemCheckReport } from './item-checker.js';
import { spawnWorker, uniqueName, workerEnv, type SpawnedWorker } from './worker-harness.js';

/**
 * A soak run: one batch of journaled items on a redis-server with persistence (AOF, fsync on
 * every write), a fleet of real worker processes (async pool), and a fault injector that
 * SIGKILLs a random worker every few seconds (and starts a replacement), SIGSTOPs one past its
 * lease and resumes it, restarts Redis from its AOF, and restarts Redis from an older RDB
 * snapshot (a rollback). It logs what it did and when (FaultLog); then item-checker.ts
 * classifies every item. Used by test/integration/soak.test.ts and bench/soak.ts.
 */

const JOURNALED = fileURLToPath(new URL('../fixtures/journaled-handler.js', import.meta.url));

export interface SoakOptions {
  items: number;
  /** Worker processes kept alive. */
  workers: number;
  poolSize: number;
  leaseSeconds: number;
  /** Each item waits between these many ms (spread evenly over the items). */
  itemMs: [number, number];
  /** SIGKILL a random worker this often (0: never). */
  killEveryMs: number;
  /** Fractions of the batch done ((succeeded + failed) / items) at which each fault fires; omit to skip it. */
  stopAt?: number;
  restartAt?: number;
  snapshotAt?: number;
  rollbackAt?: number;
  /** Every item n with n % k == k - 1 throws on its first attempt / on every attempt. */
  failFirstEvery?: number;
  failAlwaysEvery?: number;
  maxAttempts: number;
  /** Give up waiting for the batch to complete after this long (the check runs anyway). */
  timeoutMs: number;
  log?: (message: string) => void;
  /** Keep the journal (and each worker's log lines, <worker>.log) in this new directory, for a post-mortem. */
  keepJournalIn?: string;
}

export interface SoakResult {
  report: ItemCheckReport;
  faults: FaultLog;
  /** Worker processes started in all (the first fleet and replacements). */
  workersStarted: number;
  completed: boolean;
  /** Items designed to fail on every attempt (they must be dead-lettered). */
  failAlways: string[];
}

interface FleetMember {
  id: string;
  w: SpawnedWorker;
  killedByUs: boolean;
  stopped: boolean;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function soakItems(o: Pick<SoakOptions, 'items' | 'itemMs' | 'failFirstEvery' | 'failAlwaysEvery'>): ItemInput[] {
  const [min, max] = o.itemMs;
  return Array.from({ length: o.items }, (_, n) => {
    const data: JournaledItem = { n, ms: min + ((n * 7919) % (max - min + 1)) };
    if (o.failAlwaysEvery && n % o.failAlwaysEvery === o.failAlwaysEvery - 1) data.fail = 'always';
    else if (o.failFirstEvery && n % o.failFirstEvery === o.failFirstEvery - 1) data.fail = 'first';
    return { id: String(n), data };
  });
}

export async function runSoak(o: SoakOptions): Promise<SoakResult> {
  const log = (message: string): void => o.log?.(`${message} (t=${Date.now()})`);
  const server = await startRedisServer({ args: ['--appendonly', 'yes', '--appendfsync', 'always'] });
  const redis = new Redis(server.port, server.host, { maxRetriesPerRequest: null, retryStrategy: () => 50 });
  redis.on('error', () => undefined);
  const journalDir = o.keepJournalIn ?? mkdtempSync(join(tmpdir(), 'tb-soak-journal-'));
  if (o.keepJournalIn) mkdirSync(journalDir, { recursive: true });
  const fleet: FleetMember[] = [];
  const faults = emptyFaultLog();
  try {
    const name = uniqueName('soak');
    const queue = new BatchQueue(redis, { namespace: 'test', name });
    await queue.create({ maxAttempts: o.maxAttempts, backoff: { initialMs: 10, factor: 1, maxMs: 10, jitter: 0 } });
    const items = soakItems(o);
    await queue.enqueueMany(items);
    await queue.close();
    const failAlways = items.filter((i) => (i.data as JournaledItem).fail === 'always').map((i) => i.id as string);
    const started = Date.now();

    const spawn = (): void => {
      const id = uniqueName('soak');
      const w = spawnWorker(
        workerEnv(server.url, name, JSON.stringify({ module: JOURNALED, export: 'journaled' }), {
          TASKBATCH_WORKER_ID: id,
          TASKBATCH_POOL_MODE: 'async',
          TASKBATCH_POOL_SIZE: String(o.poolSize),
          TASKBATCH_LEASE_SECONDS: String(o.leaseSeconds),
          TASKBATCH_METRICS_PORT: 'off',
          // Off, so the SIGSTOPped worker lives on after SIGCONT and tries to commit items whose
          // leases lapsed meanwhile (its watchdog would SIGKILL it, leaving fencing untested).
          TASKBATCH_WATCHDOG_SECONDS: '0',
          SOAK_JOURNAL_DIR: journalDir,
        }),
      );
      const m: FleetMember = { id, w, killedByUs: false, stopped: false };
      fleet.push(m);
      void w.exited.then(({ code, signal }) => {
        if (!m.killedByUs) {
          faults.exits.push({ worker: id, pid: w.pid, t: Date.now(), code, signal });
          // A worker that saw the batch complete exits 0 by itself: no news.
          if (code !== 0) log(`worker ${id} (pid ${w.pid}) exited by itself: code ${code}, signal ${signal}`);
        }
      });
    };
    const alive = (): FleetMember[] => fleet.filter((m) => m.w.proc.exitCode === null && m.w.proc.signalCode === null);
    const refill = (): void => {
      for (let n = alive().length; n < o.workers; n++) spawn();
    };
    const sigkill = (m: FleetMember): void => {
      m.killedByUs = true;
      faults.kills.push({ worker: m.id, pid: m.w.pid, t: Date.now() });
      m.w.kill('SIGKILL');
    };

    refill();
    const planned = { stop: o.stopAt, restart: o.restartAt, snapshot: o.snapshotAt, rollback: o.rollbackAt };
    const pending = new Set(Object.entries(planned).flatMap(([fault, at]) => (at === undefined ? [] : [fault])));
    let snapshotFile: string | undefined;
    let snapshotAt = 0;
    let nextKill = started + o.killEveryMs;
    let completed = false;
    while (Date.now() - started < o.timeoutMs) {
      let progress = 0;
      try {
        const snap = await queue.snapshot();
        progress = (snap.succeeded + snap.failed) / o.items;
        if (snap.complete && !fleet.some((m) => m.stopped)) {
          completed = true;
          break;
        }
      } catch {
        // Redis is restarting: the faults below wait for the next look.
        await sleep(100);
        continue;
      }
      const now = Date.now();
      if (o.killEveryMs > 0 && now >= nextKill) {
        nextKill = now + o.killEveryMs;
        const candidates = alive().filter((m) => !m.stopped);
        const victim = candidates[Math.floor(Math.random() * candidates.length)];
        if (victim) {
          sigkill(victim);
          log(`SIGKILLed worker ${victim.id} (pid ${victim.w.pid}) at ${(progress * 100).toFixed(1)}%`);
        }
      }
      if (pending.has('stop') && progress >= (planned.stop ?? 1)) {
        const victim = alive().find((m) => !m.stopped);
        if (victim) {
          pending.delete('stop');
          victim.stopped = true;
          const from = Date.now();
          process.kill(victim.w.pid, 'SIGSTOP');
          const forMs = o.leaseSeconds * 1000 + 2000;
          log(`SIGSTOPped worker ${victim.id} (pid ${victim.w.pid}) for ${forMs} ms at ${(progress * 100).toFixed(1)}%`);
          void sleep(forMs).then(() => {
            if (victim.w.proc.exitCode === null && victim.w.proc.signalCode === null) process.kill(victim.w.pid, 'SIGCONT');
            faults.stops.push({ worker: victim.id, pid: victim.w.pid, from, to: Date.now() });
            victim.stopped = false;
            log(`SIGCONTinued worker ${victim.id}`);
          });
        }
      }
      if (pending.has('restart') && progress >= (planned.restart ?? 1)) {
        pending.delete('restart');
        const from = Date.now();
        await server.restart();
        faults.restarts.push({ from, to: Date.now() });
        log(`Restarted Redis from its AOF at ${(progress * 100).toFixed(1)}% (down ${Date.now() - from} ms)`);
      }
      if (pending.has('snapshot') && progress >= (planned.snapshot ?? 1)) {
        pending.delete('snapshot');
        snapshotAt = Date.now();
        await redis.save();
        snapshotFile = join(server.dir, 'snapshot.rdb');
        copyFileSync(join(server.dir, 'dump.rdb'), snapshotFile);
        log(`Saved an RDB snapshot at ${(progress * 100).toFixed(1)}%`);
      }
      if (pending.has('rollback') && snapshotFile && progress >= (planned.rollback ?? 1)) {
        pending.delete('rollback');
        const down = Date.now();
        await server.kill();
        restoreAof(server, snapshotFile);
        await server.start();
        faults.rollbacks.push({ snapshotAt, down, up: Date.now() });
        log(`Restarted Redis from the older snapshot at ${(progress * 100).toFixed(1)}%`);
      }
      refill();
      await sleep(200);
    }
    const elapsedMs = Date.now() - started;
    // The workers see the batch complete and exit by themselves; stragglers are ended.
    const until = Date.now() + 15_000;
    while (alive().length > 0 && Date.now() < until) await sleep(100);
    for (const m of alive()) {
      m.killedByUs = true;
      if (m.stopped) process.kill(m.w.pid, 'SIGCONT');
      m.w.kill('SIGKILL');
      await m.w.exited;
    }
    for (const m of fleet) {
      if (o.keepJournalIn) writeFileSync(join(journalDir, `${m.id}.log`), m.w.logs.map((l) => JSON.stringify(l)).join('\n'));
      for (const l of m.w.logs) {
        if (l.msg === 'Lost the lease of an item; stopped it') faults.leaseLost.push({ worker: m.id, item: String(l.item), attempt: Number(l.attempt) });
        else if (l.msg === 'Discarded results of items whose lease was lost' && Array.isArray(l.items)) for (const item of l.items) faults.leaseLost.push({ worker: m.id, item: String(item) });
      }
    }
    const report = await checkItems({ queue, itemIds: items.map((i) => i.id as string), journalDir, faults, elapsedMs });
    return { report, faults, workersStarted: fleet.length, completed, failAlways };
  } finally {
    for (const m of fleet) {
      m.killedByUs = true;
      m.w.kill('SIGKILL');
    }
    redis.disconnect();
    await server.stop();
    if (o.keepJournalIn) writeFileSync(join(journalDir, 'faults.json'), JSON.stringify(faults, null, 1));
    else rmSync(journalDir, { recursive: true, force: true });
  }
}

/**
 * Makes the stopped server start from an RDB file although AOF is on: Redis 7 loads the AOF
 * directory when appendonly is yes (and starts empty without one), so the RDB becomes the base
 * file of a fresh AOF manifest.
 */
function restoreAof(server: RedisServer, rdb: string): void {
  const dir = join(server.dir, 'appendonlydir');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir);
  copyFileSync(rdb, join(dir, 'appendonly.aof.1.base.rdb'));
  writeFileSync(join(dir, 'appendonly.aof.manifest'), 'file appendonly.aof.1.base.rdb seq 1 type b\n');
}
