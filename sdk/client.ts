import { BatchQueue, BatchStateLostError, batchId, validateBatchRef, type BatchRef, type Durability } from '../queue/index.js';
import type { TaskBatch } from '../api/taskbatch.js';
import { BatchHandle, sleep, type BatchContext, type ResolvedBatch } from './batch.js';
import { CallDispatcher, createProxy, type CallOptions, type CallStats, type Remote } from './calls.js';
import { RedisConnections, type PortForwardMode } from './connection.js';
import { BatchNotFoundError, ClientClosedError, TaskBatchError } from './errors.js';
import { loadKubeAccess, readTaskBatch, redisEndpointFor, type KubeAccess, type KubeAccessOptions, type RedisEndpoint } from './kube.js';
import type { PortForward } from './port-forward.js';

export interface ConnectOptions {
  /**
   * A Redis to use directly: a URL (`redis://host:6379`, `rediss://…` for TLS) or an endpoint
   * with credentials. Without Kubernetes access the SDK only talks to this Redis. With
   * Kubernetes access it overrides the Redis the TaskBatch names (fields given here win).
   */
  redis?: string | Partial<RedisEndpoint>;
  /**
   * Find batches through the Kubernetes API (kubeconfig): true, or which kubeconfig/context.
   * Default: on when `redis` is not given.
   */
  kube?: boolean | KubeAccessOptions;
  /** Default namespace of batches (default: the kubeconfig context's, else "default"). */
  namespace?: string;
  /**
   * Reaching a Redis that only has a cluster address (Kubernetes mode): 'auto' (default) tries
   * a direct connection first and falls back to a port-forward through the API server;
   * 'always' / 'never' force the choice.
   */
  portForward?: PortForwardMode;
  /** Key prefix of the installation (default "tb"). */
  prefix?: string;
  /**
   * Default: the TaskBatch's spec.redis.durability, else 'local'.
   * 'local': a call succeeds once the Redis primary applied it. 'replicated': each
   * state change (submit, close, cancel, ...) also waits for one replica (WAIT), so a failover
   * loses nothing the SDK reported as done; a call no replica acknowledged within
   * `replicaTimeoutMs` (default 1000) fails with ReplicaNotAcknowledgedError. Use it with the
   * workers' TASKBATCH_REDIS_DURABILITY=replicated (docs/worker.md#durability-and-failover).
   */
  durability?: Durability;
  replicaTimeoutMs?: number;
  /** How long to wait for a first connection to Redis (default 10 s). */
  connectTimeoutMs?: number;
  /** How long to wait for the operator to create a new TaskBatch's queue (default 30 s). */
  queueReadyTimeoutMs?: number;
  /** Port-forward problems after start-up (e.g. a pod restarted), and the first dropped call reply of each kind (docs/sdk.md). Default: ignored. */
  onWarning?: (message: string) => void;
}

export interface ProxyOptions extends CallOptions {
  namespace?: string;
}

/**
 * Connects to taskbatch: with a kubeconfig (default) the SDK finds each batch's TaskBatch and
 * Redis through the API server (port-forwarding to an in-cluster Redis when needed); with
 * `redis` alone it talks to that Redis directly. Nothing is contacted until first use.
 *
 *     const client = await connect();                                  // kubeconfig
 *     const client = await connect({ redis: 'redis://127.0.0.1:6379' }); // Redis only
 */
export async function connect(options: ConnectOptions = {}): Promise<TaskBatchClient> {
  const useKube = options.kube === undefined ? options.redis === undefined : options.kube !== false;
  const access = useKube ? loadKubeAccess(typeof options.kube === 'object' ? options.kube : {}) : undefined;
  const redis = typeof options.redis === 'string' ? { url: options.redis } : options.redis;
  if (!access && !redis?.url && !redis?.sentinel) throw new TaskBatchError('Usage', 'connect(): pass redis (a URL, or sentinels) or use Kubernetes (kube: true, a kubeconfig)');
  return new TaskBatchClient(options, access, redis);
}

/** A connection to taskbatch. Get batch handles and proxies from it; close() it when done. */
export class TaskBatchClient {
  readonly namespace: string;
  private readonly connections: RedisConnections;
  private readonly resolved = new Map<string, Promise<ResolvedBatch>>();
  private readonly handles = new Map<string, BatchHandle>();
  private readonly dispatchers = new Map<string, Promise<CallDispatcher>>();
  private closed = false;

  /** @internal use connect() */
  constructor(
    private readonly options: ConnectOptions,
    readonly kube: KubeAccess | undefined,
    private readonly redisOverride: Partial<RedisEndpoint> | undefined,
  ) {
    this.namespace = options.namespace ?? kube?.namespace ?? 'default';
    this.connections = new RedisConnections(
      {
        connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
        portForward: options.portForward ?? 'auto',
        namespace: this.namespace,
        ...(options.onWarning ? { onWarning: options.onWarning } : {}),
      },
      kube,
    );
  }

  /** 'kubernetes' when batches are found through the API server, else 'redis'. */
  get mode(): 'kubernetes' | 'redis' {
    return this.kube ? 'kubernetes' : 'redis';
  }

  /** A handle on one batch (cheap; nothing is contacted until first use). */
  batch(name: string, options: { namespace?: string } = {}): BatchHandle {
    const ref = { namespace: options.namespace ?? this.namespace, name };
    validateBatchRef(ref);
    const key = batchId(ref);
    let h = this.handles.get(key);
    if (!h) {
      h = new BatchHandle(this.context(ref));
      this.handles.set(key, h);
    }
    return h;
  }

  /**
   * A typed proxy over a long-lived open TaskBatch whose handler dispatches by function name
   * (`handler: {module: …, dispatch: fn}`): `await math.square(4)` enqueues `{fn: "square",
   * args: [4]}`, a worker runs it, and the call resolves with the return value — or rejects
   * with a RemoteCallError carrying the thrown error's name and message, or a CallTimeoutError.
   */
  proxy<T>(name: string, options: ProxyOptions = {}): Remote<T> {
    const ref = { namespace: options.namespace ?? this.namespace, name };
    validateBatchRef(ref);
    const { namespace: _namespace, ...defaults } = options;
    return createProxy<T>((fn, args) => this.callRef(ref, fn, args, defaults));
  }

  /** One remote call without a typed proxy: `client.call('math-service', 'square', [4])`. */
  call(name: string, fn: string, args: readonly unknown[] = [], options: CallOptions & { namespace?: string } = {}): Promise<unknown> {
    const ref = { namespace: options.namespace ?? this.namespace, name };
    validateBatchRef(ref);
    return this.callRef(ref, fn, args, options);
  }

  /** Port-forwards this client opened (Kubernetes mode), for diagnostics. */
  portForwards(): Promise<PortForward[]> {
    return this.connections.forwards();
  }

  /** Counters of the remote calls made through this client, one entry per batch called (dropped replies: docs/sdk.md). */
  async callStats(): Promise<CallStats[]> {
    const ds = await Promise.allSettled([...this.dispatchers.values()]);
    return ds.flatMap((d) => (d.status === 'fulfilled' ? [d.value.stats] : []));
  }

  /** Rejects calls in flight, closes Redis connections and port-forwards. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const ds = await Promise.allSettled([...this.dispatchers.values()]);
    for (const d of ds) if (d.status === 'fulfilled') await d.value.close();
    await this.connections.closeAll();
  }

  private async callRef(ref: BatchRef, fn: string, args: readonly unknown[], options: CallOptions): Promise<unknown> {
    if (this.closed) throw new ClientClosedError();
    const key = batchId(ref);
    let d = this.dispatchers.get(key);
    if (!d) {
      d = this.resolve(ref).then((r) => new CallDispatcher(r.queue, r.redis, {}, this.options.onWarning));
      this.dispatchers.set(key, d);
      d.catch(() => this.dispatchers.delete(key));
    }
    const dispatcher = await d;
    try {
      return await dispatcher.call(fn, args, options);
    } catch (err) {
      if (err instanceof BatchStateLostError) {
        // The batch was deleted or recreated (new epoch): resolve it afresh on the next call.
        if (this.dispatchers.get(key) === d) this.dispatchers.delete(key);
        this.resolved.delete(key);
        void dispatcher.close();
      }
      throw err;
    }
  }

  private context(ref: BatchRef): BatchContext {
    const key = batchId(ref);
    return {
      ref,
      kube: this.kube,
      describeRedis: () => this.redisOverride?.url ?? "(the TaskBatch's Redis)",
      resolve: () => this.resolve(ref),
      invalidate: () => {
        this.resolved.delete(key);
      },
      isClosed: () => this.closed,
    };
  }

  private resolve(ref: BatchRef): Promise<ResolvedBatch> {
    if (this.closed) return Promise.reject(new ClientClosedError());
    const key = batchId(ref);
    let p = this.resolved.get(key);
    if (!p) {
      p = this.doResolve(ref);
      this.resolved.set(key, p);
      p.catch(() => this.resolved.delete(key));
    }
    return p;
  }

  private async doResolve(ref: BatchRef): Promise<ResolvedBatch> {
    const prefix = this.options.prefix ?? 'tb';
    const durability = {
      ...(this.options.durability ? { durability: this.options.durability } : {}),
      ...(this.options.replicaTimeoutMs !== undefined ? { replicaTimeoutMs: this.options.replicaTimeoutMs } : {}),
    };
    if (!this.kube) {
      const endpoint = { url: '', ...this.redisOverride } as RedisEndpoint;
      const { redis } = await this.connections.get(endpoint);
      return { queue: new BatchQueue(redis, ref, { prefix, ...durability }), redis, endpoint };
    }
    let tb: TaskBatch = await readTaskBatch(this.kube, ref.namespace, ref.name);
    const endpoint = await redisEndpointFor(this.kube, tb, this.redisOverride);
    const { redis } = await this.connections.get(endpoint);
    // A TaskBatch created a moment ago may not have its queue yet: the operator records the
    // queue's epoch in status.queueEpoch when it creates it.
    const until = Date.now() + (this.options.queueReadyTimeoutMs ?? 30_000);
    while (!tb.status?.queueEpoch) {
      if (Date.now() > until) {
        throw new BatchNotFoundError(
          `TaskBatch ${batchId(ref)} has no queue yet (status.queueEpoch is empty after ${this.options.queueReadyTimeoutMs ?? 30_000} ms); is the operator running? (kubectl describe taskbatch ${ref.name} -n ${ref.namespace})`,
        );
      }
      await sleep(500);
      tb = await readTaskBatch(this.kube, ref.namespace, ref.name);
    }
    // The batch's own spec.redis.durability unless the caller chose: what it submits is then as safe as what its workers write.
    const batchDurability = this.options.durability ?? tb.spec.redis?.durability;
    return {
      queue: new BatchQueue(redis, ref, { prefix, ...durability, ...(batchDurability ? { durability: batchDurability } : {}), expectedEpoch: tb.status.queueEpoch }),
      redis,
      endpoint,
      taskBatch: tb,
    };
  }
}
