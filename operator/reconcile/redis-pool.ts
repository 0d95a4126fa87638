import { createHash, X509Certificate } from 'node:crypto';
import { connectRedis, parseSentinelAddress, type RedisClient, type RedisConnectionOptions, type SentinelOptions } from '../../queue/index.js';
import type { KubeClient } from '../../kube/client.js';
import type { TaskBatch } from '../../api/taskbatch.js';
import type { Logger } from '../log.js';
import { systemClock, type Clock } from '../workqueue.js';
import type { WorkerPodConfig } from './pods.js';
import type { RedisGuard } from './redis-allow.js';
import type { NamespaceAcls } from './redis-acl.js';
import { RedisEndpoint, type EndpointTimings } from './redis-endpoint.js';
import { DEFAULT_BACKOFF, RedisUnavailableError, type BackoffPolicy } from './redis-health.js';

export { RedisUnavailableError } from './redis-health.js';

const SECRET_TTL_MS = 60_000;

/** The batch's Redis settings are wrong (a URL that is not one, a missing Secret or key): terminal until the spec or Secret changes. */
export class RedisConfigError extends Error {
  override name = 'RedisConfigError';
}

export interface RedisPoolOptions {
  /** A client no reconcile has used for this long is disconnected and dropped. Default 5 minutes. */
  idleMs?: number;
  /** Bound on one connection attempt's TCP and TLS connect. Default 2 s. */
  connectTimeoutMs?: number;
  /** Bound on one command (a reconcile's read or write) on a connected client. Default 15 s. */
  commandTimeoutMs?: number;
  /** How long the first batch naming a new Redis waits for its first connection attempt. Default 1 s. */
  firstTryMs?: number;
  /** Each Redis's reconnection backoff. Default 0.5 s doubling to 30 s, up to 20% less at random. */
  backoff?: BackoffPolicy;
  clock?: Clock;
  random?: () => number;
  /** Logs each Redis going down, coming back, and being closed when idle. */
  log?: Logger;
}

interface Secret {
  data?: Record<string, string>;
}

/** What one batch connects to, read from its spec, its Secrets or the installer's default. */
interface Target {
  url: string;
  username?: string;
  password?: string;
  tls?: { ca?: string; insecureSkipVerify?: boolean };
  cluster: boolean;
  /** spec.redis.sentinel: the primary is found through these (then `url` only carries the database). */
  sentinel?: SentinelOptions;
  /** The address came out of a Secret: logs must not show it. */
  secretAddress: boolean;
}

/**
 * One client per distinct Redis (URL + identity), shared by all batches using it, each with
 * its own health (redis-endpoint.ts): a Redis that does not answer makes its batches fail at
 * once with RedisUnavailableError (naming the address, the cause and when to retry) while the
 * client reconnects in the background on its own backoff; the other batches' reconciles never
 * wait on it. Clients fail fast while disconnected (no offline queue). A client no reconcile
 * used for `idleMs` is closed, so clients of deleted batches and rotated passwords do not pile up.
 */
export class RedisPool {
  private readonly endpoints = new Map<string, RedisEndpoint>();
  private readonly secrets = new Map<string, { at: number; secret: Secret }>();
  /** Per batch (ns/name): strings that came out of a Secret, never to appear in status, events or logs. */
  private readonly sensitive = new Map<string, { values: string[]; source: string }>();
  private readonly idleMs: number;
  private readonly timings: EndpointTimings;
  private readonly commandTimeoutMs: number;
  private readonly clock: Clock;
  private readonly random: () => number;
  private readonly log: Logger | undefined;
  private sweepTimer: unknown;

  constructor(
    private readonly kube: KubeClient,
    private readonly defaults: WorkerPodConfig['defaultRedis'],
    /** Set when the operator manages per-namespace ACL users on the default Redis. */
    private readonly acls?: NamespaceAcls,
    /** The installer's allowed addresses and reply bound (redis-allow.ts); unset = none. */
    private readonly guard?: RedisGuard,
    options: RedisPoolOptions = {},
  ) {
    const positive = (name: keyof RedisPoolOptions, v: number | undefined, dflt: number): number => {
      if (v === undefined) return dflt;
      if (!Number.isFinite(v) || v <= 0) throw new RangeError(`RedisPool options.${name} must be a positive number of milliseconds, got ${v}`);
      return v;
    };
    this.idleMs = positive('idleMs', options.idleMs, 5 * 60_000);
    const backoff = options.backoff ?? DEFAULT_BACKOFF;
    if (!(backoff.initialMs > 0 && backoff.maxMs >= backoff.initialMs && backoff.jitter >= 0 && backoff.jitter < 1)) {
      throw new RangeError('RedisPool options.backoff must have 0 < initialMs <= maxMs and 0 <= jitter < 1');
    }
    this.timings = { connectTimeoutMs: positive('connectTimeoutMs', options.connectTimeoutMs, 2000), firstTryMs: positive('firstTryMs', options.firstTryMs, 1000), backoff };
    this.commandTimeoutMs = positive('commandTimeoutMs', options.commandTimeoutMs, 15_000);
    this.clock = options.clock ?? systemClock;
    this.random = options.random ?? Math.random;
    this.log = options.log;
  }

  /**
   * The batch's Redis client, connected. Throws, without waiting on a connection (only the first
   * batch naming a new Redis waits, at most firstTryMs):
   * - RedisConfigError: the settings are wrong (terminal until the spec or a Secret changes);
   * - RedisNotAllowedError (redis-allow.ts): the address is outside the installer's list;
   * - RedisUnavailableError: the Redis does not answer now; ask again at its `retryAt`.
   * Other errors (the namespace's ACL user on the managed default Redis) are transient.
   * Messages are already redacted for the batch (no value from its Secrets).
   */
  async forBatch(batch: TaskBatch): Promise<RedisClient> {
    return this.withClient(batch, async (client) => client);
  }

  /**
   * Runs `use` with the batch's client (as forBatch), which is never closed for idleness while
   * `use` runs. forBatch's caller holds the client without that guarantee once forBatch returns:
   * only for less than idleMs.
   */
  async withClient<T>(batch: TaskBatch, use: (client: RedisClient) => Promise<T>): Promise<T> {
    const target = await this.target(batch);
    const endpoint = this.endpointFor(target);
    endpoint.leases++;
    try {
      let client: RedisClient;
      try {
        client = await endpoint.get();
      } catch (err) {
        if (err instanceof RedisUnavailableError) throw this.redacted(batch, err);
        throw err;
      }
      // Before any worker pod of the namespace exists, its user and Secret must (pods mount the Secret).
      if (!batch.spec.redis && this.acls) await this.acls.ensure(batch.metadata.namespace!, client);
      return await use(client);
    } finally {
      endpoint.leases--;
      endpoint.lastUsedAt = this.clock.now();
    }
  }

  /** Reads the batch's Redis settings and checks them; throws RedisConfigError or RedisNotAllowedError, never connects. */
  private async target(batch: TaskBatch): Promise<Target> {
    const ns = batch.metadata.namespace!;
    const r = batch.spec.redis;
    let url: string | undefined;
    let password: string | undefined;
    let username: string | undefined;
    let tls: { ca?: string; insecureSkipVerify?: boolean } | undefined;
    let cluster = false;
    let secretAddress = false;
    let sentinel: SentinelOptions | undefined;
    if (r) {
      const secret = r.secretRef ? await this.secret(ns, r.secretRef.name, 'spec.redis.secretRef') : undefined;
      if (r.sentinel) {
        const sentinelPassword = r.sentinel.passwordKey ? decode(secret, r.sentinel.passwordKey, 'spec.redis.sentinel.passwordKey') : undefined;
        sentinel = { addresses: r.sentinel.addresses.map(sentinelAddress), masterName: r.sentinel.masterName, ...(sentinelPassword ? { password: sentinelPassword } : {}) };
        // Never dialled (the sentinels give the primary's address): it carries the database.
        url = `redis://${r.sentinel.masterName}/${r.db ?? 0}`;
      } else {
        url = r.url ?? (r.secretRef?.urlKey ? decode(secret, r.secretRef.urlKey, `spec.redis.secretRef (key ${r.secretRef.urlKey})`) : undefined);
      }
      if (r.secretRef) password = decodeOptional(secret, r.secretRef.passwordKey ?? 'password');
      if (r.secretRef) {
        const fromSecret = !r.url && !r.sentinel && r.secretRef.urlKey ? url : undefined;
        const source = `Secret ${ns}/${r.secretRef.name}`;
        const values = [password, fromSecret, sentinel?.password].filter((v): v is string => Boolean(v));
        if (fromSecret) {
          secretAddress = true;
          const problem = redisUrlProblem(fromSecret);
          if (problem) {
            this.sensitive.set(`${ns}/${batch.metadata.name}`, { values, source });
            // The value is a secret: say where it is and what is wrong, never what it is.
            throw new RedisConfigError(
              `spec.redis.secretRef: key ${r.secretRef.urlKey} of ${source} is not a Redis URL: it ${problem} (expected redis://host:port or rediss://host:port; its value is not shown)`,
            );
          }
          values.push(new URL(fromSecret).hostname.replace(/^\[|\]$/g, ''));
        }
        this.sensitive.set(`${ns}/${batch.metadata.name}`, { values, source });
      } else {
        this.sensitive.delete(`${ns}/${batch.metadata.name}`);
      }
      username = r.username;
      if (r.tls?.enabled) {
        tls = { insecureSkipVerify: r.tls.insecureSkipVerify ?? false };
        if (r.tls.caSecretRef) {
          const caSecret = await this.secret(ns, r.tls.caSecretRef.name, 'spec.redis.tls.caSecretRef');
          const key = r.tls.caSecretRef.key ?? 'ca.crt';
          tls.ca = decode(caSecret, key, 'spec.redis.tls.caSecretRef');
          // A CA that is not one would surface as a TLS failure on every attempt; it is a spec error.
          if (!isPemCertificates(tls.ca))
            throw new RedisConfigError(`spec.redis.tls.caSecretRef: key ${key} of Secret ${ns}/${r.tls.caSecretRef.name} holds no PEM certificate (expected -----BEGIN CERTIFICATE----- blocks)`);
        }
      }
      cluster = r.cluster ?? false;
      if (r.url) {
        const problem = redisUrlProblem(r.url);
        if (problem) throw new RedisConfigError(`spec.redis.url ${problem}; expected redis://host:port[/db] or rediss://host:port[/db] (TLS)`);
      }
    } else if (this.defaults) {
      url = this.defaults.url;
      username = this.defaults.username;
      // The installer's Secret, or the bundled Redis's generated admin password (no Secret for workers then).
      password = process.env.TASKBATCH_DEFAULT_REDIS_PASSWORD || undefined;
      if (this.defaults.tls) tls = {};
      cluster = this.defaults.cluster ?? false;
      const problem = redisUrlProblem(url);
      if (problem) throw new RedisConfigError(`the operator's default Redis URL (TASKBATCH_DEFAULT_REDIS_URL, Helm value redis.url) ${problem}; the installer must fix it, or set spec.redis`);
    }
    if (!url) throw new RedisConfigError('no Redis configured: set spec.redis.url (or spec.redis.secretRef with urlKey), or install the operator with a default Redis');
    // Before any connection: a Redis outside the installer's list is never contacted (the primary
    // sentinels name is checked when they name it, in endpointFor).
    if (sentinel) this.guard?.checkSentinels(sentinel.addresses);
    else this.guard?.check(batch, url);
    return { url, ...(username ? { username } : {}), ...(password ? { password } : {}), ...(tls ? { tls } : {}), cluster, ...(sentinel ? { sentinel } : {}), secretAddress };
  }

  /** The endpoint for these settings, created (and connecting in the background) on first use. */
  private endpointFor(target: Target): RedisEndpoint {
    const key = JSON.stringify([target.url, target.username, target.password, target.tls, target.cluster, target.sentinel]);
    const existing = this.endpoints.get(key);
    if (existing && !existing.ended) return existing;
    const parsed = new URL(target.url);
    const s = target.sentinel;
    const address = s ? `primary ${s.masterName} via sentinels ${s.addresses.map(hostPort).join(',')}` : `${parsed.hostname}:${parsed.port || 6379}`;
    // Log lines correlate by id; the address only when no Secret supplied it.
    const id = createHash('sha256').update(key).digest('hex').slice(0, 12);
    const logged = target.secretAddress ? { endpoint: id, address: '(from a Secret, not shown)' } : { endpoint: id, address };
    const endpoint = new RedisEndpoint(
      (retryDelayMs) => {
        try {
          return connectRedis({
            url: target.url,
            ...(target.username ? { username: target.username } : {}),
            ...(target.password ? { password: target.password } : {}),
            ...(target.tls ? { tls: target.tls } : {}),
            cluster: target.cluster,
            ...(s ? { sentinel: s } : {}),
            ...(this.guard ? { maxReplyBytes: this.guard.maxReplyBytes } : {}),
            redisOptions: {
              maxRetriesPerRequest: 1,
              enableOfflineQueue: false,
              connectTimeout: this.timings.connectTimeoutMs,
              commandTimeout: this.commandTimeoutMs,
              retryStrategy: retryDelayMs,
              ...(s ? this.sentinelOptions(s, retryDelayMs) : {}),
            },
          });
        } catch (err) {
          // redisUrlProblem accepted the URL, so this is a check the two disagree on: still a settings error.
          throw new RedisConfigError(`the Redis settings were refused before connecting: ${(err as Error).message}`);
        }
      },
      {
        address,
        tls: parsed.protocol === 'rediss:' || target.tls !== undefined,
        ...(target.cluster ? { clusterSeed: { host: parsed.hostname.replace(/^\[|\]$/g, ''), port: Number(parsed.port || 6379) } } : {}),
        clock: this.clock,
        timings: this.timings,
        random: this.random,
      },
    );
    endpoint.onChange((up, failure) => {
      if (up) this.log?.info('Reconnected to Redis', logged);
      else if (!target.secretAddress) this.log?.warn('Lost or could not open a Redis connection; retrying with backoff', { ...logged, cause: failure?.code, detail: failure?.text });
      else this.log?.warn('Lost or could not open a Redis connection; retrying with backoff', { ...logged, cause: failure?.code });
    });
    this.endpoints.set(key, endpoint);
    this.armSweep();
    return endpoint;
  }

  /**
   * How the operator talks to a batch's sentinels: only the listed ones (ioredis would add the
   * others a sentinel reports, which nobody checked against the allow-list); the primary they
   * name is checked before it is dialled, on every connection; a round of sentinels that all
   * failed counts as one failed attempt of the endpoint, on its backoff; a sentinel that accepts
   * and stays silent is cut off like a silent Redis.
   */
  private sentinelOptions(s: SentinelOptions, retryDelayMs: () => number): RedisConnectionOptions['redisOptions'] {
    const guard = this.guard;
    return {
      updateSentinels: false,
      sentinelRetryStrategy: retryDelayMs,
      sentinelCommandTimeout: this.timings.connectTimeoutMs,
      ...(guard
        ? {
            natMap: (key: string) => {
              const i = key.lastIndexOf(':');
              // Throwing makes ioredis count this sentinel's answer as a failure and ask the next one.
              guard.checkSentinelPrimary(s.masterName, key.slice(0, i), Number(key.slice(i + 1)));
              return null;
            },
          }
        : {}),
    };
  }

  /** The error with the batch's Secret values replaced (the address too, when a Secret supplied it). */
  private redacted(batch: TaskBatch, err: RedisUnavailableError): RedisUnavailableError {
    const cause = { ...err.cause, text: this.redact(batch, err.cause.text) };
    return new RedisUnavailableError(this.redact(batch, err.address), cause, err.retryAt, this.redact(batch, err.message));
  }

  /** Closes endpoints idle for idleMs (no lease, no use); re-arms while any remain. */
  private sweep(): void {
    this.sweepTimer = undefined;
    const now = this.clock.now();
    for (const [key, e] of this.endpoints) {
      if (e.ended) {
        this.endpoints.delete(key);
      } else if (e.leases === 0 && now - e.lastUsedAt >= this.idleMs) {
        e.close();
        this.endpoints.delete(key);
        this.log?.debug('Closed an idle Redis connection', { idleMs: this.idleMs });
      }
    }
    this.armSweep();
  }

  private armSweep(): void {
    if (this.sweepTimer !== undefined || this.endpoints.size === 0) return;
    // Often enough that a client goes at most half the limit late; never a busy loop.
    this.sweepTimer = this.clock.setTimeout(() => this.sweep(), Math.min(60_000, Math.max(50, this.idleMs / 2)));
  }

  /**
   * After the last TaskBatch of a namespace on the managed default Redis is cleaned up: remove the
   * namespace's ACL user and Secret. A no-op for batches with their own spec.redis.
   */
  async releaseNamespace(batch: TaskBatch, admin: RedisClient): Promise<void> {
    if (batch.spec.redis || !this.acls) return;
    await this.acls.release(batch.metadata.namespace!, admin);
  }

  /** Drops what was remembered of a deleted batch (`namespace/name`), so the map does not grow with every batch ever seen. */
  forget(key: string): void {
    this.sensitive.delete(key);
  }

  /** `text` with every string that came from the batch's Secret replaced by a placeholder naming the Secret. */
  redact(batch: TaskBatch, text: string): string {
    const s = this.sensitive.get(`${batch.metadata.namespace}/${batch.metadata.name}`);
    if (!s) return text;
    let out = text;
    for (const v of [...s.values].sort((a, b) => b.length - a.length)) if (v.length >= 3) out = out.split(v).join(`<value from ${s.source}>`);
    return out;
  }

  /** Disconnects every client (on shutdown); reconciles still holding one see their commands fail. */
  close(): void {
    if (this.sweepTimer !== undefined) this.clock.clearTimeout(this.sweepTimer);
    this.sweepTimer = undefined;
    for (const e of this.endpoints.values()) e.close();
    this.endpoints.clear();
  }

  /**
   * A running batch is reconciled every second; its Secret is read at most once per
   * SECRET_TTL_MS (a rotated password is picked up within that time), not on every pass.
   */
  private async secret(ns: string, name: string, field: string): Promise<Secret> {
    const key = `${ns}/${name}`;
    const cached = this.secrets.get(key);
    if (cached && this.clock.now() - cached.at < SECRET_TTL_MS) return cached.secret;
    const s = await this.kube.find<Secret>(`/api/v1/namespaces/${ns}/secrets/${name}`);
    if (!s) {
      this.secrets.delete(key);
      throw new RedisConfigError(`${field}: Secret ${ns}/${name} not found`);
    }
    this.secrets.set(key, { at: this.clock.now(), secret: s });
    return s;
  }
}

/** One spec.redis.sentinel.addresses entry (the CRD checked its shape; the port's range is checked here). */
function sentinelAddress(entry: string, i: number): { host: string; port: number } {
  const address = parseSentinelAddress(entry);
  if (!address) throw new RedisConfigError(`spec.redis.sentinel.addresses[${i}]: ${JSON.stringify(entry)} is not host:port with a port from 1 to 65535 (IPv6 as [addr]:port)`);
  return address;
}

function hostPort(a: { host: string; port: number }): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

function decodeOptional(secret: Secret | undefined, key: string): string | undefined {
  const v = secret?.data?.[key];
  return v === undefined ? undefined : Buffer.from(v, 'base64').toString();
}

function decode(secret: Secret | undefined, key: string, field: string): string {
  const v = decodeOptional(secret, key);
  if (v === undefined) throw new RedisConfigError(`${field}: the Secret has no key ${key}`);
  return v;
}

/**
 * Why `url` is not a usable Redis URL, in words that never repeat it (it may come from a Secret),
 * or undefined. Every malformed URL is caught here, so none reaches a socket or surfaces as a
 * connection error: the reconciler reports it as the terminal RedisConfigInvalid.
 */
export function redisUrlProblem(url: string): string | undefined {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return 'is not a URL';
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') return 'does not start with redis:// or rediss://';
  if (!u.hostname || u.hostname === '[]') return 'names no host';
  if (u.port === '0') return 'names port 0';
  if (u.password) return "contains a password (give it in a Secret's password key instead)";
  const db = u.pathname && u.pathname !== '/' ? Number(u.pathname.slice(1)) : 0;
  if (!Number.isInteger(db) || db < 0) return 'has a database path that is not a non-negative integer';
  return undefined;
}

/** Whether `pem` holds at least one certificate and every BEGIN CERTIFICATE block parses. */
function isPemCertificates(pem: string): boolean {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) return false;
  try {
    for (const b of blocks) new X509Certificate(b);
    return true;
  } catch {
    return false;
  }
}
