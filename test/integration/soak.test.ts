import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jest } from '@jest/globals';
import { Redis } from 'ioredis';
import { startRedisServer } from '../../localcluster/redis-server.js';
import { BatchQueue } from '../../queue/index.js';
import type { JournalLine } from '../fixtures/journaled-handler.js';
import { checkItems, emptyFaultLog, formatReport } from '../support/item-checker.js';
import { runSoak } from '../support/soak-run.js';
import { uniqueName } from '../support/worker-harness.js';

// The soak: 20,000 journaled items through real worker processes while workers are SIGKILLed
// every 3 s (and replaced), one is SIGSTOPped past its lease and resumed, Redis is restarted from
// its AOF and later from an older RDB snapshot. Then every item is classified from the
// execution journal and Redis's final state (test/support/item-checker.ts). The longer run is
// bench/soak.ts (figures in bench/soak.md).

jest.setTimeout(300_000);

test('the checker reports a lost item, a double count, an unexplained re-run, and accepts a re-run that a kill explains', async () => {
  const server = await startRedisServer();
  const redis = new Redis(server.port, server.host);
  const dir = mkdtempSync(join(tmpdir(), 'tb-checker-'));
  try {
    const queue = new BatchQueue(redis, { namespace: 'test', name: uniqueName('checker') });
    await queue.create({ maxAttempts: 3 });
    await queue.enqueueMany(['0', '1', '2', '3'].map((id) => ({ id, data: {} })));
    await queue.close();
    const { items } = await queue.claim(4, 60_000);
    const claim = (id: string) => items.find((c) => c.id === id) as (typeof items)[number];
    await queue.complete([
      { claim: claim('0'), result: { x: 'w.2' } },
      { claim: claim('1'), result: { x: 'w.3' } },
    ]);
    await queue.fail([{ claim: claim('2'), error: { name: 'Error', message: 'by design' }, retryable: false }]);
    // Item 3 vanishes: out of the running set, and nowhere else.
    await redis.zrem(queue.keys.running, claim('3').token);

    const line = (ev: 'start' | 'end', x: string, id: string, t: number, outcome?: JournalLine['outcome']): JournalLine => ({
      ev,
      x,
      id,
      attempt: 1,
      worker: 'w',
      pid: 1,
      t,
      ...(outcome ? { outcome } : {}),
    });
    const journal = [
      line('start', 'w.1', '1', 1000), // never ended, and no fault explains why
      line('start', 'w.2', '0', 1100),
      line('end', 'w.2', '0', 1200, 'ok'),
      line('start', 'w.3', '1', 1300),
      line('end', 'w.3', '1', 1400, 'ok'),
      line('start', 'w.4', '2', 1500),
      line('end', 'w.4', '2', 1600, 'error'),
    ];
    writeFileSync(join(dir, 'w.jsonl'), `${journal.map((l) => JSON.stringify(l)).join('\n')}\n{"ev":"sta`); // a torn last line, as after a SIGKILL
    const ids = ['0', '1', '2', '3'];

    const r1 = await checkItems({ queue, itemIds: ids, journalDir: dir, faults: emptyFaultLog(), elapsedMs: 1 });
    console.log(formatReport(r1));
    expect(r1).toMatchObject({ items: 4, executions: 4, succeededOnce: 1, ranMoreThanOnce: 1, deadLettered: 1, lostCount: 1, lost: ['3'], committedTwice: 0, unfinished: 0 });
    expect(r1.rerunsByCause.unexplained).toBe(1);
    expect(r1.unexplained[0]).toContain('1: execution w.1');

    // The same journal with a SIGKILL of worker w while w.1 ran: the re-run is explained.
    const faults = emptyFaultLog();
    faults.kills.push({ worker: 'w', pid: 1, t: 1050 });
    const r2 = await checkItems({ queue, itemIds: ids, journalDir: dir, faults, elapsedMs: 1 });
    expect(r2.rerunsByCause).toMatchObject({ unexplained: 0, killed: 1, handlerFailed: 1 });

    // One complete() counted twice shows as succeeded > stored results.
    await redis.hincrby(queue.keys.meta, 'succeeded', 1);
    const r3 = await checkItems({ queue, itemIds: ids, journalDir: dir, faults, elapsedMs: 1 });
    expect(r3.committedTwice).toBe(1);
    expect(r3.committedTwiceDetail[0]).toContain('succeeded counter is 3 but only 2 results are stored');
  } finally {
    redis.disconnect();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('soak: 20,000 items under SIGKILLs, a SIGSTOP past the lease, a Redis restart and a rollback: nothing lost, nothing committed twice, every re-run explained', async () => {
  const { report, faults, completed, failAlways } = await runSoak({
    items: 20_000,
    workers: 4,
    poolSize: 16,
    leaseSeconds: 3,
    itemMs: [10, 60],
    killEveryMs: 3000,
    stopAt: 0.1,
    restartAt: 0.25,
    snapshotAt: 0.4,
    rollbackAt: 0.6,
    failFirstEvery: 100,
    failAlwaysEvery: 1000,
    maxAttempts: 10,
    timeoutMs: 200_000,
    log: (m) => process.stdout.write(`[soak] ${m}\n`),
  });
  console.log(
    `${formatReport(report)}\n\nfaults: ${faults.kills.length} SIGKILLs, ${faults.stops.length} SIGSTOP/SIGCONT, ${faults.restarts.length} Redis restart, ${faults.rollbacks.length} rollback, ${faults.leaseLost.length} lease-lost log lines`,
  );
  // The faults happened (else this test proves nothing).
  expect(faults.kills.length).toBeGreaterThanOrEqual(3);
  expect(faults.stops).toHaveLength(1);
  expect(faults.restarts).toHaveLength(1);
  expect(faults.rollbacks).toHaveLength(1);
  expect(report.rerunsByCause.rollback).toBeGreaterThan(0);
  // The promises.
  expect(completed).toBe(true);
  expect(report.lost).toEqual([]);
  expect(report.committedTwiceDetail).toEqual([]);
  expect(report.unexplained).toEqual([]);
  expect(report.phantomCommits).toEqual([]);
  expect(report.staleCommits).toEqual([]);
  expect(report).toMatchObject({ items: 20_000, lostCount: 0, committedTwice: 0, unfinished: 0 });
  expect(report.succeededOnce + report.ranMoreThanOnce + report.deadLettered).toBe(20_000);
  // Items designed to fail on every attempt are the dead letters (faults could add one only by
  // exhausting 10 attempts of an item, and then the checker would name its causes).
  expect(report.deadLettered).toBe(failAlways.length);
  expect(report.counters).toMatchObject({ total: 20_000, succeeded: 20_000 - failAlways.length, failed: failAlways.length, results: 20_000 - failAlways.length });
});
