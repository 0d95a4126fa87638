import { jest } from '@jest/globals';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createExecutor, type Executor, type Outcome } from '../../worker/executor/index.js';
import type { ShellSpec } from '../../worker/handler/spec.js';
import { aBatch, spawnWorker, useWorkerRedis, workerEnv } from '../support/worker-harness.js';

// The shell builtin: one command per item, argv templated from the item, never through a
// shell; stdout is the result, a non-zero exit fails the item with the tail of stderr.

jest.setTimeout(30_000);

let dir: string;
const open: Executor[] = [];
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tb-shell-'));
});
afterEach(async () => {
  await Promise.all(open.splice(0).map((ex) => ex.destroy()));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
async function run(mode: 'async' | 'process', spec: Omit<ShellSpec, 'builtin'>, item: unknown, timeoutMs = 10_000): Promise<Outcome> {
  const ex = createExecutor(mode, { handler: { builtin: 'shell', cwd: dir, ...spec }, size: 1, abortGraceMs: 1000 });
  open.push(ex);
  await ex.start();
  return ex.run({ id: `s${++n}`, attempt: 1, payload: JSON.stringify(item) }, { timeoutMs });
}

describe.each(['async', 'process'] as const)('shell handler (%s mode)', (mode) => {
  test('hostile item strings reach the command literally', async () => {
    const hostile = {
      semi: '; rm -rf / #',
      subst: '$(touch pwned-subst)',
      tick: '`touch pwned-tick`',
      quotes: `it's "quoted" \\ and 'single'`,
      glob: '*',
      newline: 'a\nb',
    };
    const o = await run(mode, { command: ['printf', '[%s]', '{{item.semi}}', '{{item.subst}}', '{{item.tick}}', '{{item.quotes}}', '{{item.glob}}', '{{item.newline}}'] }, hostile);
    expect(o.status).toBe('succeeded');
    expect(o.status === 'succeeded' && JSON.parse(o.json as string)).toBe(`[${hostile.semi}][${hostile.subst}][${hostile.tick}][${hostile.quotes}][*][a\nb]`);
    expect(existsSync(join(dir, 'pwned-subst'))).toBe(false);
    expect(existsSync(join(dir, 'pwned-tick'))).toBe(false);
  });

  test('an array placeholder is one JSON argument, an option-like value is refused; stdin can carry the item', async () => {
    const files = { args: ['one', 'two words', '--three'] };
    const o = await run(mode, { command: ['printf', '<%s>', '{{item.args}}'] }, files);
    expect(o.status === 'succeeded' && JSON.parse(o.json as string)).toBe('<["one","two words","--three"]>');
    const opt = await run(mode, { command: ['ls', '{{item.path}}'] }, { path: '--help' });
    expect(opt).toMatchObject({ status: 'failed', retryable: false, error: { name: 'NonRetryableError' } });
    expect(opt.status === 'failed' && opt.error.message).toContain('{{item.path}}');
    const cat = await run(mode, { command: ['cat'], stdin: 'json' }, { a: 1 });
    expect(cat.status === 'succeeded' && JSON.parse(cat.json as string)).toBe('{"a":1}\n');
  });

  test('a non-zero exit fails the item with the tail of stderr; a missing program is not retried', async () => {
    const o = await run(mode, { command: ['sh', '-c', 'echo partial; echo "disk full" >&2; exit 3'] }, {});
    expect(o).toMatchObject({ status: 'failed', retryable: true, error: { name: 'CommandFailed' } });
    expect(o.status === 'failed' && o.error.message).toMatch(/exited with code 3: disk full/);
    const missing = await run(mode, { command: ['/no/such/program-xyz'] }, {});
    expect(missing).toMatchObject({ status: 'failed', retryable: false });
    expect(missing.status === 'failed' && missing.error.message).toMatch(/command not found/);
  });

  test('a timed-out command is killed with its process group', async () => {
    const pidFile = join(dir, `pid-${mode}`);
    writeFileSync(pidFile, '');
    const o = await run(mode, { command: ['sh', '-c', 'echo $$ > "$0"; exec sleep 30', '{{item.pidFile}}'] }, { pidFile }, 400);
    expect(o.status).toBe('timedOut');
    const pid = Number(readFileSync(pidFile, 'utf8').trim());
    expect(pid).toBeGreaterThan(0);
    const alive = (): boolean => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    const until = Date.now() + 3000;
    while (alive() && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    expect(alive()).toBe(false);
  });
});

// The same rule end to end: a real worker process claims the items from a real redis-server.
describe('shell handler in a worker on a real redis-server', () => {
  const h = useWorkerRedis();

  async function runBatch(command: string[], items: Record<string, unknown>) {
    const b = aBatch(h.redis).maxAttempts(1).closed();
    for (const [id, data] of Object.entries(items)) b.withItem(id, data);
    const { queue, name } = await b.create();
    const handler = JSON.stringify({ builtin: 'shell', cwd: dir, command });
    const w = spawnWorker(workerEnv(h.server.url, name, handler, { TASKBATCH_POOL_MODE: 'process', TASKBATCH_POOL_SIZE: '1' }));
    h.track(w);
    expect(await w.exited).toEqual({ code: 0, signal: null });
    return queue;
  }

  test('an item value "--help" is not read as an option by ls: the item is dead-lettered with the fix', async () => {
    const queue = await runBatch(['ls', '-d', '{{item.path}}'], { plain: { path: '.' }, opt: { path: '--help' }, tar: { path: '--checkpoint-action=exec=touch pwned' } });
    expect(await queue.snapshot()).toMatchObject({ total: 3, succeeded: 1, failed: 2, complete: true });
    expect((await queue.result('plain'))?.result).toBe('.\n');
    const dead = (await queue.deadLetters()).items.sort((a, b) => a.id.localeCompare(b.id));
    expect(dead).toEqual([
      expect.objectContaining({ id: 'opt', attempts: 1, error: expect.objectContaining({ name: 'NonRetryableError', message: expect.stringContaining('{{item.path}}') }) }),
      expect.objectContaining({ id: 'tar', attempts: 1, error: expect.objectContaining({ name: 'NonRetryableError' }) }),
    ]);
    expect(dead[0]?.error.message).toContain('put a literal "--" element before it');
    expect(existsSync(join(dir, 'pwned'))).toBe(false);
  });

  test('after a literal "--" an option-like value is an operand, and an array stays one argument', async () => {
    const queue = await runBatch(['printf', '--', '<%s>', '{{item.v}}'], { opt: { v: '--help' }, list: { v: ['one', '--two'] }, lines: { v: 'a b\nc' } });
    expect(await queue.snapshot()).toMatchObject({ total: 3, succeeded: 3, complete: true });
    expect((await queue.result('opt'))?.result).toBe('<--help>');
    expect((await queue.result('list'))?.result).toBe('<["one","--two"]>');
    expect((await queue.result('lines'))?.result).toBe('<a b\nc>');
  });
});
