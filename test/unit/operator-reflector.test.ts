import { KubeConfig } from '@kubernetes/client-node';
import { KubeApiError, KubeClient, type KubeList, type KubeObject, type Query, type WatchEvent } from '../../kube/client.js';
import { createLogger } from '../../operator/log.js';
import { Reflector } from '../../operator/kube/reflector.js';
import { eventually } from '../support/batches.js';

// The reflector against a scripted API (fakes below the reconcile loop). The same behaviour on
// a real kube-apiserver is in test/cluster/operator-cache.test.ts.

interface FakeWatch {
  query: Query;
  onEvent: (e: WatchEvent<KubeObject>) => void;
  onDone: (err: unknown) => void;
  stopped: boolean;
}

class ScriptedKube extends KubeClient {
  readonly listCalls: Query[] = [];
  readonly watches: FakeWatch[] = [];
  /** When set, the next watch fails before the server accepted it (as a refused connection does). */
  failNextWatchOpen: unknown;

  constructor(private readonly answer: (query: Query, call: number) => Promise<KubeList<KubeObject>>) {
    const kc = new KubeConfig();
    kc.loadFromOptions({ clusters: [{ name: 'c', server: 'https://fake.invalid' }], users: [{ name: 'u' }], contexts: [{ name: 'x', cluster: 'c', user: 'u' }], currentContext: 'x' });
    super(kc);
  }

  override async list<T>(_path: string, query: Query = {}): Promise<KubeList<T>> {
    this.listCalls.push(Object.fromEntries(Object.entries(query).filter(([, v]) => v !== undefined)));
    return (await this.answer(query, this.listCalls.length)) as KubeList<T>;
  }

  override async watch<T>(_path: string, query: Query, onEvent: (e: WatchEvent<T>) => void, onDone: (err: unknown) => void): Promise<() => void> {
    const w: FakeWatch = { query, onEvent: onEvent as (e: WatchEvent<KubeObject>) => void, onDone, stopped: false };
    this.watches.push(w);
    if (this.failNextWatchOpen !== undefined) {
      const err = this.failNextWatchOpen;
      this.failNextWatchOpen = undefined;
      onDone(err); // client-node calls done before watch() returns when the request itself fails
    }
    return () => {
      w.stopped = true;
    };
  }
}

const obj = (name: string, rv = '1'): KubeObject => ({ metadata: { namespace: 'ns', name, resourceVersion: rv } });
const objs = (n: number, prefix = 'o'): KubeObject[] => Array.from({ length: n }, (_, i) => obj(`${prefix}-${String(i).padStart(2, '0')}`));

/** A list endpoint over `items()`, paginated the way the API server is: `continue` is an offset here. */
function pagedList(items: () => KubeObject[], rv = '100'): (q: Query) => Promise<KubeList<KubeObject>> {
  return async (q) => {
    const all = items();
    const from = q.continue ? Number(q.continue) : 0;
    const limit = q.limit ? Number(q.limit) : all.length;
    const to = Math.min(all.length, from + limit);
    return { metadata: { resourceVersion: rv, ...(to < all.length ? { continue: String(to) } : {}) }, items: all.slice(from, to) };
  };
}

function capture(): { lines: { level: string; msg: string }[]; log: ReturnType<typeof createLogger> } {
  const lines: { level: string; msg: string }[] = [];
  return { lines, log: createLogger({}, 'debug', (l) => void lines.push(JSON.parse(l) as { level: string; msg: string })) };
}

function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

test('start() resolves only after the first complete list; failed lists are retried meanwhile and warned about', async () => {
  const third = deferred<KubeList<KubeObject>>();
  const kube = new ScriptedKube(async (_q, call) => {
    if (call <= 2) throw new KubeApiError(503, 'ServiceUnavailable', 'GET /api/v1/pods: 503 refused for now');
    return third.promise;
  });
  const { lines, log } = capture();
  const r = new Reflector<KubeObject>(kube, { path: '/api/v1/pods', maxBackoffMs: 1 }, log);
  let settled: boolean | undefined;
  const started = r.start().then((v) => (settled = v));
  try {
    await eventually(() => kube.listCalls.length === 3, 5000, 'the third list attempt');
    // Two lists failed and the third is still in flight: nothing may count as synced.
    expect(settled).toBeUndefined();
    expect(r.hasSynced).toBe(false);
    expect(r.list()).toEqual([]);
    expect(lines.filter((l) => l.level === 'warn' && l.msg === 'The list failed; retrying after backoff')).toHaveLength(2);
    third.resolve({ metadata: { resourceVersion: '7' }, items: [obj('a'), obj('b')] });
    expect(await started).toBe(true);
    expect(r.hasSynced).toBe(true);
    expect(r.list().map((o) => o.metadata.name)).toEqual(['a', 'b']);
    expect(await r.waitForSync()).toBe(true);
    expect(kube.watches[0]?.query.resourceVersion).toBe('7');
  } finally {
    r.stop();
  }
});

test('waitForSync() resolves false when its signal aborts or the reflector is stopped first', async () => {
  const kube = new ScriptedKube(async () => {
    throw new KubeApiError(403, 'Forbidden', 'GET /api/v1/pods: 403 pods is forbidden');
  });
  const r = new Reflector<KubeObject>(kube, { path: '/api/v1/pods', maxBackoffMs: 1 }, capture().log);
  const aborted = new AbortController();
  const waiting = r.waitForSync(aborted.signal);
  const started = r.start();
  await eventually(() => kube.listCalls.length >= 2, 5000, 'a retried list');
  aborted.abort();
  expect(await waiting).toBe(false);
  r.stop();
  expect(await started).toBe(false);
  expect(await r.waitForSync()).toBe(false);
  expect(r.hasSynced).toBe(false);
});

test('lists page by page (limit + continue); the cache holds every page, and a relist drops what is gone', async () => {
  let items = objs(25);
  const kube = new ScriptedKube(pagedList(() => items));
  const upserts: string[] = [];
  const deletes: string[] = [];
  const r = new Reflector<KubeObject>(kube, { path: '/api/v1/configmaps', labelSelector: 'x=y', pageSize: 10 }, capture().log);
  r.onChange((o, kind) => (kind === 'upsert' ? upserts : deletes).push(o.metadata.name!));
  try {
    expect(await r.start()).toBe(true);
    expect(kube.listCalls).toEqual([
      { labelSelector: 'x=y', limit: 10 },
      { labelSelector: 'x=y', limit: 10, continue: '10' },
      { labelSelector: 'x=y', limit: 10, continue: '20' },
    ]);
    expect(r.list()).toHaveLength(25);
    expect(upserts).toHaveLength(25);
    expect(r.listRequests).toBe(3);
    expect(r.lists).toBe(1);

    items = items.slice(5); // five deleted while no watch saw it
    kube.watches[0]!.onEvent({ type: 'ERROR', object: { code: 410, message: 'too old resource version' } as unknown as KubeObject });
    await eventually(() => r.lists === 2, 5000, 'the relist after 410 Gone');
    expect(r.list()).toHaveLength(20);
    expect(deletes.sort()).toEqual(['o-00', 'o-01', 'o-02', 'o-03', 'o-04']);
    expect(r.listRequests).toBe(5);
  } finally {
    r.stop();
  }
});

test('410 Gone on a continue token: the list starts again from scratch; if it expires again, one unpaginated list', async () => {
  const items = objs(25);
  const page = pagedList(() => items);
  const expired = new KubeApiError(410, 'Expired', 'GET /api/v1/configmaps: 410 The provided continue parameter is too old');

  // Expires once: the second attempt pages through to the end.
  let expiries = 1;
  const once = new ScriptedKube(async (q) => {
    if (q.continue && expiries > 0) {
      expiries--;
      throw expired;
    }
    return page(q);
  });
  const { lines, log } = capture();
  const r1 = new Reflector<KubeObject>(once, { path: '/api/v1/configmaps', pageSize: 10 }, log);
  try {
    expect(await r1.start()).toBe(true);
    expect(once.listCalls.map((q) => q.continue ?? '-')).toEqual(['-', '10', '-', '10', '20']);
    expect(r1.list()).toHaveLength(25);
    expect(lines.some((l) => l.level === 'info' && /continue token expired \(410 Gone\); listing again from the start/.test(l.msg))).toBe(true);
    expect(lines.some((l) => l.level === 'warn')).toBe(false);
  } finally {
    r1.stop();
  }

  // Every continue token expires (a list slower than compaction): client-go's fallback, one request.
  const always = new ScriptedKube(async (q) => {
    if (q.continue) throw expired;
    return page(q);
  });
  const r2 = new Reflector<KubeObject>(always, { path: '/api/v1/configmaps', pageSize: 10 }, capture().log);
  try {
    expect(await r2.start()).toBe(true);
    expect(always.listCalls).toEqual([{ limit: 10 }, { limit: 10, continue: '10' }, { limit: 10 }, { limit: 10, continue: '10' }, {}]);
    expect(r2.list()).toHaveLength(25);
  } finally {
    r2.stop();
  }
});

test('a watch the server or the inactivity timer ends is resumed at once, logged at debug; a watch that cannot open is a warning', async () => {
  const kube = new ScriptedKube(async () => ({ metadata: { resourceVersion: '5' }, items: [obj('a', '5')] }));
  const { lines, log } = capture();
  const r = new Reflector<KubeObject>(kube, { path: '/api/v1/pods', maxBackoffMs: 1 }, log);
  try {
    expect(await r.start()).toBe(true);
    await eventually(() => kube.watches.length === 1, 5000, 'the first watch');
    kube.watches[0]!.onEvent({ type: 'MODIFIED', object: obj('a', '6') });
    // client-node aborts a watch that got nothing for 30 s with a TimeoutError.
    kube.watches[0]!.onDone(new DOMException('The operation was aborted due to timeout', 'TimeoutError'));
    await eventually(() => kube.watches.length === 2, 5000, 'the watch re-opened after the inactivity timeout');
    expect(kube.watches[1]!.query.resourceVersion).toBe('6');
    kube.watches[1]!.onDone(null); // the server's timeoutSeconds
    await eventually(() => kube.watches.length === 3, 5000, 'the watch re-opened after the server closed it');
    expect(lines.filter((l) => l.msg === 'The watch ended; resuming' && l.level === 'debug')).toHaveLength(2);
    expect(lines.filter((l) => l.level === 'warn')).toEqual([]);
    expect(r.lists).toBe(1);

    // The same TimeoutError before the server accepted the watch is a real failure.
    kube.failNextWatchOpen = new DOMException('The operation was aborted due to timeout', 'TimeoutError');
    kube.watches[2]!.onDone(null);
    await eventually(() => kube.watches.length === 5, 5000, 'the failed open retried');
    expect(lines.filter((l) => l.level === 'warn').map((l) => l.msg)).toEqual(['The watch failed; retrying after backoff']);
    kube.watches[4]!.onEvent({ type: 'ADDED', object: obj('b', '9') });
    expect(r.get('ns/b')?.metadata.resourceVersion).toBe('9');
  } finally {
    r.stop();
  }
});
