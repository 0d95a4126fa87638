import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** The operator's metrics, on a private registry. Labels stay low-cardinality: no item ids. */
export class OperatorMetrics {
  readonly registry = new Registry();
  readonly reconciles = new Counter({ name: 'taskbatch_operator_reconcile_total', help: 'Reconcile passes by result', labelNames: ['result'] as const, registers: [this.registry] });
  readonly reconcileErrors = new Counter({
    name: 'taskbatch_operator_reconcile_errors_total',
    help: 'Failed reconcile passes by error name',
    labelNames: ['error'] as const,
    registers: [this.registry],
  });
  readonly reconcileDuration = new Histogram({
    name: 'taskbatch_operator_reconcile_duration_seconds',
    help: 'Duration of reconcile passes',
    // Most passes take 1-50 ms: buckets at 1-2.5-5 steps there, so p50/p99 read from them (bench/operator.ts) are not off by a factor of 5.
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly workqueueDepth = new Gauge({ name: 'taskbatch_operator_workqueue_depth', help: 'Keys waiting in the work queue', registers: [this.registry] });
  readonly statusWrites = new Counter({ name: 'taskbatch_operator_status_writes_total', help: 'TaskBatch status updates written', registers: [this.registry] });
  readonly isLeader = new Gauge({ name: 'taskbatch_operator_leader', help: '1 while this replica holds the leader lease', registers: [this.registry] });
  readonly batchItems = new Gauge({ name: 'taskbatch_batch_items', help: 'Items of a batch by state', labelNames: ['namespace', 'batch', 'state'] as const, registers: [this.registry] });
  readonly batchWorkers = new Gauge({
    name: 'taskbatch_batch_workers',
    help: 'Worker pods of a batch (desired, current, ready, draining)',
    labelNames: ['namespace', 'batch', 'kind'] as const,
    registers: [this.registry],
  });
  readonly batchFinished = new Gauge({
    name: 'taskbatch_batch_finished',
    help: '1 once a batch is Complete (outcome=complete) or Failed (outcome=failed)',
    labelNames: ['namespace', 'batch', 'outcome'] as const,
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'taskbatch_operator_' });
    // prom-client names three gauges *_total, which Prometheus reserves for counters
    // (promtool check metrics rejects them); the per-type gauges without the suffix stay.
    for (const n of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
      this.registry.removeSingleMetric(`taskbatch_operator_${n}`);
    }
  }

  setBatch(namespace: string, batch: string, items: Record<string, number>, workers: Record<string, number>, outcome?: 'complete' | 'failed'): void {
    for (const [state, v] of Object.entries(items)) this.batchItems.set({ namespace, batch, state }, v);
    for (const [kind, v] of Object.entries(workers)) this.batchWorkers.set({ namespace, batch, kind }, v);
    if (outcome) this.batchFinished.set({ namespace, batch, outcome }, 1);
  }

  /** A deleted batch's series go away, so scheduled batches do not grow the series count. */
  forgetBatch(namespace: string, batch: string): void {
    for (const state of ITEM_STATES) this.batchItems.remove({ namespace, batch, state });
    for (const kind of WORKER_KINDS) this.batchWorkers.remove({ namespace, batch, kind });
    for (const outcome of ['complete', 'failed']) this.batchFinished.remove({ namespace, batch, outcome });
  }
}

const ITEM_STATES = ['total', 'pending', 'delayed', 'running', 'succeeded', 'failed', 'retries', 'handedBack'] as const;
const WORKER_KINDS = ['desired', 'current', 'ready', 'draining'] as const;
