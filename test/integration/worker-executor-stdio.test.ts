import { jest } from '@jest/globals';
import { fileURLToPath } from 'node:url';
import { createExecutor, ExecutorClosedError, ExecutorStartError, type Executor, type ExecutorOptions, type Outcome, type RestartReason } from '../../worker/executor/index.js';
import type { LogLevel } from '../../worker/handler/api.js';
import type { StdioSpec } from '../../worker/handler/spec.js';

jest.setTimeout(30_000);

// The process pool over stdio handlers (docs/handler-protocol.md): the executor contract's
// cases (results, errors, timeouts, crashes, recycling, draining) with handlers that are not
// JavaScript: a Python 3 fixture (standard library only) and a POSIX shell loop.

const PY_FIXTURE = fileURLToPath(new URL('../../../test/fixtures/stdio-handler.py', import.meta.url));
const python: StdioSpec = { command: ['python3', '-u', PY_FIXTURE], protocol: 'stdio' };
// Echo in POSIX sh, no process per item: the worker writes the payload last in the item frame,
// so it is the rest of the line. (`read` takes one line at a time from a pipe; awk and sed read
// ahead in blocks unless told otherwise.)
const SH_ECHO = `printf '%s\\n' '{"type":"ready","protocol":1}'
while IFS= read -r line; do
  case "$line" in *'"type":"item"'*) ;; *) continue ;; esac
  rest=\${line#*'"id":'}; id=\${rest%%,*}
  payload=\${line#*'"payload":'}; payload=\${payload%?}
  printf '%s\\n' "{\\"type\\":\\"result\\",\\"id\\":$id,\\"result\\":$payload}"
done`;
const sh: StdioSpec = { command: ['sh', '-c', SH_ECHO], protocol: 'stdio' };

let seq = 0;
const task = (data: unknown, attempt = 1) => ({ id: `s${++seq}`, attempt, payload: JSON.stringify(data) });
const parse = (o: Outcome): unknown => (o.status === 'succeeded' && o.json !== undefined ? JSON.parse(o.json) : undefined);

interface Seen {
  restarts: { reason: RestartReason; detail: string }[];
  logs: { id: string; level: LogLevel; message: string; fields: Record<string, unknown> | undefined }[];
  progress: { id: string; value: number }[];
}

const open: Executor[] = [];
async function pool(handler: StdioSpec, extra: Partial<ExecutorOptions> = {}): Promise<{ ex: Executor } & Seen> {
  const seen: Seen = { restarts: [], logs: [], progress: [] };
  const ex = createExecutor('process', {
    handler,
    size: 2,
    abortGraceMs: 300,
    sweepIntervalMs: 10,
    ...extra,
    hooks: {
      onRestart: (reason, detail) => seen.restarts.push({ reason, detail }),
      onLog: (t, level, message, fields) => seen.logs.push({ id: t.id, level, message, fields }),
      onProgress: (t, value) => seen.progress.push({ id: t.id, value }),
    },
  });
  open.push(ex);
  await ex.start();
  return { ex, ...seen };
}

afterEach(async () => {
  await Promise.all(open.splice(0).map((ex) => ex.destroy()));
});

describe('executor contract: stdio handlers (process mode)', () => {
  test('runs an item and reports its JSON result, with id, attempt and timeout passed on', async () => {
    const { ex } = await pool(python);
    const o = await ex.run({ id: 'a1', attempt: 2, payload: '{"x":1}' }, { timeoutMs: 5000 });
    expect(o.status).toBe('succeeded');
    expect(parse(o)).toEqual({ echo: { x: 1 }, attempt: 2, id: 'a1', timeoutMs: 5000 });
    expect(ex.mode).toBe('process');
  });

  test('a POSIX shell script is a handler too: any language that reads and writes lines', async () => {
    const { ex } = await pool(sh);
    const outs = await Promise.all([{ a: [1, 'two'] }, 'text', 7].map((d) => ex.run(task(d), { timeoutMs: 5000 })));
    expect(outs.map(parse)).toEqual([{ a: [1, 'two'] }, 'text', 7]);
    // A payload enqueued over several lines still travels as one frame.
    expect(parse(await ex.run({ id: 'multi', attempt: 1, payload: '{\n  "k": "v"\n}' }, { timeoutMs: 5000 }))).toEqual({ k: 'v' });
  });

  test('an error frame fails only that item, retryable unless it says retryable: false', async () => {
    const { ex, restarts } = await pool(python);
    const [a, b] = await Promise.all([ex.run(task({ op: 'throw' }), { timeoutMs: 5000 }), ex.run(task({ op: 'fatal' }), { timeoutMs: 5000 })]);
    expect(a).toMatchObject({ status: 'failed', retryable: true, error: { name: 'ValueError', message: 'boom from python', stack: 'Traceback: fixture' } });
    expect(b).toMatchObject({ status: 'failed', retryable: false, error: { name: 'BadInput', message: 'bad input' } });
    expect((await ex.run(task({}), { timeoutMs: 5000 })).status).toBe('succeeded');
    expect(restarts).toEqual([]);
  });

  test('a pool of 2 runs 2 items at once, in 2 processes', async () => {
    const { ex } = await pool(python);
    let maxRunning = 0;
    const sample = setInterval(() => (maxRunning = Math.max(maxRunning, ex.stats().running)), 5);
    const outs = await Promise.all([1, 2, 3, 4].map(() => ex.run(task({ op: 'sleep', ms: 300 }), { timeoutMs: 10_000 })));
    clearInterval(sample);
    expect(outs.every((o) => o.status === 'succeeded')).toBe(true);
    expect(maxRunning).toBe(2);
    expect(new Set(outs.map((o) => (parse(o) as { pid: number }).pid)).size).toBe(2);
  });

  test('a timed-out item that ignores the cancel frame is killed with its process, which is replaced', async () => {
    const { ex, restarts } = await pool(python);
    const o = await ex.run(task({ op: 'hang' }), { timeoutMs: 300 });
    expect(o).toMatchObject({ status: 'timedOut', error: { name: 'TimeoutError', message: expect.stringContaining('handler process was stopped and replaced') } });
    await waitUntil(() => restarts.some((r) => r.reason === 'timeout'));
    await waitUntil(() => ex.stats().executors === 2);
    expect(parse(await ex.run(task('after'), { timeoutMs: 5000 }))).toMatchObject({ echo: 'after' });
  });

  test('what the handler started dies with it: its process group is killed', async () => {
    const { ex, logs } = await pool(python, { size: 1 });
    const o = await ex.run(task({ op: 'child-then-hang' }), { timeoutMs: 500 });
    expect(o.status).toBe('timedOut');
    const pid = logs.find((l) => l.message === 'started a child')?.fields?.pid as number;
    expect(pid).toBeGreaterThan(0);
    await waitUntil(() => !alive(pid));
  });

  test('a timed-out item that honours the cancel frame answers, and its process is kept', async () => {
    const { ex, restarts } = await pool(python, { abortGraceMs: 5000 });
    const o = await ex.run(task({ op: 'sleep', ms: 60_000 }), { timeoutMs: 200 });
    expect(o.status).toBe('timedOut');
    expect((await ex.run(task({}), { timeoutMs: 5000 })).status).toBe('succeeded');
    expect(restarts).toEqual([]);
  });

  test('aborting a running item sends it a cancel frame; a queued one is dropped', async () => {
    const { ex, restarts } = await pool(python, { size: 1 });
    const a = new AbortController();
    const b = new AbortController();
    const running = ex.run(task({ op: 'sleep', ms: 30_000 }), { timeoutMs: 60_000, signal: a.signal });
    const queued = ex.run(task({ op: 'sleep', ms: 30_000 }), { timeoutMs: 60_000, signal: b.signal });
    await waitUntil(() => ex.stats().running === 1);
    b.abort(new Error('not needed'));
    a.abort(Object.assign(new Error('lease lost'), { name: 'LeaseLost' }));
    const [ra, rb] = await Promise.all([running, queued]);
    expect(ra).toMatchObject({ status: 'aborted', started: true });
    expect(rb).toMatchObject({ status: 'aborted', started: false });
    expect((await ex.run(task({}), { timeoutMs: 5000 })).status).toBe('succeeded');
    expect(restarts).toEqual([]);
  });

  test('a handler that exits fails only its running item; the item queued behind it runs in the replacement', async () => {
    const { ex, restarts } = await pool(python, { size: 1 });
    const [crashed, next] = await Promise.all([ex.run(task({ op: 'exit', code: 7 }), { timeoutMs: 5000 }), ex.run(task('next'), { timeoutMs: 5000 })]);
    expect(crashed).toMatchObject({ status: 'crashed', error: { name: 'ExecutorCrashed', message: expect.stringContaining('exited with code 7') } });
    expect(parse(next)).toMatchObject({ echo: 'next' });
    expect(restarts.map((r) => r.reason)).toEqual(['crashed']);
  });

  test('garbage on stdout or a frame for another item fails the item with ProtocolError naming the frame; the process is replaced', async () => {
    const { ex, restarts } = await pool(python, { size: 1 });
    const garbage = await ex.run(task({ op: 'garbage' }), { timeoutMs: 5000 });
    expect(garbage).toMatchObject({ status: 'failed', retryable: true, error: { name: 'ProtocolError', message: expect.stringContaining('"this is not json"') } });
    const wrong = await ex.run(task({ op: 'wrong-id' }), { timeoutMs: 5000 });
    expect(wrong).toMatchObject({ status: 'failed', error: { name: 'ProtocolError', message: expect.stringContaining('"someone-else"') } });
    expect(parse(await ex.run(task('ok'), { timeoutMs: 5000 }))).toMatchObject({ echo: 'ok' });
    expect(restarts.map((r) => r.reason)).toEqual(['crashed', 'crashed']);
    expect(restarts[0]?.detail).toContain('ProtocolError');
  });

  test('maxItemsPerExecutor replaces a handler process after that many items', async () => {
    const { ex, restarts } = await pool(python, { size: 1, maxItemsPerExecutor: 2 });
    const pids: number[] = [];
    for (let i = 0; i < 4; i++) pids.push(parse(await ex.run(task({ op: 'pid' }), { timeoutMs: 5000 })) as number);
    expect(pids[0]).toBe(pids[1]);
    expect(pids[2]).toBe(pids[3]);
    expect(pids[2]).not.toBe(pids[0]);
    expect(restarts.filter((r) => r.reason === 'max_items').length).toBeGreaterThanOrEqual(1);
  });

  test('maxMemoryMiB replaces a handler process whose RSS is above it', async () => {
    const { ex, restarts } = await pool(python, { size: 1, maxMemoryMiB: 32 });
    const kept = parse(await ex.run(task({ op: 'pid' }), { timeoutMs: 5000 }));
    expect(restarts).toEqual([]);
    const first = parse(await ex.run(task({ op: 'grow', mib: 40 }), { timeoutMs: 5000 }));
    expect(first).toBe(kept);
    await waitUntil(() => restarts.some((r) => r.reason === 'max_memory'));
    expect(restarts.find((r) => r.reason === 'max_memory')?.detail).toMatch(/uses \d+ MiB \(RSS\)/);
    const second = parse(await ex.run(task({ op: 'pid' }), { timeoutMs: 5000 }));
    expect(second).not.toBe(first);
  });

  test('progress, log frames and stderr lines reach the hooks for their item', async () => {
    const { ex, logs, progress } = await pool(python, { size: 1 });
    const p = task({ op: 'progress' });
    const l = task({ op: 'log' });
    const e = task({ op: 'stderr' });
    expect(parse(await ex.run(p, { timeoutMs: 5000 }))).toBe('done');
    expect((await ex.run(l, { timeoutMs: 5000 })).status).toBe('succeeded');
    expect(parse(await ex.run(e, { timeoutMs: 5000 }))).toBe(true);
    expect(progress).toEqual([{ id: p.id, value: 0.5 }]);
    expect(logs).toEqual([
      { id: l.id, level: 'info', message: 'hello from python', fields: { n: 1 } },
      { id: e.id, level: 'warn', message: 'a line on stderr', fields: undefined },
    ]);
  });

  test('a result over maxResultBytes fails, not retryable, naming the setting', async () => {
    const { ex } = await pool(python, { size: 1, maxResultBytes: 1000 });
    const o = await ex.run(task({ op: 'big', n: 5000 }), { timeoutMs: 5000 });
    expect(o).toMatchObject({ status: 'failed', retryable: false, error: { name: 'ResultTooLarge', message: expect.stringContaining('stdio executor') } });
    expect((await ex.run(task({ op: 'big', n: 10 }), { timeoutMs: 5000 })).status).toBe('succeeded');
  });

  test('close() drains queued and running items, ends stdin, then rejects new ones', async () => {
    const { ex, restarts } = await pool(python);
    const outs = [1, 2, 3, 4].map(() => ex.run(task({ op: 'sleep', ms: 100 }), { timeoutMs: 5000 }));
    await ex.close();
    expect((await Promise.all(outs)).map((o) => o.status)).toEqual(['succeeded', 'succeeded', 'succeeded', 'succeeded']);
    expect(ex.stats().executors).toBe(0);
    // Each handler exited on EOF by itself: nothing was killed.
    expect(restarts).toEqual([]);
    await expect(ex.run(task({}), { timeoutMs: 1000 })).rejects.toBeInstanceOf(ExecutorClosedError);
  });

  test('a command that cannot run, or a handler that never says ready, fails the start naming the command', async () => {
    const missing = createExecutor('process', { handler: { command: ['/nonexistent/handler'], protocol: 'stdio' }, size: 1 });
    open.push(missing);
    await expect(missing.start()).rejects.toThrow(/nonexistent\/handler.*HandlerStartFailed.*ENOENT/);
    const silent = createExecutor('process', { handler: { command: ['sleep', '60'], protocol: 'stdio' }, size: 1, startTimeoutMs: 300 });
    open.push(silent);
    await expect(silent.start()).rejects.toThrow(ExecutorStartError);
    const chatty = createExecutor('process', { handler: { command: ['echo', 'hello'], protocol: 'stdio' }, size: 1 });
    open.push(chatty);
    await expect(chatty.start()).rejects.toThrow(/ProtocolError.*"hello"/);
  });

  test('thread and async mode refuse a stdio handler, naming TASKBATCH_POOL_MODE', () => {
    expect(() => createExecutor('thread', { handler: python, size: 1 })).toThrow(/TASKBATCH_POOL_MODE=process/);
    expect(() => createExecutor('async', { handler: python, size: 1 })).toThrow(/TASKBATCH_POOL_MODE=process/);
  });
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitUntil(cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}
