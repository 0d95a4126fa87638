// The BullMQ peer of bench/sdk-calls.ts, in its own process like taskbatch's worker:
//   node dist/bench/sdk-peer-bullmq-worker.js <redisUrl> <queueName> <concurrency>
// Answers jobs "square" ({x} → x*x) and "startedAtNs" (when the processor started, on
// CLOCK_MONOTONIC, as a string of ns). Prints "ready" once connected; SIGTERM closes it.
import { Worker, type Job } from 'bullmq';

const [redisUrl = 'redis://127.0.0.1:6379', queueName = 'sdk-bench', concurrencyText = '256'] = process.argv.slice(2);
const url = new URL(redisUrl);
const worker = new Worker(queueName, async (job: Job<{ x: number }>) => (job.name === 'startedAtNs' ? process.hrtime.bigint().toString() : job.data.x * job.data.x), {
  connection: { host: url.hostname, port: Number(url.port), maxRetriesPerRequest: null },
  concurrency: Number(concurrencyText),
});
worker.on('error', (err) => process.stderr.write(`bullmq worker error: ${err.message}\n`));
await worker.waitUntilReady();
process.stdout.write('ready\n');
process.once('SIGTERM', () => {
  void worker.close().then(() => process.exit(0));
});
