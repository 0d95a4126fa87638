import { jest } from '@jest/globals';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createExecutor, type Executor, type Outcome } from '../../worker/executor/index.js';
import type { ShellSpec } from '../../worker/handler/spec.js';

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

  test('an array placeholder becomes several arguments; stdin can carry the item', async () => {
    const files = { args: ['one', 'two words', '--three'] };
    const o = await run(mode, { command: ['printf', '<%s>', '{{item.args}}'] }, files);
    expect(o.status === 'succeeded' && JSON.parse(o.json as string)).toBe('<one><two words><--three>');
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
