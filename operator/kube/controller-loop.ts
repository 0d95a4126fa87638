import type { Logger } from '../log.js';
import type { WorkQueue } from '../workqueue.js';
import { KubeApiError } from '../../kube/client.js';

/** What one reconcile asks of the queue. */
export interface ReconcileResult {
  requeueAfterMs?: number;
}

export interface ReconcileLoopOptions {
  queue: WorkQueue;
  reconcile(key: string): Promise<ReconcileResult>;
  /** False once the controller stops: nothing is requeued then. */
  isRunning(): boolean;
  log: Logger;
  /** Names the kind in logs ("TaskBatch", "TaskSchedule"). */
  kind: string;
  /** Metrics hooks: called around each reconcile; `error` is a metric-label-safe name. */
  observe?: { started(depth: number): () => void; finished(error?: string): void };
}

/**
 * The one reconcile loop every controller runs (several at once per queue): take a key (never one
 * already in flight), reconcile it, then requeue — after `requeueAfterMs`, at once on a 409 (the
 * object changed under the pass: plan again from the newer one), or with the key's exponential
 * backoff on any other error. Returns when the queue shuts down.
 */
export async function runReconcileLoop(o: ReconcileLoopOptions): Promise<void> {
  for (;;) {
    const key = await o.queue.get();
    if (key === undefined) return;
    const end = o.observe?.started(o.queue.depth);
    try {
      const result = await o.reconcile(key);
      o.queue.forget(key);
      o.observe?.finished();
      if (result.requeueAfterMs !== undefined && o.isRunning()) o.queue.addAfter(key, result.requeueAfterMs);
    } catch (err) {
      o.observe?.finished(errorLabel(err));
      if (err instanceof KubeApiError && err.status === 409) {
        o.log.debug(`${o.kind} reconcile conflicted; requeued`, { key });
        o.queue.add(key);
      } else if (o.isRunning()) {
        const delay = o.queue.addRateLimited(key);
        o.log.warn(`${o.kind} reconcile failed; retrying with backoff`, { key, error: String((err as Error).message ?? err), retryInMs: delay });
      }
    } finally {
      end?.();
      o.queue.done(key);
    }
  }
}

/** An error's name as a metric label: `KubeApi409`, `NotLeaderError`, `ApplyError`, … */
function errorLabel(err: unknown): string {
  if (err instanceof KubeApiError) return `KubeApi${err.status}`;
  return (err as Error)?.name ?? 'Error';
}
