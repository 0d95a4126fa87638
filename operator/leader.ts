import { hostname } from 'node:os';
import { isConflict, type KubeClient } from './kube/client.js';
import type { Logger } from './log.js';

interface Lease {
  apiVersion: 'coordination.k8s.io/v1';
  kind: 'Lease';
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec: { holderIdentity?: string; leaseDurationSeconds?: number; acquireTime?: string; renewTime?: string; leaseTransitions?: number };
}

export interface LeaderElectionOptions {
  namespace: string;
  name: string;
  identity?: string;
  leaseDurationMs?: number;
  renewIntervalMs?: number;
  /** Give up leadership if a renewal has not succeeded for this long. */
  renewDeadlineMs?: number;
}

/**
 * Leader election on a coordination.k8s.io/v1 Lease, as client-go's: the holder renews
 * every renewIntervalMs; others take over once renewTime + leaseDuration has passed. Every
 * write carries the observed resourceVersion, so two candidates cannot both win. A leader
 * that cannot renew within renewDeadlineMs calls onStoppedLeading and must stop writing.
 */
export class LeaderElector {
  readonly identity: string;
  private leading = false;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;
  private lastRenew = 0;
  private readonly path: string;
  private readonly leaseMs: number;
  private readonly renewMs: number;
  private readonly deadlineMs: number;

  constructor(
    private readonly kube: KubeClient,
    private readonly options: LeaderElectionOptions,
    private readonly log: Logger,
    private readonly callbacks: { onStartedLeading(): void; onStoppedLeading(): void },
  ) {
    this.identity = options.identity ?? `${hostname()}-${process.pid}`;
    this.path = `/apis/coordination.k8s.io/v1/namespaces/${options.namespace}/leases`;
    this.leaseMs = options.leaseDurationMs ?? 15_000;
    this.renewMs = options.renewIntervalMs ?? 2_000;
    this.deadlineMs = options.renewDeadlineMs ?? 10_000;
  }

  get isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    void this.tick();
  }

  /** Stops campaigning; a leader releases the lease so another replica takes over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.leading) {
      this.leading = false;
      try {
        const lease = await this.kube.get<Lease>(`${this.path}/${this.options.name}`);
        if (lease.spec.holderIdentity === this.identity) {
          await this.kube.replace(`${this.path}/${this.options.name}`, { ...lease, spec: { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1 } });
        }
      } catch {
        // best effort: the lease expires by itself
      }
    }
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    try {
      const ok = await this.tryAcquireOrRenew();
      if (ok) {
        this.lastRenew = Date.now();
        if (!this.leading) {
          this.leading = true;
          this.log.info('Became leader', { lease: `${this.options.namespace}/${this.options.name}`, identity: this.identity });
          this.callbacks.onStartedLeading();
        }
      } else if (this.leading) {
        this.lose('another replica holds the lease');
      }
    } catch (err) {
      if (this.leading && Date.now() - this.lastRenew > this.deadlineMs) this.lose(`renewal failed for ${this.deadlineMs}ms: ${String(err)}`);
    }
    if (!this.stopped) {
      this.timer = setTimeout(() => void this.tick(), this.leading ? this.renewMs : Math.max(500, this.renewMs));
    }
  }

  private lose(why: string): void {
    this.leading = false;
    this.log.warn('Lost leadership', { identity: this.identity, why });
    this.callbacks.onStoppedLeading();
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const now = new Date();
    const nowIso = now.toISOString().replace('Z', '000Z');
    const existing = await this.kube.find<Lease>(`${this.path}/${this.options.name}`);
    const spec = { holderIdentity: this.identity, leaseDurationSeconds: Math.ceil(this.leaseMs / 1000), renewTime: nowIso };
    if (!existing) {
      try {
        await this.kube.create(this.path, { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: this.options.name, namespace: this.options.namespace }, spec: { ...spec, acquireTime: nowIso, leaseTransitions: 0 } });
        return true;
      } catch (err) {
        if (isConflict(err)) return false;
        throw err;
      }
    }
    const holder = existing.spec.holderIdentity ?? '';
    const renewedAt = Date.parse(existing.spec.renewTime ?? '') || 0;
    const expired = renewedAt + (existing.spec.leaseDurationSeconds ?? 15) * 1000 < now.getTime();
    if (holder && holder !== this.identity && !expired) return false;
    const takeover = holder !== this.identity;
    try {
      await this.kube.replace(`${this.path}/${this.options.name}`, {
        ...existing,
        spec: {
          ...existing.spec,
          ...spec,
          ...(takeover ? { acquireTime: nowIso, leaseTransitions: (existing.spec.leaseTransitions ?? 0) + 1 } : {}),
        },
      });
      return true;
    } catch (err) {
      if (isConflict(err)) return false;
      throw err;
    }
  }
}
