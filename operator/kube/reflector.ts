import { KubeApiError, type KubeClient, type KubeList, type KubeObject, type WatchEvent } from '../../kube/client.js';
import type { Logger } from '../log.js';

export interface ReflectorOptions {
  /** Collection path, e.g. /apis/taskbatch.dev/v1alpha1/taskbatches. */
  path: string;
  labelSelector?: string;
  /** Relist everything this often, catching anything a silently stalled watch missed. */
  relistIntervalMs?: number;
  /** Server-side watch timeout; the watch is re-opened from the last resourceVersion after it. */
  watchTimeoutSeconds?: number;
  /** Cap of the backoff between failed list/watch attempts. */
  maxBackoffMs?: number;
  /**
   * Objects per list request (`limit`, then `continue`), so that one large namespace never
   * arrives as a single response held in memory at once. Default 500, as client-go's pager;
   * 0 lists everything in one request.
   */
  pageSize?: number;
}

const DEFAULT_PAGE_SIZE = 500;

export type ChangeHandler<T> = (obj: T, kind: 'upsert' | 'delete') => void;

export function objectKey(obj: KubeObject): string {
  return `${obj.metadata.namespace ?? ''}/${obj.metadata.name ?? ''}`;
}

/**
 * A list+watch cache that never stops: any watch error relists after a capped backoff,
 * 410 Gone (resourceVersion too old, e.g. after etcd compaction) relists at once, and a
 * periodic relist guards against watches that stall silently. Lists are paginated. Handlers
 * only learn which object changed; consumers re-read state from the cache (level-triggered).
 *
 * The cache is complete only once the first full list is in: `start()` and `waitForSync()`
 * resolve then, not before (a failed first list is retried in the background). Anything that
 * acts on the cache's absence of objects (e.g. "this batch has no pods yet") must wait for it.
 */
export class Reflector<T extends KubeObject> {
  private readonly cache = new Map<string, T>();
  private readonly handlers: ChangeHandler<T>[] = [];
  private readonly syncWaiters = new Set<(synced: boolean) => void>();
  private resourceVersion = '';
  private stopWatch: (() => void) | undefined;
  private started = false;
  private stopped = false;
  private synced = false;
  private failures = 0;
  private relistTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private generation = 0;
  private outageUntil = 0;
  /** Counts complete (re)lists, for metrics and tests. */
  lists = 0;
  /** Counts list requests (one per page), for tests and benchmarks. */
  listRequests = 0;
  /** Counts watches opened, for tests. */
  watches = 0;

  constructor(
    private readonly client: KubeClient,
    private readonly options: ReflectorOptions,
    private readonly log: Logger,
  ) {}

  onChange(handler: ChangeHandler<T>): void {
    this.handlers.push(handler);
  }

  /** True once a complete list has been in the cache (it stays true across later relists). */
  get hasSynced(): boolean {
    return this.synced;
  }

  get(key: string): T | undefined {
    return this.cache.get(key);
  }

  list(): T[] {
    return [...this.cache.values()];
  }

  /**
   * Starts listing and watching. Resolves true once the first complete list is in the cache,
   * false if the reflector is stopped (or `signal` aborts) first; until then failed lists are
   * retried with backoff.
   */
  async start(signal?: AbortSignal): Promise<boolean> {
    if (!this.started && !this.stopped) {
      this.started = true;
      void this.relist();
    }
    return this.waitForSync(signal);
  }

  /**
   * Resolves true once the first complete list is in the cache; false if the reflector is
   * stopped or `signal` aborts first (pass `AbortSignal.timeout(ms)` for a deadline).
   */
  waitForSync(signal?: AbortSignal): Promise<boolean> {
    if (this.synced) return Promise.resolve(true);
    if (this.stopped || signal?.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const done = (synced: boolean): void => {
        this.syncWaiters.delete(done);
        signal?.removeEventListener('abort', onAbort);
        resolve(synced);
      };
      const onAbort = (): void => done(false);
      this.syncWaiters.add(done);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  stop(): void {
    this.stopped = true;
    this.stopWatch?.();
    clearTimeout(this.relistTimer);
    clearTimeout(this.retryTimer);
    for (const done of [...this.syncWaiters]) done(false);
  }

  /**
   * Drops the current watch as a network failure would, and keeps it down for `outageMs`;
   * the reflector then resumes from its last resourceVersion (or relists on 410 Gone).
   */
  breakWatch(outageMs = 0): void {
    this.outageUntil = Date.now() + outageMs;
    this.stopWatch?.();
  }

  private async relist(): Promise<void> {
    if (this.stopped) return;
    const gen = ++this.generation;
    this.stopWatch?.();
    this.stopWatch = undefined;
    clearTimeout(this.relistTimer);
    try {
      const complete = await this.listPages(gen);
      if (!complete) return;
      this.lists++;
      this.failures = 0;
      if (!this.synced) {
        this.synced = true;
        for (const done of [...this.syncWaiters]) done(true);
      }
      this.relistTimer = setTimeout(() => void this.relist(), this.options.relistIntervalMs ?? 300_000);
      this.relistTimer.unref();
      await this.openWatch(gen);
    } catch (err) {
      this.retry(gen, err, 'list');
    }
  }

  /**
   * Lists the collection page by page into the cache, then drops what the list no longer has.
   * Each page is applied as it arrives, so memory holds the cache plus one page, not a second
   * copy of everything. Returns false when a newer relist or stop() superseded this one.
   *
   * A continue token outlives its snapshot once etcd compacts past it (5 min by default): the
   * API server answers 410 Gone. As client-go's pager does, the list then starts again from
   * scratch (a fresh snapshot); if that expires as well, one unpaginated list is made, which
   * cannot expire half-way.
   */
  private async listPages(gen: number): Promise<boolean> {
    let pageSize = this.options.pageSize ?? DEFAULT_PAGE_SIZE;
    let token: string | undefined;
    let expirations = 0;
    let seen = new Set<string>();
    for (;;) {
      let page: KubeList<T>;
      try {
        page = await this.client.list<T>(this.options.path, {
          labelSelector: this.options.labelSelector,
          ...(pageSize > 0 ? { limit: pageSize } : {}),
          ...(token ? { continue: token } : {}),
        });
      } catch (err) {
        if (!token || !isGone(err)) throw err;
        expirations++;
        if (expirations > 1) pageSize = 0;
        this.log.info(
          expirations > 1 ? "The list's continue token expired again (410 Gone); listing everything in one request" : "The list's continue token expired (410 Gone); listing again from the start",
          {
            path: this.options.path,
            objectsListed: seen.size,
          },
        );
        token = undefined;
        seen = new Set();
        continue;
      }
      if (this.stopped || gen !== this.generation) return false;
      this.listRequests++;
      for (const item of page.items) {
        const key = objectKey(item);
        seen.add(key);
        const old = this.cache.get(key);
        this.cache.set(key, item);
        if (!old || old.metadata.resourceVersion !== item.metadata.resourceVersion || !this.synced) this.emit(item, 'upsert');
      }
      // Every page of one list carries the resourceVersion of the snapshot it was cut from.
      this.resourceVersion = page.metadata.resourceVersion;
      token = page.metadata.continue || undefined;
      if (!token) break;
    }
    for (const [key, old] of this.cache) {
      if (!seen.has(key)) {
        this.cache.delete(key);
        this.emit(old, 'delete');
      }
    }
    return true;
  }

  private async openWatch(gen: number): Promise<void> {
    let ended = false;
    // Set once the API server accepted the watch: a timeout after that is client-node's
    // inactivity timer on a quiet watch, not a failure to reach the server.
    let open = false;
    const end = (err: unknown): void => {
      if (ended || this.stopped || gen !== this.generation) return;
      ended = true;
      const routine = err === null || (open && isInactivityTimeout(err));
      if (routine && Date.now() >= this.outageUntil) {
        // The server ended the watch at its timeoutSeconds, or nothing happened for a while
        // (client-node aborts a watch silent for 30 s): normal, so resume at once from where we
        // were; a resourceVersion that got too old yields 410 Gone and a relist.
        this.log.debug('The watch ended; resuming', { path: this.options.path, ...(err === null ? {} : { after: 'inactivity' }) });
        void this.openWatch(gen).catch((e: unknown) => this.retry(gen, e, 'watch'));
      } else if (isGone(err)) {
        this.log.info('Watch expired (410 Gone); relisting', { path: this.options.path });
        void this.relist();
      } else {
        this.retry(gen, err ?? new Error('watch closed'), 'watch');
      }
    };
    this.watches++;
    this.stopWatch = await this.client.watch<T>(
      this.options.path,
      {
        resourceVersion: this.resourceVersion,
        allowWatchBookmarks: true,
        timeoutSeconds: this.options.watchTimeoutSeconds ?? 300,
        labelSelector: this.options.labelSelector,
      },
      (e) => this.handle(e, end),
      end,
    );
    open = true;
  }

  private handle(e: WatchEvent<T>, end: (err: unknown) => void): void {
    if (e.type === 'ERROR') {
      const status = e.object as unknown as { code?: number; message?: string };
      end(new KubeApiError(status.code ?? 500, status.code === 410 ? 'Expired' : 'WatchError', status.message ?? 'watch error'));
      return;
    }
    const rv = e.object.metadata?.resourceVersion;
    if (rv) this.resourceVersion = rv;
    this.failures = 0;
    if (e.type === 'BOOKMARK') return;
    const key = objectKey(e.object);
    if (e.type === 'DELETED') {
      this.cache.delete(key);
      this.emit(e.object, 'delete');
    } else {
      this.cache.set(key, e.object);
      this.emit(e.object, 'upsert');
    }
  }

  /**
   * After a failed list: relist after a capped backoff. After a dropped watch: re-open it
   * from the last resourceVersion (as client-go does), so nothing is missed; a too-old
   * resourceVersion then yields 410 Gone and a relist.
   */
  private retry(gen: number, err: unknown, what: 'list' | 'watch'): void {
    if (this.stopped || gen !== this.generation) return;
    this.failures++;
    const backoff = Math.min(this.options.maxBackoffMs ?? 30_000, 200 * 2 ** Math.min(this.failures, 10));
    const delay = Math.max(backoff, this.outageUntil - Date.now());
    this.log.warn(`The ${what} failed; retrying after backoff`, { path: this.options.path, error: String(err), delayMs: delay, ...(what === 'list' && !this.synced ? { synced: false } : {}) });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      if (what === 'list' || this.failures > 5) {
        void this.relist();
      } else {
        this.openWatch(gen).catch((e: unknown) => this.retry(gen, e, 'watch'));
      }
    }, delay);
    this.retryTimer.unref();
  }

  private emit(obj: T, kind: 'upsert' | 'delete'): void {
    for (const h of this.handlers) h(obj, kind);
  }
}

function isGone(err: unknown): boolean {
  if (err instanceof KubeApiError) return err.status === 410;
  const e = err as { statusCode?: number; code?: number } | undefined;
  return e?.statusCode === 410 || e?.code === 410;
}

/** client-node's Watch aborts a watch that received nothing for 30 s with a TimeoutError. */
function isInactivityTimeout(err: unknown): boolean {
  return (err as { name?: unknown } | undefined)?.name === 'TimeoutError';
}
