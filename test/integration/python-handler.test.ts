import { jest } from '@jest/globals';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

// The Python handler library (handlers/python/taskbatch_handler.py) driven over its stdin and
// stdout by the stdio protocol (docs/handler-protocol.md), as the worker's stdio executor does:
// Debian's python3, the real library, fixture tasks and the shipped examples.

jest.setTimeout(60_000);

const repoFile = (rel: string): string => fileURLToPath(new URL(`../../../${rel}`, import.meta.url));
const PYTHON = '/usr/bin/python3';
const LIBRARY = repoFile('handlers/python/taskbatch_handler.py');
const TASKS = repoFile('test/fixtures/python/protocol_tasks.py');
const SINGLE_TASK = repoFile('test/fixtures/python/single_task.py');

interface Frame {
  type: string;
  id?: string;
  [key: string]: unknown;
}

/** One handler process: frames it wrote, in order, and what it printed on stderr. */
class PythonHandler {
  readonly child: ChildProcessWithoutNullStreams;
  readonly exited: Promise<number | null>;
  /** stdout lines that are not a JSON object: must stay empty. */
  readonly garbage: string[] = [];
  stderr = '';
  private readonly frames: Frame[] = [];
  private readonly waiters: (() => void)[] = [];

  constructor(args: string[]) {
    // No .pyc files in the checkout.
    this.child = spawn(PYTHON, args, { env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' } });
    this.exited = new Promise((resolve) => this.child.on('exit', (code) => resolve(code)));
    this.child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderr += chunk;
    });
    createInterface({ input: this.child.stdout }).on('line', (line) => {
      try {
        const frame = JSON.parse(line) as unknown;
        if (frame !== null && typeof frame === 'object' && !Array.isArray(frame)) this.frames.push(frame as Frame);
        else this.garbage.push(line);
      } catch {
        this.garbage.push(line);
      }
      for (const wake of this.waiters.splice(0)) wake();
    });
  }

  send(frame: Record<string, unknown>): void {
    this.child.stdin.write(`${JSON.stringify(frame)}\n`);
  }

  item(id: string, payload: unknown, extra: Record<string, unknown> = {}): void {
    this.send({ type: 'item', protocol: 1, id, attempt: 1, payload, ...extra });
  }

  /** The next frame, in the order the handler wrote them. */
  async next(): Promise<Frame> {
    while (this.frames.length === 0) {
      if (this.child.exitCode !== null) throw new Error(`handler exited (${this.child.exitCode}) with no frame left; stderr: ${this.stderr}`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        this.child.once('exit', () => resolve());
      });
    }
    return this.frames.shift()!;
  }

  /** Frames up to and including the item's answer (result or error); all must be for this id. */
  async answerOf(id: string): Promise<{ answer: Frame; before: Frame[] }> {
    const before: Frame[] = [];
    for (;;) {
      const frame = await this.next();
      expect(frame.id).toBe(id);
      if (frame.type === 'result' || frame.type === 'error') return { answer: frame, before };
      before.push(frame);
    }
  }

  /** Runs one item alone and returns its answer. */
  async run(id: string, payload: unknown, extra: Record<string, unknown> = {}): Promise<Frame> {
    this.item(id, payload, extra);
    return (await this.answerOf(id)).answer;
  }
}

const open: PythonHandler[] = [];
async function start(args: string[]): Promise<PythonHandler> {
  const h = new PythonHandler(args);
  open.push(h);
  expect(await h.next()).toEqual({ type: 'ready', protocol: 1 });
  return h;
}
afterEach(async () => {
  for (const h of open.splice(0)) {
    if (h.child.exitCode === null) h.child.kill('SIGKILL');
    await h.exited;
    expect(h.garbage).toEqual([]);
  }
});

describe('taskbatch_handler over stdio', () => {
  let h: PythonHandler;
  beforeEach(async () => {
    h = await start([LIBRARY, TASKS]);
  });

  test('sync and async tasks answer results; dispatch by fn with args and kwargs; None is no result', async () => {
    expect(await h.run('a', { fn: 'square', args: [4] })).toEqual({ type: 'result', id: 'a', result: 16 });
    expect(await h.run('b', { fn: 'add', args: [1, 2], kwargs: { scale: 10 } })).toEqual({ type: 'result', id: 'b', result: 30 });
    expect(await h.run('c', { fn: 'slow_square', args: [7] })).toEqual({ type: 'result', id: 'c', result: 49 });
    expect(await h.run('d', { fn: 'nothing' })).toEqual({ type: 'result', id: 'd' });
    // An async function behind a plain (sync) decorator returns a coroutine: awaited too.
    expect(await h.run('e', { fn: 'wrapped_async', args: [1] })).toEqual({ type: 'result', id: 'e', result: 2 });
    // A remote call from the SDK or `taskbatch call` carries its reply terms too.
    expect(await h.run('call:abc:1', { reply: { channel: 'tb:x', key: 'k' }, fn: 'square', args: [12] })).toEqual({ type: 'result', id: 'call:abc:1', result: 144 });
  });

  test('an unknown task, bad args and an item naming no task fail without retry', async () => {
    const unknown = await h.run('u', { fn: 'cube', args: [2] });
    expect(unknown).toMatchObject({ type: 'error', error: { name: 'NonRetryable', retryable: false } });
    expect((unknown.error as { message: string }).message).toMatch(/^no task named 'cube'; tasks: add, bye, chatty, /);
    expect(await h.run('v', { fn: 'square', args: 3 })).toMatchObject({ error: { message: 'item "args" must be a list, got int', retryable: false } });
    const unnamed = await h.run('w', { x: 1 });
    expect(unnamed).toMatchObject({ error: { name: 'NonRetryable', retryable: false } });
    expect((unnamed.error as { message: string }).message).toContain('the item must name one');
  });

  test('NonRetryable is not retried; another exception is, with its class name, message and stack', async () => {
    const refused = await h.run('r', { fn: 'refuse', args: ['bad input'] });
    expect(refused).toMatchObject({ type: 'error', id: 'r', error: { name: 'NonRetryable', message: 'refused: bad input', retryable: false } });
    const exploded = await h.run('x', { fn: 'explode' });
    expect(exploded).toMatchObject({ type: 'error', id: 'x', error: { name: 'KeyError', message: "'missing-key'", retryable: true } });
    const stack = (exploded.error as { stack: string }).stack;
    expect(stack).toContain('Traceback (most recent call last)');
    expect(stack).toMatch(/protocol_tasks\.py", line \d+, in inner/);
  });

  test('progress and log frames carry the item id, before its result; the context has id, attempt and deadline', async () => {
    h.item('p', { fn: 'report', args: [2] }, { attempt: 3, timeoutMs: 30_000 });
    const { answer, before } = await h.answerOf('p');
    expect(before).toEqual([
      { type: 'progress', id: 'p', value: 0.5 },
      { type: 'log', id: 'p', level: 'info', message: 'Finished a step', fields: { step: 1, of: 2 } },
      { type: 'progress', id: 'p', value: 1 },
      { type: 'log', id: 'p', level: 'info', message: 'Finished a step', fields: { step: 2, of: 2 } },
      // A field JSON cannot carry (NaN) is sent as its repr(), the other fields as they are.
      { type: 'log', id: 'p', level: 'warn', message: 'Warned once', fields: { obj: 'object', ratio: 'nan' } },
    ]);
    expect(answer).toEqual({ type: 'result', id: 'p', result: { id: 'p', attempt: 3, deadline: true } });
  });

  test('a cancel frame stops a running sync task cooperatively and an async one by cancellation; the process answers the next item', async () => {
    h.item('s', { fn: 'spin_until_cancelled' });
    expect(await h.next()).toMatchObject({ type: 'log', id: 's', message: 'Spinning' });
    h.send({ type: 'cancel', id: 's', reason: { name: 'WorkerShutdown', message: 'the worker is stopping' } });
    expect((await h.answerOf('s')).answer).toEqual({
      type: 'error',
      id: 's',
      error: { name: 'Cancelled', message: 'WorkerShutdown: the worker is stopping', retryable: true },
    });

    h.item('z', { fn: 'sleep_forever' });
    expect(await h.next()).toMatchObject({ type: 'log', id: 'z', message: 'Sleeping' });
    h.send({ type: 'cancel', id: 'z', reason: { name: 'TimeoutError', message: 'item z timed out after 100 ms' } });
    expect((await h.answerOf('z')).answer).toEqual({ type: 'error', id: 'z', error: { name: 'TimeoutError', message: 'item z timed out after 100 ms', retryable: true } });

    // A late cancel for an answered item is ignored: no frame, the next item runs.
    h.send({ type: 'cancel', id: 'z', reason: { name: 'TimeoutError', message: 'late' } });
    expect(await h.run('n', { fn: 'square', args: [3] })).toEqual({ type: 'result', id: 'n', result: 9 });
  });

  test('a cancel that overtakes its item (both sent at once) still stops it', async () => {
    h.item('early', { fn: 'spin_until_cancelled' });
    h.send({ type: 'cancel', id: 'early', reason: { name: 'WorkerShutdown', message: 'stop' } });
    const { answer } = await h.answerOf('early');
    expect(answer).toMatchObject({ type: 'error', error: { name: 'Cancelled', message: 'WorkerShutdown: stop' } });
  });

  test('the item deadline (timeoutMs) cancels sync and async tasks without a cancel frame', async () => {
    const sync = await h.run('t1', { fn: 'spin_until_cancelled' }, { timeoutMs: 300 });
    expect(sync).toEqual({ type: 'error', id: 't1', error: { name: 'TimeoutError', message: 'item t1 timed out after 300 ms', retryable: true } });
    const asyncTimeout = await h.run('t2', { fn: 'sleep_forever' }, { timeoutMs: 300 });
    expect(asyncTimeout).toEqual({ type: 'error', id: 't2', error: { name: 'TimeoutError', message: 'item t2 timed out after 300 ms', retryable: true } });
  });

  test('print() in a task goes to stderr, never between the frames on stdout', async () => {
    expect(await h.run('c', { fn: 'chatty', args: [7] })).toEqual({ type: 'result', id: 'c', result: 7 });
    h.child.stdin.end();
    expect(await h.exited).toBe(0);
    expect(h.stderr).toContain('stray print from a task 7');
    expect(h.garbage).toEqual([]);
  });

  test('a thread that logs after its item was answered writes to stderr, not a frame for that id', async () => {
    expect(await h.run('early', { fn: 'leaves_thread' })).toEqual({ type: 'result', id: 'early', result: 'returned' });
    // answerOf() fails on any frame for another id while this item runs.
    expect(await h.run('later', { fn: 'wall_sleep', args: [0.5] })).toEqual({ type: 'result', id: 'later', result: 0.5 });
    expect(h.stderr).toContain('taskbatch_handler: item early already answered, dropped: {"type": "log", "id": "early"');
  });

  test('a result JSON cannot carry fails the item without retry, naming its type', async () => {
    const set = await h.run('j', { fn: 'not_json' });
    expect(set).toMatchObject({ type: 'error', id: 'j', error: { name: 'ResultNotSerializable', retryable: false } });
    expect((set.error as { message: string }).message).toContain('builtins.set');
    const nan = await h.run('k', { fn: 'nan' });
    expect(nan).toMatchObject({ type: 'error', id: 'k', error: { name: 'ResultNotSerializable', retryable: false } });
    expect((nan.error as { message: string }).message).toContain('builtins.float');
    const deep = await h.run('l', { fn: 'too_deep' });
    expect(deep).toMatchObject({ type: 'error', id: 'l', error: { name: 'ResultNotSerializable', retryable: false } });
    expect((deep.error as { message: string }).message).toContain('builtins.list');
  });

  test('sys.exit() in a task ends the process at once with its code, stdin still open', async () => {
    h.item('q', { fn: 'bye', args: [3] });
    expect(await h.exited).toBe(3);
    expect(h.stderr).not.toContain('Fatal Python error');
  });

  test('EOF on stdin: the handler finishes the running item, then exits 0', async () => {
    h.item('last', { fn: 'wall_sleep', args: [0.2] });
    h.child.stdin.end();
    expect((await h.answerOf('last')).answer).toEqual({ type: 'result', id: 'last', result: 0.2 });
    expect(await h.exited).toBe(0);
  });
});

describe('one registered task and the examples', () => {
  test('a single task takes the payload, and the context as its second parameter', async () => {
    const h = await start([SINGLE_TASK]);
    h.item('one', { x: [1, 2] }, { attempt: 2 });
    const { answer, before } = await h.answerOf('one');
    expect(before).toEqual([{ type: 'log', id: 'one', level: 'debug', message: 'Described an item', fields: { keys: ['x'] } }]);
    expect(answer).toEqual({ type: 'result', id: 'one', result: { item: { x: [1, 2] }, id: 'one', attempt: 2 } });
  });

  test('examples/python: cpu, fetch, retry and service answer as stdio handlers', async () => {
    const cpu = await start([repoFile('examples/python/cpu.py')]);
    expect(await cpu.run('1', { below: 100_000 })).toEqual({ type: 'result', id: '1', result: { below: 100_000, primes: 9592 } });
    expect(await cpu.run('2', { below: 'many' })).toMatchObject({ type: 'error', error: { name: 'NonRetryable', retryable: false } });

    const fetch = await start([repoFile('examples/python/fetch.py')]);
    expect(await fetch.run('1', { urls: ['https://example.com/a', 'https://example.com/b'] })).toMatchObject({ type: 'result', result: { fetched: 2 } });

    const retry = await start([repoFile('examples/python/retry.py')]);
    expect(await retry.run('1', { order: 'A-17', failures: 1 })).toMatchObject({ type: 'error', error: { name: 'ConnectionError', retryable: true } });
    expect(await retry.run('1', { order: 'A-17', failures: 1 }, { attempt: 2 })).toEqual({ type: 'result', id: '1', result: { order: 'A-17', charged: true, attempts: 2 } });

    const service = await start([repoFile('examples/python/service.py')]);
    expect(await service.run('1', { fn: 'add', args: [2, 3] })).toEqual({ type: 'result', id: '1', result: 5 });
    expect(await service.run('2', { fn: 'stats', args: [[1, 2, 3]] })).toMatchObject({ result: { count: 3, mean: 2 } });
    expect(await service.run('3', { fn: 'slowEcho', args: ['hi'], kwargs: { ms: 1 } })).toEqual({ type: 'result', id: '3', result: 'hi' });
  });
});
