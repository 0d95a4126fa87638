import { createServer, type Server } from 'node:http';
import { ALL_BATCHES_PATH, BATCH_LABEL, batchPath, type TaskBatch } from '../api/taskbatch.js';
import type { KubeClient } from '../kube/client.js';
import { EventRecorder } from './kube/events.js';
import { objectKey, Reflector } from './kube/reflector.js';
import type { Logger } from './log.js';
import { OperatorMetrics } from './metrics.js';
import type { OperatorConfig } from './config.js';
import type { Pod } from '../kube/pod.js';
import { NamespaceAcls } from './reconcile/redis-acl.js';
import { RedisGuard } from './reconcile/redis-allow.js';
import { RedisPool } from './reconcile/redis-pool.js';
import { Reconciler } from './reconcile/reconciler.js';
import { runReconcileLoop } from './kube/controller-loop.js';
import { ScheduleController } from './schedule/controller.js';
import { systemClock, WorkQueue, type Clock } from './workqueue.js';

/**
 * Wires the controller: reflectors for TaskBatches and worker pods feed keys into the work
 * queue; `concurrency` loops take keys (never the same key twice at once) and reconcile.
 */
export class Controller {
  readonly metrics = new OperatorMetrics();
  readonly queue: WorkQueue;
  readonly batches: Reflector<TaskBatch>;
  readonly pods: Reflector<Pod>;
  /** TaskSchedules (periodic TaskBatches); idle while their CRD is not installed. */
  readonly schedules: ScheduleController;
  private readonly redis: RedisPool;
  private readonly reconciler: Reconciler;
  private running = false;
  private loops: Promise<void>[] = [];

  constructor(
    readonly kube: KubeClient,
    readonly config: Readonly<OperatorConfig>,
    readonly log: Logger,
    clock: Clock = systemClock,
  ) {
    this.queue = new WorkQueue({ clock });
    const ns = config.watchNamespace;
    this.batches = new Reflector<TaskBatch>(kube, { path: ns ? batchPath(ns) : ALL_BATCHES_PATH }, log.child({ reflector: 'taskbatches' }));
    this.pods = new Reflector<Pod>(kube, { path: ns ? `/api/v1/namespaces/${ns}/pods` : '/api/v1/pods', labelSelector: BATCH_LABEL }, log.child({ reflector: 'pods' }));
    this.batches.onChange((tb) => this.queue.add(objectKey(tb)));
    this.pods.onChange((pod) => {
      const batch = pod.metadata.labels?.[BATCH_LABEL];
      if (batch) this.queue.add(`${pod.metadata.namespace}/${batch}`);
    });
    const worker = {
      image: config.workerImage,
      command: config.workerCommand,
      metricsPort: config.workerMetricsPort,
      restrictedSecurityContext: config.restrictedWorkerSecurityContext,
      podSecurity: config.workerPodSecurity,
      terminationGracePeriodSeconds: config.workerGraceSeconds,
      resources: config.workerResources,
      allowEvictingRedis: config.allowEvictingRedis,
      ...(config.defaultRedisUrl
        ? {
            defaultRedis: {
              url: config.defaultRedisUrl,
              ...(config.defaultRedisUsername ? { username: config.defaultRedisUsername } : {}),
              ...(config.defaultRedisPasswordSecret ? { passwordSecret: config.defaultRedisPasswordSecret } : {}),
              tls: config.defaultRedisTls,
              ...(config.defaultRedisManageAcls ? { managedAcls: true } : {}),
            },
          }
        : {}),
    };
    const acls = config.defaultRedisUrl && config.defaultRedisManageAcls ? new NamespaceAcls(kube, { graceMs: config.redisRotationGraceSeconds * 1000 }) : undefined;
    this.redis = new RedisPool(kube, worker.defaultRedis, acls, new RedisGuard(config.allowedRedis, config.defaultRedisUrl, config.maxRedisReplyBytes), {
      clock,
      log: log.child({ component: 'redis-pool' }),
    });
    const events = new EventRecorder(kube, 'taskbatch-operator', log);
    this.schedules = new ScheduleController({ kube, batches: this.batches, events, log: log.child({ controller: 'taskschedules' }), watchNamespace: ns, clock });
    this.reconciler = new Reconciler({
      kube,
      batches: this.batches,
      pods: this.pods,
      redis: this.redis,
      events,
      metrics: this.metrics,
      clock,
      log,
      config: {
        worker,
        statusIntervalMs: config.statusIntervalMs,
        pollIntervalMs: config.pollIntervalMs,
        maxWorkerFailures: config.maxWorkerFailures,
        maxCleanupAttempts: 10,
        workerStaleMs: 30_000,
        podPendingTimeoutMs: config.workerPendingTimeoutMs,
        workerStartGraceMs: 30_000,
        finishedRecheckMs: 30_000,
        maxBatchItems: config.maxBatchItems,
        seedSliceItems: config.seedSliceItems,
        namespaceItemQuota: config.namespaceItemQuota,
      },
    });
  }

  /** Every cache holds a complete list (readiness): TaskBatches, worker pods and, when installed, TaskSchedules. */
  get synced(): boolean {
    return this.batches.hasSynced && this.pods.hasSynced && this.schedules.synced;
  }

  /**
   * Starts the reflectors and, once both hold a complete list, the reconcile loops. Never
   * before: a pass over a pod cache still empty after a restart would see no workers and
   * create a second set of pods for every running batch. A failing list is retried meanwhile
   * (each failure logged); stop() while waiting returns without starting anything.
   */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    const waitingSince = Date.now();
    this.log.info('Waiting for the TaskBatch and pod caches to sync', {});
    const [batches, pods] = await Promise.all([this.batches.start(), this.pods.start()]);
    if (!batches || !pods || !this.running) return;
    this.log.info('Caches synced', { taskbatches: this.batches.list().length, pods: this.pods.list().length, waitedMs: Date.now() - waitingSince });
    this.loops = Array.from({ length: this.config.concurrency }, () => this.loop());
    await this.schedules.start();
    this.log.info('Controller started', { namespace: this.config.watchNamespace || '(all)', concurrency: this.config.concurrency });
  }

  /**
   * Stops taking keys and waits for the reconciles in flight, at most `deadlineMs`. Returns
   * false if some were still running then: closing the Redis clients makes them fail, and
   * the leader's write fence refuses their API writes once leadership is given up.
   */
  async stop(deadlineMs = Number.POSITIVE_INFINITY): Promise<boolean> {
    this.running = false;
    this.queue.shutdown();
    this.schedules.stop();
    this.batches.stop();
    this.pods.stop();
    let timer: NodeJS.Timeout | undefined;
    const drained = await Promise.race([
      Promise.allSettled([...this.loops, this.schedules.stopped()]).then(() => true),
      ...(Number.isFinite(deadlineMs) ? [new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), deadlineMs)))] : []),
    ]);
    clearTimeout(timer);
    this.redis.close();
    return drained;
  }

  private loop(): Promise<void> {
    return runReconcileLoop({
      queue: this.queue,
      reconcile: (key) => this.reconciler.reconcile(key),
      isRunning: () => this.running,
      log: this.log,
      kind: 'TaskBatch',
      observe: {
        started: (depth) => {
          this.metrics.workqueueDepth.set(depth);
          return this.metrics.reconcileDuration.startTimer();
        },
        finished: (error) => {
          this.metrics.reconciles.inc({ result: error ? 'error' : 'success' });
          if (error) this.metrics.reconcileErrors.inc({ error });
        },
      },
    });
  }
}

/** /metrics, /healthz (process alive), /readyz (caches synced). */
export function startHttpServer(host: string, port: number, metrics: OperatorMetrics, ready: () => boolean): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.url === '/metrics') {
      metrics.registry
        .metrics()
        .then((body) => {
          res.writeHead(200, { 'content-type': metrics.registry.contentType });
          res.end(body);
        })
        .catch((err: unknown) => {
          res.writeHead(500);
          res.end(String(err));
        });
    } else if (req.url === '/healthz') {
      res.writeHead(200);
      res.end('ok');
    } else if (req.url === '/readyz') {
      const ok = ready();
      res.writeHead(ok ? 200 : 503);
      res.end(ok ? 'ok' : 'not ready');
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}
