// Remote calls through the SDK's typed proxy: calls/s and round-trip latency (p50/p99), end to
// end — caller → Redis (enqueue) → a real worker process (claim, run, batched acknowledgement)
// → Redis (complete.lua announces the result) → caller.
//   npm run build && node dist/bench/sdk-calls.js [--quick] [--idle-poll-ms 10] [--pool-size 256]
// Prints Markdown tables (paste into bench/sdk.md). One redis-server and one worker process,
// started here; the client runs in this process. CPU per call is read from /proc.
import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { Redis } from 'ioredis';
import { connect } from '../sdk/index.js';
import type * as MathModule from '../examples/handlers/math.js';
import { startRedisServer } from '../localcluster/redis-server.js';
import { spawnWorker } from '../test/support/worker-harness.js';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const flag = (name: string, dflt: number): number => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const quick = args.includes('--quick');
const IDLE_POLL_MS = flag('idle-poll-ms', 10);
const POOL_SIZE = flag('pool-size', 256);
const SECONDS = quick ? 2 : 5;
const MATH = fileURLToPath(new URL('../examples/handlers/math.js', import.meta.url));

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** CPU ms (user + system) of a process, from /proc/<pid>/stat. */
function cpuMs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  return (ticks * 1000) / 100; // USER_HZ = 100 on Linux
}

interface Row {
  scenario: string;
  calls: number;
  seconds: number;
  callsPerSec: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  cpuUsPerCall: { client: number; worker: number; redis: number };
}

async function main(): Promise<void> {
  const server = await startRedisServer();
  const admin = new Redis(server.port, server.host);
  const redisPid = Number(/process_id:(\d+)/.exec(await admin.info('server'))?.[1]);
  const client = await connect({ redis: server.url, namespace: 'bench' });
  const name = 'math-service';
  await client.batch(name).create({ maxAttempts: 1 });
  const worker = spawnWorker({
    TASKBATCH_REDIS_URL: server.url,
    TASKBATCH_NAMESPACE: 'bench',
    TASKBATCH_BATCH: name,
    TASKBATCH_HANDLER: JSON.stringify({ module: MATH, dispatch: 'fn' }),
    TASKBATCH_POOL_MODE: 'async',
    TASKBATCH_POOL_SIZE: String(POOL_SIZE),
    TASKBATCH_IDLE_POLL_MS: String(IDLE_POLL_MS),
    TASKBATCH_METRICS_PORT: 'off',
    TASKBATCH_LOG_LEVEL: 'warn',
    TASKBATCH_HEARTBEAT_SECONDS: '5',
    TASKBATCH_PRESENCE_STALE_SECONDS: '30',
  });
  const math = client.proxy<typeof MathModule>(name, { timeoutMs: 60_000 });
  const rows: Row[] = [];
  try {
    // Warm up: executors, JIT, connections.
    await Promise.all(Array.from({ length: 2000 }, (_, i) => math.square(i)));

    const measure = async (scenario: string, run: (lat: number[]) => Promise<number>): Promise<void> => {
      const lat: number[] = [];
      const c0 = process.cpuUsage();
      const w0 = cpuMs(worker.pid);
      const r0 = cpuMs(redisPid);
      const t0 = performance.now();
      const calls = await run(lat);
      const seconds = (performance.now() - t0) / 1000;
      const c1 = process.cpuUsage(c0);
      const cpu = { client: (c1.user + c1.system) / calls, worker: ((cpuMs(worker.pid) - w0) * 1000) / calls, redis: ((cpuMs(redisPid) - r0) * 1000) / calls };
      lat.sort((a, b) => a - b);
      rows.push({
        scenario,
        calls,
        seconds,
        callsPerSec: calls / seconds,
        p50: percentile(lat, 50),
        p90: percentile(lat, 90),
        p99: percentile(lat, 99),
        max: lat[lat.length - 1] ?? NaN,
        cpuUsPerCall: cpu,
      });
      process.stderr.write(`${scenario}: ${Math.round(calls / seconds)} calls/s, p50 ${percentile(lat, 50).toFixed(2)} ms, p99 ${percentile(lat, 99).toFixed(2)} ms\n`);
    };

    const closedLoop =
      (concurrency: number) =>
      async (lat: number[]): Promise<number> => {
        const until = performance.now() + SECONDS * 1000;
        let calls = 0;
        await Promise.all(
          Array.from({ length: concurrency }, async (_, k) => {
            let i = k;
            while (performance.now() < until) {
              const t = performance.now();
              await math.square(i++);
              lat.push(performance.now() - t);
              calls++;
            }
          }),
        );
        return calls;
      };

    // The floor: one Redis round trip from this process.
    await measure('Redis PING (floor: one round trip)', async (lat) => {
      const until = performance.now() + 1000;
      let n = 0;
      while (performance.now() < until) {
        const t = performance.now();
        await admin.ping();
        lat.push(performance.now() - t);
        n++;
      }
      return n;
    });
    for (const c of [1, 10, 100, 1000]) await measure(`${c} concurrent caller${c === 1 ? '' : 's'}, back to back`, closedLoop(c));
    await measure('burst: 1,000 calls at once', async (lat) => {
      const t0 = performance.now();
      await Promise.all(Array.from({ length: 1000 }, (_, i) => math.square(i).then(() => lat.push(performance.now() - t0))));
      return 1000;
    });
    await measure('burst: 10,000 calls at once', async (lat) => {
      const t0 = performance.now();
      await Promise.all(Array.from({ length: 10_000 }, (_, i) => math.square(i).then(() => lat.push(performance.now() - t0))));
      return 10_000;
    });
    // An idle service: the first call after a pause waits for the worker's next idle poll.
    await measure(`idle service: one call after 300 ms of quiet (worker idle poll ${IDLE_POLL_MS} ms)`, async (lat) => {
      for (let i = 0; i < (quick ? 10 : 30); i++) {
        await new Promise((r) => setTimeout(r, 300));
        const t = performance.now();
        await math.square(i);
        lat.push(performance.now() - t);
      }
      return quick ? 10 : 30;
    });
  } finally {
    await client.close();
    worker.kill('SIGTERM');
    await worker.exited;
    admin.disconnect();
    await server.stop();
  }

  const f = (n: number, d = 2): string => (Number.isFinite(n) ? n.toFixed(d) : '-');
  console.log(
    `\nMachine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}; Node ${process.version}; loadavg before/after ${loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')}`,
  );
  console.log(
    `Worker: 1 process, async pool ${POOL_SIZE}, idle poll ${IDLE_POLL_MS} ms, acks batched (100 items / 5 ms); handler examples/handlers/math.ts square(); ${SECONDS} s per closed-loop run.\n`,
  );
  console.log('| scenario | calls | calls/s | p50 ms | p90 ms | p99 ms | max ms | CPU µs/call client / worker / redis |');
  console.log('|---|---:|---:|---:|---:|---:|---:|---|');
  for (const r of rows) {
    console.log(
      `| ${r.scenario} | ${r.calls} | ${Math.round(r.callsPerSec)} | ${f(r.p50)} | ${f(r.p90)} | ${f(r.p99)} | ${f(r.max, 1)} | ${r.scenario.startsWith('Redis PING') ? '-' : `${f(r.cpuUsPerCall.client, 0)} / ${f(r.cpuUsPerCall.worker, 0)} / ${f(r.cpuUsPerCall.redis, 0)}`} |`,
    );
  }
  console.log('\nBurst rows: latency = time from the burst start until each call resolved.');
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
