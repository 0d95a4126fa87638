/**
 * The leader elector's decisions, on a manual clock and an in-memory Lease store (below the
 * reconcile loop; the same elector runs against the real API server in
 * test/cluster/operator-leader.test.ts): expiry is judged from when this replica saw the
 * record change, never from the holder's renewTime, so skewed clocks steal nothing; a leader
 * stops leading the moment its renew deadline passes; stop() fences before it releases.
 */
import { KubeApiError } from '../../kube/client.js';
import { LeaderElector, type Lease, type LeaseApi } from '../../operator/leader.js';
import { createLogger } from '../../operator/log.js';
import type { Clock } from '../../operator/workqueue.js';

const LEASE_MS = 15_000;
const DEADLINE_MS = 10_000;
const RETRY_MS = 2_000;
const PATH = '/apis/coordination.k8s.io/v1/namespaces/ops/leases/op';

class ManualClock implements Clock {
  t = Date.parse('2030-01-01T00:00:00Z');
  private timers: { at: number; fn: () => void; id: number }[] = [];
  private next = 0;
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.next;
    this.timers.push({ at: this.t + ms, fn, id });
    return id;
  }
  clearTimeout(h: unknown): void {
    this.timers = this.timers.filter((t) => t.id !== h);
  }
  /** Moves time forward in 100 ms steps, firing due timers and letting their promises settle. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    while (this.t < end) {
      this.t = Math.min(end, this.t + 100);
      const due = this.timers.filter((t) => t.at <= this.t).sort((a, b) => a.at - b.at);
      this.timers = this.timers.filter((t) => t.at > this.t);
      for (const t of due) t.fn();
      await flush();
    }
  }
}

/** A replica's clock: the shared time plus its own skew; timers run on the shared clock. */
const skewed = (base: ManualClock, skewMs: number): Clock => ({
  now: () => base.now() + skewMs,
  setTimeout: (fn, ms) => base.setTimeout(fn, ms),
  clearTimeout: (h) => base.clearTimeout(h),
});

const flush = async (): Promise<void> => {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
};

/** The Lease as the API server keeps it: resourceVersion bumps on every write, stale writes get 409. */
class FakeLeaseServer {
  lease: Lease | undefined;
  writes: { by: string; holder: string }[] = [];
  private rv = 0;

  /** One replica's connection; `down()` makes its requests fail, `hang()` never answer. */
  client(name: string): LeaseApi & { down(on: boolean): void; hang(on: boolean): void } {
    let down = false;
    let hanging: (() => void)[] | undefined;
    const call = async <T>(fn: () => T): Promise<T> => {
      if (hanging) await new Promise<void>((r) => hanging!.push(r));
      if (down) throw new KubeApiError(503, 'ServiceUnavailable', `${name}: API server unreachable`);
      return fn();
    };
    return {
      down: (on) => (down = on),
      hang: (on) => {
        const waiting = hanging ?? [];
        hanging = on ? [] : undefined;
        if (!on) for (const r of waiting) r();
      },
      find: <T>(path: string) =>
        call(() => {
          expect(path).toBe(PATH);
          return this.lease ? (structuredClone(this.lease) as T) : undefined;
        }),
      create: <T>(_path: string, body: unknown) =>
        call(() => {
          if (this.lease) throw new KubeApiError(409, 'AlreadyExists', 'leases "op" already exists');
          return this.store(name, body as Lease) as T;
        }),
      replace: <T>(path: string, body: unknown) =>
        call(() => {
          expect(path).toBe(PATH);
          const lease = body as Lease;
          if (lease.metadata.resourceVersion !== this.lease?.metadata.resourceVersion) throw new KubeApiError(409, 'Conflict', 'the object has been modified');
          return this.store(name, lease) as T;
        }),
    };
  }

  private store(by: string, lease: Lease): Lease {
    this.lease = structuredClone({ ...lease, metadata: { ...lease.metadata, resourceVersion: String(++this.rv) } });
    this.writes.push({ by, holder: lease.spec.holderIdentity ?? '' });
    return structuredClone(this.lease);
  }

  get holder(): string {
    return this.lease?.spec.holderIdentity ?? '';
  }
}

interface Replica {
  elector: LeaderElector;
  api: ReturnType<FakeLeaseServer['client']>;
  readonly started: number;
  readonly stopped: number;
}

function replica(server: FakeLeaseServer, identity: string, clock: Clock): Replica {
  const api = server.client(identity);
  const counts = { started: 0, stopped: 0 };
  const elector = new LeaderElector(
    api,
    { namespace: 'ops', name: 'op', identity, leaseDurationMs: LEASE_MS, renewDeadlineMs: DEADLINE_MS, retryPeriodMs: RETRY_MS, clock },
    createLogger({}, 'error'),
    {
      onStartedLeading: () => counts.started++,
      onStoppedLeading: () => counts.stopped++,
    },
  );
  return {
    elector,
    api,
    get started() {
      return counts.started;
    },
    get stopped() {
      return counts.stopped;
    },
  };
}

let clock: ManualClock;
let server: FakeLeaseServer;
const running: LeaderElector[] = [];
beforeEach(() => {
  clock = new ManualClock();
  server = new FakeLeaseServer();
});
afterEach(async () => {
  for (const e of running.splice(0)) await e.stop();
});

async function startLeader(identity: string, c: Clock = clock): Promise<Replica> {
  const r = replica(server, identity, c);
  running.push(r.elector);
  r.elector.start();
  await flush();
  expect(r.elector.isLeader).toBe(true);
  expect(server.holder).toBe(identity);
  return r;
}

function startFollower(identity: string, c: Clock = clock): Replica {
  const r = replica(server, identity, c);
  running.push(r.elector);
  r.elector.start();
  return r;
}

test.each([
  ["the leader's clock is 60 s behind (its renewTime looks stale)", -60_000, 0],
  ["the follower's clock is 60 s ahead", 0, 60_000],
])('a healthy lease is never stolen when %s', async (_what, leaderSkew, followerSkew) => {
  const a = await startLeader('a', skewed(clock, leaderSkew));
  const b = startFollower('b', skewed(clock, followerSkew));
  // renewTime really is a minute off from the follower's view: judging by it would steal.
  await clock.advance(RETRY_MS);
  const renewedAt = Date.parse(server.lease!.spec.renewTime!);
  expect(skewed(clock, followerSkew).now() - renewedAt).toBeGreaterThanOrEqual(60_000);

  await clock.advance(4 * LEASE_MS);
  expect(b.elector.isLeader).toBe(false);
  expect(b.started).toBe(0);
  expect(a.elector.isLeader).toBe(true);
  expect(a.stopped).toBe(0);
  expect(new Set(server.writes.map((w) => w.holder))).toEqual(new Set(['a']));
  expect(server.writes.filter((w) => w.by === 'b')).toEqual([]);
});

test('a follower takes over a silent lease exactly one lease duration after it last saw the record change, whatever renewTime says', async () => {
  // A Lease left by a crashed leader an hour ago: a replica that just started has seen no
  // change yet, so it waits a full lease duration from its first look.
  server.lease = {
    apiVersion: 'coordination.k8s.io/v1',
    kind: 'Lease',
    metadata: { name: 'op', namespace: 'ops', resourceVersion: '900' },
    spec: { holderIdentity: 'gone', leaseDurationSeconds: 15, renewTime: new Date(clock.now() - 3_600_000).toISOString(), leaseTransitions: 3 },
  };
  const b = startFollower('b', skewed(clock, 60_000));
  await flush();
  await clock.advance(LEASE_MS - 100);
  expect(b.elector.isLeader).toBe(false);
  expect(server.holder).toBe('gone');
  await clock.advance(RETRY_MS + 100);
  expect(b.elector.isLeader).toBe(true);
  expect(server.holder).toBe('b');
  expect(server.lease?.spec.leaseTransitions).toBe(4);
});

test('a leader that cannot renew stops leading at its renew deadline, before any follower may take over', async () => {
  const a = await startLeader('a');
  const b = startFollower('b');
  await clock.advance(RETRY_MS * 3);
  // The last renewal that succeeded started now; then the API server stops answering a's requests.
  const lastRenewalStart = clock.now();
  a.api.hang(true);
  let firstTakeover: number | undefined;
  let fenceClosed: number | undefined;
  for (let t = 0; t < LEASE_MS * 2; t += 100) {
    await clock.advance(100);
    if (fenceClosed === undefined && !a.elector.isLeader) fenceClosed = clock.now();
    if (firstTakeover === undefined && server.holder === 'b') firstTakeover = clock.now();
  }
  // Deadline from the start of the last good renewal; no tick needed (a's requests hang).
  expect(fenceClosed! - lastRenewalStart).toBeLessThanOrEqual(DEADLINE_MS);
  expect(fenceClosed! - lastRenewalStart).toBeGreaterThan(DEADLINE_MS - RETRY_MS);
  expect(a.stopped).toBe(1);
  // The follower saw the last renewal no earlier than it was sent, so it waits at least a
  // lease duration from then: the gap is what an allowed write may take (the write timeout).
  expect(firstTakeover! - lastRenewalStart).toBeGreaterThanOrEqual(LEASE_MS);
  expect(firstTakeover! - fenceClosed!).toBeGreaterThanOrEqual(LEASE_MS - DEADLINE_MS);
  expect(b.elector.isLeader).toBe(true);

  // The hung renewal finally answers (with a conflict or success): a never leads again.
  a.api.hang(false);
  await clock.advance(RETRY_MS * 3);
  expect(a.elector.isLeader).toBe(false);
  expect(a.started).toBe(1);
  expect(server.holder).toBe('b');
});

test('a leader whose renewals fail (API errors) keeps leading until the deadline, then stops once', async () => {
  const a = await startLeader('a');
  await clock.advance(RETRY_MS);
  a.api.down(true);
  await clock.advance(DEADLINE_MS - 2 * RETRY_MS);
  expect(a.elector.isLeader).toBe(true);
  await clock.advance(2 * RETRY_MS);
  expect(a.elector.isLeader).toBe(false);
  a.api.down(false);
  await clock.advance(LEASE_MS);
  expect(a.stopped).toBe(1);
  expect(a.started).toBe(1);
  expect(a.elector.isLeader).toBe(false);
});

test('a deadline timer that fires early by the wall clock (as Node timers can) still ends the leadership, once', async () => {
  // Timers run 150 ms before the replica's clock says they are due.
  const early: Clock = { now: () => clock.now(), setTimeout: (fn, ms) => clock.setTimeout(fn, Math.max(0, ms - 150)), clearTimeout: (h) => clock.clearTimeout(h) };
  const a = await startLeader('a', early);
  await clock.advance(RETRY_MS);
  a.api.down(true);
  await clock.advance(DEADLINE_MS + RETRY_MS);
  expect(a.elector.isLeader).toBe(false);
  expect(a.stopped).toBe(1);
});

test('stop() closes the fence first, releases the lease after beforeRelease, and a follower takes the empty lease at once', async () => {
  const a = await startLeader('a');
  const b = startFollower('b');
  await clock.advance(RETRY_MS);
  const seen: { leader: boolean; holder: string }[] = [];
  await a.elector.stop(async () => {
    seen.push({ leader: a.elector.isLeader, holder: server.holder });
  });
  // Writes were fenced while the lease was still ours; then it was released.
  expect(seen).toEqual([{ leader: false, holder: 'a' }]);
  expect(server.holder).toBe('');
  expect(server.lease?.spec.leaseDurationSeconds).toBe(1);
  await clock.advance(RETRY_MS + 100);
  expect(b.elector.isLeader).toBe(true);
  expect(server.holder).toBe('b');
  expect(a.stopped).toBe(0); // a graceful stop is not a loss
});

test('stop() waits for a renewal in flight, so it cannot land after the release', async () => {
  const a = await startLeader('a');
  a.api.hang(true);
  await clock.advance(RETRY_MS); // a renewal is now in flight, hung
  let released = false;
  const stopping = a.elector.stop().then(() => (released = true));
  await flush();
  expect(released).toBe(false);
  expect(a.elector.isLeader).toBe(false);
  a.api.hang(false);
  await stopping;
  expect(server.holder).toBe('');
  const last = server.writes.at(-1);
  expect(last).toEqual({ by: 'a', holder: '' });
});

test('a follower that is not leading does not write the lease while it is held', async () => {
  await startLeader('a');
  startFollower('b');
  startFollower('c', skewed(clock, -90_000));
  await clock.advance(5 * LEASE_MS);
  expect(server.writes.filter((w) => w.by !== 'a')).toEqual([]);
});

test('timings are validated', () => {
  const api = server.client('x');
  const make = (o: { leaseDurationMs?: number; renewDeadlineMs?: number; retryPeriodMs?: number }) => () =>
    new LeaderElector(api, { namespace: 'ops', name: 'op', ...o }, createLogger({}, 'error'), { onStartedLeading: () => undefined, onStoppedLeading: () => undefined });
  expect(make({ renewDeadlineMs: 15_000 })).toThrow(/Lease ops\/op: expected retryPeriodMs \(2000\) < renewDeadlineMs \(15000\) < leaseDurationMs \(15000\)/);
  expect(make({ leaseDurationMs: 15_500 })).toThrow(/leaseDurationMs must be whole seconds/);
  expect(make({})).not.toThrow();
});
