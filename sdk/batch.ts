import {
  BatchClosedError,
  BatchStateLostError,
  batchId,
  type BatchOptionsInput,
  type BatchQueue,
  type BatchRef,
  type BatchSnapshot,
  type DeadLetter,
  type ItemInput,
  type RedisClient,
  type StoredResult,
} from '../queue/index.js';
import { batchPath, canReopen, findCondition, type Condition, type TaskBatch } from '../api/taskbatch.js';
import { BatchNotFoundError, ClientClosedError, NotOpenError, TaskBatchError, WaitTimeoutError } from './errors.js';
import { readTaskBatch, translateKubeError, type KubeAccess, type RedisEndpoint } from './kube.js';
import { ProgressTracker, type Progress } from './progress.js';

/** What a batch handle needs from its client: the queue (resolved lazily) and, optionally, Kubernetes. */
export interface BatchContext {
  ref: BatchRef;
  /** Redis URL shown in messages. */
  describeRedis(): string;
  resolve(): Promise<ResolvedBatch>;
  /** Forget the resolved queue (after the TaskBatch was deleted or recreated). */
  invalidate(): void;
  kube: KubeAccess | undefined;
  isClosed(): boolean;
}

export interface ResolvedBatch {
  queue: BatchQueue;
  redis: RedisClient;
  endpoint: RedisEndpoint;
  /** The TaskBatch as read when the queue was resolved (Kubernetes mode). */
  taskBatch?: TaskBatch;
}

export interface SubmitOptions {
  /**
   * Caller-given id: submitting the same id again is a no-op (idempotent retries). 1–256 bytes,
   * no control characters, not starting with '#' (generated ids are '#1', '#2', …).
   */
  id?: string;
  /** Run no earlier than this many milliseconds from now (Celery's countdown). */
  delayMs?: number;
  /** Run no earlier than this time (Celery's eta); converted with this machine's clock. */
  notBefore?: Date | number;
}

export interface SubmitItem extends SubmitOptions {
  data: unknown;
}

export interface SubmitResult {
  added: number;
  duplicates: number;
  /** Every item's id, in input order: the caller's, or the generated one. */
  ids: string[];
}

export interface WaitOptions {
  /** Called after every poll with counts, rate and ETA. */
  onProgress?: (p: Progress) => void;
  /** Poll interval (default 1000 ms). */
  intervalMs?: number;
  /** Give up (WaitTimeoutError) after this long; the batch keeps running. Default: no limit. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface WaitResult {
  /**
   * true when the batch finished as a success: the TaskBatch's Complete condition (its
   * failurePolicy allowed the failed items, if any), or — with only a Redis URL — no item failed.
   */
  ok: boolean;
  /** 'Complete' or 'Failed' (the TaskBatch's condition), or 'Drained' (Redis only: closed and drained). */
  outcome: 'Complete' | 'Failed' | 'Drained';
  /** The condition's reason and message (Kubernetes mode). */
  reason?: string;
  message?: string;
  progress: Progress;
}

export interface BatchStatus {
  namespace: string;
  name: string;
  /** Counts and flags from Redis, or (when Redis is not reachable in Kubernetes mode) from the TaskBatch's status. */
  counts: BatchSnapshot | (Omit<BatchSnapshot, 'epoch' | 'dueDelayed' | 'seedCursor' | 'changes'> & { epoch?: string });
  countsFrom: 'redis' | 'taskbatch';
  /** Why Redis could not be read (countsFrom 'taskbatch'). */
  redisError?: string;
  taskBatch?: {
    state?: string;
    open: boolean;
    suspended: boolean;
    progress?: string;
    workers?: string;
    conditions: Condition[];
    createdAt?: string;
    startTime?: string;
    completionTime?: string;
  };
}

const SUBMIT_CHUNK = 5000;

/**
 * One batch: submit items to it (when it is open), watch it, read its results and failures,
 * replay failures, close or cancel it. Get one from `client.batch(name)`; it resolves the
 * batch's Redis on first use.
 */
export class BatchHandle {
  constructor(private readonly ctx: BatchContext) {}

  get namespace(): string {
    return this.ctx.ref.namespace;
  }

  get name(): string {
    return this.ctx.ref.name;
  }

  /**
   * Creates the batch's queue in Redis (Redis-URL mode only; in Kubernetes mode create a
   * TaskBatch with `spec.open: true` and the operator creates it). Idempotent.
   */
  async create(options: BatchOptionsInput = {}): Promise<{ epoch: string; created: boolean }> {
    if (this.ctx.kube) {
      throw new TaskBatchError('Usage', `in Kubernetes mode the operator creates batches: kubectl apply a TaskBatch ${this.name} with spec.open: true`);
    }
    const r = await this.resolveQueue(true);
    return r.queue.create(options);
  }

  /** Adds one item. Returns its id (the given one or a generated '#n') and whether it was already there. */
  async submit(data: unknown, options: SubmitOptions = {}): Promise<{ id: string; duplicate: boolean }> {
    const r = await this.submitMany([{ ...options, data }]);
    return { id: r.ids[0]!, duplicate: r.duplicates > 0 };
  }

  /**
   * Adds items (any iterable; consumed in chunks of 5000, each chunk validated before it is
   * written). Items with an id already submitted are skipped (duplicates).
   */
  async submitMany(items: Iterable<SubmitItem> | AsyncIterable<SubmitItem>): Promise<SubmitResult> {
    const { queue } = await this.resolveQueue();
    const out: SubmitResult = { added: 0, duplicates: 0, ids: [] };
    let chunk: ItemInput[] = [];
    const flush = async (): Promise<void> => {
      if (chunk.length === 0) return;
      let r;
      try {
        r = await queue.enqueueMany(chunk);
      } catch (err) {
        throw this.translate(err);
      }
      out.added += r.added;
      out.duplicates += r.duplicates;
      let g = 0;
      for (const item of chunk) out.ids.push(item.id ?? r.generatedIds[g++] ?? '');
      chunk = [];
    };
    for await (const item of items as AsyncIterable<SubmitItem>) {
      if (!item || typeof item !== 'object' || !('data' in item)) {
        throw new TaskBatchError('Usage', `item ${out.ids.length + chunk.length} must be an object {data, id?, delayMs?, notBefore?}`);
      }
      chunk.push({
        data: item.data,
        ...(item.id !== undefined ? { id: item.id } : {}),
        ...(item.delayMs !== undefined ? { delayMs: item.delayMs } : {}),
        ...(item.notBefore !== undefined ? { notBefore: item.notBefore } : {}),
      });
      if (chunk.length >= SUBMIT_CHUNK) await flush();
    }
    await flush();
    return out;
  }

  /** No more items: the batch completes once what is queued has run. Idempotent. */
  async close(): Promise<void> {
    const { queue } = await this.resolveQueue();
    try {
      await queue.close();
    } catch (err) {
      throw this.translate(err);
    }
  }

  /** Counts (O(1)) and, in Kubernetes mode, the TaskBatch's state and conditions. */
  async status(): Promise<BatchStatus> {
    const base = { namespace: this.namespace, name: this.name };
    if (!this.ctx.kube) {
      const { queue } = await this.resolveQueue();
      return { ...base, counts: await this.snapshot(queue), countsFrom: 'redis' };
    }
    const tb = await readTaskBatch(this.ctx.kube, this.namespace, this.name);
    const taskBatch = describeTaskBatch(tb);
    try {
      // A TaskBatch without a queue yet (just created) has nothing in Redis to count.
      if (!tb.status?.queueEpoch) throw new BatchNotFoundError("the operator has not created the batch's queue yet (status.queueEpoch is empty)");
      const { queue } = await this.resolveQueue();
      return { ...base, counts: await this.snapshot(queue), countsFrom: 'redis', taskBatch };
    } catch (err) {
      const i = tb.status?.items ?? {};
      const counts = {
        total: i.total ?? 0,
        pending: i.pending ?? 0,
        delayed: i.delayed ?? 0,
        running: i.running ?? 0,
        succeeded: i.succeeded ?? 0,
        failed: i.failed ?? 0,
        retries: i.retries ?? 0,
        handedBack: i.handedBack ?? 0,
        closed: !tb.spec.open,
        complete: taskBatch.state === 'Complete' || taskBatch.state === 'Failed',
        ...(tb.status?.queueEpoch ? { epoch: tb.status.queueEpoch } : {}),
      };
      return { ...base, counts, countsFrom: 'taskbatch', redisError: (err as Error).message, taskBatch };
    }
  }

  /**
   * Waits until the batch is finished, calling `onProgress` after each poll. In Kubernetes
   * mode the outcome is the TaskBatch's Complete/Failed condition (so a deadline or the
   * failure policy count); with only a Redis URL it is "closed and drained".
   */
  async wait(options: WaitOptions = {}): Promise<WaitResult> {
    const intervalMs = options.intervalMs ?? 1000;
    const deadline = options.timeoutMs !== undefined ? Date.now() + options.timeoutMs : Infinity;
    const tracker = new ProgressTracker();
    const { queue } = await this.resolveQueue();
    let polls = 0;
    let drainedAt: number | undefined;
    for (;;) {
      if (this.ctx.isClosed()) throw new ClientClosedError();
      options.signal?.throwIfAborted();
      const s = await this.snapshot(queue);
      const p = tracker.update(s);
      options.onProgress?.(p);
      if (this.ctx.kube && (s.complete || polls % 5 === 0)) {
        // The TaskBatch's conditions decide (failure policy, deadline); the operator writes them
        // within a poll or two of the queue draining.
        const tb = await readTaskBatch(this.ctx.kube, this.namespace, this.name);
        for (const type of ['Failed', 'Complete'] as const) {
          const c = findCondition(tb.status, type);
          if (c?.status === 'True') return { ok: type === 'Complete', outcome: type, reason: c.reason, ...(c.message ? { message: c.message } : {}), progress: p };
        }
        drainedAt = s.complete ? (drainedAt ?? Date.now()) : undefined;
        if (drainedAt !== undefined && Date.now() - drainedAt > 60_000) {
          return {
            ok: s.failed === 0,
            outcome: 'Drained',
            message: 'the queue drained but the operator has not marked the TaskBatch Complete or Failed within 60 s (is the operator running?)',
            progress: p,
          };
        }
      } else if (!this.ctx.kube && s.complete) {
        return { ok: s.failed === 0, outcome: 'Drained', progress: p };
      }
      polls++;
      const left = deadline - Date.now();
      if (left <= 0) throw new WaitTimeoutError(`batch ${batchId(this.ctx.ref)} did not finish within ${options.timeoutMs} ms (${p.done}/${p.total} done); it keeps running`);
      await sleep(Math.min(intervalMs, left), options.signal);
    }
  }

  /** Stored results in completion order (each kept for the batch's result TTL, 24 h by default). */
  async *results(options: { pageSize?: number } = {}): AsyncGenerator<StoredResult> {
    const { queue } = await this.resolveQueue();
    await this.snapshot(queue);
    const size = options.pageSize ?? 500;
    for (let offset = 0; ; offset += size) {
      const page = await queue.results(offset, size);
      for (const r of page) yield r;
      if (page.length < size) return;
    }
  }

  /** Dead-lettered items with their last error and payload (each once, in no particular order). */
  async *failures(options: { pageSize?: number } = {}): AsyncGenerator<DeadLetter> {
    const { queue } = await this.resolveQueue();
    const seen = new Set<string>();
    let cursor = '0';
    do {
      let page;
      try {
        page = await queue.deadLetters(cursor, options.pageSize ?? 500);
      } catch (err) {
        throw this.translate(err);
      }
      cursor = page.cursor;
      for (const d of page.items) {
        if (seen.has(d.id)) continue; // HSCAN may return an entry twice
        seen.add(d.id);
        yield d;
      }
    } while (cursor !== '0');
  }

  /** Moves dead-lettered items (the given ids, or all) back to pending with fresh attempts; returns how many. */
  async replay(ids?: readonly string[]): Promise<number> {
    if (this.ctx.kube) {
      // Replayed items of a finished batch reopen it only when it failed on items alone.
      const tb = await readTaskBatch(this.ctx.kube, this.namespace, this.name);
      if (!canReopen(tb.status)) {
        const failed = findCondition(tb.status, 'Failed');
        throw new TaskBatchError(
          'Usage',
          `TaskBatch ${this.namespace}/${this.name} failed (${failed?.reason}: ${failed?.message}); replayed items would never run because it gets no workers again. Fix the cause and create a new TaskBatch for the failed items (taskbatch failures ${this.name} -n ${this.namespace} lists them)`,
        );
      }
    }
    const { queue } = await this.resolveQueue();
    await this.snapshot(queue); // the batch must exist
    try {
      return ids ? await queue.replay(ids) : await queue.replayAll();
    } catch (err) {
      throw this.translate(err);
    }
  }

  /**
   * Stops the batch for good. Kubernetes mode: deletes the TaskBatch; its worker pods go, and
   * the operator's finalizer deletes the batch's Redis keys (items, results, dead letters).
   * Redis-URL mode: deletes the batch's keys at once (running workers then find the state
   * gone, stop claiming and exit). Results are gone afterwards: read them first.
   */
  async cancel(options: { wait?: boolean; timeoutMs?: number } = {}): Promise<{ deleted: 'TaskBatch' | 'RedisKeys' }> {
    if (this.ctx.kube) {
      const path = batchPath(this.namespace, this.name);
      await readTaskBatch(this.ctx.kube, this.namespace, this.name);
      try {
        await this.ctx.kube.kube.delete(path, { propagationPolicy: 'Background' });
      } catch (err) {
        throw translateKubeError(err, `deleting TaskBatch ${this.namespace}/${this.name}`, this.ctx.kube.server);
      }
      this.ctx.invalidate();
      if (options.wait) {
        const until = Date.now() + (options.timeoutMs ?? 60_000);
        while ((await this.ctx.kube.kube.find(path)) !== undefined) {
          if (Date.now() > until)
            throw new WaitTimeoutError(`TaskBatch ${this.namespace}/${this.name} still exists after ${options.timeoutMs ?? 60_000} ms (its finalizer waits for the operator to delete the Redis keys)`);
          await sleep(250);
        }
      }
      return { deleted: 'TaskBatch' };
    }
    const { queue } = await this.resolveQueue();
    await this.snapshot(queue);
    await queue.purge();
    this.ctx.invalidate();
    return { deleted: 'RedisKeys' };
  }

  private async resolveQueue(creating = false): Promise<ResolvedBatch> {
    if (this.ctx.isClosed()) throw new ClientClosedError();
    try {
      return await this.ctx.resolve();
    } catch (err) {
      if (creating) throw err;
      throw this.translate(err);
    }
  }

  private async snapshot(queue: BatchQueue): Promise<BatchSnapshot> {
    try {
      return await queue.snapshot();
    } catch (err) {
      throw this.translate(err);
    }
  }

  private translate(err: unknown): unknown {
    const id = batchId(this.ctx.ref);
    if (err instanceof BatchStateLostError) {
      if (this.ctx.kube) {
        this.ctx.invalidate();
        return new BatchNotFoundError(
          `batch ${id}: its state in Redis is gone or was recreated (${err.message}); the TaskBatch was probably deleted or recreated — check kubectl get taskbatch ${this.name} -n ${this.namespace}`,
        );
      }
      return new BatchNotFoundError(
        `batch ${id} not found in Redis at ${this.ctx.describeRedis()}; create it (a TaskBatch with spec.open: true, \`taskbatch run\`, or batch.create()), or check --namespace and --redis-url`,
      );
    }
    if (err instanceof BatchClosedError) {
      return new NotOpenError(`batch ${id} is closed and takes no more items${this.ctx.kube ? ' (only TaskBatches with spec.open: true take items, until closed)' : ''}`);
    }
    return err;
  }
}

function describeTaskBatch(tb: TaskBatch): NonNullable<BatchStatus['taskBatch']> {
  const s = tb.status;
  return {
    ...(s?.state ? { state: s.state } : {}),
    open: tb.spec.open === true,
    suspended: tb.spec.suspend === true,
    ...(s?.progress ? { progress: s.progress } : {}),
    ...(s?.workers?.summary ? { workers: s.workers.summary } : {}),
    conditions: s?.conditions ?? [],
    ...(tb.metadata.creationTimestamp ? { createdAt: tb.metadata.creationTimestamp } : {}),
    ...(s?.startTime ? { startTime: s.startTime } : {}),
    ...(s?.completionTime ? { completionTime: s.completionTime } : {}),
  };
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
