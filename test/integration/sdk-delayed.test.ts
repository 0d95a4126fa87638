// Delayed items (Celery's countdown/eta) through the SDK, and the proof that a delay longer than
// the lease never runs an item twice. Celery on Redis hands ETA tasks to a worker at once; the
// worker holds them unacknowledged until their time, and when that is longer than the broker's
// visibility timeout Redis redelivers them to another worker: the task runs twice. Here a
// delayed item sits in the batch's `delayed` set and is not claimable until due; its lease
// starts when a worker claims it, so the delay and the lease never interact.
import { jest } from '@jest/globals';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type TaskBatchClient } from '../../sdk/index.js';
import { startRedisServer, type RedisServer } from '../../localcluster/redis-server.js';
import { sdkBatchName, spawnCallWorker, stopWorker } from '../support/sdk-env.js';
import type { SpawnedWorker } from '../support/worker-harness.js';

jest.setTimeout(60_000);

const NS = 'delayed';
let server: RedisServer;
let client: TaskBatchClient;
let dir: string;

beforeAll(async () => {
  server = await startRedisServer();
  client = await connect({ redis: server.url, namespace: NS });
  dir = mkdtempSync(join(tmpdir(), 'tb-delayed-'));
});

afterAll(async () => {
  await client?.close();
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('items delayed 3-5x the lease run exactly once each, never before they are due, across 3 prefetching workers', async () => {
  const name = sdkBatchName('eta');
  const file = join(dir, 'runs.jsonl');
  const b = client.batch(name);
  // Retries allowed: a second delivery would show up as a second run (and a retry).
  await b.create({ maxAttempts: 3, backoff: { initialMs: 0, maxMs: 0, jitter: 0 } });
  const leaseSeconds = 1;
  const workers: SpawnedWorker[] = [];
  for (let i = 0; i < 3; i++) {
    workers.push(spawnCallWorker(server.url, NS, name, { TASKBATCH_LEASE_SECONDS: String(leaseSeconds), TASKBATCH_POOL_SIZE: '8', TASKBATCH_PREFETCH_MAX: '256' }));
  }
  try {
    const t0 = Date.now();
    const due = new Map<string, number>();
    const items = [];
    for (let i = 0; i < 40; i++) {
      const delayMs = 3000 + (i % 5) * 500; // 3-5 leases
      items.push({ id: `countdown-${i}`, data: { fn: 'record', args: [file] }, delayMs });
      due.set(`countdown-${i}`, t0 + delayMs);
    }
    for (let i = 0; i < 10; i++) {
      const at = t0 + 4000;
      items.push({ id: `eta-${i}`, data: { fn: 'record', args: [file] }, notBefore: new Date(at) });
      due.set(`eta-${i}`, at);
    }
    await b.submitMany(items);
    // A few immediate items keep the workers claiming (and prefetching) meanwhile.
    await b.submitMany(Array.from({ length: 20 }, (_, i) => ({ id: `now-${i}`, data: { fn: 'record', args: [file] } })));

    await new Promise((r) => setTimeout(r, 2000)); // two leases later: nothing delayed is held by a worker
    const mid = await b.status();
    expect(mid.counts).toMatchObject({ delayed: 50, running: 0, succeeded: 20 });

    await b.close();
    const r = await b.wait({ intervalMs: 100, timeoutMs: 30_000 });
    expect(r.progress).toMatchObject({ total: 70, succeeded: 70, failed: 0, retries: 0 });

    const runs = readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { id: string; attempt: number; at: number; pid: number });
    const perId = new Map<string, number>();
    for (const run of runs) perId.set(run.id, (perId.get(run.id) ?? 0) + 1);
    expect(runs).toHaveLength(70);
    expect([...perId.values()].every((n) => n === 1)).toBe(true);
    expect(runs.every((run) => run.attempt === 1)).toBe(true);
    for (const run of runs) {
      const d = due.get(run.id);
      if (d !== undefined) expect(run.at).toBeGreaterThanOrEqual(d - 50); // Redis's clock vs this one: same machine
    }
    // Several workers took part.
    expect(new Set(runs.map((x) => x.pid)).size).toBeGreaterThan(1);
  } finally {
    await Promise.all(workers.map((w) => stopWorker(w)));
    expect(existsSync(file)).toBe(true);
  }
});
