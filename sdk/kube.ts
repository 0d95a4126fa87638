import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { parseSentinelAddress, type SentinelOptions } from '../queue/index.js';
import { batchPath, type TaskBatch } from '../api/taskbatch.js';
import { KubeApiError, KubeClient } from '../kube/client.js';
import { BatchNotFoundError, ConnectionError, ForbiddenError, TaskBatchError } from './errors.js';

/** Where and how to reach one Redis; never carries credentials in the URL. */
export interface RedisEndpoint {
  /** redis://host:port[/db] or rediss:// (TLS). */
  url: string;
  username?: string;
  password?: string;
  tls?: { ca?: string; caFile?: string; insecureSkipVerify?: boolean; serverName?: string };
  /** The URL names a seed node of a Redis Cluster. */
  cluster?: boolean;
  /** Find the primary through Redis Sentinel (url is then optional: only its db and scheme count). */
  sentinel?: SentinelOptions;
}

export interface KubeAccessOptions {
  /** Path of a kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster). */
  kubeconfig?: string;
  /** Context to use instead of the kubeconfig's current-context. */
  context?: string;
}

export interface KubeAccess {
  kube: KubeClient;
  /** The context's namespace, else "default". */
  namespace: string;
  context: string;
  server: string;
}

/**
 * The proposed (not yet written by the operator) status field recording the Redis a TaskBatch
 * actually uses, so clients find the operator's default Redis too. Read when present.
 */
interface StatusRedis {
  url?: string;
  tls?: boolean;
  cluster?: boolean;
  username?: string;
}

/** Loads a kubeconfig the way kubectl does; a missing file or context is a usage error. */
export function loadKubeAccess(o: KubeAccessOptions = {}): KubeAccess {
  const kc = new KubeConfig();
  try {
    if (o.kubeconfig) {
      if (!existsSync(o.kubeconfig)) throw new TaskBatchError('Usage', `kubeconfig ${o.kubeconfig} does not exist`);
      kc.loadFromFile(o.kubeconfig);
    } else {
      kc.loadFromDefault();
    }
  } catch (err) {
    if (err instanceof TaskBatchError) throw err;
    throw new TaskBatchError('Usage', `cannot load the kubeconfig: ${(err as Error).message}`);
  }
  if (o.context) {
    if (!kc.getContexts().some((c) => c.name === o.context)) {
      throw new TaskBatchError(
        'Usage',
        `context ${JSON.stringify(o.context)} is not in the kubeconfig; its contexts: ${
          kc
            .getContexts()
            .map((c) => c.name)
            .join(', ') || '(none)'
        }`,
      );
    }
    kc.setCurrentContext(o.context);
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster) {
    throw new TaskBatchError('Usage', 'no Kubernetes cluster configured: set KUBECONFIG or --kubeconfig, pick one with --context, or pass --redis-url to use a Redis directly');
  }
  const context = kc.getCurrentContext();
  const namespace = kc.getContextObject(context)?.namespace || 'default';
  return { kube: new KubeClient(kc), namespace, context, server: cluster.server };
}

/** Whether a kubeconfig is available without flags (KUBECONFIG, ~/.kube/config, or in-cluster). */
export function hasDefaultKubeconfig(env: NodeJS.ProcessEnv = process.env): boolean {
  if (env.KUBECONFIG?.split(':').some((p) => p && existsSync(p))) return true;
  if (existsSync(join(homedir(), '.kube', 'config'))) return true;
  return Boolean(env.KUBERNETES_SERVICE_HOST) && existsSync('/var/run/secrets/kubernetes.io/serviceaccount/token');
}

/** Maps API server failures to SDK errors that say what to do. */
export function translateKubeError(err: unknown, what: string, server: string): Error {
  if (err instanceof TaskBatchError) return err;
  if (err instanceof KubeApiError) {
    if (err.status === 403) return new ForbiddenError(`${what}: forbidden by the API server's RBAC (${err.message}); ask for the needed role or use another --context`);
    if (err.status === 401) return new ConnectionError(`${what}: the API server rejected the credentials (401); refresh them (e.g. log in again) or use another --context`);
    return new ConnectionError(`${what}: ${err.message}`);
  }
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  const detail = cause?.code ?? cause?.message ?? (err as Error).message ?? String(err);
  return new ConnectionError(`${what}: cannot reach the Kubernetes API server at ${server} (${detail}); check --context/KUBECONFIG`);
}

export async function readTaskBatch(access: KubeAccess, namespace: string, name: string): Promise<TaskBatch> {
  try {
    const tb = await access.kube.find<TaskBatch>(batchPath(namespace, name));
    if (!tb) {
      throw new BatchNotFoundError(
        `TaskBatch ${JSON.stringify(name)} not found in namespace ${JSON.stringify(namespace)} (context ${access.context}); list them with: kubectl get taskbatches -n ${namespace}`,
      );
    }
    return tb;
  } catch (err) {
    if (err instanceof KubeApiError && err.status === 404) {
      throw new BatchNotFoundError(`the TaskBatch API (taskbatch.dev/v1alpha1) is not installed in this cluster (context ${access.context}); install the taskbatch Helm chart`);
    }
    throw translateKubeError(err, `reading TaskBatch ${namespace}/${name}`, access.server);
  }
}

interface Secret {
  data?: Record<string, string>;
}

async function secretKey(access: KubeAccess, namespace: string, name: string, key: string, field: string, optional = false): Promise<string | undefined> {
  let secret: Secret | undefined;
  try {
    secret = await access.kube.find<Secret>(`/api/v1/namespaces/${namespace}/secrets/${name}`);
  } catch (err) {
    const e = translateKubeError(err, `reading Secret ${namespace}/${name} (${field})`, access.server);
    if (e instanceof ForbiddenError) {
      throw new ForbiddenError(`${e.message}; or pass the value yourself (--redis-url / --redis-password-file, or the SDK's redis option)`);
    }
    throw e;
  }
  if (!secret) throw new BatchNotFoundError(`${field}: Secret ${namespace}/${name} not found`);
  const v = secret.data?.[key];
  if (v === undefined) {
    if (optional) return undefined;
    throw new BatchNotFoundError(`${field}: Secret ${namespace}/${name} has no key ${JSON.stringify(key)}`);
  }
  return Buffer.from(v, 'base64').toString('utf8');
}

/** The Secret the operator keeps for a namespace's Redis ACL user (operator/reconcile/redis-acl.ts). */
const NAMESPACE_REDIS_SECRET = 'taskbatch-redis';

/**
 * The namespace's Redis user from its Secret, or undefined when there is none (the default Redis
 * is not managed) or the caller may not read it (then the caller connects without it, as before,
 * and a managed Redis answers NOAUTH naming the missing credential).
 */
async function namespaceRedisUser(access: KubeAccess, ns: string): Promise<{ username: string; password: string } | undefined> {
  let secret: Secret | undefined;
  try {
    secret = await access.kube.find<Secret>(`/api/v1/namespaces/${ns}/secrets/${NAMESPACE_REDIS_SECRET}`);
  } catch (err) {
    if (err instanceof KubeApiError && err.status === 403) return undefined;
    throw translateKubeError(err, `reading Secret ${ns}/${NAMESPACE_REDIS_SECRET} (the namespace's Redis user)`, access.server);
  }
  const username = secret?.data?.username;
  const password = secret?.data?.password;
  if (!username || !password) return undefined;
  return { username: Buffer.from(username, 'base64').toString('utf8'), password: Buffer.from(password, 'base64').toString('utf8') };
}

/**
 * The Redis a TaskBatch uses, as far as a client can know it: `override` first (fields given
 * there win), then `spec.redis` (URL or the Secret's URL key; password and CA from Secrets when
 * the caller may read them), then the `status.redis` the operator records (when it does).
 * A batch on the operator's default Redis without a recorded endpoint needs an override.
 */
export async function redisEndpointFor(access: KubeAccess, tb: TaskBatch, override: Partial<RedisEndpoint> = {}): Promise<RedisEndpoint> {
  const ns = tb.metadata.namespace!;
  const name = tb.metadata.name!;
  const r = tb.spec.redis;
  const recorded = (tb.status as { redis?: StatusRedis } | undefined)?.redis;
  let ep: RedisEndpoint | undefined;
  if (r) {
    let url = r.url;
    if (!url && r.secretRef?.urlKey && !r.sentinel && !override.url) url = await secretKey(access, ns, r.secretRef.name, r.secretRef.urlKey, 'spec.redis.secretRef.urlKey');
    // Through Sentinel the URL is never dialled: it carries the database (the primary comes from the sentinels).
    if (r.sentinel) url = `redis://${r.sentinel.masterName}/${r.db ?? 0}`;
    ep = { url: url ?? '' };
    if (r.sentinel && !override.sentinel) {
      const s = r.sentinel;
      const password = s.passwordKey && r.secretRef ? await secretKey(access, ns, r.secretRef.name, s.passwordKey, 'spec.redis.sentinel.passwordKey') : undefined;
      ep.sentinel = {
        addresses: s.addresses.map((a, i) => sentinelAddress(a, `TaskBatch ${ns}/${name} spec.redis.sentinel.addresses[${i}]`)),
        masterName: s.masterName,
        ...(password ? { password } : {}),
      };
    }
    if (r.username) ep.username = r.username;
    if (r.secretRef && override.password === undefined) {
      const pw = await secretKey(access, ns, r.secretRef.name, r.secretRef.passwordKey ?? 'password', 'spec.redis.secretRef', true);
      if (pw !== undefined) ep.password = pw;
    }
    if (r.tls?.enabled) {
      ep.tls = { ...(r.tls.insecureSkipVerify ? { insecureSkipVerify: true } : {}) };
      if (r.tls.caSecretRef && !override.tls) ep.tls.ca = await secretKey(access, ns, r.tls.caSecretRef.name, r.tls.caSecretRef.key ?? 'ca.crt', 'spec.redis.tls.caSecretRef');
    }
    if (r.cluster) ep.cluster = true;
  } else if (recorded?.url) {
    ep = { url: recorded.url, ...(recorded.username ? { username: recorded.username } : {}), ...(recorded.tls ? { tls: {} } : {}), ...(recorded.cluster ? { cluster: true } : {}) };
  }
  if (!r && override.password === undefined) {
    // On a Redis the operator manages, the caller is the namespace's ACL user (docs/security.md):
    // with the caller's own rights, so whoever may read Secrets in the namespace gets that
    // namespace's Redis user and nothing more.
    const user = await namespaceRedisUser(access, ns);
    if (user) ep = { ...(ep ?? { url: '' }), username: user.username, password: user.password };
  }
  const merged: RedisEndpoint = { ...(ep ?? { url: '' }), ...stripUndefined(override) };
  if (!merged.url) {
    throw new TaskBatchError(
      'Usage',
      `TaskBatch ${ns}/${name} uses the operator's default Redis, and its address is not recorded on the resource; pass it with --redis-url (SDK: the redis.url option), e.g. redis://<release>-taskbatch-redis.<operator namespace>.svc:6379 for the chart's bundled Redis`,
    );
  }
  return merged;
}

/** host:port ([addr]:port for IPv6) of a sentinel, as the CRD allows it. */
function sentinelAddress(entry: string, field: string): { host: string; port: number } {
  const address = parseSentinelAddress(entry);
  if (!address) throw new TaskBatchError('Usage', `${field}: ${JSON.stringify(entry)} is not host:port with a port from 1 to 65535`);
  return address;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
