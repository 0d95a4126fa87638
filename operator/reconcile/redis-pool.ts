import { connectRedis, parseRedisUrl, type RedisClient } from '../../queue/index.js';
import type { KubeClient } from '../../kube/client.js';
import type { TaskBatch } from '../../api/taskbatch.js';
import type { WorkerPodConfig } from './pods.js';
import type { RedisGuard } from './redis-allow.js';
import type { NamespaceAcls } from './redis-acl.js';

const SECRET_TTL_MS = 60_000;

export class RedisConfigError extends Error {
  override name = 'RedisConfigError';
}

interface Secret {
  data?: Record<string, string>;
}

/**
 * One client per distinct Redis (URL + identity), shared by all batches using it. Clients
 * fail fast while disconnected (no offline queue) so a reconcile never hangs on a dead
 * Redis: it reports RedisUnavailable and retries with backoff instead.
 */
export class RedisPool {
  private readonly clients = new Map<string, RedisClient>();
  private readonly secrets = new Map<string, { at: number; secret: Secret }>();
  /** Per batch (ns/name): strings that came out of a Secret, never to appear in status, events or logs. */
  private readonly sensitive = new Map<string, { values: string[]; source: string }>();

  constructor(
    private readonly kube: KubeClient,
    private readonly defaults: WorkerPodConfig['defaultRedis'],
    /** Set when the operator manages per-namespace ACL users on the default Redis. */
    private readonly acls?: NamespaceAcls,
    /** The installer's allowed addresses and reply bound (redis-allow.ts); unset = none. */
    private readonly guard?: RedisGuard,
  ) {}

  async forBatch(batch: TaskBatch): Promise<RedisClient> {
    const ns = batch.metadata.namespace!;
    const r = batch.spec.redis;
    let url: string | undefined;
    let password: string | undefined;
    let username: string | undefined;
    let tls: { ca?: string; insecureSkipVerify?: boolean } | undefined;
    let cluster = false;
    if (r) {
      const secret = r.secretRef ? await this.secret(ns, r.secretRef.name, 'spec.redis.secretRef') : undefined;
      url = r.url ?? (r.secretRef?.urlKey ? decode(secret, r.secretRef.urlKey, `spec.redis.secretRef (key ${r.secretRef.urlKey})`) : undefined);
      if (r.secretRef) password = decodeOptional(secret, r.secretRef.passwordKey ?? 'password');
      if (r.secretRef) {
        const fromSecret = !r.url && r.secretRef.urlKey ? url : undefined;
        const source = `Secret ${ns}/${r.secretRef.name}`;
        const values = [password, fromSecret].filter((v): v is string => Boolean(v));
        if (fromSecret) {
          try {
            values.push(parseRedisUrl(fromSecret).host);
          } catch {
            this.sensitive.set(`${ns}/${batch.metadata.name}`, { values, source });
            // The value is a secret: say where it is, never what it is.
            throw new RedisConfigError(`spec.redis.secretRef: key ${r.secretRef.urlKey} of ${source} is not a Redis URL (expected redis://host:port or rediss://host:port; its value is not shown)`);
          }
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
          tls.ca = decode(caSecret, r.tls.caSecretRef.key ?? 'ca.crt', 'spec.redis.tls.caSecretRef');
        }
      }
      cluster = r.cluster ?? false;
    } else if (this.defaults) {
      url = this.defaults.url;
      username = this.defaults.username;
      // The installer's Secret, or the bundled Redis's generated admin password (no Secret for workers then).
      password = process.env.TASKBATCH_DEFAULT_REDIS_PASSWORD || undefined;
      if (this.defaults.tls) tls = {};
      cluster = this.defaults.cluster ?? false;
    }
    if (!url) throw new RedisConfigError('no Redis configured: set spec.redis.url (or spec.redis.secretRef with urlKey), or install the operator with a default Redis');
    // Before any connection: a Redis outside the installer's list is never contacted.
    this.guard?.check(batch, url);
    const key = JSON.stringify([url, username, password, tls, cluster]);
    let client = this.clients.get(key);
    if (!client) {
      client = connectRedis({
        url,
        ...(username ? { username } : {}),
        ...(password ? { password } : {}),
        ...(tls ? { tls } : {}),
        cluster,
        ...(this.guard ? { maxReplyBytes: this.guard.maxReplyBytes } : {}),
        redisOptions: { maxRetriesPerRequest: 1, enableOfflineQueue: false, connectTimeout: 5000, commandTimeout: 15_000, retryStrategy: (n) => Math.min(5000, 100 * 2 ** n) },
      });
      client.on('error', () => undefined); // reported through failed commands and the RedisUnavailable condition
      this.clients.set(key, client);
    }
    if (client.status === 'wait') await (client as { connect(): Promise<void> }).connect();
    if (client.status !== 'ready') await waitReady(client, 5000);
    // Before any worker pod of the namespace exists, its user and Secret must (pods mount the Secret).
    if (!r && this.acls) await this.acls.ensure(ns, client);
    return client;
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

  close(): void {
    for (const c of this.clients.values()) c.disconnect();
    this.clients.clear();
  }

  /**
   * A running batch is reconciled every second; its Secret is read at most once per
   * SECRET_TTL_MS (a rotated password is picked up within that time), not on every pass.
   */
  private async secret(ns: string, name: string, field: string): Promise<Secret> {
    const key = `${ns}/${name}`;
    const cached = this.secrets.get(key);
    if (cached && Date.now() - cached.at < SECRET_TTL_MS) return cached.secret;
    const s = await this.kube.find<Secret>(`/api/v1/namespaces/${ns}/secrets/${name}`);
    if (!s) {
      this.secrets.delete(key);
      throw new RedisConfigError(`${field}: Secret ${ns}/${name} not found`);
    }
    this.secrets.set(key, { at: Date.now(), secret: s });
    return s;
  }
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

async function waitReady(client: RedisClient, timeoutMs: number): Promise<void> {
  if (client.status === 'ready') return;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`Redis not reachable within ${timeoutMs}ms (status ${client.status})`));
    }, timeoutMs);
    const onReady = (): void => {
      cleanup();
      resolve();
    };
    const cleanup = (): void => {
      clearTimeout(timer);
      client.off('ready', onReady);
    };
    client.on('ready', onReady);
  });
}
