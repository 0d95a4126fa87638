// The long soak: a batch of journaled items run by real worker processes under faults (a worker
// SIGKILLed every 5 s and replaced, one SIGSTOPped past its lease and resumed, Redis restarted
// from its AOF, Redis restarted from an older RDB snapshot), then every item classified by
// test/support/item-checker.ts. Figures go into bench/soak.md.
//   npx tsc -b && node dist/bench/soak.js [--items 100000] [--minutes 10] [--workers 4] [--pool 8]
// Items are sized so the batch takes about --minutes at the fleet's concurrency (workers x pool);
// faults fire at fixed fractions of the batch done. Exits 1 when an item was lost, committed
// twice, or re-run without a proven cause.
import { formatReport } from '../test/support/item-checker.js';
import { runSoak } from '../test/support/soak-run.js';
import { intOption, machineLine } from './queue-lib.js';

const argv = process.argv.slice(2);
const items = intOption(argv, 'items', 'BENCH_SOAK_ITEMS', 100_000);
const minutes = intOption(argv, 'minutes', 'BENCH_SOAK_MINUTES', 10);
const workers = intOption(argv, 'workers', 'BENCH_SOAK_WORKERS', 4);
const pool = intOption(argv, 'pool', 'BENCH_SOAK_POOL', 8);
const leaseSeconds = 3;
const avgMs = Math.max(1, Math.round((minutes * 60_000 * workers * pool) / items));
const itemMs: [number, number] = [Math.round(avgMs / 2), Math.round((avgMs * 3) / 2)];

console.log(`# soak: ${items} items, about ${minutes} min (${workers} workers x async pool ${pool}, items ${itemMs[0]}-${itemMs[1]} ms, lease ${leaseSeconds} s)`);
console.log(`machine at start: ${machineLine()}\n`);
const t0 = Date.now();
const { report, faults, workersStarted, completed, failAlways } = await runSoak({
  items,
  workers,
  poolSize: pool,
  leaseSeconds,
  itemMs,
  killEveryMs: 5000,
  stopAt: 0.1,
  restartAt: 0.25,
  snapshotAt: 0.4,
  rollbackAt: 0.6,
  failFirstEvery: 100,
  failAlwaysEvery: 1000,
  maxAttempts: 10,
  timeoutMs: (minutes * 3 + 5) * 60_000,
  ...(process.env.BENCH_SOAK_KEEP ? { keepJournalIn: process.env.BENCH_SOAK_KEEP } : {}),
  log: (m) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)} s] ${m}`),
});
console.log(`\n${formatReport(report)}\n`);
console.log(
  `faults: ${faults.kills.length} SIGKILLs, ${faults.stops.length} SIGSTOP/SIGCONT, ${faults.restarts.length} Redis restarts (AOF), ${faults.rollbacks.length} rollbacks (older RDB); ` +
    `${faults.exits.filter((x) => x.code !== 0).length} workers exited by themselves with an error; ${faults.leaseLost.length} lease-lost log lines; ${workersStarted} worker processes in all; batch ${completed ? 'completed' : 'did NOT complete'}; ` +
    `${failAlways.length} items designed to fail always`,
);
console.log(`machine at end: ${machineLine()}`);
const bad = report.lostCount + report.committedTwice + report.rerunsByCause.unexplained + report.phantomCommits.length + report.staleCommits.length + report.unfinished;
process.exit(bad > 0 || !completed ? 1 : 0);
