import { jest } from '@jest/globals';
import { createExecutor, ExecutorClosedError, ExecutorStartError, type Executor, type ExecutorOptions, type Outcome, type PoolMode, type RestartReason } from '../../worker/executor/index.js';
import type { HandlerSpec } from '../../worker/handler/spec.js';
import { BAD_FIXTURE, CJS_FIXTURE, FIXTURES } from '../support/worker-harness.js';

jest.setTimeout(30_000);

// One contract, three backends: every test here runs against thread, process and async
// pools with the same fixture handlers (test/fixtures/worker-handlers.ts).

const fx = (exportName: string): HandlerSpec => ({ module: FIXTURES, export: exportName });
let seq = 0;
const task = (data: unknown, attempt = 1) => ({ id: `t${++seq}`, attempt, payload: JSON.stringify(data) });
const parse = (o: Outcome): unknown => (o.status === 'succeeded' && o.json !== undefined ? JSON.parse(o.json) : undefined);

const open: Executor[] = [];
async function pool(mode: PoolMode, handler: HandlerSpec, extra: Partial<ExecutorOptions> = {}): Promise<{ ex: Executor; restarts: { reason: RestartReason; detail: string }[] }> {
  const restarts: { reason: RestartReason; detail: string }[] = [];
  const ex = createExecutor(mode, { handler, size: 2, abortGraceMs: 200, sweepIntervalMs: 10, ...extra, hooks: { onRestart: (reason, detail) => restarts.push({ reason, detail }), ...extra.hooks } });
  open.push(ex);
  await ex.start();
  return { ex, restarts };
}

afterEach(async () => {
  await Promise.all(open.splice(0).map((ex) => ex.destroy()));
});

describe.each(['thread', 'process', 'async'] as const)('executor contract: %s mode', (mode) => {
  const remote = mode !== 'async';

  test('runs an item and reports its JSON result', async () => {
    const { ex } = await pool(mode, fx('ok'));
    const o = await ex.run({ id: 'a1', attempt: 2, payload: '{"x":1}' }, { timeoutMs: 5000 });
    expect(o.status).toBe('succeeded');
    expect(parse(o)).toEqual({ echo: { x: 1 }, attempt: 2, id: 'a1' });
  });

  test('a handler that throws fails only that item, retryable unless marked', async () => {
    const { ex: bad } = await pool(mode, fx('throws'));
    const { ex: fatal } = await pool(mode, fx('nonRetryable'));
    const [a, b] = await Promise.all([bad.run(task({}), { timeoutMs: 5000 }), fatal.run(task({}), { timeoutMs: 5000 })]);
    expect(a).toMatchObject({ status: 'failed', retryable: true, error: { name: 'Error', message: 'boom from the fixture' } });
    expect(b).toMatchObject({ status: 'failed', retryable: false, error: { message: 'bad input' } });
    // The executor keeps working after a failure.
    expect((await bad.run(task({}), { timeoutMs: 5000 })).status).toBe('failed');
    expect(bad.stats().restarts).toBe(0);
  });

  test('runs up to size items at once', async () => {
    const { ex } = await pool(mode, fx('slow'));
    let maxRunning = 0;
    const sample = setInterval(() => (maxRunning = Math.max(maxRunning, ex.stats().running)), 5);
    const t0 = Date.now();
    const outs = await Promise.all([1, 2, 3, 4].map(() => ex.run(task({ ms: 400 }), { timeoutMs: 5000 })));
    clearInterval(sample);
    expect(outs.every((o) => o.status === 'succeeded')).toBe(true);
    expect(maxRunning).toBe(2);
    expect(Date.now() - t0).toBeLessThan(1500); // 2 rounds of 400 ms, not 4
  });

  test('times out an item and keeps serving others', async () => {
    const { ex, restarts } = await pool(mode, { module: FIXTURES, dispatch: 'fn' });
    const t0 = Date.now();
    // thread/process: a busy loop that never yields; async: a wait that honours its signal.
    const o = await ex.run(task(remote ? { fn: 'hangs' } : { fn: 'slow', args: [{ ms: 60_000 }] }), { timeoutMs: 300 });
    expect(o.status).toBe('timedOut');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
    expect(Date.now() - t0).toBeLessThan(1500);
    if (o.status === 'timedOut') expect(o.error.name).toBe('TimeoutError');
    if (remote) {
      // Hard: the busy thread/process is killed after the grace and replaced.
      await waitUntil(() => restarts.some((r) => r.reason === 'timeout'));
      await waitUntil(() => ex.stats().executors === 2);
    }
    const next = await ex.run(task({ fn: 'add', args: [1, 2] }), { timeoutMs: 5000 });
    expect(parse(next)).toBe(3);
  });

  test('aborting stops a running item and drops a queued one', async () => {
    const { ex } = await pool(mode, fx('slow'), { size: 1 });
    const a = new AbortController();
    const b = new AbortController();
    const running = ex.run(task({ ms: 30_000 }), { timeoutMs: 60_000, signal: a.signal });
    const queued = ex.run(task({ ms: 30_000 }), { timeoutMs: 60_000, signal: b.signal });
    await waitUntil(() => ex.stats().running === 1);
    b.abort(new Error('not needed'));
    a.abort(Object.assign(new Error('lease lost'), { name: 'LeaseLost' }));
    const [ra, rb] = await Promise.all([running, queued]);
    expect(ra).toMatchObject({ status: 'aborted', started: true });
    expect(rb).toMatchObject({ status: 'aborted', started: false });
    if (ra.status === 'aborted') expect((ra.reason as Error).name).toBe('LeaseLost');
    // The pool still works (the aborted handler honoured its signal: no kill needed).
    expect((await ex.run(task({ ms: 5 }), { timeoutMs: 5000 })).status).toBe('succeeded');
  });

  test('close() drains queued and running items, then rejects new ones', async () => {
    const { ex } = await pool(mode, fx('slow'));
    const outs = [1, 2, 3, 4].map(() => ex.run(task({ ms: 150 }), { timeoutMs: 5000 }));
    await ex.close();
    const settled = await Promise.all(outs);
    expect(settled.map((o) => o.status)).toEqual(['succeeded', 'succeeded', 'succeeded', 'succeeded']);
    await expect(ex.run(task({}), { timeoutMs: 1000 })).rejects.toBeInstanceOf(ExecutorClosedError);
  });

  test('destroy() aborts running and queued items', async () => {
    const { ex } = await pool(mode, fx('slow'));
    const outs = [1, 2, 3].map(() => ex.run(task({ ms: 30_000 }), { timeoutMs: 60_000 }));
    await waitUntil(() => ex.stats().running === 2);
    await ex.destroy(new Error('bye'));
    const settled = await Promise.all(outs);
    expect(settled.map((o) => o.status)).toEqual(['aborted', 'aborted', 'aborted']);
    expect(settled.filter((o) => o.status === 'aborted' && o.started)).toHaveLength(2);
  });

  test('an executor that fails to start is reported and not used', async () => {
    const ex = createExecutor(mode, { handler: { module: BAD_FIXTURE }, size: 2 });
    open.push(ex);
    await expect(ex.start()).rejects.toThrow(ExecutorStartError);
    await expect(ex.start()).rejects.toThrow();
    expect(ex.stats().executors).toBe(remote ? 0 : 2);
    await expect(ex.run(task({}), { timeoutMs: 1000 })).rejects.toThrow();
  });

  test('loads CommonJS modules and dispatches by item.fn', async () => {
    const { ex: cjs } = await pool(mode, { module: CJS_FIXTURE });
    const { ex: named } = await pool(mode, { module: CJS_FIXTURE, export: 'named' });
    const { ex: dispatch } = await pool(mode, { module: FIXTURES, dispatch: 'fn' });
    expect(parse(await cjs.run(task(1), { timeoutMs: 5000 }))).toEqual({ cjs: 1 });
    expect(parse(await named.run(task(2), { timeoutMs: 5000 }))).toEqual({ named: 2 });
    expect(parse(await dispatch.run(task({ fn: 'add', args: [2, 3] }), { timeoutMs: 5000 }))).toBe(5);
    expect(await dispatch.run(task({ fn: '_private' }), { timeoutMs: 5000 })).toMatchObject({ status: 'failed', retryable: false });
    expect(await dispatch.run(task({ fn: 'nope' }), { timeoutMs: 5000 })).toMatchObject({ status: 'failed', retryable: false });
  });

  test('forwards progress and logs; rejects results that are not JSON', async () => {
    const progress: number[] = [];
    const logs: string[] = [];
    const { ex } = await pool(mode, fx('progress'), { hooks: { onProgress: (_t, v) => progress.push(v), onLog: (_t, level, msg) => logs.push(`${level}:${msg}`) } });
    expect((await ex.run(task({}), { timeoutMs: 5000 })).status).toBe('succeeded');
    expect(progress).toContain(0.5);
    expect(progress[progress.length - 1]).toBe(1);
    expect(logs).toContain('info:Reached half way');
    const { ex: big } = await pool(mode, fx('bigint'));
    expect(await big.run(task({}), { timeoutMs: 5000 })).toMatchObject({ status: 'failed', retryable: false, error: { name: 'ResultNotSerializable' } });
  });

  if (mode === 'async') {
    test('a handler that ignores its signal keeps its slot until the grace, then is abandoned', async () => {
      const abandoned: string[] = [];
      const { ex } = await pool(mode, fx('stubborn'), { size: 1, abortGraceMs: 200, hooks: { onAbandoned: (t) => abandoned.push(t.id) } });
      const t = task({ ms: 600 });
      const o = await ex.run(t, { timeoutMs: 100 });
      expect(o.status).toBe('timedOut');
      const t0 = Date.now();
      const next = await ex.run(task({ ms: 1 }), { timeoutMs: 5000 });
      expect(next.status).toBe('succeeded');
      expect(Date.now() - t0).toBeGreaterThanOrEqual(100); // waited for the abandoned slot
      expect(abandoned).toEqual([t.id]);
    });
  }

  if (remote) {
    test('a handler that exits fails only its item, with the reason; the executor is replaced', async () => {
      const { ex: exits, restarts } = await pool(mode, fx('exits'));
      const { ex: ok } = await pool(mode, fx('ok'));
      const o = await exits.run(task({ code: 3 }), { timeoutMs: 5000 });
      expect(o.status).toBe('crashed');
      if (o.status === 'crashed') expect(o.error.message).toMatch(/exited with code 3/);
      await waitUntil(() => restarts.some((r) => r.reason === 'crashed'));
      await waitUntil(() => exits.stats().executors === 2);
      expect((await ok.run(task({}), { timeoutMs: 5000 })).status).toBe('succeeded');
    });

    test('a crash does not touch items queued behind it on the same executor', async () => {
      const { ex } = await pool(mode, { module: FIXTURES, dispatch: 'fn' }, { size: 1 });
      const crash = ex.run(task({ fn: 'exits', args: [{ code: 9 }] }), { timeoutMs: 5000 });
      const after = [1, 2, 3].map((n) => ex.run(task({ fn: 'add', args: [n, n] }), { timeoutMs: 5000 }));
      expect((await crash).status).toBe('crashed');
      expect((await Promise.all(after)).map(parse)).toEqual([2, 4, 6]);
    });

    test('an uncaught error outside the handler crashes only its executor, with the error as the reason', async () => {
      const { ex } = await pool(mode, fx('uncaught'));
      const o = await ex.run(task({}), { timeoutMs: 5000 });
      expect(o.status).toBe('crashed');
      if (o.status === 'crashed') expect(o.error.message).toMatch(/stray error from a timer/);
    });

    test('an item that allocates without bound dies alone, with an out-of-memory reason', async () => {
      const { ex, restarts } = await pool(mode, fx('oom'), { size: 1, maxMemoryMiB: 64 });
      const o = await ex.run(task({}), { timeoutMs: 30_000 });
      expect(o.status).toBe('crashed');
      if (o.status === 'crashed') expect(o.error).toMatchObject({ name: 'OutOfMemory' });
      expect(restarts.map((r) => r.reason)).toContain('crashed');
    }, 40_000);

    test('maxItemsPerExecutor replaces an executor after that many items', async () => {
      const { ex, restarts } = await pool(mode, fx('whoami'), { size: 1, maxItemsPerExecutor: 2 });
      const ids: string[] = [];
      for (let i = 0; i < 6; i++) {
        const r = parse(await ex.run(task({}), { timeoutMs: 5000 })) as { pid: number; threadId: number };
        ids.push(`${r.pid}/${r.threadId}`);
      }
      expect(new Set(ids).size).toBe(3);
      expect(ids[0]).toBe(ids[1]);
      expect(ids[1]).not.toBe(ids[2]);
      expect(restarts.filter((r) => r.reason === 'max_items').length).toBeGreaterThanOrEqual(2);
    });

    test('maxMemoryMiB replaces an executor after an item leaves it above the ceiling', async () => {
      const { ex, restarts } = await pool(mode, fx('retain'), { size: 1, maxMemoryMiB: 64 });
      const first = parse(await ex.run(task({ mib: 90 }), { timeoutMs: 20_000 })) as { pid: number; threadId: number };
      await waitUntil(() => restarts.some((r) => r.reason === 'max_memory'));
      const second = parse(await ex.run(task({ mib: 1 }), { timeoutMs: 20_000 })) as { pid: number; threadId: number; retainedMiB: number };
      expect(`${second.pid}/${second.threadId}`).not.toBe(`${first.pid}/${first.threadId}`);
      expect(second.retainedMiB).toBe(1); // a fresh executor
    }, 40_000);
  }
});

async function waitUntil(cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}
