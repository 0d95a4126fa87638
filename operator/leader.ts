import { hostname } from 'node:os';
import { isConflict, type KubeClient } from '../kube/client.js';
import type { Logger } from './log.js';
import { systemClock, type Clock } from './workqueue.js';

export interface Lease {
  apiVersion: 'coordination.k8s.io/v1';
  kind: 'Lease';
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec: { holderIdentity?: string; leaseDurationSeconds?: number; acquireTime?: string; renewTime?: string; leaseTransitions?: number };
}

/**
 * What the elector needs of the API: a client of its own, without a write guard (its Lease
 * writes must go through when the operator's writes are fenced) and with a request timeout
 * below renewDeadlineMs (LEASE_REQUEST_TIMEOUT_MS), so a hung request cannot outlast the
 * leadership it is meant to keep.
 */
export type LeaseApi = Pick<KubeClient, 'find' | 'create' | 'replace'>;

/**
 * client-go's defaults (kube-controller-manager, controller-runtime): a follower takes over
 * 15 s after it last saw the lease change; the leader retries every 2 s and gives up
 * leadership 10 s after the start of its last successful renewal. The 5 s in between is
 * what a write started just before the deadline may take (the operator's write timeout).
 */
export const LEASE_DURATION_MS = 15_000;
export const RENEW_DEADLINE_MS = 10_000;
const RETRY_PERIOD_MS = 2_000;
/** Each Lease request: half the renew deadline, so a timed-out attempt leaves room for another. */
export const LEASE_REQUEST_TIMEOUT_MS = RENEW_DEADLINE_MS / 2;

export interface LeaderElectionOptions {
  namespace: string;
  name: string;
  identity?: string;
  leaseDurationMs?: number;
  retryPeriodMs?: number;
  /** Give up leadership if no renewal started within this long before now has succeeded. */
  renewDeadlineMs?: number;
  /** Tests inject a skewed or manual clock. */
  clock?: Clock;
}

/** What this replica last saw of the Lease, and when by its own clock. */
interface Observation {
  key: string;
  holder: string;
  durationMs: number;
  at: number;
}

/**
 * Leader election on a coordination.k8s.io/v1 Lease, as client-go's. Expiry is judged only by
 * the local clock: a follower notes when it last saw the Lease record change and takes over
 * once leaseDuration has passed since then without a change, so a holder's renewTime (another
 * machine's clock) never decides anything and clock skew between replicas does not matter.
 * Every write carries the observed resourceVersion, so two candidates cannot both win.
 *
 * The leader counts as leader until renewDeadline after the START of its last successful
 * renewal: a follower cannot have seen that renewal before it was sent, so it takes over no
 * earlier than leaseDuration after that start. `isLeader` turns false at the deadline itself
 * (not at the next tick), which is what fences the operator's writes.
 */
export class LeaderElector {
  readonly identity: string;
  private leading = false;
  private leadingUntil = 0;
  /** Lost once: never leads again (the process exits and restarts as a follower). */
  private lost = false;
  private stopped = false;
  private timer: unknown;
  private deadlineTimer: unknown;
  private ticking: Promise<void> = Promise.resolve();
  private observed: Observation | undefined;
  private readonly path: string;
  private readonly leaseMs: number;
  private readonly retryMs: number;
  private readonly deadlineMs: number;
  private readonly clock: Clock;

  constructor(
    private readonly kube: LeaseApi,
    private readonly options: LeaderElectionOptions,
    private readonly log: Logger,
    private readonly callbacks: { onStartedLeading(): void; onStoppedLeading(): void },
  ) {
    this.identity = options.identity ?? `${hostname()}-${process.pid}`;
    this.path = `/apis/coordination.k8s.io/v1/namespaces/${options.namespace}/leases`;
    this.leaseMs = options.leaseDurationMs ?? LEASE_DURATION_MS;
    this.retryMs = options.retryPeriodMs ?? RETRY_PERIOD_MS;
    this.deadlineMs = options.renewDeadlineMs ?? RENEW_DEADLINE_MS;
    this.clock = options.clock ?? systemClock;
    if (!(this.retryMs < this.deadlineMs && this.deadlineMs < this.leaseMs)) {
      throw new Error(
        `leader election for Lease ${options.namespace}/${options.name}: expected retryPeriodMs (${this.retryMs}) < renewDeadlineMs (${this.deadlineMs}) < leaseDurationMs (${this.leaseMs})`,
      );
    }
    if (this.leaseMs % 1000 !== 0)
      throw new Error(`leader election for Lease ${options.namespace}/${options.name}: leaseDurationMs must be whole seconds (the Lease holds seconds), got ${this.leaseMs}`);
  }

  /** True while this replica leads and its renew deadline has not passed. */
  get isLeader(): boolean {
    return this.leading && this.clock.now() < this.leadingUntil;
  }

  start(): void {
    this.ticking = this.tick();
  }

  /**
   * Stops campaigning. A leader stops leading at once (isLeader turns false: writes are
   * fenced), awaits `beforeRelease` (the operator waits there for writes already sent), then
   * releases the Lease so another replica takes over without waiting for it to expire.
   */
  async stop(beforeRelease?: () => Promise<void>): Promise<void> {
    this.stopped = true;
    this.clock.clearTimeout(this.timer);
    this.clock.clearTimeout(this.deadlineTimer);
    const wasLeading = this.leading;
    this.leading = false;
    // A renewal in flight must land (or fail) before the release, or it could win after it.
    await this.ticking;
    if (!wasLeading) return;
    await beforeRelease?.();
    await this.release();
  }

  private async release(): Promise<void> {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const lease = await this.kube.find<Lease>(`${this.path}/${this.options.name}`);
        if (!lease || lease.spec.holderIdentity !== this.identity) return;
        // As client-go's release: no holder and a 1 s duration; followers take an empty lease at once.
        const now = this.timestamp(this.clock.now());
        const { holderIdentity: _gone, ...rest } = lease.spec;
        await this.kube.replace(`${this.path}/${this.options.name}`, { ...lease, spec: { ...rest, leaseDurationSeconds: 1, acquireTime: now, renewTime: now } });
        this.log.info('Released leadership', { lease: this.leaseName(), identity: this.identity });
        return;
      } catch (err) {
        if (isConflict(err)) continue;
        this.log.warn('Failed to release the leader Lease; it expires by itself', { lease: this.leaseName(), identity: this.identity, error: String(err) });
        return;
      }
    }
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    const startedAt = this.clock.now();
    let ok = false;
    let failure: unknown;
    try {
      ok = await this.tryAcquireOrRenew(startedAt);
    } catch (err) {
      failure = err;
    }
    // stop() owns the lease from here on, and a late success after a loss does not make us
    // leader again.
    if (this.stopped || this.lost) return;
    if (ok) {
      this.leadingUntil = startedAt + this.deadlineMs;
      this.armDeadline();
      if (!this.leading) {
        this.leading = true;
        this.log.info('Became leader', { lease: this.leaseName(), identity: this.identity });
        this.callbacks.onStartedLeading();
      }
    } else if (this.leading && failure === undefined) {
      this.lose('another replica holds the lease');
    } else if (this.leading) {
      this.log.warn('Failed to renew the leader Lease; retrying', { lease: this.leaseName(), error: String(failure), leaderForMs: this.leadingUntil - this.clock.now() });
    } else if (failure !== undefined) {
      this.log.debug('Failed to read or acquire the leader Lease', { lease: this.leaseName(), error: String(failure) });
    }
    if (this.stopped || this.lost) return;
    this.timer = this.clock.setTimeout(() => {
      this.ticking = this.tick();
    }, this.retryMs);
  }

  /** Loses leadership the moment the renew deadline passes without a successful renewal. */
  private armDeadline(): void {
    this.clock.clearTimeout(this.deadlineTimer);
    this.deadlineTimer = this.clock.setTimeout(
      () => {
        if (!this.leading || this.stopped) return;
        // A timer can fire a millisecond early by the wall clock: then wait out the rest, or the
        // deadline would pass unnoticed and this replica would never step down.
        if (this.clock.now() >= this.leadingUntil) this.lose(`no renewal succeeded within ${this.deadlineMs}ms`);
        else this.armDeadline();
      },
      Math.max(0, this.leadingUntil - this.clock.now()),
    );
  }

  /** A replica that lost leadership stops campaigning: it exits, the Deployment restarts it. */
  private lose(why: string): void {
    this.leading = false;
    this.lost = true;
    this.clock.clearTimeout(this.deadlineTimer);
    this.clock.clearTimeout(this.timer);
    this.log.warn('Lost leadership', { lease: this.leaseName(), identity: this.identity, why });
    this.callbacks.onStoppedLeading();
  }

  /** Records the record as seen now, unless it is the one already seen (then its time stands). */
  private observe(lease: Lease): Observation {
    const spec = lease.spec;
    const key = JSON.stringify([lease.metadata.resourceVersion, spec.holderIdentity ?? '', spec.renewTime ?? '', spec.acquireTime ?? '', spec.leaseDurationSeconds ?? 0, spec.leaseTransitions ?? 0]);
    if (this.observed?.key !== key) {
      this.observed = { key, holder: spec.holderIdentity ?? '', durationMs: (spec.leaseDurationSeconds ?? this.leaseMs / 1000) * 1000, at: this.clock.now() };
    }
    return this.observed;
  }

  private async tryAcquireOrRenew(startedAt: number): Promise<boolean> {
    // renewTime/acquireTime are informational (kubectl shows them); no replica reads them.
    const nowIso = this.timestamp(startedAt);
    const existing = await this.kube.find<Lease>(`${this.path}/${this.options.name}`);
    const spec = { holderIdentity: this.identity, leaseDurationSeconds: this.leaseMs / 1000, renewTime: nowIso };
    if (!existing) {
      try {
        const created = await this.kube.create<Lease>(this.path, {
          apiVersion: 'coordination.k8s.io/v1',
          kind: 'Lease',
          metadata: { name: this.options.name, namespace: this.options.namespace },
          spec: { ...spec, acquireTime: nowIso, leaseTransitions: 0 },
        });
        this.observe(created);
        return true;
      } catch (err) {
        if (isConflict(err)) return false;
        throw err;
      }
    }
    const seen = this.observe(existing);
    const held = seen.holder !== '' && seen.holder !== this.identity && seen.at + seen.durationMs > this.clock.now();
    if (held) return false;
    const takeover = seen.holder !== this.identity;
    try {
      const updated = await this.kube.replace<Lease>(`${this.path}/${this.options.name}`, {
        ...existing,
        spec: {
          ...existing.spec,
          ...spec,
          ...(takeover ? { acquireTime: nowIso, leaseTransitions: (existing.spec.leaseTransitions ?? 0) + 1 } : {}),
        },
      });
      this.observe(updated);
      return true;
    } catch (err) {
      if (isConflict(err)) return false;
      throw err;
    }
  }

  private leaseName(): string {
    return `${this.options.namespace}/${this.options.name}`;
  }

  /** MicroTime, as the Lease's renewTime/acquireTime expect. */
  private timestamp(ms: number): string {
    return new Date(ms).toISOString().replace('Z', '000Z');
  }
}
