// One measured run for bench/worker-modes.ts, in a fresh process:
//   node dist/bench/worker-bench-run.js <taskbatch|bullmq> <thread|process|async> <size> <items> <redisUrl> [handler] [itemJson]
// Seeds a queue with <items> jobs, starts a worker, and prints one JSON line:
//   {system, mode, size, items, seconds, itemsPerSec}
// Time runs from "executors ready" to "last item recorded", so process start-up and
// seeding are excluded for both systems.
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { Queue, Worker, type Job } from 'bullmq';
import { BatchQueue } from '../queue/index.js';
import { loadConfig } from '../worker/config.js';
import { createLogger } from '../worker/log.js';
import { runWorker } from '../worker/run.js';

const [system = 'taskbatch', mode = 'async', sizeText = '2', itemsText = '10000', redisUrl = 'redis://127.0.0.1:6379', handler = 'noop', itemJson = 'null'] = process.argv.slice(2);
const size = Number(sizeText);
const items = Number(itemsText);
const name = `bench-${system}-${mode}-${size}-${process.pid}`;
const item = JSON.parse(itemJson) as unknown;

async function runTaskbatch(): Promise<number> {
  const url = new URL(redisUrl);
  const redis = new Redis(Number(url.port), url.hostname);
  const queue = new BatchQueue(redis, { namespace: 'bench', name });
  await queue.create({ maxAttempts: 1 });
  for (let i = 0; i < items; i += 10_000) await queue.enqueueMany(Array.from({ length: Math.min(10_000, items - i) }, () => ({ data: item })));
  await queue.close();
  const config = loadConfig({
    TASKBATCH_REDIS_URL: redisUrl,
    TASKBATCH_NAMESPACE: 'bench',
    TASKBATCH_BATCH: name,
    TASKBATCH_HANDLER: handler,
    TASKBATCH_POOL_MODE: mode,
    TASKBATCH_POOL_SIZE: String(size),
    TASKBATCH_METRICS_PORT: 'off',
    TASKBATCH_WORKER_ID: name,
    TASKBATCH_LOG_LEVEL: 'info',
    // Passed through so a run can compare the two ways of charging a dead worker's items.
    ...(process.env.TASKBATCH_CHARGE_ONLY_STARTED ? { TASKBATCH_CHARGE_ONLY_STARTED: process.env.TASKBATCH_CHARGE_ONLY_STARTED } : {}),
  });
  let t0 = 0;
  let t1 = 0;
  const logger = createLogger({
    level: 'info',
    write: (line) => {
      if (line.includes('"msg":"Started worker"')) t0 = performance.now();
      else if (line.includes('"msg":"Batch is complete"')) t1 = performance.now();
      else if (line.includes('"level":"error"') || line.includes('"level":"warn"')) process.stderr.write(line);
    },
  });
  const result = await runWorker(config, { logger, handleSignals: false, watchdog: false });
  const snap = await queue.snapshot();
  await queue.purge();
  redis.disconnect();
  if (result.exitCode !== 0 || snap.succeeded !== items) throw new Error(`run failed: ${JSON.stringify(result)} ${JSON.stringify(snap)}`);
  return (t1 - t0) / 1000;
}

async function runBullmq(): Promise<number> {
  const url = new URL(redisUrl);
  const connection = { host: url.hostname, port: Number(url.port), maxRetriesPerRequest: null };
  const queue = new Queue(name, { connection });
  for (let i = 0; i < items; i += 1000) {
    await queue.addBulk(Array.from({ length: Math.min(1000, items - i) }, (_, j) => ({ name: 'noop', data: { i: i + j }, opts: { removeOnComplete: true, removeOnFail: true } })));
  }
  const processorFile = fileURLToPath(new URL('./worker-bullmq-noop.js', import.meta.url));
  const worker =
    mode === 'async'
      ? new Worker(name, async (_job: Job) => undefined, { connection, concurrency: size, autorun: false })
      : new Worker(name, processorFile, { connection, concurrency: size, autorun: false, useWorkerThreads: mode === 'thread' });
  await worker.waitUntilReady();
  let done = 0;
  let t1 = 0;
  const finished = new Promise<void>((resolve) => {
    worker.on('completed', () => {
      if (++done === items) {
        t1 = performance.now();
        resolve();
      }
    });
    worker.on('failed', (_job, err) => process.stderr.write(`bullmq job failed: ${err.message}\n`));
  });
  const t0 = performance.now();
  void worker.run();
  await finished;
  await worker.close();
  await queue.obliterate({ force: true });
  await queue.close();
  return (t1 - t0) / 1000;
}

const seconds = system === 'bullmq' ? await runBullmq() : await runTaskbatch();
process.stdout.write(`${JSON.stringify({ system, mode, size, items, seconds: +seconds.toFixed(3), itemsPerSec: Math.round(items / seconds) })}\n`);
process.exit(0);
