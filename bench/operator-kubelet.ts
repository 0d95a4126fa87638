// The benchmark's stand-in for the scheduler, the kubelet and the worker processes of
// bench/operator.ts. The benchmark measures the OPERATOR: 1,000 real worker processes do not
// fit on a 2-core machine next to the control plane, so each worker pod is played here:
//
//   scheduler  binds the pod to the benchmark's Node            (POST pods/binding)
//   kubelet    reports it Running and Ready                     (PATCH pods/status)
//   worker     heartbeats its presence record and drains the batch through the real queue API
//              (BatchQueue.claim/complete, as worker/batch-worker.ts does), leaves the registry
//              when the batch is complete or a drain was requested
//   kubelet    reports the pod Succeeded (exit 0)               (PATCH pods/status)
//   kubelet    confirms a graceful deletion                     (DELETE, gracePeriodSeconds 0)
//
// Everything the operator sees (pods and their status in the API server, presence records and
// item counts in Redis) is what real workers produce; only no process is started.
import type { Redis } from 'ioredis';
import { BATCH_LABEL, EPOCH_ANNOTATION } from '../api/taskbatch.js';
import { KubeApiError, type KubeClient } from '../kube/client.js';
import { objectKey, Reflector } from '../operator/kube/reflector.js';
import { createLogger } from '../operator/log.js';
import type { Pod } from '../kube/pod.js';
import { BatchQueue, heartbeat, leave, type PresenceReport } from '../queue/index.js';

export interface BenchKubeletOptions {
  kube: KubeClient;
  redis: Redis;
  namespace: string;
  nodeName: string;
  /** API requests in flight at once (a kubelet's pod workers run in parallel). Default 16. */
  concurrency?: number;
  /** Items per claim, like a worker's pool size × prefetch. Default 10. */
  claimCount?: number;
  /** Presence heartbeat period (the worker's default, TASKBATCH_HEARTBEAT_SECONDS, is 5 s). */
  heartbeatMs?: number;
}

export interface BenchKubelet {
  /** API requests this stand-in sent, by verb and resource. */
  readonly requests: Map<string, number>;
  /** Workers that ran to the batch's completion / stopped on a drain request / on pod deletion. */
  readonly outcomes: Record<'complete' | 'drained' | 'deleted' | 'failed', number>;
  stop(): Promise<void>;
}

type Outcome = 'complete' | 'drained' | 'deleted' | 'failed';

interface PodState {
  stop: AbortController;
  done?: Promise<void>;
  deleting?: boolean;
}

export async function startBenchKubelet(o: BenchKubeletOptions): Promise<BenchKubelet> {
  const requests = new Map<string, number>();
  const outcomes: Record<Outcome, number> = { complete: 0, drained: 0, deleted: 0, failed: 0 };
  const count = (what: string): void => void requests.set(what, (requests.get(what) ?? 0) + 1);
  const slots = semaphore(o.concurrency ?? 16);
  const api = async <T>(what: string, call: () => Promise<T>): Promise<T> => {
    const release = await slots();
    try {
      count(what);
      return await call();
    } finally {
      release();
    }
  };
  const podsPath = `/api/v1/namespaces/${o.namespace}/pods`;
  const states = new Map<string, PodState>();
  const now = (): string => new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');

  await o.kube.create('/api/v1/nodes', {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: o.nodeName, labels: { 'kubernetes.io/hostname': o.nodeName } },
  });
  await o.kube.patch(
    `/api/v1/nodes/${o.nodeName}/status`,
    {
      status: {
        conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'benchmark stand-in kubelet', lastHeartbeatTime: now(), lastTransitionTime: now() }],
        addresses: [{ type: 'InternalIP', address: '127.0.0.1' }],
      },
    },
    'strategic',
  );

  const setStatus = (pod: Pod, status: Record<string, unknown>): Promise<unknown> =>
    api('patch pods/status', () => o.kube.patch(`${podsPath}/${pod.metadata.name}/status`, { status }, 'strategic')).catch(ignoreGone);

  const run = async (pod: Pod, state: PodState): Promise<void> => {
    const name = pod.metadata.name!;
    if (!pod.spec.nodeName) {
      await api('create pods/binding', () =>
        o.kube.create(`${podsPath}/${name}/binding`, { apiVersion: 'v1', kind: 'Binding', metadata: { name, namespace: o.namespace }, target: { apiVersion: 'v1', kind: 'Node', name: o.nodeName } }),
      );
    }
    const started = now();
    await setStatus(pod, {
      phase: 'Running',
      hostIP: '127.0.0.1',
      podIP: '127.0.0.1',
      startTime: started,
      conditions: ['PodScheduled', 'Initialized', 'ContainersReady', 'Ready'].map((type) => ({ type, status: 'True', lastTransitionTime: started })),
      containerStatuses: [{ name: 'worker', ready: true, started: true, restartCount: 0, image: 'taskbatch/worker:bench', imageID: '', state: { running: { startedAt: started } } }],
    });
    let outcome: Outcome;
    try {
      outcome = await drainBatch(o, pod, state.stop.signal);
    } catch (err) {
      outcome = 'failed';
      process.stderr.write(`[bench] emulated worker ${name} failed: ${String((err as Error).message ?? err)}\n`);
    }
    outcomes[outcome]++;
    if (outcome === 'deleted') return;
    const finished = now();
    await setStatus(pod, {
      phase: outcome === 'failed' ? 'Failed' : 'Succeeded',
      conditions: ['ContainersReady', 'Ready'].map((type) => ({ type, status: 'False', reason: 'PodCompleted', lastTransitionTime: finished })),
      containerStatuses: [
        {
          name: 'worker',
          ready: false,
          started: false,
          restartCount: 0,
          image: 'taskbatch/worker:bench',
          imageID: '',
          state: { terminated: { exitCode: outcome === 'failed' ? 1 : 0, reason: outcome === 'failed' ? 'Error' : 'Completed', startedAt: started, finishedAt: finished } },
        },
      ],
    });
  };

  const onPod = (pod: Pod, kind: 'upsert' | 'delete'): void => {
    const uid = pod.metadata.uid!;
    let state = states.get(uid);
    if (kind === 'delete') {
      state?.stop.abort();
      states.delete(uid);
      return;
    }
    if (pod.metadata.deletionTimestamp) {
      // A graceful deletion: the worker stops (as on SIGTERM), then the kubelet removes the pod.
      if (!state) {
        state = { stop: new AbortController() };
        states.set(uid, state);
      }
      state.stop.abort();
      if (!state.deleting) {
        state.deleting = true;
        const finished = state.done ?? Promise.resolve();
        void finished
          .then(() => api('delete pods', () => o.kube.delete(`${podsPath}/${pod.metadata.name}`, { apiVersion: 'v1', kind: 'DeleteOptions', gracePeriodSeconds: 0, preconditions: { uid } })))
          .catch(ignoreGone);
      }
      return;
    }
    if (state || pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') return;
    state = { stop: new AbortController() };
    states.set(uid, state);
    state.done = run(pod, state).catch((err: unknown) => {
      if (!isGone(err)) process.stderr.write(`[bench] pod ${objectKey(pod)}: ${String((err as Error).message ?? err)}\n`);
    });
  };

  const pods = new Reflector<Pod>(o.kube, { path: podsPath, labelSelector: BATCH_LABEL }, createLogger({ component: 'bench-kubelet' }, 'warn'));
  pods.onChange(onPod);
  await pods.start();
  return {
    requests,
    outcomes,
    stop: async () => {
      pods.stop();
      for (const s of states.values()) s.stop.abort();
      await Promise.allSettled([...states.values()].map((s) => s.done));
    },
  };
}

/**
 * One worker's life, as worker/batch-worker.ts lives it (minus the executor): heartbeat, claim
 * items, run the no-op handler (JSON.parse of the payload), complete them, poll with backoff when
 * the queue is empty, stop when the batch is complete, a drain is requested or the pod goes away.
 */
async function drainBatch(o: BenchKubeletOptions, pod: Pod, signal: AbortSignal): Promise<Outcome> {
  const podName = pod.metadata.name!;
  const batch = pod.metadata.labels?.[BATCH_LABEL];
  const epoch = pod.metadata.annotations?.[EPOCH_ANNOTATION];
  if (!batch || !epoch) throw new Error(`pod ${podName} has no ${BATCH_LABEL} label or ${EPOCH_ANNOTATION} annotation`);
  const queue = new BatchQueue(o.redis, { namespace: o.namespace, name: batch }, { expectedEpoch: epoch });
  const startedAt = Date.now();
  const report = (inflight: number): PresenceReport => ({ inflight, running: inflight, capacity: o.claimCount ?? 10, mode: 'async', draining: false, startedAt });
  const heartbeatMs = o.heartbeatMs ?? 5000;
  let beat = await heartbeat(queue, podName, report(0));
  let lastBeat = Date.now();
  let idleMs = 10;
  try {
    for (;;) {
      if (signal.aborted) return 'deleted';
      if (Date.now() - lastBeat >= heartbeatMs) {
        beat = await heartbeat(queue, podName, report(0));
        lastBeat = Date.now();
      }
      if (beat.drainRequested) return 'drained';
      const claimed = await queue.claim(o.claimCount ?? 10, 30_000);
      if (claimed.items.length > 0) {
        for (const c of claimed.items) JSON.parse(c.payload); // the no-op handler still gets its item
        await queue.complete(claimed.items.map((claim) => ({ claim })));
        idleMs = 10;
        continue;
      }
      if (claimed.closed && (await queue.snapshot()).complete) return 'complete';
      await sleepUnless(Math.min(idleMs, claimed.nextDueMs >= 0 ? claimed.nextDueMs + 5 : idleMs), signal);
      idleMs = Math.min(1000, idleMs * 2); // a stand-in worker: it polls (the real one blocks until woken)
    }
  } finally {
    await leave(queue, podName).catch(() => undefined);
  }
}

function sleepUnless(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener(
      'abort',
      () => {
        clearTimeout(t);
        resolve();
      },
      { once: true },
    );
  });
}

function semaphore(n: number): () => Promise<() => void> {
  let free = n;
  const waiting: (() => void)[] = [];
  const release = (): void => {
    const next = waiting.shift();
    if (next) next();
    else free++;
  };
  return () =>
    new Promise((resolve) => {
      if (free > 0) {
        free--;
        resolve(release);
      } else waiting.push(() => resolve(release));
    });
}

function isGone(err: unknown): boolean {
  return err instanceof KubeApiError && (err.status === 404 || err.status === 409);
}

function ignoreGone(err: unknown): void {
  if (!isGone(err)) throw err;
}
