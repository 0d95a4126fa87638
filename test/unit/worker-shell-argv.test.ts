import { createShellHandler, expandArgv } from '../../worker/handler/builtins/shell.js';
import { parseHandlerSpec } from '../../worker/handler/spec.js';
import type { HandlerContext } from '../../worker/handler/api.js';

// The shell builtin's argv rule (docs/worker.md, "What is and is not safe"): every
// placeholder becomes text inside exactly one argument; an argument that item data would
// start with "-" is refused unless it follows a literal "--" element of the template.

const vars = (item: unknown) => ({ item, id: 'i-1', attempt: 2 });
const refused = (template: string[], item: unknown): Error => {
  try {
    expandArgv(template, vars(item));
  } catch (err) {
    return err as Error;
  }
  throw new Error(`expandArgv(${JSON.stringify(template)}) accepted ${JSON.stringify(item)}`);
};

describe('option-like item values', () => {
  test.each([
    ['--help', '--help'],
    ['-rf', '-rf'],
    ['-', '-'],
    ['--', '--'],
    ['negative number', -5],
    ['tar checkpoint action', '--checkpoint-action=exec=sh evil.sh'],
  ])('%s is refused where it would start an argument, naming the field and the fix', (_what, value) => {
    const err = refused(['tar', 'cf', 'out.tar', '{{item.file}}'], { file: value });
    expect(err).toMatchObject({ name: 'NonRetryableError', retryable: false });
    expect(err.message).toContain('{{item.file}}');
    expect(err.message).toMatch(/argument 3 .* would start with "-"/);
    expect(err.message).toContain('put a literal "--" element before it');
    expect(err.message).toContain('"stdin": "json"');
  });

  test('an item value that is empty cannot hand the "-" of the template to the front', () => {
    expect(refused(['ls', '{{item.a}}-x'], { a: '' }).message).toContain('{{item.a}}-x');
  });

  test('after a literal "--" element every value is an operand and passes as one argument', () => {
    const hostile = '--checkpoint-action=exec=sh evil.sh';
    expect(expandArgv(['tar', 'cf', 'out.tar', '--', '{{item.file}}', '{{item.n}}'], vars({ file: hostile, n: -5 }))).toEqual(['tar', 'cf', 'out.tar', '--', hostile, '-5']);
  });

  test('a "--" that item data produces is not an end-of-options marker', () => {
    expect(refused(['ls', '{{item.a}}', '{{item.b}}'], { a: '--', b: '--help' }).message).toContain('{{item.a}}');
    expect(refused(['ls', 'x{{item.a}}', '{{item.b}}'], { a: '--', b: '--help' }).message).toContain('{{item.b}}');
  });

  test('a value inside an argument the template starts itself stays that argument', () => {
    expect(expandArgv(['tool', '--name={{item.v}}', './{{item.v}}', 'x{{item.v}}'], vars({ v: '--help' }))).toEqual(['tool', '--name=--help', './--help', 'x--help']);
  });
});

describe('one placeholder, one argument', () => {
  test('an array is one JSON argument, never spread', () => {
    const argv = expandArgv(['tar', 'czf', 'out.tgz', '{{item.files}}'], vars({ files: ['a b', '-rf', '--checkpoint-action=exec=sh x', 3] }));
    expect(argv).toEqual(['tar', 'czf', 'out.tgz', '["a b","-rf","--checkpoint-action=exec=sh x",3]']);
  });

  test('an object is one JSON argument, alone or inside text', () => {
    expect(expandArgv(['jq', '-n', '{{item.o}}', 'v={{item.o}}'], vars({ o: { k: [1, '-x'], s: 'a b' } }))).toEqual(['jq', '-n', '{"k":[1,"-x"],"s":"a b"}', 'v={"k":[1,"-x"],"s":"a b"}']);
    expect(expandArgv(['jq', '{{item}}'], vars([]))).toEqual(['jq', '[]']);
  });

  test('spaces, newlines, tabs and quotes stay inside their one argument', () => {
    const v = 'two words\nsecond line\t"q" \'s\'';
    expect(expandArgv(['printf', '%s', '{{item.v}}', '{{item.v}}{{item.v}}'], vars({ v }))).toEqual(['printf', '%s', v, v + v]);
  });

  test('a NUL byte, which no argument can hold, is refused naming the field', () => {
    const err = refused(['printf', '%s', 'x{{item.v}}'], { v: 'a\u0000--help' });
    expect(err).toMatchObject({ name: 'NonRetryableError', retryable: false });
    expect(err.message).toContain('{{item.v}}');
    expect(err.message).toMatch(/NUL/);
    // Inside JSON, a NUL is escaped and harmless.
    expect(expandArgv(['printf', '%s', '{{item.o}}'], vars({ o: { v: 'a\u0000b' } }))).toEqual(['printf', '%s', '{"v":"a\\u0000b"}']);
  });

  test('a NUL byte in an environment value fails the item without retries', async () => {
    const ctx: HandlerContext = {
      id: 'i-1',
      attempt: 1,
      signal: new AbortController().signal,
      progress: () => undefined,
      log: { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined },
    };
    const run = createShellHandler({ builtin: 'shell', command: ['true'], env: { V: '{{item.v}}' } });
    await expect((async () => run({ v: 'a\u0000b' }, ctx))()).rejects.toMatchObject({ retryable: false, message: expect.stringContaining('{{item.v}}') });
  });
});

describe('shell spec', () => {
  test("the program is the spec author's: a placeholder in command[0] is refused", () => {
    expect(() => parseHandlerSpec('{"builtin":"shell","command":["{{item.tool}}","x"]}')).toThrow(/command\[0\].*program.*placeholder/);
    expect(() => parseHandlerSpec('{"builtin":"shell","command":["/bin/{{item.tool}}"]}')).toThrow(/command\[0\]/);
  });
});
