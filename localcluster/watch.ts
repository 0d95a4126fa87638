/**
 * List, then watch from the list's resourceVersion; re-watch when the server ends the watch
 * (timeoutSeconds) or the connection drops; relist on 410 Gone, after repeated errors, and
 * periodically (a silent stall cannot last longer than resyncMs).
 */
import { Watch, type KubeConfig } from '@kubernetes/client-node';
import { describeError, type Logger } from './log.js';

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface ListWatchOptions<T> {
  kubeConfig: KubeConfig;
  /** Watch path, e.g. /api/v1/pods. */
  path: string;
  query?: Record<string, string>;
  list(): Promise<{ items: T[]; resourceVersion: string }>;
  /** After every (re)list, with the full current set. */
  onSync(items: T[]): void;
  onEvent(type: WatchEventType, obj: T): void;
  logger: Logger;
  /** Full relist period (default 60 s). */
  resyncMs?: number;
}

export interface ListWatch {
  /** Resolves after the first list was delivered. */
  readonly synced: Promise<void>;
  stop(): void;
}

interface ObjectWithMeta {
  metadata?: { resourceVersion?: string };
}

export function startListWatch<T extends ObjectWithMeta>(opts: ListWatchOptions<T>): ListWatch {
  const watch = new Watch(opts.kubeConfig);
  const resyncMs = opts.resyncMs ?? 60_000;
  let stopped = false;
  let controller: AbortController | undefined;
  let wake: (() => void) | undefined;
  let resolveSynced: () => void = () => undefined;
  const synced = new Promise<void>((r) => (resolveSynced = r));

  const sleep = (ms: number): Promise<void> =>
    new Promise((r) => {
      const t = setTimeout(r, ms);
      wake = () => {
        clearTimeout(t);
        r();
      };
    });

  const watchOnce = (resourceVersion: string): Promise<{ rv: string; relist: boolean; error?: unknown }> =>
    new Promise((resolve) => {
      let rv = resourceVersion;
      let relist = false;
      const timeoutSeconds = 20 + Math.floor(Math.random() * 10);
      watch
        .watch(
          opts.path,
          { ...opts.query, resourceVersion, allowWatchBookmarks: true, timeoutSeconds },
          (type: string, obj: unknown) => {
            if (type === 'ERROR') {
              const status = obj as { code?: number; message?: string };
              opts.logger.debug('Watch returned an error event', { path: opts.path, code: status.code, message: status.message });
              relist = true;
              return;
            }
            const o = obj as T;
            if (o.metadata?.resourceVersion) rv = o.metadata.resourceVersion;
            if (type === 'BOOKMARK') return;
            if (type === 'ADDED' || type === 'MODIFIED' || type === 'DELETED') opts.onEvent(type, o);
          },
          (err: unknown) => resolve({ rv, relist, error: err ?? undefined }),
        )
        .then((c) => {
          controller = c;
          if (stopped) c.abort();
        })
        .catch((err: unknown) => resolve({ rv, relist: true, error: err }));
    });

  void (async () => {
    let failures = 0;
    while (!stopped) {
      let rv: string;
      try {
        const { items, resourceVersion } = await opts.list();
        if (stopped) return;
        opts.onSync(items);
        resolveSynced();
        rv = resourceVersion;
        failures = 0;
      } catch (err) {
        failures++;
        opts.logger.warn('List failed; retrying', { path: opts.path, error: describeError(err), failures });
        await sleep(Math.min(5000, 200 * 2 ** failures));
        continue;
      }
      const listedAt = Date.now();
      while (!stopped && Date.now() - listedAt < resyncMs) {
        const r = await watchOnce(rv);
        controller = undefined;
        if (stopped) return;
        rv = r.rv;
        if (r.relist) break;
        if (r.error && !isBenignEnd(r.error)) {
          failures++;
          opts.logger.debug('Watch ended with an error; re-watching', { path: opts.path, error: describeError(r.error), failures });
          if (failures >= 3) break;
          await sleep(Math.min(5000, 200 * 2 ** failures));
        } else {
          failures = 0;
        }
      }
    }
  })();

  return {
    synced,
    stop: () => {
      stopped = true;
      controller?.abort();
      wake?.();
    },
  };
}

/** An inactivity timeout or an aborted request: re-watch at once. */
function isBenignEnd(err: unknown): boolean {
  const name = (err as { name?: string }).name;
  return name === 'TimeoutError' || name === 'AbortError';
}
