// The queue protocol's call replies (queue/lua/complete.lua, fail.lua; BatchQueue.enableReplies):
// what is announced, on which channel, in which format, signed how — and that nothing changes
// without the flag.
import { jest } from '@jest/globals';
import { Redis } from 'ioredis';
import { randomBytes } from 'node:crypto';
import { BatchQueue, parseCallReplies, verifyCallReply, type SignedCallReply } from '../../queue/index.js';
import { startRedisServer, type RedisServer } from '../../localcluster/redis-server.js';
import { sdkBatchName } from '../support/sdk-env.js';
import { waitFor } from '../support/worker-harness.js';

jest.setTimeout(30_000);

let server: RedisServer;
let redis: Redis;
let sub: Redis;
const received: { channel: string; message: string; sharded: boolean }[] = [];

beforeAll(async () => {
  server = await startRedisServer();
  redis = new Redis(server.port, server.host);
  sub = new Redis(server.port, server.host);
  sub.on('smessage', (channel: string, message: string) => received.push({ channel, message, sharded: true }));
  sub.on('message', (channel: string, message: string) => received.push({ channel, message, sharded: false }));
});

afterAll(async () => {
  sub?.disconnect();
  redis?.disconnect();
  await server?.stop();
});

async function aQueue(maxAttempts = 1): Promise<BatchQueue> {
  const q = new BatchQueue(redis, { namespace: 'replies', name: sdkBatchName('r') });
  await q.create({ maxAttempts, backoff: { initialMs: 0, maxMs: 0, jitter: 0 } });
  return q;
}

function repliesOn(channel: string): SignedCallReply[] {
  return received.filter((r) => r.channel === channel).flatMap((r) => parseCallReplies(r.message).replies);
}

/** A call item's data as the SDK writes it: its reply key (returned) and TTLs, then {fn, args}. */
function aCall(idTtlMs = 60_000, failureTtlMs = 86_400_000): { key: Buffer; data: unknown } {
  const key = randomBytes(32);
  return { key, data: { reply: { key: key.toString('hex'), idTtlMs, failureTtlMs }, fn: 'f', args: [] } };
}

test('without enableReplies, completing and failing call items publishes nothing', async () => {
  const q = await aQueue();
  await sub.psubscribe('*');
  try {
    await q.enqueueMany([
      { id: 'call:c1:1', data: 1 },
      { id: 'call:c1:2', data: 2 },
    ]);
    const { items } = await q.claim(2, 10_000);
    await q.complete([{ claim: items[0]!, result: 'x' }]);
    await q.fail([{ claim: items[1]!, error: { name: 'E', message: 'm' } }]);
    await new Promise((r) => setTimeout(r, 100));
    expect(received.filter((r) => r.channel.includes(q.ref.name))).toEqual([]);
  } finally {
    await sub.punsubscribe('*');
  }
});

test('with replies on: completed call items are announced per client, batched per script call, signed with their own key', async () => {
  const q = await aQueue();
  expect(await q.enableReplies()).toBe('spublish'); // Redis 7: sharded Pub/Sub
  expect(await q.enableReplies()).toBe('spublish'); // idempotent
  expect(await redis.hget(q.keys.meta, 'notify')).toBe('s');
  const chA = q.replyChannel('aaa');
  const chB = q.replyChannel('bbb');
  expect(chA).toBe(`tb:{replies/${q.ref.name}}:reply:aaa`);
  await sub.ssubscribe(chA, chB);
  const a1 = aCall();
  const a2 = aCall();
  const b1 = aCall();
  await q.enqueueMany([
    { id: 'call:aaa:1', data: a1.data },
    { id: 'call:aaa:2', data: a2.data },
    { id: 'call:bbb:1', data: b1.data },
    { id: 'call:bbb:2', data: {} }, // no reply key (not written by the SDK): announced unsigned
    { id: 'plain-item', data: {} },
  ]);
  const { items } = await q.claim(10, 10_000);
  const byId = new Map(items.map((c) => [c.id, c]));
  await q.complete([
    { claim: byId.get('call:aaa:1')!, result: { v: 'line\nbreak\ttab' } },
    { claim: byId.get('call:aaa:2')! }, // undefined result
    { claim: byId.get('call:bbb:1')!, result: 7 },
    { claim: byId.get('call:bbb:2')!, result: 8 },
    { claim: byId.get('plain-item')!, result: 1 },
  ]);
  await waitFor('replies', () => repliesOn(chA).length === 2 && repliesOn(chB).length === 2, 2000);
  expect(received.filter((r) => r.channel === chA)).toHaveLength(1); // one message for both of aaa's calls
  expect(received.find((r) => r.channel === chA)!.sharded).toBe(true);
  expect(repliesOn(chA)).toEqual([
    { kind: 'result', id: 'call:aaa:1', mac: expect.stringMatching(/^[0-9a-f]{64}$/), json: JSON.stringify({ v: 'line\nbreak\ttab' }) },
    { kind: 'result', id: 'call:aaa:2', mac: expect.stringMatching(/^[0-9a-f]{64}$/), json: '' },
  ]);
  const [ra1, ra2] = repliesOn(chA) as [SignedCallReply, SignedCallReply];
  const [rb1, rb2] = repliesOn(chB) as [SignedCallReply, SignedCallReply];
  expect(rb1).toMatchObject({ kind: 'result', id: 'call:bbb:1', json: '7' });
  expect(rb2).toEqual({ kind: 'result', id: 'call:bbb:2', mac: '', json: '8' });
  // Each reply verifies with its own call's key and no other; the key itself is never published.
  expect([verifyCallReply(a1.key, ra1), verifyCallReply(a2.key, ra2), verifyCallReply(b1.key, rb1)]).toEqual([true, true, true]);
  expect([verifyCallReply(a2.key, ra1), verifyCallReply(a1.key, rb1), verifyCallReply(b1.key, rb2)]).toEqual([false, false, false]);
  expect(verifyCallReply(a1.key, { ...ra1, json: '{"v":"forged"}' } as SignedCallReply)).toBe(false);
  for (const r of received) for (const k of [a1, a2, b1]) expect(r.message).not.toContain(k.key.toString('hex'));
  // Results are stored as for any item (a subscriber that missed the message can read them).
  expect((await q.result('call:bbb:1'))?.result).toBe(7);
  // A stale (fenced) completion announces nothing.
  const n = received.length;
  await q.complete([{ claim: byId.get('call:bbb:1')!, result: 8 }]);
  await new Promise((r) => setTimeout(r, 100));
  expect(received.length).toBe(n);
  await sub.sunsubscribe(chA, chB);
});

test('with replies on: only the final failure of a call is announced, signed over its attempts and error', async () => {
  const q = await aQueue(2);
  await q.enableReplies();
  const ch = q.replyChannel('ccc');
  await sub.ssubscribe(ch);
  const c1 = aCall();
  const c2 = aCall();
  await q.enqueueMany([
    { id: 'call:ccc:1', data: c1.data },
    { id: 'call:ccc:2', data: c2.data },
  ]);
  let { items } = await q.claim(10, 10_000);
  // First attempt of :1 is retried (announces nothing); :2 is not retryable (announced at once).
  await q.fail([
    { claim: items.find((c) => c.id === 'call:ccc:1')!, error: { name: 'RangeError', message: 'first' } },
    { claim: items.find((c) => c.id === 'call:ccc:2')!, error: { name: 'TypeError', message: 'fatal', stack: 'TypeError: fatal\n    at x' }, retryable: false },
  ]);
  await waitFor('the non-retryable failure', () => repliesOn(ch).length === 1, 2000);
  const first = repliesOn(ch)[0] as Extract<SignedCallReply, { kind: 'error' }>;
  expect(first).toMatchObject({ kind: 'error', id: 'call:ccc:2', attempts: 1 });
  expect(JSON.parse(first.errorJson)).toEqual({ name: 'TypeError', message: 'fatal', stack: 'TypeError: fatal\n    at x' });
  expect(verifyCallReply(c2.key, first)).toBe(true);
  expect(verifyCallReply(c2.key, { ...first, attempts: 2 })).toBe(false);
  ({ items } = await waitFor('the retry due', async () => {
    const c = await q.claim(10, 10_000);
    return c.items.length ? c : undefined;
  }));
  await q.fail([{ claim: items[0]!, error: { name: 'RangeError', message: 'second' } }]);
  await waitFor('the final failure', () => repliesOn(ch).length === 2, 2000);
  const second = repliesOn(ch)[1] as Extract<SignedCallReply, { kind: 'error' }>;
  expect(second).toMatchObject({ kind: 'error', id: 'call:ccc:1', attempts: 2 });
  expect(JSON.parse(second.errorJson)).toMatchObject({ name: 'RangeError', message: 'second' });
  expect(verifyCallReply(c1.key, second)).toBe(true);
  expect(await q.deadLetter('call:ccc:1')).toMatchObject({ attempts: 2 });
  await sub.sunsubscribe(ch);
});

test("forgetCalls removes delivered calls' results and idempotence ids, and leaves the counters alone", async () => {
  const q = await aQueue();
  await q.enqueueMany([
    { id: 'call:d:1', data: {} },
    { id: 'call:d:2', data: {} },
  ]);
  const { items } = await q.claim(2, 10_000);
  await q.complete(items.map((c) => ({ claim: c, result: 1 })));
  expect(await redis.scard(q.keys.seen)).toBe(2);
  await q.forgetCalls(['call:d:1', 'call:d:2']);
  expect(await redis.scard(q.keys.seen)).toBe(0);
  expect(await redis.hlen(q.keys.results)).toBe(0);
  expect(await redis.zcard(q.keys.resultsIdx)).toBe(0);
  expect(await q.snapshot()).toMatchObject({ total: 2, succeeded: 2 });
});

test('enableReplies on a missing batch fails like any call on it', async () => {
  const q = new BatchQueue(redis, { namespace: 'replies', name: 'never-created' });
  await expect(q.enableReplies()).rejects.toMatchObject({ code: 'BatchStateLost' });
  expect(await redis.exists(q.keys.meta)).toBe(0);
});
