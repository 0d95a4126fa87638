import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { BatchQueue, connectRedis, type BatchSnapshot, type DeadLetter, type ItemInput } from '../queue/index.js';
import type { WorkerResult } from './batch-worker.js';
import { ConfigError, helpText, loadConfig, parseFlags, SECRET_ENV, type WorkerConfig } from './config.js';
import { EXIT_CODES } from './exit-codes.js';
import { createLogger, type Logger } from './log.js';
import { runWorker } from './run.js';

export interface LocalRunOptions {
  config: WorkerConfig;
  /** Items to enqueue first: a JSON Lines file (one item's data per line) or data values. */
  items?: { file: string } | { data: readonly unknown[] };
  /** Create the batch if missing (default: when items are given). */
  create?: boolean;
  /** Close the batch after enqueueing, so the worker exits when it drains (default true). */
  close?: boolean;
  /** Attempts per item when the batch is created here (default 3). */
  maxAttempts?: number;
  /** Where the progress display goes (default process.stderr; false = none). */
  progress?: NodeJS.WritableStream | false;
  logger?: Logger;
  /** Install SIGINT/SIGTERM handlers (default true). */
  handleSignals?: boolean;
}

export interface LocalRunResult {
  result: WorkerResult;
  snapshot: BatchSnapshot | undefined;
  enqueued: number;
  /** Up to 5 dead-lettered items, for the summary. */
  deadLetters: DeadLetter[];
}

const ENQUEUE_BATCH = 5000;

/**
 * Runs one worker against a batch in a given Redis, from the terminal: optionally creates
 * the batch and enqueues items from a JSON Lines file (ids "line-<n>", so re-running the
 * same command adds nothing twice), shows progress, and returns when the batch completes.
 */
export async function runLocal(o: LocalRunOptions): Promise<LocalRunResult> {
  const config = o.config;
  const redis = connectRedis({
    url: config.redis.url,
    ...(config.redis.username ? { username: config.redis.username } : {}),
    ...(config.redis.password ? { password: config.redis.password } : {}),
    ...(config.redis.tls ? { tls: config.redis.tls } : {}),
    cluster: config.redis.cluster,
    ...(config.redis.sentinel ? { sentinel: config.redis.sentinel } : {}),
  });
  const ref = { namespace: config.batch.namespace, name: config.batch.name };
  const queue = new BatchQueue(redis, ref, { prefix: config.redis.prefix, durability: config.redis.durability, replicaTimeoutMs: config.redis.replicaTimeoutMs });
  const out = o.progress === undefined ? process.stderr : o.progress;
  let enqueued = 0;
  let display: NodeJS.Timeout | undefined;
  try {
    if (o.items || o.create) {
      const { epoch, created } = await queue.create({ maxAttempts: o.maxAttempts ?? 3 });
      if (out) out.write(`${created ? 'Created' : 'Found'} batch ${ref.namespace}/${ref.name} (epoch ${epoch})\n`);
    }
    if (o.items) {
      if ((await queue.snapshot()).closed) {
        // A re-run of the same command: the batch was filled and closed before.
        if (out) out.write('The batch is closed: enqueued nothing new\n');
      } else {
        enqueued = 'file' in o.items ? await enqueueFile(queue, o.items.file) : await enqueueData(queue, o.items.data);
        if (out) out.write(`Enqueued ${enqueued} new items\n`);
        if (o.close !== false) await queue.close();
      }
    }
    const started = Date.now();
    let last: { at: number; done: number } | undefined;
    const tty = out && 'isTTY' in out && (out as NodeJS.WriteStream).isTTY === true;
    const render = async (final = false): Promise<void> => {
      if (!out) return;
      let s: BatchSnapshot;
      try {
        s = await queue.snapshot();
      } catch {
        return;
      }
      const done = s.succeeded + s.failed;
      const now = Date.now();
      const elapsed = (now - started) / 1000;
      const rate = final ? done / Math.max(elapsed, 0.001) : last && now > last.at ? ((done - last.done) * 1000) / (now - last.at) : 0;
      last = { at: now, done };
      const line = progressLine(s, rate, elapsed);
      if (tty) out.write(`\r${line}\u001b[K${final ? '\n' : ''}`);
      else out.write(`${line}\n`);
    };
    if (out) display = setInterval(() => void render(), tty ? 250 : 2000);
    const result = await runWorker(config, { ...(o.logger ? { logger: o.logger } : {}), handleSignals: o.handleSignals ?? true });
    clearInterval(display);
    display = undefined;
    await render(true);
    let snapshot: BatchSnapshot | undefined;
    let deadLetters: DeadLetter[] = [];
    try {
      snapshot = await queue.snapshot();
      if (snapshot.failed > 0) deadLetters = (await queue.deadLetters('0', 5)).items.slice(0, 5);
    } catch {
      snapshot = undefined;
    }
    if (out) {
      out.write(`${result.message}\n`);
      for (const d of deadLetters) out.write(`  failed ${d.id} after ${d.attempts} attempt(s): ${d.error.name}: ${d.error.message.split('\n')[0]}\n`);
    }
    return { result, snapshot, enqueued, deadLetters };
  } finally {
    clearInterval(display);
    redis.disconnect();
  }
}

export function progressLine(s: BatchSnapshot, ratePerSec: number, elapsedSec: number): string {
  const done = s.succeeded + s.failed;
  const width = 24;
  const filled = s.total > 0 ? Math.round((done / s.total) * width) : 0;
  const bar = `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}]`;
  return `${bar} ${done}/${s.total}  ok ${s.succeeded}  failed ${s.failed}  retries ${s.retries}  running ${s.running}  pending ${s.pending + s.delayed}  ${Math.round(ratePerSec)}/s  ${elapsedSec.toFixed(1)}s`;
}

async function enqueueFile(queue: BatchQueue, file: string): Promise<number> {
  const lines = createInterface({ input: createReadStream(file), crlfDelay: Infinity });
  let n = 0;
  let added = 0;
  let chunk: ItemInput[] = [];
  for await (const line of lines) {
    n++;
    if (line.trim() === '') continue;
    let data: unknown;
    try {
      data = JSON.parse(line);
    } catch (err) {
      throw new Error(`${file}:${n}: not valid JSON: ${(err as Error).message}`);
    }
    chunk.push({ id: `line-${n}`, data });
    if (chunk.length >= ENQUEUE_BATCH) {
      added += (await queue.enqueueMany(chunk)).added;
      chunk = [];
    }
  }
  if (chunk.length > 0) added += (await queue.enqueueMany(chunk)).added;
  return added;
}

async function enqueueData(queue: BatchQueue, data: readonly unknown[]): Promise<number> {
  let added = 0;
  for (let i = 0; i < data.length; i += ENQUEUE_BATCH) {
    added += (await queue.enqueueMany(data.slice(i, i + ENQUEUE_BATCH).map((d, j) => ({ id: `item-${i + j + 1}`, data: d })))).added;
  }
  return added;
}

const LOCAL_FLAGS = {
  items: { type: 'string' },
  create: { type: 'boolean' },
  open: { type: 'boolean' },
  'max-attempts': { type: 'string' },
  'no-progress': { type: 'boolean' },
} as const;

const LOCAL_HELP = `
Local run: taskbatch-worker --local [flags] [--items items.jsonl] [--create] [--open] [--max-attempts N] [--no-progress]
  Runs one worker against a batch in the given Redis (default redis://127.0.0.1:6379), with a
  progress display, and exits when the batch is complete: 0 if every item succeeded, 6 if some
  failed permanently. --items creates the batch (if missing), enqueues one item per JSON line
  (ids line-<n>, so re-running adds nothing twice) and closes it unless --open.
  Local defaults: --batch local, --pool-mode thread, --metrics-port off, --log-level warn.
`;

/** `taskbatch-worker --local ...` */
export async function runLocalCli(argv: string[]): Promise<number> {
  let config: WorkerConfig;
  let flags: Record<string, string | boolean | undefined>;
  try {
    const parsed = parseFlags(argv, LOCAL_FLAGS);
    if (parsed.help) {
      process.stdout.write(helpText(LOCAL_HELP));
      return EXIT_CODES.ok;
    }
    flags = parsed.flags;
    const env = {
      TASKBATCH_REDIS_URL: 'redis://127.0.0.1:6379',
      TASKBATCH_BATCH: 'local',
      TASKBATCH_METRICS_PORT: 'off',
      TASKBATCH_LOG_LEVEL: 'warn',
      TASKBATCH_WORKER_ID: `local-${process.pid}`,
      TASKBATCH_STATE_LOST_EXIT_SECONDS: '5',
      TASKBATCH_SHUTDOWN_GRACE_SECONDS: '5',
      ...process.env,
    };
    config = loadConfig(env, flags);
    const maxAttempts = flags['max-attempts'];
    if (maxAttempts !== undefined && !/^\d+$/.test(String(maxAttempts))) throw new ConfigError([`--max-attempts must be a positive integer, got ${JSON.stringify(maxAttempts)}`]);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`taskbatch-worker --local: ${err.message}\n`);
      return EXIT_CODES.config;
    }
    throw err;
  }
  for (const name of SECRET_ENV) delete process.env[name];
  process.on('unhandledRejection', (reason) => {
    process.stderr.write(`\nIgnored an unhandled promise rejection: ${reason instanceof Error ? reason.message : String(reason)}\n`);
  });
  const logger = createLogger({ level: config.logLevel, base: { worker: config.workerId }, write: (line) => void process.stderr.write(`\n${line}`) });
  const itemsFile = typeof flags.items === 'string' ? flags.items : undefined;
  const { result, snapshot } = await runLocal({
    config,
    ...(itemsFile ? { items: { file: itemsFile } } : {}),
    create: flags.create === true || itemsFile !== undefined,
    close: flags.open !== true,
    ...(flags['max-attempts'] !== undefined ? { maxAttempts: Number(flags['max-attempts']) } : {}),
    progress: flags['no-progress'] === true ? false : process.stderr,
    logger,
  });
  if (result.exitCode !== EXIT_CODES.ok) return result.exitCode;
  return snapshot && snapshot.failed > 0 ? EXIT_CODES.itemsFailed : EXIT_CODES.ok;
}
