import { KubeApiError, type KubeClient, type KubeObject, type WatchEvent } from './client.js';
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
}

export type ChangeHandler<T> = (obj: T, kind: 'upsert' | 'delete') => void;

export function objectKey(obj: KubeObject): string {
  return `${obj.metadata.namespace ?? ''}/${obj.metadata.name ?? ''}`;
}

/**
 * A list+watch cache that never stops: any watch error relists after a capped backoff,
 * 410 Gone (resourceVersion too old, e.g. after etcd compaction) relists at once, and a
 * periodic relist guards against watches that stall silently. Handlers only learn which
 * object changed; consumers re-read state from the cache (level-triggered).
 */
export class Reflector<T extends KubeObject> {
  private readonly cache = new Map<string, T>();
  private readonly handlers: ChangeHandler<T>[] = [];
  private resourceVersion = '';
  private stopWatch: (() => void) | undefined;
  private stopped = false;
  private synced = false;
  private failures = 0;
  private relistTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private generation = 0;
  private outageUntil = 0;
  /** Counts (re)lists, for metrics and tests. */
  lists = 0;

  constructor(
    private readonly client: KubeClient,
    private readonly options: ReflectorOptions,
    private readonly log: Logger,
  ) {}

  onChange(handler: ChangeHandler<T>): void {
    this.handlers.push(handler);
  }

  get hasSynced(): boolean {
    return this.synced;
  }

  get(key: string): T | undefined {
    return this.cache.get(key);
  }

  list(): T[] {
    return [...this.cache.values()];
  }

  async start(): Promise<void> {
    await this.relist();
  }

  stop(): void {
    this.stopped = true;
    this.stopWatch?.();
    clearTimeout(this.relistTimer);
    clearTimeout(this.retryTimer);
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
      const list = await this.client.list<T>(this.options.path, { labelSelector: this.options.labelSelector });
      if (this.stopped || gen !== this.generation) return;
      this.lists++;
      const seen = new Set<string>();
      for (const item of list.items) {
        const key = objectKey(item);
        seen.add(key);
        const old = this.cache.get(key);
        this.cache.set(key, item);
        if (!old || old.metadata.resourceVersion !== item.metadata.resourceVersion || !this.synced) this.emit(item, 'upsert');
      }
      for (const [key, old] of this.cache) {
        if (!seen.has(key)) {
          this.cache.delete(key);
          this.emit(old, 'delete');
        }
      }
      this.resourceVersion = list.metadata.resourceVersion;
      this.synced = true;
      this.failures = 0;
      this.relistTimer = setTimeout(() => void this.relist(), this.options.relistIntervalMs ?? 300_000);
      this.relistTimer.unref();
      await this.openWatch(gen);
    } catch (err) {
      this.retry(gen, err, 'list');
    }
  }

  private async openWatch(gen: number): Promise<void> {
    let ended = false;
    const end = (err: unknown): void => {
      if (ended || this.stopped || gen !== this.generation) return;
      ended = true;
      if (err === null && Date.now() >= this.outageUntil) {
        // A clean close (server-side timeout): resume from where we were.
        void this.openWatch(gen).catch((e: unknown) => this.retry(gen, e, 'watch'));
      } else if (isGone(err)) {
        this.log.info('Watch expired (410 Gone); relisting', { path: this.options.path });
        void this.relist();
      } else {
        this.retry(gen, err ?? new Error('watch closed'), 'watch');
      }
    };
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
    this.log.warn(`The ${what} failed; retrying after backoff`, { path: this.options.path, error: String(err), delayMs: delay });
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
