import { API_VERSION, BATCH_LABEL, EPOCH_ANNOTATION, KIND, type TaskBatch } from '../../api/taskbatch.js';
import { SPEC_DEFAULTS } from '../../api/types.generated.js';
import { workerSettingsEnv } from '../../api/worker-settings.js';
import type { Container, EnvVar, Pod, PodSpec } from '../../kube/pod.js';
import { namespaceAclUser } from '../../queue/acl.js';
import { NAMESPACE_REDIS_SECRET } from './redis-acl.js';
import { checkPodSecurity, describeViolations, hardenPodSpec, type PodSecurityLevel, type PodSecurityViolation } from './pod-security.js';
import { applyWorkerResources, type WorkerResourceSettings } from './worker-resources.js';

/** How the operator runs worker pods; from the operator's config (Helm values). */
export interface WorkerPodConfig {
  image: string;
  command: string[];
  /** Default Redis when a TaskBatch has no spec.redis. */
  /** managedAcls: workers authenticate as their namespace's ACL user, password from its Secret (redis-acl.ts). */
  defaultRedis?: { url: string; passwordSecret?: { name: string; key: string }; username?: string; tls?: boolean; cluster?: boolean; managedAcls?: boolean };
  metricsPort: number;
  /** Restricted Pod Security defaults on the worker container where the template says nothing (baseline/unrestricted only). */
  restrictedSecurityContext: boolean;
  /** The Pod Security level enforced on the template (workerPodSecurity). */
  podSecurity: PodSecurityLevel;
  /** Seconds a drained/terminated worker gets to finish its items. */
  terminationGracePeriodSeconds: number;
  /** The installer's default resources and maximum (worker-resources.ts); unset = none. */
  resources?: WorkerResourceSettings;
  /** The installer accepts a Redis that evicts keys (queue/eviction-policy.ts); workers are told so too. */
  allowEvictingRedis?: boolean;
}

function workerContainerIndex(containers: Container[]): number {
  const named = containers.findIndex((c) => c.name === 'worker');
  return Math.max(named, 0);
}

/** The batch's worker environment: everything worker/config.ts reads. */
function workerEnv(batch: TaskBatch, epoch: string, cfg: WorkerPodConfig): EnvVar[] {
  const spec = batch.spec;
  const env: EnvVar[] = [
    { name: 'TASKBATCH_NAMESPACE', value: batch.metadata.namespace ?? 'default' },
    { name: 'TASKBATCH_BATCH', value: batch.metadata.name ?? '' },
    { name: 'TASKBATCH_QUEUE_EPOCH', value: epoch },
    ...Object.entries(workerSettingsEnv(spec)).map(([name, value]) => ({ name, value })),
    { name: 'TASKBATCH_METRICS_PORT', value: String(cfg.metricsPort) },
    { name: 'TASKBATCH_WORKER_ID', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
    { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
    // Bind the pod's own address: right in a pod, and what lets the local cluster run many
    // workers side by side on one port.
    { name: 'TASKBATCH_METRICS_ADDR', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
    { name: 'TASKBATCH_SHUTDOWN_GRACE_SECONDS', value: String(Math.max(1, cfg.terminationGracePeriodSeconds - 5)) },
  ];
  if (cfg.allowEvictingRedis) env.push({ name: 'TASKBATCH_REDIS_ALLOW_EVICTION', value: 'true' });
  const redis = spec.redis;
  const credentials = redisCredentialsVolume(batch, cfg);
  // Credentials reach the worker as a file of a Secret volume, never as an environment variable
  // (which would stay readable in /proc/<pid>/environ for every process of the pod, handlers too).
  if (credentials) env.push({ name: 'TASKBATCH_REDIS_PASSWORD_FILE', value: `${REDIS_CREDENTIALS_DIR}/password` });
  if (credentials?.optional) env.push({ name: 'TASKBATCH_REDIS_PASSWORD_OPTIONAL', value: 'true' });
  if (redis) {
    if (redis.sentinel) {
      // The primary's address comes from the sentinels: no TASKBATCH_REDIS_URL (the worker refuses both).
      env.push({ name: 'TASKBATCH_REDIS_SENTINELS', value: redis.sentinel.addresses.join(',') });
      env.push({ name: 'TASKBATCH_REDIS_SENTINEL_MASTER', value: redis.sentinel.masterName });
      if (redis.db !== undefined) env.push({ name: 'TASKBATCH_REDIS_DB', value: String(redis.db) });
      if (credentials?.sentinelPassword) env.push({ name: 'TASKBATCH_REDIS_SENTINEL_PASSWORD_FILE', value: `${REDIS_CREDENTIALS_DIR}/${SENTINEL_PASSWORD_FILE}` });
    }
    if (redis.durability === 'replicated') env.push({ name: 'TASKBATCH_REDIS_DURABILITY', value: 'replicated' });
    if (redis.url) env.push({ name: 'TASKBATCH_REDIS_URL', value: redis.url });
    else if (redis.secretRef?.urlKey && !redis.sentinel) env.push({ name: 'TASKBATCH_REDIS_URL', valueFrom: { secretKeyRef: { name: redis.secretRef.name, key: redis.secretRef.urlKey } } });
    if (redis.username) env.push({ name: 'TASKBATCH_REDIS_USERNAME', value: redis.username });
    if (redis.tls?.enabled) env.push({ name: 'TASKBATCH_REDIS_TLS', value: 'true' });
    if (redis.tls?.insecureSkipVerify) env.push({ name: 'TASKBATCH_REDIS_TLS_INSECURE', value: 'true' });
    if (redis.cluster) env.push({ name: 'TASKBATCH_REDIS_CLUSTER', value: 'true' });
  } else if (cfg.defaultRedis) {
    const d = cfg.defaultRedis;
    env.push({ name: 'TASKBATCH_REDIS_URL', value: d.url });
    // On a managed Redis the pod is its namespace's ACL user, never the operator's.
    if (d.managedAcls) env.push({ name: 'TASKBATCH_REDIS_USERNAME', value: namespaceAclUser(batch.metadata.namespace ?? 'default') });
    else if (d.username) env.push({ name: 'TASKBATCH_REDIS_USERNAME', value: d.username });
    if (d.tls) env.push({ name: 'TASKBATCH_REDIS_TLS', value: 'true' });
    if (d.cluster) env.push({ name: 'TASKBATCH_REDIS_CLUSTER', value: 'true' });
  }
  return env;
}

/** Where the worker container finds the Redis password (a Secret volume, read-only). */
export const REDIS_CREDENTIALS_DIR = '/var/run/taskbatch/redis';
const REDIS_CREDENTIALS_VOLUME = 'taskbatch-redis-credentials';
/** The sentinels' own password (spec.redis.sentinel.passwordKey), in the same volume. */
const SENTINEL_PASSWORD_FILE = 'sentinel-password';

/**
 * The Secret volume carrying the batch's Redis password: spec.redis.secretRef (its password key
 * optional, as before), the namespace's Secret on a managed default Redis, or the installer's
 * Secret of an unmanaged default Redis. Mounted without subPath, so the kubelet refreshes the
 * file after a rotation.
 */
function redisCredentialsVolume(batch: TaskBatch, cfg: Pick<WorkerPodConfig, 'defaultRedis'>): { volume: Record<string, unknown>; optional: boolean; sentinelPassword: boolean } | undefined {
  const r = batch.spec.redis;
  let secret: { name: string; key: string; optional: boolean } | undefined;
  if (r) {
    if (r.secretRef) secret = { name: r.secretRef.name, key: r.secretRef.passwordKey ?? 'password', optional: true };
  } else if (cfg.defaultRedis?.managedAcls) {
    secret = { name: NAMESPACE_REDIS_SECRET, key: 'password', optional: false };
  } else if (cfg.defaultRedis?.passwordSecret) {
    secret = { ...cfg.defaultRedis.passwordSecret, optional: false };
  }
  if (!secret) return undefined;
  const items = [{ key: secret.key, path: 'password' }];
  // Only with spec.redis.secretRef (the CRD requires it for passwordKey). The volume stays optional
  // for the data password's sake; a missing sentinel key makes the worker fail naming its file.
  const sentinelKey = r?.secretRef ? r.sentinel?.passwordKey : undefined;
  if (sentinelKey) items.push({ key: sentinelKey, path: SENTINEL_PASSWORD_FILE });
  return {
    volume: { name: REDIS_CREDENTIALS_VOLUME, secret: { secretName: secret.name, items, ...(secret.optional ? { optional: true } : {}) } },
    optional: secret.optional,
    sentinelPassword: sentinelKey !== undefined,
  };
}

const RESTRICTED_CONTAINER = {
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  runAsNonRoot: true,
  capabilities: { drop: ['ALL'] },
  seccompProfile: { type: 'RuntimeDefault' },
};

type PodTemplate = { metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> }; spec?: Partial<PodSpec> };

/** A template the operator's workerPodSecurity level refuses; the batch fails with PodTemplateRejected. */
export class PodTemplateRejectedError extends Error {
  override name = 'PodTemplateRejectedError';
  constructor(
    readonly level: PodSecurityLevel,
    readonly violations: readonly PodSecurityViolation[],
  ) {
    super(describeViolations(level, violations));
  }
}

/** The batch's template's contradictions of the Pod Security level (paths relative to spec.template). */
export function podTemplateViolations(batch: TaskBatch, cfg: Pick<WorkerPodConfig, 'podSecurity'>): PodSecurityViolation[] {
  const template = (batch.spec.template ?? {}) as PodTemplate;
  return checkPodSecurity(cfg.podSecurity, (template.spec ?? {}) as Record<string, unknown>, template.metadata?.annotations ?? {});
}

/**
 * A worker pod from the batch's template: the worker container (named "worker", or the
 * first) gets the worker command and env; everything else in the template is kept,
 * except that the workerPodSecurity level is enforced: a template contradicting it throws
 * PodTemplateRejectedError (no pod is ever built from it), and `restricted` hardens every
 * container. The pod is owned by the TaskBatch, so deleting the batch garbage-collects its pods.
 */
export function buildWorkerPod(batch: TaskBatch, epoch: string, cfg: WorkerPodConfig): Pod {
  const template = (batch.spec.template ?? {}) as PodTemplate;
  const violations = podTemplateViolations(batch, cfg);
  if (violations.length > 0) throw new PodTemplateRejectedError(cfg.podSecurity, violations);
  const base = structuredClone({ containers: [], ...(template.spec ?? {}) }) as PodSpec;
  if (base.containers.length === 0) base.containers.push({ name: 'worker' });
  // Hardened after the default worker container exists, so it is covered too.
  const spec = hardenPodSpec(cfg.podSecurity, base);
  // The installer's default requests/limits where the template sets none (the reconciler has
  // already refused templates over the maximum).
  if (cfg.resources) applyWorkerResources(spec as { containers: Container[]; initContainers?: Container[] }, cfg.resources);
  const i = workerContainerIndex(spec.containers);
  const c = spec.containers[i]!;
  c.image ??= cfg.image;
  c.command = [...cfg.command];
  const own = workerEnv(batch, epoch, cfg);
  const ownNames = new Set(own.map((e) => e.name));
  c.env = [...own, ...(c.env ?? []).filter((e) => !ownNames.has(e.name))];
  const credentials = redisCredentialsVolume(batch, cfg);
  if (credentials) {
    // Only the worker container mounts it; other containers of the template do not see it.
    spec.volumes = [...((spec.volumes as Record<string, unknown>[] | undefined) ?? []).filter((v) => v.name !== REDIS_CREDENTIALS_VOLUME), credentials.volume];
    const mounts = ((c.volumeMounts as Record<string, unknown>[] | undefined) ?? []).filter((m) => m.name !== REDIS_CREDENTIALS_VOLUME);
    c.volumeMounts = [...mounts, { name: REDIS_CREDENTIALS_VOLUME, mountPath: REDIS_CREDENTIALS_DIR, readOnly: true }];
  }
  c.ports ??= [{ name: 'metrics', containerPort: cfg.metricsPort, protocol: 'TCP' }];
  // /readyz: connected to Redis with the batch's state present; /healthz: the event loop
  // answers and the consumer loop made progress (a wedged worker is restarted by replacement).
  c.readinessProbe ??= { httpGet: { path: '/readyz', port: cfg.metricsPort }, periodSeconds: 2, failureThreshold: 2 };
  c.livenessProbe ??= { httpGet: { path: '/healthz', port: cfg.metricsPort }, initialDelaySeconds: 10, periodSeconds: 10, timeoutSeconds: 5, failureThreshold: 6 };
  if (cfg.podSecurity === 'restricted') {
    // hardenPodSpec made every container compliant; a read-only root filesystem is not part of
    // the Standard, so the worker gets it as a default the template may override (as before).
    c.securityContext ??= {};
    c.securityContext.readOnlyRootFilesystem ??= true;
  } else if (cfg.restrictedSecurityContext) {
    c.securityContext = { ...RESTRICTED_CONTAINER, ...(c.securityContext ?? {}) };
    spec.securityContext = { runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' }, ...(spec.securityContext ?? {}) };
  }
  // The operator replaces failed workers itself (with backoff), so the kubelet must not.
  spec.restartPolicy = 'Never';
  // A worker drained for scale-in finishes the items it holds however long they take, up to the
  // item timeout, also once its pod is deleted: the kubelet must not SIGKILL it first. 30 s on
  // top for the executor's abort grace, recording the outcomes and leaving. A template's own
  // value wins (its author's choice).
  spec.terminationGracePeriodSeconds ??= Math.max(cfg.terminationGracePeriodSeconds, (batch.spec.itemTimeoutSeconds ?? SPEC_DEFAULTS.itemTimeoutSeconds) + 30);
  spec.automountServiceAccountToken ??= false;
  const name = batch.metadata.name!;
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      generateName: `${name.slice(0, 50)}-w-`,
      namespace: batch.metadata.namespace!,
      labels: {
        ...(template.metadata?.labels ?? {}),
        [BATCH_LABEL]: name,
        'app.kubernetes.io/name': 'taskbatch-worker',
        'app.kubernetes.io/managed-by': 'taskbatch',
        'app.kubernetes.io/instance': name,
      },
      annotations: { ...(template.metadata?.annotations ?? {}), [EPOCH_ANNOTATION]: epoch },
      ownerReferences: [{ apiVersion: API_VERSION, kind: KIND, name, uid: batch.metadata.uid!, controller: true, blockOwnerDeletion: true }],
    },
    spec,
  };
}

export function isPodTerminating(p: Pod): boolean {
  return Boolean(p.metadata.deletionTimestamp);
}

export function isPodReady(p: Pod): boolean {
  return p.status?.phase === 'Running' && (p.status.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
}

export function podExitCode(p: Pod): number | undefined {
  for (const cs of p.status?.containerStatuses ?? []) {
    const code = cs.state?.terminated?.exitCode;
    if (code !== undefined) return code;
  }
  return undefined;
}
