// Where a remote call's time and Redis work go, hop by hop:
//   npm run build && node dist/bench/sdk-hops.js [--calls 2000]
// One redis-server, one worker process (async pool), the SDK client in this process. Prints
// (1) the round trip of each queue transition a call uses, timed alone from this process;
// (2) a call back to back split at the handler's start (CLOCK_MONOTONIC, the same clock in
//     every process): enqueue + wake-up + claim before it, run + complete + reply after it;
// (3) Redis commands per call from INFO commandstats (scripts' inner calls included).
import { Redis } from 'ioredis';
import { BatchQueue } from '../queue/index.js';
import { connect } from '../sdk/index.js';
import { startRedisServer } from '../localcluster/redis-server.js';
import { spawnWorker } from '../test/support/worker-harness.js';
import type * as BenchHandlers from './sdk-handlers.js';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const CALLS = Number(args[args.indexOf('--calls') + 1] || 2000) || 2000;
const HANDLERS = fileURLToPath(new URL('./sdk-handlers.js', import.meta.url));

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
};
const f = (n: number): string => n.toFixed(3);

async function timed(n: number, op: (i: number) => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await op(i);
    out.push(performance.now() - t);
  }
  return out;
}

async function commandstats(admin: Redis): Promise<Map<string, number>> {
  const m = new Map<string, number>();
  for (const line of (await admin.info('commandstats')).split('\n')) {
    const r = /^cmdstat_([^:]+):calls=(\d+)/.exec(line);
    if (r) m.set(r[1]!, Number(r[2]));
  }
  return m;
}

async function main(): Promise<void> {
  const server = await startRedisServer();
  const admin = new Redis(server.port, server.host);
  const row = (hop: string, xs: number[]): void => console.log(`| ${hop} | ${f(pct(xs, 50))} | ${f(pct(xs, 99))} |`);
  console.log('| hop (timed alone, this process) | p50 ms | p99 ms |\n|---|---:|---:|');
  row('Redis PING', await timed(CALLS, () => admin.ping()));
  const q = new BatchQueue(admin, { namespace: 'bench', name: 'hops' });
  await q.create({ maxAttempts: 1 });
  row('enqueue (enqueue.lua, pushes the wake token)', await timed(CALLS, (i) => q.enqueue({ id: `x${i}`, data: i })));
  const claims: Awaited<ReturnType<BatchQueue['claim']>>['items'] = [];
  row(
    'claim of 1 (claim.lua)',
    await timed(CALLS, async () => {
      claims.push(...(await q.claim(1, 60_000)).items);
    }),
  );
  row('complete of 1 (complete.lua)', await timed(CALLS, (i) => q.complete([{ claim: claims[i]!, result: i }])));
  await q.purge();

  const client = await connect({ redis: server.url, namespace: 'bench' });
  const name = 'hops-service';
  await client.batch(name).create({ maxAttempts: 1 });
  const worker = spawnWorker({
    TASKBATCH_REDIS_URL: server.url,
    TASKBATCH_NAMESPACE: 'bench',
    TASKBATCH_BATCH: name,
    TASKBATCH_HANDLER: JSON.stringify({ module: HANDLERS, dispatch: 'fn' }),
    TASKBATCH_POOL_MODE: 'async',
    TASKBATCH_POOL_SIZE: '256',
    TASKBATCH_METRICS_PORT: 'off',
    TASKBATCH_LOG_LEVEL: 'warn',
    TASKBATCH_HEARTBEAT_SECONDS: '',
    TASKBATCH_PRESENCE_STALE_SECONDS: '',
  });
  const svc = client.proxy<typeof BenchHandlers>(name, { timeoutMs: 60_000 });
  try {
    for (let i = 0; i < 500; i++) await svc.square(i); // warm up
    await new Promise((r) => setTimeout(r, 300));
    const before = await commandstats(admin);
    const toStart: number[] = [];
    const afterStart: number[] = [];
    const total: number[] = [];
    for (let i = 0; i < CALLS; i++) {
      const t0 = process.hrtime.bigint();
      const startedNs = BigInt(await svc.startedAtNs());
      const t1 = process.hrtime.bigint();
      toStart.push(Number(startedNs - t0) / 1e6);
      afterStart.push(Number(t1 - startedNs) / 1e6);
      total.push(Number(t1 - t0) / 1e6);
    }
    const after = await commandstats(admin);
    console.log('\n| a call back to back (async pool) | p50 ms | p99 ms |\n|---|---:|---:|');
    row('call → handler start (enqueue, wake-up, claim)', toStart);
    row('handler start → result in the caller (run, complete, reply)', afterStart);
    row('whole call', total);
    console.log(`\nRedis commands per call (INFO commandstats over ${CALLS} calls; heartbeats included):\n`);
    console.log('| command | per call |\n|---|---:|');
    const diff = [...after].map(([k, v]) => [k, (v - (before.get(k) ?? 0)) / CALLS] as const).filter(([k, v]) => v >= 0.01 && k !== 'info');
    for (const [k, v] of diff.sort((a, b) => b[1] - a[1])) console.log(`| ${k} | ${v.toFixed(2)} |`);
    console.log(`| total | ${diff.reduce((s, [, v]) => s + v, 0).toFixed(2)} |`);
  } finally {
    await client.close();
    worker.kill('SIGTERM');
    await worker.exited;
    admin.disconnect();
    await server.stop();
  }
}

void main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
