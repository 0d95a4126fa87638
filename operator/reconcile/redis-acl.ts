import { randomBytes } from 'node:crypto';
import { aclPasswordHashes, deleteNamespaceAclUser, namespaceAclUser, passwordHash, setNamespaceAclUser, type RedisClient } from '../../queue/index.js';
import { isConflict, isNotFound, type KubeClient } from '../../kube/client.js';

/**
 * Per-namespace Redis identities on the Redis the operator manages (the chart's bundled Redis,
 * or a default Redis with `redis.manageAcls`): one ACL user per namespace with TaskBatches,
 * limited to that namespace's keys and channels (queue/acl.ts), its password in a Secret of
 * that namespace which only the worker pods mount. docs/security.md#per-namespace-redis-users.
 */

/** The Secret holding a namespace's Redis user: keys `username` and `password`. */
export const NAMESPACE_REDIS_SECRET = 'taskbatch-redis';
/** Set (to any new value) on the Secret to have the operator rotate the password. */
export const ROTATE_ANNOTATION = 'taskbatch.dev/rotate';
/** The rotate request the operator last carried out (so one request rotates once). */
export const ROTATED_FOR_ANNOTATION = 'taskbatch.dev/rotated-for';
/** When the current password was set (RFC 3339); old passwords are removed a grace period later. */
export const ROTATED_AT_ANNOTATION = 'taskbatch.dev/password-set-at';

export interface NamespaceSecret {
  apiVersion?: string;
  kind?: string;
  metadata: { name?: string; namespace?: string; resourceVersion?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  type?: string;
  data?: Record<string, string>;
}

export interface AclPlanInput {
  namespace: string;
  /** The namespace's Secret, or undefined when it does not exist (never created, or deleted to rotate). */
  secret: NamespaceSecret | undefined;
  /** Password hashes the ACL user accepts now ([] when it does not exist). */
  aclHashes: readonly string[];
  nowMs: number;
  /** How long an old password keeps working after a rotation. */
  graceMs: number;
  /** A fresh password, used only when the plan creates or rotates one. */
  newPassword: string;
}

export interface AclPlan {
  /** Write the Secret: 'create' (absent), 'update' (rotation requested or unreadable password), or leave it. */
  secret: { action: 'create' | 'update'; body: NamespaceSecret } | { action: 'none' };
  /** Exactly the password hashes the ACL user is to accept (current first). */
  hashes: string[];
}

/**
 * The pure plan: the Secret to write and the hashes the user is to accept. A new password is
 * added next to the old ones (ACL users hold several), and old ones are dropped only once the
 * current password is older than the grace period, so workers still connected — or
 * reconnecting with the file the kubelet has not refreshed yet — keep working meanwhile.
 */
export function planNamespaceAcl(input: AclPlanInput): AclPlan {
  const { namespace, secret, aclHashes, nowMs, graceMs, newPassword } = input;
  const stored = secret?.data?.password ? Buffer.from(secret.data.password, 'base64').toString('utf8') : '';
  const annotations = secret?.metadata.annotations ?? {};
  const rotateRequest = annotations[ROTATE_ANNOTATION];
  const wantsRotation = rotateRequest !== undefined && rotateRequest !== annotations[ROTATED_FOR_ANNOTATION];
  if (!secret || !stored || wantsRotation) {
    const now = new Date(nowMs).toISOString();
    const body: NamespaceSecret = {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: {
        name: NAMESPACE_REDIS_SECRET,
        namespace,
        ...(secret?.metadata.resourceVersion ? { resourceVersion: secret.metadata.resourceVersion } : {}),
        labels: { ...(secret?.metadata.labels ?? {}), 'app.kubernetes.io/managed-by': 'taskbatch', 'app.kubernetes.io/component': 'redis-credentials' },
        annotations: {
          ...annotations,
          [ROTATED_AT_ANNOTATION]: now,
          ...(rotateRequest !== undefined ? { [ROTATED_FOR_ANNOTATION]: rotateRequest } : {}),
        },
      },
      type: 'Opaque',
      data: { username: b64(namespaceAclUser(namespace)), password: b64(newPassword) },
    };
    const current = passwordHash(newPassword);
    return { secret: { action: secret ? 'update' : 'create', body }, hashes: [current, ...aclHashes.filter((h) => h !== current)] };
  }
  const current = passwordHash(stored);
  const setAt = Date.parse(annotations[ROTATED_AT_ANNOTATION] ?? '');
  // No (or an unreadable) timestamp: keep the old passwords, as after a rotation just now.
  const graceOver = Number.isFinite(setAt) && nowMs - setAt >= graceMs;
  return { secret: { action: 'none' }, hashes: graceOver ? [current] : [current, ...aclHashes.filter((h) => h !== current)] };
}

export interface NamespaceAclOptions {
  graceMs: number;
  /** Key prefix of the installation. */
  prefix?: string;
  /** How often each namespace's user and Secret are checked again (ms). */
  recheckMs?: number;
  now?: () => number;
}

/** Applies planNamespaceAcl for each namespace using the managed Redis, at most once per recheckMs. */
export class NamespaceAcls {
  private readonly checked = new Map<string, number>();
  private readonly inflight = new Map<string, Promise<void>>();

  constructor(
    private readonly kube: KubeClient,
    private readonly options: NamespaceAclOptions,
  ) {}

  /** Makes sure namespace `ns` has its user and Secret; `admin` is the operator's client of the managed Redis. */
  async ensure(ns: string, admin: RedisClient): Promise<void> {
    const now = (this.options.now ?? Date.now)();
    const last = this.checked.get(ns);
    if (last !== undefined && now - last < (this.options.recheckMs ?? 15_000)) return;
    let p = this.inflight.get(ns);
    if (!p) {
      p = this.apply(ns, admin, now).finally(() => this.inflight.delete(ns));
      this.inflight.set(ns, p);
    }
    await p;
  }

  /**
   * Removes a namespace's user and Secret once its last TaskBatch is gone, so nothing of a tenant
   * outlives its batches (nor an uninstall, whose hook deletes every batch first). A batch created
   * meanwhile gets both again on its next reconcile (the cache is forgotten first).
   */
  async release(ns: string, admin: RedisClient): Promise<void> {
    this.checked.delete(ns);
    await deleteNamespaceAclUser(admin, ns);
    try {
      await this.kube.delete(`/api/v1/namespaces/${ns}/secrets/${NAMESPACE_REDIS_SECRET}`);
    } catch (err) {
      if (!isNotFound(err)) throw new Error(`namespace ${ns}: deleting Secret ${NAMESPACE_REDIS_SECRET} failed: ${(err as Error).message}`);
    }
    this.checked.delete(ns);
  }

  /** Forget the last check of a namespace (tests; a rotation requested through the API). */
  invalidate(ns: string): void {
    this.checked.delete(ns);
  }

  private async apply(ns: string, admin: RedisClient, now: number): Promise<void> {
    const path = `/api/v1/namespaces/${ns}/secrets/${NAMESPACE_REDIS_SECRET}`;
    const secret = await this.kube.find<NamespaceSecret>(path);
    const user = namespaceAclUser(ns);
    let aclHashes: string[];
    try {
      aclHashes = await aclPasswordHashes(admin, user);
    } catch (err) {
      throw new Error(`namespace ${ns}: reading Redis ACL user ${user} failed (does the operator's default Redis credential have the ACL command?): ${(err as Error).message}`);
    }
    const plan = planNamespaceAcl({ namespace: ns, secret, aclHashes, nowMs: now, graceMs: this.options.graceMs, newPassword: randomBytes(32).toString('base64url') });
    // The user accepts the new password before any worker can read it from the Secret.
    await setNamespaceAclUser(admin, ns, plan.hashes, this.options.prefix);
    if (plan.secret.action === 'create') {
      try {
        await this.kube.create(`/api/v1/namespaces/${ns}/secrets`, plan.secret.body);
      } catch (err) {
        // Another operator replica (or a retry) created it first: take it on the next pass.
        if (!isConflict(err)) throw new Error(`namespace ${ns}: creating Secret ${NAMESPACE_REDIS_SECRET} failed: ${(err as Error).message}`);
        return;
      }
    } else if (plan.secret.action === 'update') {
      try {
        await this.kube.replace(path, plan.secret.body);
      } catch (err) {
        if (isConflict(err)) return; // changed meanwhile: planned again on the next pass
        throw new Error(`namespace ${ns}: updating Secret ${NAMESPACE_REDIS_SECRET} failed: ${(err as Error).message}`);
      }
    }
    this.checked.set(ns, now);
  }
}

function b64(s: string): string {
  return Buffer.from(s, 'utf8').toString('base64');
}
