import { Cluster } from 'ioredis';
import { connectRedis, type RedisClient } from '../queue/index.js';
import { withTimeout } from './backoff.js';
import { BatchWorker, type WorkerResult } from './batch-worker.js';
import { readPasswordFile, type WorkerConfig } from './config.js';
import { watchEvictionPolicy } from './eviction-guard.js';
import { EXIT_CODES } from './exit-codes.js';
import { createExecutor } from './executor/index.js';
import { describeHandler } from './handler/spec.js';
import { startHttpServer, type HttpServer } from './http.js';
import { createLogger, type Logger } from './log.js';
import { WorkerMetrics } from './metrics.js';
import { startWatchdog, type Watchdog } from './watchdog.js';

export interface RunWorkerOptions {
  logger?: Logger;
  /** Install SIGTERM/SIGINT handlers (default true; tests and the local run may not). */
  handleSignals?: boolean;
  /** Start the event-loop watchdog (default: when config.watchdogMs > 0). */
  watchdog?: boolean;
  /** Called once the HTTP server and worker exist (tests, local run). */
  onStarted?(running: { worker: BatchWorker; http: HttpServer | undefined; redis: RedisClient; metrics: WorkerMetrics }): void;
  onProgress?(itemId: string, value: number): void;
}

/**
 * Opens the Redis connection the way the worker needs it: fail fast while disconnected, retry
 * forever. `forWaiting`: the connection an idle worker blocks on (BatchWorkerOptions.wakeRedis),
 * without the command and socket timeouts (a blocked call answers nothing while it waits; the
 * worker bounds the wait itself).
 */
export function connectWorkerRedis(config: WorkerConfig, logger: Logger, forWaiting = false): RedisClient {
  const redis = connectRedis({
    url: config.redis.url,
    ...(config.redis.username ? { username: config.redis.username } : {}),
    ...(config.redis.password ? { password: config.redis.password } : {}),
    ...(config.redis.tls ? { tls: config.redis.tls } : {}),
    cluster: config.redis.cluster,
    ...(config.redis.sentinel ? { sentinel: config.redis.sentinel } : {}),
    redisOptions: {
      // Calls fail at once while disconnected; the worker's loops back off and retry.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      // A hung connection (a frozen network path, a half-open socket) answers nothing and never
      // closes: each call fails after the command timeout, and the socket is dropped (and
      // reopened) once it has sent nothing back for as long, so leases are renewed on a new
      // connection before they lapse. config.ts keeps the timeout below two thirds of the lease.
      ...(forWaiting ? {} : { commandTimeout: config.redis.commandTimeoutMs, socketTimeout: config.redis.commandTimeoutMs }),
      connectTimeout: 5000,
      // TCP keepalive finds a peer that is gone while the connection is idle (no call to time out).
      keepAlive: 1000,
      noDelay: true,
      retryStrategy: (times: number) => Math.min(50 * 2 ** Math.min(times, 10), 2000),
    },
  });
  let down = false;
  redis.on('error', (err: Error) => {
    if (down) return; // once per outage: reconnection attempts that hang time out the same way
    // ioredis' own wording for the socket timeout above: the one error worth a warning here.
    if (err.message.startsWith('Socket timeout')) logger.warn('Dropped a Redis connection that sent nothing back; reconnecting', { timeoutMs: config.redis.commandTimeoutMs });
    else logger.debug('Redis connection error', { error: err.message });
  });
  redis.on('close', () => {
    down = true;
  });
  redis.on('ready', () => {
    down = false;
  });
  const passwordFile = config.redis.passwordFile;
  if (passwordFile) {
    // A rotated password (docs/security.md#rotation) reaches the mounted file within a minute;
    // a reconnection uses what the file holds then, so it authenticates after the old password
    // is removed. ioredis reads options.password at each connect.
    redis.on('reconnecting', () => {
      let fresh: string;
      try {
        fresh = readPasswordFile(passwordFile);
      } catch {
        return; // keep the password already known; the file may be mid-update
      }
      if (redis instanceof Cluster) redis.options.redisOptions = { ...redis.options.redisOptions, password: fresh };
      else redis.options.password = fresh;
    });
  }
  return redis;
}

/**
 * Runs one worker process's worth of work: Redis connection, executors, consumer loop,
 * HTTP server, watchdog and signal handling. Resolves with the exit code to use.
 */
export async function runWorker(config: WorkerConfig, options: RunWorkerOptions = {}): Promise<WorkerResult> {
  const logger = options.logger ?? createLogger({ level: config.logLevel, base: { worker: config.workerId, namespace: config.batch.namespace, batch: config.batch.name } });
  // Without the HTTP server nothing reads the process metrics: not collecting them saves an idle
  // worker its event-loop sampling.
  const metrics = new WorkerMetrics({ namespace: config.batch.namespace, batch: config.batch.name, mode: config.pool.mode }, { defaultMetrics: config.http !== undefined });
  const redis = connectWorkerRedis(config, logger);
  const wakeRedis = connectWorkerRedis(config, logger, true);
  let worker: BatchWorker | undefined;
  let evictionRefused: string | undefined;
  const evictionChecked = config.redis.allowEviction
    ? Promise.resolve()
    : watchEvictionPolicy(redis, (problem) => {
        evictionRefused = `${problem}, or set TASKBATCH_REDIS_ALLOW_EVICTION=true to accept the risk`;
        logger.error('Refusing a Redis that evicts keys', { problem: evictionRefused });
        worker?.stopWith('redisMisconfigured', evictionRefused);
      });
  const executor = createExecutor(config.pool.mode, {
    handler: config.handler,
    size: config.pool.size,
    maxItemsPerExecutor: config.pool.maxItemsPerExecutor,
    maxMemoryMiB: config.pool.maxMemoryMiB,
    abortGraceMs: config.abortGraceMs,
    maxResultBytes: config.maxResultBytes,
    handlerLog: config.handlerLog,
    hooks: {
      onRestart: (reason, detail) => {
        metrics.executorRestarts.inc({ reason });
        (reason === 'max_items' || reason === 'max_memory' ? logger.info : logger.warn)('Replaced an executor', { reason, detail });
      },
      onLog: (task, level, message, fields) => logger[level](message, { ...fields, item: task.id, attempt: task.attempt, source: 'handler' }),
      onLogsDropped: (task, dropped) => {
        metrics.handlerLogLinesDropped.inc(dropped);
        logger.warn('Dropped handler log lines over the rate limit', { item: task.id, attempt: task.attempt, dropped, ...config.handlerLog });
      },
      onProgress: (task, value) => options.onProgress?.(task.id, value),
      onBroken: (err) => {
        logger.error('Gave up starting executors', { error: err.message });
        worker?.stopWith('handlerStart', err.message);
      },
      onAbandoned: (task) => logger.warn('A handler ignored its abort signal past the grace; its slot was given back while it still runs', { item: task.id, attempt: task.attempt }),
    },
  });
  worker = new BatchWorker({
    redis,
    wakeRedis,
    batch: { namespace: config.batch.namespace, name: config.batch.name },
    queueOptions: {
      prefix: config.redis.prefix,
      limits: { maxResultBytes: config.maxResultBytes },
      durability: config.redis.durability,
      replicaTimeoutMs: config.redis.replicaTimeoutMs,
      ...(config.batch.expectedEpoch ? { expectedEpoch: config.batch.expectedEpoch } : {}),
    },
    executor,
    workerId: config.workerId,
    itemTimeoutMs: config.itemTimeoutMs,
    leaseMs: config.leaseMs,
    shutdownGraceMs: config.shutdownGraceMs,
    prefetchMax: config.prefetchMax,
    ackMaxItems: config.ackMaxItems,
    ackMaxDelayMs: config.ackMaxDelayMs,
    idlePollMs: config.idlePollMs,
    claimMaxBytes: config.claimMaxBytes,
    chargeOnlyStarted: config.chargeOnlyStarted,
    heartbeatMs: config.heartbeatMs,
    presenceStaleMs: config.presenceStaleMs,
    stateLostExitMs: config.stateLostExitMs,
    ...(config.podIp ? { podIp: config.podIp } : {}),
    logger,
    metrics,
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  });
  const w = worker;
  // Nothing is claimed before the policy is known (stopWith before run() ends the run at once).
  await evictionChecked;
  if (evictionRefused) w.stopWith('redisMisconfigured', evictionRefused);
  logger.info('Starting worker', {
    mode: config.pool.mode,
    size: config.pool.size,
    handler: describeHandler(config.handler),
    redis: config.redis.url,
    itemTimeoutMs: config.itemTimeoutMs,
    leaseMs: config.leaseMs,
    pid: process.pid,
  });

  for (const warning of config.warnings) logger.warn('Questionable configuration', { warning });
  let http: HttpServer | undefined;
  if (config.http) {
    try {
      http = await startHttpServer({
        ...config.http,
        metrics,
        ready: () => w.ready,
        healthy: () => w.healthy,
        status: () => ({ worker: config.workerId, epoch: w.epoch, ...w.status(), executor: executor.stats() }),
        logger,
      });
    } catch (err) {
      logger.error('Could not start the HTTP server', { error: err, host: config.http.host, port: config.http.port });
      await executor.destroy();
      redis.disconnect();
      wakeRedis.disconnect();
      return { reason: 'fatal', exitCode: EXIT_CODES.internal, message: `HTTP server: ${(err as Error).message}` };
    }
  }
  let watchdog: Watchdog | undefined;
  if ((options.watchdog ?? true) && config.watchdogMs > 0) {
    watchdog = startWatchdog({ limitMs: config.watchdogMs, context: { worker: config.workerId, namespace: config.batch.namespace, batch: config.batch.name } });
  }

  let signals = 0;
  let forceTimer: NodeJS.Timeout | undefined;
  const onSignal = (signal: NodeJS.Signals): void => {
    signals++;
    if (signals === 1) {
      // A worker already draining (scale-in) goes on finishing its items: the signal changes
      // nothing (the pod's termination grace covers the item timeout).
      if (w.stopReason === 'drain') logger.info('Received a signal while draining; finishing the items in hand', { signal, itemTimeoutMs: config.itemTimeoutMs });
      else logger.info('Received a signal; shutting down gracefully', { signal, graceMs: config.shutdownGraceMs });
      w.shutdown('shutdown');
      // The last resort, in case finishing hangs (keep the pod's termination grace above this).
      forceTimer = setTimeout(() => {
        logger.error('Shutdown did not finish in time; exiting');
        process.exit(EXIT_CODES.internal);
      }, w.stopBudgetMs + 20_000);
      forceTimer.unref();
    } else {
      logger.warn('Received a second signal; exiting at once (leases will lapse and items be retried elsewhere)', { signal });
      process.exit(signal === 'SIGINT' ? EXIT_CODES.forcedSigint : EXIT_CODES.forcedSigterm);
    }
  };
  if (options.handleSignals !== false) {
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  }
  options.onStarted?.({ worker: w, http, redis, metrics });

  let result: WorkerResult;
  try {
    result = await w.run();
  } finally {
    if (options.handleSignals !== false) {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
    }
    clearTimeout(forceTimer);
    watchdog?.stop();
    await http?.close();
    await withTimeout(
      redis.quit().catch(() => undefined),
      1000,
      undefined,
    );
    redis.disconnect();
  }
  return result;
}
