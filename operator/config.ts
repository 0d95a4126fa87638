import { POD_SECURITY_LEVELS, type PodSecurityLevel } from './reconcile/pod-security.js';
import { parseAllowedRedis, RedisAllowListError, type RedisAddressRule } from './reconcile/redis-allow.js';
import { parseResourceSettings, ResourceSettingsError, type WorkerResourceSettings } from './reconcile/worker-resources.js';

/** The operator's configuration: read from the environment once, validated, frozen. */
export interface OperatorConfig {
  /** Namespace to watch; '' = all namespaces (cluster-wide RBAC). */
  watchNamespace: string;
  /** Where the leader Lease lives (the operator's own namespace). */
  leaseNamespace: string;
  leaseName: string;
  leaderElection: boolean;
  metricsHost: string;
  metricsPort: number;
  concurrency: number;
  workerImage: string;
  workerCommand: string[];
  workerMetricsPort: number;
  workerGraceSeconds: number;
  restrictedWorkerSecurityContext: boolean;
  /** Pod Security level enforced on TaskBatch pod templates (TASKBATCH_WORKER_POD_SECURITY). */
  workerPodSecurity: PodSecurityLevel;
  defaultRedisUrl?: string;
  defaultRedisUsername?: string;
  defaultRedisPasswordSecret?: { name: string; key: string };
  defaultRedisTls: boolean;
  /** Per-namespace ACL users on the default Redis, its credential being an admin's (TASKBATCH_DEFAULT_REDIS_MANAGE_ACLS). */
  defaultRedisManageAcls: boolean;
  /** How long a rotated namespace password keeps working (TASKBATCH_REDIS_ROTATION_GRACE_SECONDS). */
  redisRotationGraceSeconds: number;
  statusIntervalMs: number;
  pollIntervalMs: number;
  maxWorkerFailures: number;
  /** A worker pod Pending longer than this counts as a failed worker (TASKBATCH_WORKER_PENDING_TIMEOUT_SECONDS). */
  workerPendingTimeoutMs: number;
  /** Most items one batch may hold (range, inline items or ConfigMap lines); more is refused with a condition. */
  maxBatchItems: number;
  /** Most items seeded per reconcile of one batch (then status is written and the batch requeued). */
  seedSliceItems: number;
  /** Most unfinished items all batches of one namespace may hold in Redis; 0 = no quota. */
  namespaceItemQuota: number;
  /** Redis addresses a TaskBatch's spec.redis may name besides the default Redis (TASKBATCH_ALLOWED_REDIS; empty = none). */
  allowedRedis: RedisAddressRule[];
  /** Most bytes the operator reads in one Redis reply (TASKBATCH_MAX_REDIS_REPLY_BYTES). */
  maxRedisReplyBytes: number;
  /** Run batches on a Redis whose maxmemory-policy evicts keys (TASKBATCH_REDIS_ALLOW_EVICTION; default refused). */
  allowEvictingRedis: boolean;
  /** Worker pods' default resources and the installer's maximum (TASKBATCH_WORKER_RESOURCES, TASKBATCH_WORKER_MAX_RESOURCES). */
  workerResources: WorkerResourceSettings;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

function int(env: NodeJS.ProcessEnv, name: string, dflt: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return dflt;
  const v = Number(raw);
  if (!Number.isInteger(v) || v < min || v > max) throw new ConfigError(`${name}=${JSON.stringify(raw)} is invalid: expected an integer between ${min} and ${max}`);
  return v;
}

function bool(env: NodeJS.ProcessEnv, name: string, dflt: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw === '') return dflt;
  if (raw === 'true' || raw === '1') return true;
  if (raw === 'false' || raw === '0') return false;
  throw new ConfigError(`${name}=${JSON.stringify(raw)} is invalid: expected true or false`);
}

function podSecurityLevel(env: NodeJS.ProcessEnv, name: string, dflt: PodSecurityLevel): PodSecurityLevel {
  const raw = env[name];
  if (raw === undefined || raw === '') return dflt;
  const level = POD_SECURITY_LEVELS.find((l) => l === raw);
  if (!level) throw new ConfigError(`${name}=${JSON.stringify(raw)} is invalid: expected one of ${POD_SECURITY_LEVELS.join(', ')}`);
  return level;
}

/** The worker image's ENTRYPOINT (Dockerfile.worker), set explicitly: an image a template names may have replaced it. */
const DEFAULT_WORKER_COMMAND = ['tini', '--', 'node', '/app/dist/worker/main.js'];

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Readonly<OperatorConfig> {
  // tini as PID 1 reaps what handlers orphan (Node cannot); the worker image ships it.
  const cmd = env.TASKBATCH_WORKER_COMMAND ?? JSON.stringify(DEFAULT_WORKER_COMMAND);
  let workerCommand: string[];
  try {
    workerCommand = JSON.parse(cmd) as string[];
    if (!Array.isArray(workerCommand) || workerCommand.length === 0 || !workerCommand.every((s) => typeof s === 'string')) throw new Error('not a string array');
  } catch {
    throw new ConfigError(`TASKBATCH_WORKER_COMMAND=${JSON.stringify(cmd)} is invalid: expected a JSON array of strings, e.g. ["node","/app/dist/worker/main.js"]`);
  }
  const secret = env.TASKBATCH_DEFAULT_REDIS_PASSWORD_SECRET;
  let defaultRedisPasswordSecret: OperatorConfig['defaultRedisPasswordSecret'];
  if (secret) {
    const [name, key = 'password'] = secret.split('/');
    if (!name) throw new ConfigError(`TASKBATCH_DEFAULT_REDIS_PASSWORD_SECRET=${JSON.stringify(secret)} is invalid: expected NAME or NAME/KEY`);
    defaultRedisPasswordSecret = { name, key };
  }
  let allowedRedis: RedisAddressRule[];
  let workerResources: WorkerResourceSettings;
  try {
    allowedRedis = parseAllowedRedis(env.TASKBATCH_ALLOWED_REDIS ?? '');
    workerResources = parseResourceSettings(env.TASKBATCH_WORKER_RESOURCES ?? '', env.TASKBATCH_WORKER_MAX_RESOURCES ?? '');
  } catch (err) {
    if (err instanceof RedisAllowListError || err instanceof ResourceSettingsError) throw new ConfigError(err.message);
    throw err;
  }
  const config: OperatorConfig = {
    watchNamespace: env.TASKBATCH_WATCH_NAMESPACE ?? '',
    leaseNamespace: env.TASKBATCH_LEASE_NAMESPACE ?? env.POD_NAMESPACE ?? 'default',
    leaseName: env.TASKBATCH_LEASE_NAME ?? 'taskbatch-operator',
    leaderElection: bool(env, 'TASKBATCH_LEADER_ELECTION', true),
    metricsHost: env.TASKBATCH_METRICS_HOST ?? env.POD_IP ?? '0.0.0.0',
    metricsPort: int(env, 'TASKBATCH_METRICS_PORT', 8080, 0, 65535),
    concurrency: int(env, 'TASKBATCH_CONCURRENCY', 4, 1, 64),
    workerImage: env.TASKBATCH_WORKER_IMAGE ?? 'ghcr.io/taskbatch/worker:0.1.0',
    workerCommand,
    workerMetricsPort: int(env, 'TASKBATCH_WORKER_METRICS_PORT', 9090, 1, 65535),
    workerGraceSeconds: int(env, 'TASKBATCH_WORKER_GRACE_SECONDS', 60, 1, 86_400),
    restrictedWorkerSecurityContext: bool(env, 'TASKBATCH_WORKER_RESTRICTED', true),
    workerPodSecurity: podSecurityLevel(env, 'TASKBATCH_WORKER_POD_SECURITY', 'restricted'),
    defaultRedisTls: bool(env, 'TASKBATCH_DEFAULT_REDIS_TLS', false),
    defaultRedisManageAcls: bool(env, 'TASKBATCH_DEFAULT_REDIS_MANAGE_ACLS', false),
    redisRotationGraceSeconds: int(env, 'TASKBATCH_REDIS_ROTATION_GRACE_SECONDS', 600, 0, 7 * 86_400),
    statusIntervalMs: int(env, 'TASKBATCH_STATUS_INTERVAL_MS', 2000, 0, 600_000),
    pollIntervalMs: int(env, 'TASKBATCH_POLL_INTERVAL_MS', 1000, 100, 600_000),
    maxWorkerFailures: int(env, 'TASKBATCH_MAX_WORKER_FAILURES', 6, 1, 1000),
    workerPendingTimeoutMs: int(env, 'TASKBATCH_WORKER_PENDING_TIMEOUT_SECONDS', 300, 1, 86_400) * 1000,
    maxBatchItems: int(env, 'TASKBATCH_MAX_BATCH_ITEMS', 10_000_000, 1, 1_000_000_000),
    seedSliceItems: int(env, 'TASKBATCH_SEED_SLICE_ITEMS', 50_000, 1000, 10_000_000),
    namespaceItemQuota: int(env, 'TASKBATCH_NAMESPACE_ITEM_QUOTA', 0, 0, 1_000_000_000),
    allowedRedis,
    // 16 MiB: far above any reply the operator needs (counters, presence of <= 1000 workers,
    // seeding acknowledgements), far below its 512 MiB memory limit.
    maxRedisReplyBytes: int(env, 'TASKBATCH_MAX_REDIS_REPLY_BYTES', 16 * 1024 * 1024, 64 * 1024, 512 * 1024 * 1024),
    allowEvictingRedis: bool(env, 'TASKBATCH_REDIS_ALLOW_EVICTION', false),
    workerResources,
    ...(env.TASKBATCH_DEFAULT_REDIS_URL ? { defaultRedisUrl: env.TASKBATCH_DEFAULT_REDIS_URL } : {}),
    ...(env.TASKBATCH_DEFAULT_REDIS_USERNAME ? { defaultRedisUsername: env.TASKBATCH_DEFAULT_REDIS_USERNAME } : {}),
    ...(defaultRedisPasswordSecret ? { defaultRedisPasswordSecret } : {}),
  };
  return Object.freeze(config);
}
