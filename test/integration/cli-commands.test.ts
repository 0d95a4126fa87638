// The `taskbatch` CLI as a real process against a real Redis (--redis-url mode): output formats,
// exit codes, bad arguments, unknown batches, and a local `taskbatch run` of an example manifest.
import { jest } from '@jest/globals';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { repoRoot } from '../../localcluster/index.js';
import { connect, type TaskBatchClient } from '../../sdk/index.js';
import { taskbatch } from '../support/cli-run.js';
import { startRedisServer, type RedisServer } from '../../localcluster/redis-server.js';
import { sdkBatchName, spawnCallWorker, stopWorker } from '../support/sdk-env.js';

jest.setTimeout(90_000);

const NS = 'cli';
let server: RedisServer;
let client: TaskBatchClient;
let dir: string;
let R: string[];

beforeAll(async () => {
  server = await startRedisServer();
  client = await connect({ redis: server.url, namespace: NS });
  dir = mkdtempSync(join(tmpdir(), 'tb-cli-'));
  R = ['--redis-url', server.url, '-n', NS];
});

afterAll(async () => {
  await client?.close();
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('help and bad arguments (exit code 2)', () => {
  test('every command has --help; the top-level help lists them and the exit codes', async () => {
    const top = await taskbatch(['--help']);
    expect(top.code).toBe(0);
    for (const c of ['submit', 'close', 'status', 'watch', 'results', 'failures', 'replay', 'cancel', 'call', 'run']) {
      expect(top.stdout).toContain(`  ${c} `);
      const h = await taskbatch([c, '--help']);
      expect({ c, code: h.code }).toEqual({ c, code: 0 });
      expect(h.stdout).toMatch(new RegExp(`^Usage: taskbatch ${c} `));
    }
    expect(top.stdout).toMatch(/Exit codes: 0 ok, 1 unexpected error, 2 bad arguments/);
    expect((await taskbatch(['--version'])).stdout).toMatch(/^taskbatch \d+\.\d+\.\d+/);
  });

  test.each([
    [['frobnicate'], /unknown command "frobnicate"; commands: submit, close/],
    [['status'], /missing the batch NAME\nusage: taskbatch status NAME/],
    [['status', 'x', '--bogus', ...['--redis-url', 'redis://127.0.0.1:1']], /Unknown option '--bogus'[\s\S]*see taskbatch status --help/],
    [['status', 'x', 'y', '--redis-url', 'redis://127.0.0.1:1'], /unexpected argument "y"/],
    [['status', 'x', '-o', 'xml', '--redis-url', 'redis://127.0.0.1:1'], /--output "xml" is not supported here; use one of: table, json, yaml/],
    [['watch', 'x', '--timeout', 'soon', '--redis-url', 'redis://127.0.0.1:1'], /--timeout "soon" is not a duration; use e\.g\. 500ms, 30s/],
    [['replay', 'x', '--redis-url', 'redis://127.0.0.1:1'], /give the ids to replay, or --all/],
    [['submit', 'x', '--delay', '5m', '--not-before', '2030-01-01T00:00:00Z', '--data', '1', '--redis-url', 'redis://127.0.0.1:1'], /either --delay or --not-before/],
    [['status', 'x', '--port-forward', 'maybe', '--redis-url', 'redis://127.0.0.1:1'], /--port-forward must be auto, always or never/],
    [['status', 'x'], /no Kubernetes configuration found \(KUBECONFIG, ~\/\.kube\/config\): pass --kubeconfig\/--context, or --redis-url/],
    [['status', 'x', '--context', 'nope', '--kubeconfig', '/nonexistent/kubeconfig'], /kubeconfig \/nonexistent\/kubeconfig does not exist/],
    [['run'], /missing the manifest FILE/],
  ])('%j', async (args, message) => {
    const r = await taskbatch(args);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 2, stderr: expect.stringMatching(message) });
    expect(r.stdout).toBe('');
  });
});

describe('unknown batches and unreachable Redis', () => {
  test('an unknown batch exits 3 and says how to create one', async () => {
    for (const cmd of [
      ['status', 'nope'],
      ['results', 'nope'],
      ['failures', 'nope'],
      ['submit', 'nope', '--data', '1'],
      ['cancel', 'nope'],
      ['replay', 'nope', '--all'],
      ['watch', 'nope'],
    ]) {
      const r = await taskbatch([...cmd, ...R]);
      expect({ cmd, code: r.code }).toEqual({ cmd, code: 3 });
      expect(r.stderr).toMatch(/batch cli\/nope not found in Redis at redis:\/\/127\.0\.0\.1:\d+; create it/);
    }
  });

  test('an unreachable Redis exits 4 quickly', async () => {
    const t0 = Date.now();
    const r = await taskbatch(['status', 'x', '--redis-url', 'redis://127.0.0.1:1']);
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/cannot reach Redis at redis:\/\/127\.0\.0\.1:1 \(connect ECONNREFUSED/);
    expect(Date.now() - t0).toBeLessThan(8000);
  });

  test('a missing input file exits 3', async () => {
    const b = sdkBatchName('f');
    await client.batch(b).create();
    const r = await taskbatch(['submit', b, '-f', join(dir, 'missing.jsonl'), ...R]);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/missing\.jsonl does not exist/);
  });
});

describe('submit, status, watch, results, failures, replay, cancel', () => {
  test('a full round trip with output formats and exit codes', async () => {
    const name = sdkBatchName('rt');
    await client.batch(name).create({ maxAttempts: 1 });
    const file = join(dir, 'items.jsonl');
    writeFileSync(
      file,
      [...Array.from({ length: 30 }, (_, i) => JSON.stringify({ fn: 'square', args: [i], key: `k${i}` })), '', JSON.stringify({ fn: 'fail', args: ['boom'], key: 'bad' })].join('\n'),
    );

    let r = await taskbatch(['submit', name, '-f', file, '--id-field', 'key', ...R]);
    expect(r).toMatchObject({ code: 0, stdout: `Submitted 31 items to cli/${name}\n` });
    r = await taskbatch(['submit', name, '-f', file, '--id-field', 'key', '-o', 'json', ...R]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ batch: `cli/${name}`, added: 0, duplicates: 31, closed: false });
    // stdin, with a delay
    r = await taskbatch(['submit', name, '-', '--delay', '1s', '--id-prefix', 'late', ...R], { input: `${JSON.stringify({ fn: 'add', args: [1, 2] })}\n` });
    expect(r).toMatchObject({ code: 0, stdout: `Submitted 1 item to cli/${name}\n` });
    // bad JSON on line 2 is a usage error naming the line
    r = await taskbatch(['submit', name, '-', ...R], { input: '{"fn":"square","args":[1]}\n{oops\n' });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/stdin:2: not valid JSON/);
    // (the valid line before it was not sent: lines are validated chunk by chunk before writing)

    r = await taskbatch(['status', name, ...R]);
    expect(r.code).toBe(0);
    const [header, row] = r.stdout.trim().split('\n');
    expect(header).toMatch(/^NAME\s+STATUS\s+PROGRESS\s+SUCCEEDED\s+FAILED\s+PENDING\s+DELAYED\s+RUNNING\s+RETRIES\s+WORKERS\s+AGE$/);
    expect(row!.split(/\s{3,}/)).toEqual([name, 'Open', '0/32', '0', '0', '31', '1', '0', '0', '-', '-']);
    r = await taskbatch(['status', name, '-o', 'yaml', ...R]);
    expect(parseYaml(r.stdout)).toMatchObject({ namespace: NS, name, countsFrom: 'redis', counts: { total: 32, pending: 31, delayed: 1, closed: false } });

    r = await taskbatch(['close', name, ...R]);
    expect(r).toMatchObject({ code: 0, stdout: `Closed batch cli/${name}\n` });
    r = await taskbatch(['submit', name, '--data', '{"fn":"square","args":[2]}', ...R]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/is closed and takes no more items/);

    const worker = spawnCallWorker(server.url, NS, name, { TASKBATCH_POOL_SIZE: '4' });
    try {
      r = await taskbatch(['watch', name, '--interval', '200ms', ...R]);
      // Not a terminal: one line per change, then a verdict; failed items make it exit 5.
      expect(r.code).toBe(5);
      expect(r.stdout).toMatch(/\[#{24}\] {2}32\/32 {2}100% {2}ok 31 {2}failed 1 {2}running 0 {2}pending 0 .*done in/);
      expect(r.stdout).toMatch(new RegExp(`Batch cli/${name} Drained with failures: 31 succeeded, 1 failed of 32`));
      expect(r.stdout).toMatch(new RegExp(`See the failures: taskbatch failures ${name} -n cli`));
    } finally {
      await stopWorker(worker);
    }

    r = await taskbatch(['results', name, ...R]);
    expect(r.code).toBe(0);
    const lines = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { id: string; result: unknown; completedAt: string });
    expect(lines).toHaveLength(31);
    expect(lines.find((l) => l.id === 'k7')).toMatchObject({ result: 49, completedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/) });
    expect(lines.find((l) => l.id === 'late-1')?.result).toBe(3);
    r = await taskbatch(['results', name, '--limit', '5', '-o', 'json', ...R]);
    expect(JSON.parse(r.stdout)).toHaveLength(5);
    r = await taskbatch(['results', name, '-o', 'table', '--limit', '2', ...R]);
    expect(r.stdout).toMatch(/^ID\s+COMPLETED\s+RESULT\n/);

    r = await taskbatch(['failures', name, ...R]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout.trim())).toMatchObject({ id: 'bad', attempts: 1, error: { name: 'RangeError', message: 'boom' }, payload: { fn: 'fail', args: ['boom'], key: 'bad' } });
    r = await taskbatch(['failures', name, '-o', 'table', ...R]);
    expect(r.stdout).toMatch(/^ID\s+ATTEMPTS\s+FAILED\s+ERROR\nbad\s+1\s+\d+s\s+RangeError: boom\n$/);

    r = await taskbatch(['replay', name, 'bad', 'not-dead', ...R]);
    expect(r).toMatchObject({ code: 0, stdout: `Replayed 1 item of cli/${name} (1 of the given ids were not dead-lettered)\n` });
    r = await taskbatch(['status', name, '-o', 'json', ...R]);
    expect(JSON.parse(r.stdout).counts).toMatchObject({ failed: 0, pending: 1 });

    r = await taskbatch(['cancel', name, ...R]);
    expect(r).toMatchObject({ code: 0, stdout: `Deleted the Redis keys of batch cli/${name}\n` });
    expect((await taskbatch(['status', name, ...R])).code).toBe(3);
  });

  test('watch --timeout exits 6 and leaves the batch alone', async () => {
    const name = sdkBatchName('wt');
    await client.batch(name).create();
    await client.batch(name).submit({ fn: 'square', args: [1] });
    const r = await taskbatch(['watch', name, '--timeout', '300ms', '--interval', '100ms', ...R]);
    expect(r.code).toBe(6);
    expect(r.stderr).toMatch(new RegExp(`batch cli/${name} did not finish within 300ms \\(0/1 done\\); it keeps running`));
    expect((await client.batch(name).status()).counts.pending).toBe(1);
  });

  test('call prints the result, exits 5 when the function throws and 6 on timeout', async () => {
    const name = sdkBatchName('svc');
    await client.batch(name).create({ maxAttempts: 1 });
    const worker = spawnCallWorker(server.url, NS, name);
    try {
      let r = await taskbatch(['call', name, 'add', '40', '2', ...R]);
      expect(r).toMatchObject({ code: 0, stdout: '42\n' });
      r = await taskbatch(['call', name, 'echo', '{"a": [1, 2]}', ...R]);
      expect(JSON.parse(r.stdout)).toEqual({ a: [1, 2] });
      r = await taskbatch(['call', name, 'echo', 'plain words', ...R]);
      expect(r.stdout).toBe('"plain words"\n');
      r = await taskbatch(['call', name, 'fail', 'nope', ...R]);
      expect(r).toMatchObject({ code: 5, stderr: 'taskbatch: fail() threw RangeError: nope\n' });
      r = await taskbatch(['call', name, 'sleep', '3000', '--timeout', '300ms', ...R]);
      expect(r.code).toBe(6);
      expect(r.stderr).toMatch(/got no answer within 300 ms/);
    } finally {
      await stopWorker(worker);
    }
  });
});

describe('taskbatch run (a manifest, locally, without Kubernetes)', () => {
  test('runs examples/math-batch.yaml with its own redis-server and prints the results', async () => {
    const r = await taskbatch(['run', 'examples/math-batch.yaml', '--results'], { cwd: repoRoot(), timeoutMs: 60_000 });
    expect(r.stderr).toMatch(/Created batch default\/math-batch in redis:\/\/127\.0\.0\.1:\d+ \(a local redis-server, removed at exit\)/);
    expect(r.stderr).toMatch(/\[#+-*\] {2}6\/6 {2}100%/);
    expect(r.stderr).toMatch(/Batch default\/math-batch Complete: 5 succeeded, 1 failed of 6 \(6 enqueued\)/);
    expect(r.stderr).toMatch(/failed item-4 after 2 attempt\(s\): RangeError: division by zero/);
    expect(r.code).toBe(0);
    const results = new Map(
      r.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { id: string; result: unknown })
        .map((x) => [x.id, x.result]),
    );
    expect(results.get('item-1')).toBe(144);
    expect(results.get('item-2')).toBe(42);
    expect(results.get('item-5')).toEqual({ count: 8, mean: 3.875, min: 1, max: 9 });
  });

  test('exit 5 beyond the failure policy; a range source; --items and --redis-url', async () => {
    const manifest = join(dir, 'squares.yaml');
    writeFileSync(
      manifest,
      `apiVersion: taskbatch.dev/v1alpha1
kind: TaskBatch
metadata: {name: squares, namespace: local}
spec:
  range: {start: 0, end: 50}
  handler: {builtin: noop}
  pool: {mode: async, size: 8}
`,
    );
    let r = await taskbatch(['run', manifest, '--redis-url', server.url, '--no-progress'], { timeoutMs: 30_000 });
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/Batch local\/squares Complete: 50 succeeded, 0 failed of 50 \(50 enqueued\)/);
    expect((await client.batch('squares', { namespace: 'local' }).status()).counts).toMatchObject({ total: 50, succeeded: 50, complete: true });

    const failing = join(dir, 'failing.yaml');
    writeFileSync(
      failing,
      `apiVersion: taskbatch.dev/v1alpha1
kind: TaskBatch
metadata: {name: failing}
spec:
  items: [{}]
  handler: {module: ${JSON.stringify(join(repoRoot(), 'dist/test/fixtures/sdk/math.js'))}, dispatch: fn}
  retry: {maxAttempts: 1}
`,
    );
    const items = join(dir, 'calls.jsonl');
    writeFileSync(items, `${JSON.stringify({ fn: 'square', args: [3] })}\n${JSON.stringify({ fn: 'reject', args: ['no'] })}\n`);
    r = await taskbatch(['run', failing, '--items', items, '--no-progress'], { timeoutMs: 30_000 });
    expect(r.code).toBe(5);
    expect(r.stderr).toMatch(/Batch default\/failing Failed: 1 succeeded, 1 failed of 2/);
    expect(r.stderr).toMatch(/1 items failed permanently \(allowed by spec.failurePolicy: 0\)/);
  });

  test('bad manifests and handlers exit 2 with what to fix', async () => {
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'kind: TaskBatch\nmetadata: {name: x}\nspec: {items: [{}], handler: {module: /app/dist/nowhere.js}}\n');
    let r = await taskbatch(['run', bad], { cwd: repoRoot() });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/spec\.handler\.module \/app\/dist\/nowhere\.js not found \(looked at .*dist\/nowhere\.js, \/app\/dist\/nowhere\.js\); build first/);
    writeFileSync(bad, 'kind: ConfigMap\nmetadata: {name: x}\n');
    r = await taskbatch(['run', bad]);
    expect(r).toMatchObject({ code: 2, stderr: expect.stringMatching(/expected exactly one TaskBatch \(kind: TaskBatch\), found 0/) });
    writeFileSync(bad, 'kind: TaskBatch\nmetadata: {name: x}\nspec: {itemsFrom: {configMapKeyRef: {name: cm, key: k}}, handler: {builtin: noop}}\n');
    r = await taskbatch(['run', bad]);
    expect(r).toMatchObject({ code: 2, stderr: expect.stringMatching(/ConfigMap cm \(key k\) is not in .*; add it to the file, or pass the items with --items FILE/) });
    writeFileSync(bad, 'kind: TaskBatch\nmetadata: {name: x}\nspec: {items: [{}], handler: {builtin: noop}, pool: {mode: fibers}}\n');
    r = await taskbatch(['run', bad]);
    expect(r).toMatchObject({ code: 2, stderr: expect.stringMatching(/TASKBATCH_POOL_MODE/) });
    r = await taskbatch(['run', join(dir, 'none.yaml')]);
    expect(r.code).toBe(3);
  });
});
