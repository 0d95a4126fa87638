import { connectRedis, type RedisClient, type SentinelOptions } from '../queue/index.js';
import { ConnectionError, TaskBatchError } from './errors.js';
import type { KubeAccess, RedisEndpoint } from './kube.js';
import { PortForward, probeConnect, resolveForwardTarget } from './port-forward.js';
import { PortForwardError } from './errors.js';

export type PortForwardMode = 'auto' | 'always' | 'never';

export interface RedisConnectionSettings {
  /** How long to wait for the first connection (default 10 s). */
  connectTimeoutMs: number;
  portForward: PortForwardMode;
  /** Namespace used to resolve a bare Service name in the Redis URL. */
  namespace: string;
  /** Port-forward problems after start-up (a broken connection), for logging. */
  onWarning?: (message: string) => void;
}

interface Pooled {
  redis: RedisClient;
  forward?: PortForward;
  /** The URL actually dialled (the local end of a port-forward, or the endpoint's URL). */
  dialled: string;
}

/**
 * One Redis client per distinct endpoint (URL, user, TLS, cluster), shared by every batch
 * handle and proxy of a client. With Kubernetes access, an endpoint the client cannot reach
 * directly (a cluster DNS name, a pod IP) is reached through a port-forward over the API server.
 */
export class RedisConnections {
  private readonly pool = new Map<string, Promise<Pooled>>();

  constructor(
    private readonly settings: RedisConnectionSettings,
    private readonly access: KubeAccess | undefined,
  ) {}

  async get(endpoint: RedisEndpoint): Promise<Pooled> {
    const key = JSON.stringify([endpoint.url, endpoint.username, endpoint.password, endpoint.tls, endpoint.cluster, endpoint.sentinel]);
    let p = this.pool.get(key);
    if (!p) {
      p = this.open(endpoint);
      this.pool.set(key, p);
      p.catch(() => this.pool.delete(key));
    }
    return p;
  }

  /** Port-forwards currently open (for status displays and tests). */
  async forwards(): Promise<PortForward[]> {
    const all = await Promise.allSettled([...this.pool.values()]);
    return all.flatMap((r) => (r.status === 'fulfilled' && r.value.forward ? [r.value.forward] : []));
  }

  async closeAll(): Promise<void> {
    const all = await Promise.allSettled([...this.pool.values()]);
    this.pool.clear();
    for (const r of all) {
      if (r.status !== 'fulfilled') continue;
      r.value.redis.disconnect();
      await r.value.forward?.close();
    }
  }

  private async open(endpoint: RedisEndpoint): Promise<Pooled> {
    if (endpoint.sentinel) return this.openSentinel(endpoint, endpoint.sentinel);
    const u = parseUrl(endpoint.url);
    let forward: PortForward | undefined;
    let dialled = endpoint.url;
    if (this.access && this.settings.portForward !== 'never') {
      const problem = this.settings.portForward === 'auto' ? await probeConnect(u.hostname, u.port, 1500) : 'port-forward: always';
      if (problem !== undefined) {
        if (endpoint.cluster) {
          throw new TaskBatchError(
            'Usage',
            `Redis Cluster at ${endpoint.url} is not reachable from here, and a Redis Cluster cannot be used through a port-forward (its nodes redirect clients to in-cluster addresses); run the client inside the cluster`,
          );
        }
        let target;
        try {
          target = await resolveForwardTarget(this.access, u.hostname, u.port, this.settings.namespace);
        } catch (err) {
          if (!(err instanceof PortForwardError) || this.settings.portForward === 'always') throw err;
          throw new PortForwardError(`Redis at ${endpoint.url} is not reachable from here (${problem}), and it cannot be port-forwarded to: ${err.message}`);
        }
        const access = this.access;
        forward = await PortForward.start(access, target, this.settings.onWarning, () => resolveForwardTarget(access, u.hostname, u.port, this.settings.namespace));
        dialled = forward.localUrl(endpoint.url);
      }
    }
    const tls = endpoint.tls || u.tls ? { ...(endpoint.tls ?? {}), ...(forward && !endpoint.tls?.serverName ? { serverName: u.hostname } : {}) } : undefined;
    const redis = connectRedis({
      url: dialled,
      ...(endpoint.username ? { username: endpoint.username } : {}),
      ...(endpoint.password ? { password: endpoint.password } : {}),
      ...(tls ? { tls } : {}),
      ...(endpoint.cluster ? { cluster: true } : {}),
      redisOptions: {
        // Fail a command after a few reconnection attempts rather than hang while Redis is down.
        maxRetriesPerRequest: 3,
        connectTimeout: Math.min(this.settings.connectTimeoutMs, 10_000),
        retryStrategy: (n: number) => Math.min(100 * 2 ** n, 3000),
      },
    });
    redis.on('error', () => undefined); // surfaced by failing commands and waitReady
    try {
      await waitReady(redis, this.settings.connectTimeoutMs, endpoint.url + (forward ? ` (port-forwarded to ${forward.target.via})` : ''));
    } catch (err) {
      redis.disconnect();
      await forward?.close();
      throw err;
    }
    return { redis, dialled, ...(forward ? { forward } : {}) };
  }

  /**
   * A primary found through Sentinel, dialled directly: the sentinels hand out the data nodes'
   * own addresses, which a port-forward to one of them would not reach.
   */
  private async openSentinel(endpoint: RedisEndpoint, sentinel: SentinelOptions): Promise<Pooled> {
    if (endpoint.cluster) throw new TaskBatchError('Usage', 'Redis options cluster and sentinel exclude each other: a Redis Cluster fails over by itself; pass one of them');
    const url = endpoint.url || `${endpoint.tls ? 'rediss' : 'redis'}://${sentinel.masterName}`;
    const u = parseUrl(url);
    let redis: RedisClient;
    try {
      redis = connectRedis({
        url,
        sentinel,
        ...(endpoint.username ? { username: endpoint.username } : {}),
        ...(endpoint.password ? { password: endpoint.password } : {}),
        ...(endpoint.tls || u.tls ? { tls: endpoint.tls ?? {} } : {}),
        redisOptions: {
          maxRetriesPerRequest: 3,
          connectTimeout: Math.min(this.settings.connectTimeoutMs, 10_000),
          retryStrategy: (n: number) => Math.min(100 * 2 ** n, 3000),
        },
      });
    } catch (err) {
      throw new TaskBatchError('Usage', `Redis sentinel settings: ${(err as Error).message}`);
    }
    redis.on('error', () => undefined); // surfaced by failing commands and waitReady
    const what = `primary ${JSON.stringify(sentinel.masterName)} of sentinels ${sentinel.addresses.map((a) => `${a.host}:${a.port}`).join(',')}`;
    try {
      await waitReady(redis, this.settings.connectTimeoutMs, what);
    } catch (err) {
      redis.disconnect();
      throw err;
    }
    return { redis, dialled: url };
  }
}

function parseUrl(url: string): { hostname: string; port: number; tls: boolean } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new TaskBatchError('Usage', `Redis URL ${JSON.stringify(url)} is not a URL; expected redis://host:port or rediss://host:port`);
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw new TaskBatchError('Usage', `Redis URL ${JSON.stringify(url)} must start with redis:// or rediss://`);
  if (u.password) throw new TaskBatchError('Usage', 'Redis URL must not contain a password: pass it separately (--redis-password-file, TASKBATCH_REDIS_PASSWORD, or the password option)');
  return { hostname: u.hostname.replace(/^\[|\]$/g, ''), port: u.port ? Number(u.port) : 6379, tls: u.protocol === 'rediss:' };
}

/** Resolves once the client is ready; rejects with a ConnectionError naming the URL and the last error. */
function waitReady(redis: RedisClient, timeoutMs: number, what: string): Promise<void> {
  if (redis.status === 'ready') return Promise.resolve();
  return new Promise((resolve, reject) => {
    let last = '';
    let refused = 0;
    const onError = (err: Error & { code?: string }): void => {
      last = err.message;
      // Nothing listens (or the name does not resolve): say so after a few tries, not at the timeout.
      if (['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH'].includes(err.code ?? '') && ++refused >= 3) {
        cleanup();
        reject(new ConnectionError(`cannot reach Redis at ${what} (${err.message}); is it running, and is the URL right (--redis-url)?`));
        return;
      }
      if (/WRONGPASS|NOAUTH|NOPERM|invalid password/i.test(err.message)) {
        cleanup();
        reject(new ConnectionError(`Redis at ${what} refused the credentials: ${err.message}; check --redis-username / --redis-password-file`));
      }
    };
    const onReady = (): void => {
      cleanup();
      resolve();
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new ConnectionError(`cannot reach Redis at ${what} within ${Math.round(timeoutMs / 1000)} s${last ? ` (${last})` : ''}; is it running, and is the URL right (--redis-url)?`));
    }, timeoutMs);
    const cleanup = (): void => {
      clearTimeout(timer);
      redis.off('ready', onReady);
      redis.off('error', onError);
    };
    redis.on('ready', onReady);
    redis.on('error', onError);
  });
}
