import { jest } from '@jest/globals';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Redis } from 'ioredis';
import { loadConfig } from '../../worker/config.js';
import { runLocal } from '../../worker/local-run.js';
import { silentLogger } from '../../worker/log.js';
import { startRedisServer, type RedisServer } from '../../localcluster/redis-server.js';
import { FIXTURES, uniqueName } from '../support/worker-harness.js';

jest.setTimeout(30_000);

let server: RedisServer;
let dir: string;
beforeAll(async () => {
  server = await startRedisServer();
  dir = mkdtempSync(join(tmpdir(), 'tb-local-'));
});
afterAll(async () => {
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('local run: creates the batch from JSON Lines, runs it with a progress display, and is idempotent', async () => {
  const file = join(dir, 'items.jsonl');
  writeFileSync(file, `${[1, 2, 3, 4, 5].map((n) => JSON.stringify({ fn: 'add', args: [n, n] })).join('\n')}\n${JSON.stringify({ fn: 'nonRetryable' })}\n`);
  const batch = uniqueName('local');
  const config = loadConfig({
    TASKBATCH_REDIS_URL: server.url,
    TASKBATCH_BATCH: batch,
    TASKBATCH_HANDLER: JSON.stringify({ module: FIXTURES, dispatch: 'fn' }),
    TASKBATCH_POOL_MODE: 'thread',
    TASKBATCH_POOL_SIZE: '2',
    TASKBATCH_METRICS_PORT: 'off',
    TASKBATCH_WORKER_ID: 'local-test',
  });
  let shown = '';
  const progress = new Writable({
    write(chunk: Buffer, _enc, done) {
      shown += chunk.toString();
      done();
    },
  });
  const first = await runLocal({ config, items: { file }, progress, logger: silentLogger, handleSignals: false });
  expect(first.enqueued).toBe(6);
  expect(first.result).toMatchObject({ reason: 'complete', exitCode: 0 });
  expect(first.snapshot).toMatchObject({ total: 6, succeeded: 5, failed: 1, complete: true });
  expect(first.deadLetters.map((d) => d.id)).toEqual(['line-6']);
  expect(shown).toMatch(/Enqueued 6 new items/);
  expect(shown).toMatch(/\[#+-*\] 6\/6 {2}ok 5 {2}failed 1/);
  expect(shown).toMatch(/failed line-6 after 1 attempt\(s\): NonRetryableError|failed line-6 after 1 attempt\(s\): Error: bad input/);

  const redis = new Redis(server.port, server.host);
  try {
    expect(await redis.hget(`tb:{default/${batch}}:results`, 'line-3')).toBe('6');
  } finally {
    redis.disconnect();
  }
  const again = await runLocal({ config, items: { file }, progress: false, logger: silentLogger, handleSignals: false });
  expect(again.enqueued).toBe(0);
  expect(again.snapshot).toMatchObject({ total: 6, succeeded: 5, failed: 1 });
});
