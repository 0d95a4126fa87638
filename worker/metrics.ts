import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

/** Outcomes of one item as the worker saw it (the `outcome` label). */
export type ItemOutcomeLabel = 'succeeded' | 'failed' | 'timed_out' | 'crashed' | 'lease_lost' | 'released' | 'dropped';
const OUTCOMES: readonly ItemOutcomeLabel[] = ['succeeded', 'failed', 'timed_out', 'crashed', 'lease_lost', 'released', 'dropped'];

export interface MetricsLabels {
  namespace: string;
  batch: string;
  mode: string;
}

/**
 * The worker's Prometheus metrics, in a private Registry. Labels stay low-cardinality:
 * namespace, batch and mode on every series (no item ids, no worker ids: Prometheus adds
 * the pod as `instance`).
 */
export class WorkerMetrics {
  readonly registry = new Registry();
  readonly items: Record<ItemOutcomeLabel, Counter.Internal>;
  readonly itemDuration: Histogram<'outcome'>;
  readonly inFlight: Gauge;
  readonly buffered: Gauge;
  readonly executorRestarts: Counter<'reason'>;
  readonly claimRoundTrips: Counter;
  readonly claimedItems: Counter;
  readonly claimDuration: Histogram;
  readonly leaseRenewals: Counter;
  readonly leaseRenewalErrors: Counter;
  readonly leasesLost: Counter;
  readonly acks: Counter<'kind'>;
  readonly ackRoundTrips: Counter;
  readonly acksRejected: Counter<'kind'>;
  readonly redisErrors: Counter<'op'>;
  readonly redisUp: Gauge;
  readonly ready: Gauge;
  readonly draining: Gauge;
  readonly poolSize: Gauge;
  readonly handlerLogLinesDropped: Counter;
  private readonly durationBy: Record<'succeeded' | 'failed', Histogram.Internal<'outcome'>>;

  constructor(labels: MetricsLabels, options: { defaultMetrics?: boolean } = {}) {
    const r = this.registry;
    r.setDefaultLabels({ namespace: labels.namespace, batch: labels.batch, mode: labels.mode });
    if (options.defaultMetrics !== false) {
      // The event-loop delay is sampled every 100 ms, not prom-client's 10 ms: ten wake-ups a
      // second instead of a hundred keep an idle worker at a fraction of a percent of a core.
      collectDefaultMetrics({ register: r, eventLoopMonitoringPrecision: 100 });
      // prom-client names three gauges *_total, a suffix Prometheus reserves for counters
      // (promtool check metrics rejects them); the per-type gauges without it stay.
      for (const n of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) r.removeSingleMetric(n);
    }
    const itemsTotal = new Counter({
      name: 'taskbatch_worker_items_total',
      help: 'Items this worker finished, by outcome (succeeded, failed, timed_out, crashed, lease_lost, released, dropped).',
      labelNames: ['outcome'],
      registers: [r],
    });
    this.items = Object.fromEntries(OUTCOMES.map((o) => [o, itemsTotal.labels(o)])) as Record<ItemOutcomeLabel, Counter.Internal>;
    this.itemDuration = new Histogram({
      name: 'taskbatch_worker_item_duration_seconds',
      help: 'Handler run time of items that succeeded or failed, measured inside the executor.',
      labelNames: ['outcome'],
      buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600],
      registers: [r],
    });
    this.durationBy = { succeeded: this.itemDuration.labels('succeeded'), failed: this.itemDuration.labels('failed') };
    this.inFlight = new Gauge({ name: 'taskbatch_worker_items_in_flight', help: 'Items running in an executor now.', registers: [r] });
    this.buffered = new Gauge({ name: 'taskbatch_worker_items_buffered', help: 'Claimed items waiting for a free executor (prefetch).', registers: [r] });
    this.executorRestarts = new Counter({
      name: 'taskbatch_worker_executor_restarts_total',
      help: 'Executors (threads / child processes) replaced, by reason (crashed, timeout, aborted, max_items, max_memory, start_failed).',
      labelNames: ['reason'],
      registers: [r],
    });
    this.claimRoundTrips = new Counter({ name: 'taskbatch_worker_claim_round_trips_total', help: 'Claim calls to Redis (each may lease many items).', registers: [r] });
    this.claimedItems = new Counter({ name: 'taskbatch_worker_claimed_items_total', help: 'Items leased by claim calls.', registers: [r] });
    this.claimDuration = new Histogram({
      name: 'taskbatch_worker_claim_duration_seconds',
      help: 'Round-trip time of claim calls.',
      buckets: [0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1],
      registers: [r],
    });
    this.leaseRenewals = new Counter({ name: 'taskbatch_worker_lease_renewals_total', help: 'Lease renewal calls that reached Redis.', registers: [r] });
    this.leaseRenewalErrors = new Counter({ name: 'taskbatch_worker_lease_renewals_failed_total', help: 'Lease renewal calls that failed (Redis unreachable or erroring).', registers: [r] });
    this.leasesLost = new Counter({ name: 'taskbatch_worker_leases_lost_total', help: 'Items whose lease was found lost (fencing rejected a renewal); they were aborted.', registers: [r] });
    this.acks = new Counter({ name: 'taskbatch_worker_acks_total', help: 'Items acknowledged to Redis, by kind (complete, fail, release).', labelNames: ['kind'], registers: [r] });
    this.ackRoundTrips = new Counter({ name: 'taskbatch_worker_ack_round_trips_total', help: 'Batched acknowledgement calls to Redis.', registers: [r] });
    this.acksRejected = new Counter({
      name: 'taskbatch_worker_acks_rejected_total',
      help: 'Acknowledgements rejected because the lease was lost (fencing), by kind.',
      labelNames: ['kind'],
      registers: [r],
    });
    this.redisErrors = new Counter({ name: 'taskbatch_worker_redis_errors_total', help: 'Failed Redis operations, by operation.', labelNames: ['op'], registers: [r] });
    this.redisUp = new Gauge({ name: 'taskbatch_worker_redis_up', help: '1 when the Redis connection is ready.', registers: [r] });
    this.ready = new Gauge({ name: 'taskbatch_worker_ready', help: '1 when the worker is ready (connected, batch state present, executors started).', registers: [r] });
    this.draining = new Gauge({ name: 'taskbatch_worker_draining', help: '1 while the worker is shutting down (SIGTERM or drain request).', registers: [r] });
    this.poolSize = new Gauge({ name: 'taskbatch_worker_pool_size', help: 'Configured pool size.', registers: [r] });
    this.handlerLogLinesDropped = new Counter({
      name: 'taskbatch_worker_handler_log_lines_dropped_total',
      help: 'Handler log lines (ctx.log) dropped over the per-item rate limit, counted when each item ends.',
      registers: [r],
    });
  }

  observeDuration(outcome: 'succeeded' | 'failed', ms: number): void {
    this.durationBy[outcome].observe(ms / 1000);
  }
}
