import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { allowedFailures } from '../../api/failure-policy.js';
import { itemSource, itemsField, SeedError } from '../../api/items.js';
import type { TaskBatch, TaskBatchSpec } from '../../api/taskbatch.js';
import { SPEC_DEFAULTS } from '../../api/types.generated.js';
import { workerSettingsEnv } from '../../api/worker-settings.js';
import { connect, formatDuration, formatProgress, ProgressTracker } from '../../sdk/index.js';
import { ConfigError, createLogger, EXIT_CODES, loadConfig, runLocal } from '../../worker/index.js';
import type { Command, IO } from '../command.js';
import { bool, EXIT, parsePositiveInt, str, UsageError, type Parsed } from '../common.js';

const USAGE = 'taskbatch run FILE.yaml [--items FILE] [--redis-url URL] [flags]';

export const run: Command = {
  name: 'run',
  summary: 'Run a TaskBatch manifest locally, without Kubernetes',
  usage: USAGE,
  connection: false,
  flags: {
    items: { type: 'string' },
    'redis-url': { type: 'string' },
    'app-dir': { type: 'string' },
    'pool-size': { type: 'string' },
    'no-progress': { type: 'boolean' },
    results: { type: 'boolean' },
    'log-level': { type: 'string' },
  },
  help: `Runs a TaskBatch manifest on this machine, to try a batch before deploying it: starts a
throw-away redis-server (unless --redis-url), creates the batch with the manifest's retry
policy, enqueues its items (spec.items, spec.range, or spec.itemsFrom from a ConfigMap in the
same file, or --items), runs one worker with the manifest's handler and pool (mode, size,
timeouts, lease) and shows progress until the batch is done. The handler's module path is
resolved like in the worker image: relative to the working directory (or --app-dir, which
also stands for /app/), so examples/…yaml work from the repository root after a build.

An open batch (spec.open: true) is served until Ctrl-C; add items from another terminal with
\`taskbatch submit NAME --redis-url URL\` (the URL is printed at start).

      --items FILE          JSON Lines items instead of (or for) the manifest's source
      --redis-url URL       Use this Redis instead of starting one (the batch stays there)
      --app-dir DIR         Where the worker image's /app/ is (default: the working directory)
      --pool-size N         Override spec.pool.size
      --no-progress         No progress display
      --results             Print the results as JSON Lines on stdout at the end
      --log-level LEVEL     Worker log level on stderr (default warn)

Exit code: 0 when the batch completed within its failure policy, 5 when too many items failed,
2 for a bad manifest or handler, 4 when no Redis could be started or reached, 130 on Ctrl-C.

Examples:
  taskbatch run examples/math-batch.yaml
  taskbatch run my-batch.yaml --items inputs.jsonl --results > results.jsonl`,
  async run(p: Parsed, io: IO): Promise<number> {
    const file = p.positionals[0];
    if (!file) throw new UsageError(`missing the manifest FILE\nusage: ${USAGE}`);
    if (p.positionals.length > 1) throw new UsageError(`unexpected argument ${JSON.stringify(p.positionals[1])}\nusage: ${USAGE}`);
    if (!existsSync(file)) throw Object.assign(new Error(`manifest ${file} does not exist`), { exitCode: EXIT.notFound });
    const { batch, configMaps } = readManifest(file);
    const spec = batch.spec;
    const ns = batch.metadata.namespace ?? 'default';
    const name = batch.metadata.name;
    if (!name) throw new UsageError(`${file}: the TaskBatch has no metadata.name`);
    const appDir = resolve(str(p, 'app-dir') ?? process.cwd());
    const handler = localHandler(spec, appDir, dirname(resolve(file)));
    const itemsFile = str(p, 'items');
    if (itemsFile && !existsSync(itemsFile)) throw Object.assign(new Error(`items file ${itemsFile} does not exist`), { exitCode: EXIT.notFound });
    const data = itemsFile ? undefined : inlineItems(spec, configMaps, file);
    const poolSize = parsePositiveInt(str(p, 'pool-size'), '--pool-size') ?? spec.pool?.size ?? SPEC_DEFAULTS['pool.size'];

    let redisUrl = str(p, 'redis-url');
    let local: LocalRedis | undefined;
    if (!redisUrl) {
      local = await startLocalRedis();
      redisUrl = local.url;
    }
    const progressOut = bool(p, 'no-progress') ? undefined : io.stderr;
    try {
      // What the operator sets on a worker pod wins over the template's env; the template's other
      // TASKBATCH_* settings (e.g. TASKBATCH_POOL_MODE) win over these local defaults.
      const operatorSet: Record<string, string> = {
        TASKBATCH_REDIS_URL: redisUrl,
        TASKBATCH_NAMESPACE: ns,
        TASKBATCH_BATCH: name,
        // The same settings a worker pod gets (api/worker-settings.ts), with the local handler path.
        ...workerSettingsEnv({ ...spec, handler, pool: { ...spec.pool, size: poolSize } }),
        TASKBATCH_METRICS_PORT: 'off',
        TASKBATCH_WORKER_ID: `local-${process.pid}`,
      };
      const localDefaults: Record<string, string> = {
        TASKBATCH_LOG_LEVEL: 'warn',
        TASKBATCH_STATE_LOST_EXIT_SECONDS: '5',
        TASKBATCH_SHUTDOWN_GRACE_SECONDS: '5',
      };
      const fromTemplate = templateEnv(spec);
      const env: Record<string, string> = { ...localDefaults, ...fromTemplate, ...operatorSet, ...(str(p, 'log-level') ? { TASKBATCH_LOG_LEVEL: str(p, 'log-level')! } : {}) };
      // The handler sees the template's other variables, as in its pod.
      for (const [k, v] of Object.entries(fromTemplate)) if (!k.startsWith('TASKBATCH_')) process.env[k] = v;
      let config;
      try {
        config = loadConfig(env, {}, process.cwd());
      } catch (err) {
        if (err instanceof ConfigError) throw new UsageError(`${file}: ${err.message}`);
        throw err;
      }

      const client = await connect({ redis: redisUrl, namespace: ns, connectTimeoutMs: 5000 });
      let display: NodeJS.Timeout | undefined;
      try {
        const b = client.batch(name);
        const retry = spec.retry ?? {};
        const { created } = await b.create({ maxAttempts: retry.maxAttempts ?? 3, backoff: { ...(retry.backoff ?? {}) } });
        io.stderr.write(`${created ? 'Created' : 'Found'} batch ${ns}/${name} in ${redisUrl}${local ? ' (a local redis-server, removed at exit)' : ''}\n`);
        if (spec.open) {
          io.stderr.write(`Serving open batch ${ns}/${name} until Ctrl-C; add items with:\n  taskbatch submit ${name} -n ${ns} --redis-url ${redisUrl} -f items.jsonl\n`);
        }
        const tracker = new ProgressTracker();
        const tty = io.stderr.isTTY === true;
        const render = async (final = false): Promise<void> => {
          if (!progressOut) return;
          try {
            const s = await b.status();
            const line = formatProgress(tracker.update(s.counts));
            progressOut.write(tty ? `\r${line}\u001b[K${final ? '\n' : ''}` : `${line}\n`);
          } catch {
            // Redis gone at the very end: nothing to show
          }
        };
        if (progressOut) display = setInterval(() => void render(), tty ? 250 : 2000);
        const started = Date.now();
        const { result, snapshot, enqueued, deadLetters } = await runLocal({
          config,
          ...(itemsFile ? { items: { file: itemsFile } } : data ? { items: { data } } : {}),
          create: true,
          close: !spec.open,
          maxAttempts: retry.maxAttempts ?? 3,
          progress: false,
          handleSignals: true,
          // Worker logs go to stderr (stdout is for --results), on their own line.
          logger: createLogger({
            level: config.logLevel,
            base: { worker: config.workerId, batch: name },
            write: (line) => void io.stderr.write(`${tty && progressOut ? '\r\u001b[K' : ''}${line}`),
          }),
        });
        clearInterval(display);
        display = undefined;
        await render(true);
        if (result.reason === 'handlerStart') throw new UsageError(`${file}: the handler could not be loaded: ${result.message}`);
        if (result.exitCode !== EXIT_CODES.ok) {
          io.stderr.write(`taskbatch: the worker stopped: ${result.message}\n`);
          return EXIT.error;
        }
        if (!snapshot?.complete) {
          io.stderr.write(
            `Stopped after ${formatDuration((Date.now() - started) / 1000)}${snapshot ? `: ${snapshot.succeeded} succeeded, ${snapshot.failed} failed, ${snapshot.pending + snapshot.delayed + snapshot.running} not run` : ''}\n`,
          );
          return result.reason === 'shutdown' ? EXIT.interrupted : EXIT.error;
        }
        const allowed = allowedFailures(spec, snapshot.total);
        const ok = snapshot.failed <= allowed;
        io.stderr.write(
          `Batch ${ns}/${name} ${ok ? 'Complete' : 'Failed'}: ${snapshot.succeeded} succeeded, ${snapshot.failed} failed of ${snapshot.total} (${enqueued} enqueued) in ${formatDuration((Date.now() - started) / 1000)}\n`,
        );
        for (const d of deadLetters) io.stderr.write(`  failed ${d.id} after ${d.attempts} attempt(s): ${d.error.name}: ${d.error.message.split('\n')[0]}\n`);
        if (!ok) io.stderr.write(`${snapshot.failed} items failed permanently (allowed by spec.failurePolicy: ${allowed})\n`);
        if (bool(p, 'results')) {
          for await (const r of b.results()) io.stdout.write(`${JSON.stringify({ id: r.id, completedAt: r.completedAt.toISOString(), result: r.result })}\n`);
        }
        return ok ? EXIT.ok : EXIT.failed;
      } finally {
        clearInterval(display);
        await client.close();
      }
    } finally {
      await local?.stop();
    }
  },
};

interface Manifest {
  batch: TaskBatch & { metadata: { name?: string; namespace?: string } };
  configMaps: Map<string, Record<string, string>>;
}

function readManifest(file: string): Manifest {
  let docs: unknown[];
  try {
    const parsed = parseAllDocuments(readFileSync(file, 'utf8'));
    for (const d of parsed) if (d.errors.length) throw new Error(d.errors[0]!.message);
    docs = parsed.map((d) => d.toJS() as unknown).filter((d) => d !== null && d !== undefined);
  } catch (err) {
    throw new UsageError(`${file}: not valid YAML: ${(err as Error).message}`);
  }
  const objects = docs as { kind?: string; apiVersion?: string; metadata?: { name?: string }; data?: Record<string, string>; spec?: unknown }[];
  const batches = objects.filter((o) => o?.kind === 'TaskBatch');
  if (batches.length !== 1) throw new UsageError(`${file}: expected exactly one TaskBatch (kind: TaskBatch), found ${batches.length}`);
  const batch = batches[0] as Manifest['batch'];
  if (!batch.spec || typeof batch.spec !== 'object') throw new UsageError(`${file}: the TaskBatch has no spec`);
  if (!batch.spec.handler) throw new UsageError(`${file}: spec.handler is required`);
  const configMaps = new Map<string, Record<string, string>>();
  for (const o of objects) if (o?.kind === 'ConfigMap' && o.metadata?.name) configMaps.set(o.metadata.name, o.data ?? {});
  return { batch, configMaps };
}

/** spec.handler with module paths resolved the way the worker image would: /app/ and relative paths against appDir. */
function localHandler(spec: TaskBatchSpec, appDir: string, manifestDir: string): TaskBatchSpec['handler'] {
  const h = { ...spec.handler };
  if (h.module) {
    const m = h.module;
    const isPath = m.startsWith('.') || isAbsolute(m) || /\.(c|m)?js$/.test(m);
    if (isPath) {
      const candidates = m.startsWith('/app/') ? [join(appDir, m.slice(5)), m] : isAbsolute(m) ? [m] : [resolve(appDir, m), resolve(manifestDir, m)];
      const found = candidates.find((c) => existsSync(c));
      if (!found) {
        throw new UsageError(
          `spec.handler.module ${m} not found (looked at ${candidates.join(', ')}); build first (npm run build) or point --app-dir at the directory that stands for the image's /app`,
        );
      }
      h.module = found;
    }
  }
  return h;
}

function inlineItems(spec: TaskBatchSpec, configMaps: Map<string, Record<string, string>>, file: string): unknown[] | undefined {
  let data: string | undefined;
  if (spec.itemsFrom) {
    const ref = spec.itemsFrom.configMapKeyRef;
    data = configMaps.get(ref.name)?.[ref.key];
    if (data === undefined) throw new UsageError(`spec.itemsFrom: ConfigMap ${ref.name} (key ${ref.key}) is not in ${file}; add it to the file, or pass the items with --items FILE`);
  }
  // The same item source the operator seeds from (api/items.ts): same ids, same errors.
  const source = itemSource(spec, data);
  if (!source) {
    if (spec.open) return undefined;
    throw new UsageError(`${file}: the TaskBatch has no item source (spec.items, spec.range, spec.itemsFrom or spec.open)`);
  }
  if (source.total > LOCAL_MAX_ITEMS) throw new UsageError(`${itemsField(spec)} has ${source.total} items; run at most ${LOCAL_MAX_ITEMS.toLocaleString('en-US')} locally`);
  try {
    return source.slice(0, source.total).map((item) => item.data);
  } catch (err) {
    if (err instanceof SeedError) throw new UsageError(`spec.itemsFrom: ${err.message}`);
    throw err;
  }
}

const LOCAL_MAX_ITEMS = 10_000_000;

/** Literal env values of the worker container in spec.template (valueFrom needs a cluster). */
function templateEnv(spec: TaskBatchSpec): Record<string, string> {
  const containers = (spec.template?.spec as { containers?: { name?: string; env?: { name: string; value?: string }[] }[] } | undefined)?.containers ?? [];
  const c = containers.find((x) => x.name === 'worker') ?? containers[0];
  return Object.fromEntries((c?.env ?? []).filter((e) => typeof e.value === 'string').map((e) => [e.name, e.value!]));
}

interface LocalRedis {
  url: string;
  stop(): Promise<void>;
}

/** A throw-away redis-server on a free loopback port, without persistence. */
async function startLocalRedis(): Promise<LocalRedis> {
  const port = await new Promise<number>((res, rej) => {
    const srv = createServer();
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      srv.close(() => res(typeof a === 'object' && a ? a.port : 0));
    });
  });
  const dir = mkdtempSync(join(tmpdir(), 'taskbatch-run-'));
  let proc: ChildProcess;
  try {
    proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--protected-mode', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw localRedisError(err);
  }
  await new Promise<void>((res, rej) => {
    let out = '';
    const timer = setTimeout(() => rej(Object.assign(new Error(`redis-server did not start within 10 s: ${out.slice(-500)}`), { exitCode: EXIT.unavailable })), 10_000);
    const onData = (b: Buffer): void => {
      out += b.toString();
      if (out.includes('Ready to accept connections')) {
        clearTimeout(timer);
        res();
      }
    };
    proc.stdout?.on('data', onData);
    proc.stderr?.on('data', onData);
    proc.once('error', (err) => {
      clearTimeout(timer);
      rej(localRedisError(err));
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      rej(Object.assign(new Error(`redis-server exited with code ${code}: ${out.slice(-500)}`), { exitCode: EXIT.unavailable }));
    });
  }).catch((err: unknown) => {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  });
  proc.stdout?.resume();
  proc.stderr?.resume();
  proc.removeAllListeners('exit');
  return {
    url: `redis://127.0.0.1:${port}`,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        await new Promise<void>((res) => {
          const t = setTimeout(() => proc.kill('SIGKILL'), 3000);
          proc.once('exit', () => {
            clearTimeout(t);
            res();
          });
          proc.kill('SIGTERM');
        });
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function localRedisError(err: unknown): Error {
  const e = err as NodeJS.ErrnoException;
  if (e.code === 'ENOENT')
    return Object.assign(new Error('redis-server is not installed (not on PATH): install Redis (e.g. apt-get install redis-server, brew install redis) or pass --redis-url'), {
      exitCode: EXIT.unavailable,
    });
  return Object.assign(new Error(`could not start redis-server: ${e.message}`), { exitCode: EXIT.unavailable });
}
