import { jest } from '@jest/globals';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { aBatch, spawnWorker, useWorkerRedis, waitFor, workerEnv } from '../support/worker-harness.js';

// A worker process whose handler is a Python program speaking the stdio protocol
// (docs/handler-protocol.md): TASKBATCH_HANDLER={"command": [...], "protocol": "stdio"},
// no pool mode given (process is the default for it), against a real redis-server.

jest.setTimeout(60_000);

const PY_FIXTURE = fileURLToPath(new URL('../../../test/fixtures/stdio-handler.py', import.meta.url));
const h = useWorkerRedis();

test('drains a batch with a Python handler: results, retries, a non-retryable error dead-lettered at once, handler logs', async () => {
  const { queue, name } = await aBatch(h.redis)
    .withItems(Array.from({ length: 40 }, (_, i) => ({ n: i })))
    .withItem('throws', { op: 'throw' })
    .withItem('fatal', { op: 'fatal' })
    .withItem('logs', { op: 'log' })
    .maxAttempts(2)
    .closed()
    .create();
  const handler = JSON.stringify({ command: ['python3', '-u', PY_FIXTURE], protocol: 'stdio' });
  const w = spawnWorker(workerEnv(h.server.url, name, handler, { TASKBATCH_POOL_SIZE: '2', TASKBATCH_LOG_LEVEL: 'info' }));
  h.track(w);
  expect(await w.exited).toEqual({ code: 0, signal: null });

  expect(await queue.snapshot()).toMatchObject({ total: 43, succeeded: 41, failed: 2, retries: 1, complete: true });
  expect(await queue.result('item-7')).toMatchObject({ result: { echo: { n: 6 }, attempt: 1, id: 'item-7', timeoutMs: 600_000 } });
  const dead = (await queue.deadLetters()).items.sort((a, b) => a.id.localeCompare(b.id));
  expect(dead).toEqual([
    expect.objectContaining({ id: 'fatal', attempts: 1, error: expect.objectContaining({ name: 'BadInput', message: 'bad input' }) }),
    expect.objectContaining({ id: 'throws', attempts: 2, error: expect.objectContaining({ name: 'ValueError', message: 'boom from python' }) }),
  ]);
  expect(w.logs).toContainEqual(expect.objectContaining({ msg: 'hello from python', item: 'logs', source: 'handler', n: 1 }));
  expect(w.logs).toContainEqual(expect.objectContaining({ handler: `stdio ${JSON.stringify(['python3', '-u', PY_FIXTURE])}` }));
});

test('SIGTERM: the running item gets a cancel frame (WorkerShutdown) after the grace and is handed back; no handler process outlives the worker', async () => {
  const { queue, name } = await aBatch(h.redis)
    .withItems([{ op: 'sleep', ms: 30_000 }])
    .closed()
    .create();
  const handler = JSON.stringify({ command: ['python3', '-u', PY_FIXTURE], protocol: 'stdio' });
  const w = spawnWorker(workerEnv(h.server.url, name, handler, { TASKBATCH_POOL_SIZE: '1', TASKBATCH_SHUTDOWN_GRACE_SECONDS: '0.3' }));
  h.track(w);
  await waitFor('the item to run', async () => (await queue.snapshot()).running === 1);
  const handlers = childrenOf(w.pid);
  expect(handlers).toHaveLength(1);
  w.kill('SIGTERM');
  expect(await w.exited).toEqual({ code: 0, signal: null });
  expect(await queue.snapshot()).toMatchObject({ pending: 1, running: 0, failed: 0, retries: 0, handedBack: 1 });
  expect(w.logs).toContainEqual(expect.objectContaining({ msg: 'cancel received: WorkerShutdown', level: 'warn', source: 'handler' }));
  await waitFor('the handler process to be gone', () => handlers.every((pid) => !alive(pid)));
});

/** Direct children of a process, from /proc. */
function childrenOf(pid: number): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        return readFileSync(`/proc/${d}/stat`, 'utf8').split(') ')[1]?.split(' ')[1] === String(pid);
      } catch {
        return false;
      }
    })
    .map(Number);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
