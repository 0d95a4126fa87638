import { fileURLToPath } from 'node:url';
import { expandArgv } from '../../worker/handler/builtins/shell.js';
import { describeHandler, parseHandlerSpec } from '../../worker/handler/spec.js';

const here = fileURLToPath(new URL('.', import.meta.url));

describe('handler specs', () => {
  test('shorthands and JSON', () => {
    expect(parseHandlerSpec('noop')).toEqual({ builtin: 'noop' });
    expect(parseHandlerSpec('builtin:primes')).toEqual({ builtin: 'primes' });
    expect(parseHandlerSpec('./worker-config.test.js#run', here)).toEqual({ module: `${here}worker-config.test.js`, export: 'run' });
    expect(parseHandlerSpec('./worker-config.test.js#*', here)).toEqual({ module: `${here}worker-config.test.js`, dispatch: 'fn' });
    expect(parseHandlerSpec('some-package#handler')).toEqual({ module: 'some-package', export: 'handler' });
    expect(parseHandlerSpec('{"module":"pkg","dispatch":"fn"}')).toEqual({ module: 'pkg', dispatch: 'fn' });
    expect(parseHandlerSpec('{"builtin":"shell","command":["convert","{{item.in}}"],"stdin":"json"}')).toEqual({ builtin: 'shell', command: ['convert', '{{item.in}}'], stdin: 'json' });
  });

  test('errors say what is expected', () => {
    expect(() => parseHandlerSpec('{"builtin":"bash"}')).toThrow(/unknown; expected one of noop, sleep, primes, shell/);
    expect(() => parseHandlerSpec('{"builtin":"shell","command":"rm -rf /"}')).toThrow(/non-empty array of strings/);
    expect(() => parseHandlerSpec('{"module":"x","export":"a-b"}')).toThrow(/JavaScript identifier/);
    expect(() => parseHandlerSpec('{"module":"x","export":"a","dispatch":"fn"}')).toThrow(/do not set export too/);
    expect(() => parseHandlerSpec('{"module":"x","extra":1}')).toThrow(/"extra" is not allowed/);
    expect(() => parseHandlerSpec('{not json')).toThrow(/handler JSON is invalid/);
  });

  test('stdio handlers: a command speaking the stdio protocol, validated field by field', () => {
    expect(parseHandlerSpec('{"command":["python3","-u","app.py"],"protocol":"stdio","cwd":".","env":{"A":"1"}}', here)).toEqual({
      command: ['python3', '-u', 'app.py'],
      protocol: 'stdio',
      cwd: here.replace(/\/$/, ''),
      env: { A: '1' },
    });
    expect(describeHandler({ command: ['python3', 'app.py'], protocol: 'stdio' })).toBe('stdio ["python3","app.py"]');
    expect(() => parseHandlerSpec('{"command":["python3","app.py"]}')).toThrow(/protocol undefined is unknown.*"protocol": "stdio"/);
    expect(() => parseHandlerSpec('{"command":["x"],"protocol":"grpc"}')).toThrow(/protocol "grpc" is unknown/);
    expect(() => parseHandlerSpec('{"command":"python3 app.py","protocol":"stdio"}')).toThrow(/stdio handler needs command: a non-empty array of strings/);
    expect(() => parseHandlerSpec('{"command":[],"protocol":"stdio"}')).toThrow(/stdio handler needs command/);
    expect(() => parseHandlerSpec('{"command":["x"],"protocol":"stdio","stdin":"json"}')).toThrow(/"stdin" is not allowed here; allowed: command, protocol, cwd, env/);
    expect(() => parseHandlerSpec('{"command":["x"],"protocol":"stdio","env":{"A":1}}')).toThrow(/env must be an object of string values/);
    expect(() => parseHandlerSpec('{"command":["x"],"protocol":"stdio","cwd":"/no/such/dir"}')).toThrow(/cwd \/no\/such\/dir does not exist/);
  });
});

describe('shell argv templates', () => {
  const vars = (item: unknown) => ({ item, id: 'i-1', attempt: 2 });

  test('each element expands to exactly one argument, whatever the item holds', () => {
    const hostile = '; rm -rf / #';
    expect(expandArgv(['echo', '{{item.a}}', 'x{{item.b}}y', '{{id}}/{{attempt}}'], vars({ a: hostile, b: '$(touch /tmp/pwned)' }))).toEqual(['echo', hostile, 'x$(touch /tmp/pwned)y', 'i-1/2']);
    expect(expandArgv(['{{item}}'], vars('it\'s "quoted" `cmd`'))).toEqual(['it\'s "quoted" `cmd`']);
    expect(expandArgv(['--json={{item}}'], vars({ k: [1, 2] }))).toEqual(['--json={"k":[1,2]}']);
  });

  test('a whole-element placeholder holding an array stays one (JSON) argument', () => {
    expect(expandArgv(['tar', 'czf', 'out.tgz', '{{item.files}}'], vars({ files: ['a b', '-rf', 3] }))).toEqual(['tar', 'czf', 'out.tgz', '["a b","-rf",3]']);
  });

  test('missing fields and unknown names are non-retryable errors', () => {
    expect(() => expandArgv(['{{item.nope}}'], vars({}))).toThrow(expect.objectContaining({ retryable: false }));
    expect(() => expandArgv(['{{env.HOME}}'], vars({}))).toThrow(/unknown name "env"/);
    expect(() => expandArgv(['{{item.a}}'], vars({ a: null }))).toThrow(/resolved to null/);
  });
});
