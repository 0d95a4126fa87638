// Remote-call replies under attack and over time (issue 13, item 9), with a real redis-server and
// a real worker process: a reply is accepted only when signed with its call's own key (an HMAC;
// docs/sdk.md#who-can-answer-a-call), anything malformed is dropped and counted without
// breaking the subscriber, and what finished calls leave in Redis expires (the `calls` index).
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jest } from '@jest/globals';
import { Redis } from 'ioredis';
import { BatchQueue } from '../../queue/index.js';
import { connect, ClientClosedError, RemoteCallError, type DroppedReplyKind, type TaskBatchClient } from '../../sdk/index.js';
import { startRedisServer, type RedisServer } from '../../localcluster/redis-server.js';
import { sdkBatchName, spawnCallWorker, stopWorker } from '../support/sdk-env.js';
import { waitFor, type SpawnedWorker } from '../support/worker-harness.js';

jest.setTimeout(60_000);

const NS = 'call-replies';
/** Longer than the test's own timeout: a call that resolves did so through its reply, never through the timeout's look-up. */
const NO_TIMEOUT = { timeoutMs: 600_000 };
let server: RedisServer;
let redis: Redis;
let spoofer: Redis;
let client: TaskBatchClient;
let worker: SpawnedWorker | undefined;
let service: string;
let q: BatchQueue;
let dir: string;
const warnings: string[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tb-call-replies-'));
  server = await startRedisServer();
  redis = new Redis(server.port, server.host);
  spoofer = new Redis(server.port, server.host);
  client = await connect({ redis: server.url, namespace: NS, onWarning: (w) => warnings.push(w) });
  service = sdkBatchName('svc');
  await client.batch(service).create({ maxAttempts: 1 });
  worker = spawnCallWorker(server.url, NS, service);
  q = new BatchQueue(redis, { namespace: NS, name: service });
  await expect(client.call(service, 'square', [2], NO_TIMEOUT)).resolves.toBe(4); // subscribed, worker up
});

afterAll(async () => {
  await client?.close();
  await stopWorker(worker);
  spoofer?.disconnect();
  redis?.disconnect();
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function dropped(): Promise<Record<DroppedReplyKind, number>> {
  const s = (await client.callStats()).find((x) => x.batch === `${NS}/${service}`);
  if (!s) throw new Error('no call stats for the service batch');
  return s.droppedReplies;
}

async function channel(): Promise<string> {
  const s = (await client.callStats()).find((x) => x.batch === `${NS}/${service}`);
  return q.replyChannel(s!.clientId);
}

/** The id of the one call item running on the service (a gate() call waiting for its file). */
async function runningCall(): Promise<string> {
  return waitFor('a call running', async () => {
    const members = await redis.zrange(q.keys.running, 0, -1);
    return members.length === 1 ? members[0]!.slice(members[0]!.indexOf(':') + 1) : undefined;
  });
}

/** What a client that can read the batch's items hash learns: the call's reply key. */
async function keyOf(id: string): Promise<Buffer> {
  const payload = JSON.parse((await redis.hget(q.keys.items, id))!) as { reply: { key: string } };
  return Buffer.from(payload.reply.key, 'hex');
}

function mac(key: Buffer, text: string): string {
  return createHmac('sha256', key).update(text).digest('hex');
}

async function publish(ch: string, message: string): Promise<void> {
  await spoofer.call('SPUBLISH', ch, message);
}

async function redisNowMs(): Promise<number> {
  const [s, us] = await redis.time();
  return Number(s) * 1000 + Math.floor(Number(us) / 1000);
}

/** Until Redis' clock (the scripts' clock) is past `id`'s expiry in `calls`: a 1 ms TTL, no fixed sleep. */
async function pastExpiry(calls: string, id: string): Promise<void> {
  const at = Number(await redis.zscore(calls, id));
  expect(at).toBeGreaterThan(0);
  await waitFor(`${id} due`, async () => (await redisNowMs()) > at, 5000, 1);
}

function tracked<T>(p: Promise<T>): { p: Promise<T>; settled: () => boolean } {
  let done = false;
  p.then(
    () => (done = true),
    () => (done = true),
  );
  return { p, settled: () => done };
}

describe('who can answer a call', () => {
  test('spoofed replies on the reply channel do not resolve a call; the real reply still does', async () => {
    const file = join(dir, 'spoof');
    const call = tracked(client.call(service, 'gate', [file], NO_TIMEOUT));
    const id = await runningCall();
    const ch = await channel();
    const before = await dropped();
    // A client that can publish on the channel (and learn the call id) but not read the call's key:
    await publish(ch, `r\t${id}\t"spoofed"`); // the format before signed replies
    await publish(ch, `r\t${id}\t${'0'.repeat(64)}\t"spoofed"`); // a made-up MAC
    await publish(ch, `r\t${id}\t${mac(randomBytes(32), `r\t${id}\t"spoofed"`)}\t"spoofed"`); // another key
    await publish(ch, `e\t${id}\t${'f'.repeat(64)}\t1\t{"name":"Spoofed","message":"no"}`);
    await waitFor('the spoofs dropped', async () => (await dropped()).badMac - before.badMac === 4);
    expect(call.settled()).toBe(false);
    writeFileSync(file, 'real');
    await expect(call.p).resolves.toBe('real');
  });

  test('what the MAC does not stop: a client that can read the batch’s items can sign a reply', async () => {
    const file = join(dir, 'reader');
    const call = client.call(service, 'gate', [file], NO_TIMEOUT);
    const id = await runningCall();
    const key = await keyOf(id);
    await publish(await channel(), `r\t${id}\t${mac(key, `r\t${id}\t"forged"`)}\t"forged"`);
    await expect(call).resolves.toBe('forged');
    const before = await dropped();
    writeFileSync(file, 'real'); // the real reply now finds no call in flight
    await waitFor('the late real reply dropped', async () => (await dropped()).unknownCall === before.unknownCall + 1);
  });
});

describe('malformed replies', () => {
  test('are dropped, counted and warned about once per kind; the subscriber keeps delivering', async () => {
    const file = join(dir, 'malformed');
    const call = tracked(client.call(service, 'gate', [file], NO_TIMEOUT));
    const id = await runningCall();
    const key = await keyOf(id);
    const ch = await channel();
    const before = await dropped();
    const warned = warnings.length;
    const messages = [
      'hello',
      '',
      '\t\t\t',
      `x\t${id}\t${'0'.repeat(64)}\t1`,
      `e\t${id}\t${'0'.repeat(64)}\tmany\t{}`, // attempts not a number
      `r\tcall:nobody:1\t${'0'.repeat(64)}\t1`, // no such call here
      `e\t${id}\t${mac(key, `e\t${id}\t1\tnot json`)}\t1\tnot json`, // signed, not JSON
      `e\t${id}\t${mac(key, `e\t${id}\t1\t{"name":1}`)}\t1\t{"name":1}`, // signed, not an error record
      `r\t${id}\t${mac(key, `r\t${id}\t{oops`)}\t{oops`, // signed, not JSON
      `not a reply\nr\tcall:nobody:2\t${'0'.repeat(64)}\t2`, // two lines, both dropped
    ];
    for (const m of messages) await publish(ch, m);
    const want = { badShape: 6, unknownCall: 2, badJson: 3, badMac: 0 };
    await waitFor('the malformed replies counted', async () => {
      const d = await dropped();
      return d.badShape - before.badShape === want.badShape && d.unknownCall - before.unknownCall === want.unknownCall && d.badJson - before.badJson === want.badJson;
    });
    expect((await dropped()).badMac).toBe(before.badMac);
    expect(call.settled()).toBe(false);
    // One warning per kind over the client's life, however many replies of that kind were dropped.
    for (const kind of ['badShape', 'unknownCall', 'badJson'] as const) {
      expect(warnings.filter((w) => w.includes(`droppedReplies.${kind}`))).toHaveLength(1);
    }
    expect(warnings.length - warned).toBeLessThanOrEqual(3);
    // The subscriber still works: the real reply, and a new call, arrive through it.
    writeFileSync(file, 'real');
    await expect(call.p).resolves.toBe('real');
    await expect(client.call(service, 'square', [9], NO_TIMEOUT)).resolves.toBe(81);
  });
});

describe('what finished calls leave in Redis expires', () => {
  test("a failed call's dead letter is indexed for failureTtlMs, then its dead letter, payload and attempts go", async () => {
    const t0 = await redisNowMs();
    const kept = (await client.call(service, 'reject', ['kept'], { ...NO_TIMEOUT, failureTtlMs: 300_000 }).catch((e: unknown) => e)) as RemoteCallError;
    const t1 = await redisNowMs();
    expect(kept).toBeInstanceOf(RemoteCallError);
    const at = Number(await redis.zscore(q.keys.calls, kept.callId));
    expect(at).toBeGreaterThanOrEqual(t0 + 300_000);
    expect(at).toBeLessThanOrEqual(t1 + 300_000);
    expect(await redis.hexists(q.keys.dead, kept.callId)).toBe(1);

    const failedBefore = (await q.snapshot()).failed;
    const gone = (await client.call(service, 'reject', ['gone'], { ...NO_TIMEOUT, failureTtlMs: 1 }).catch((e: unknown) => e)) as RemoteCallError;
    expect(gone).toBeInstanceOf(RemoteCallError);
    expect(await redis.hexists(q.keys.dead, gone.callId)).toBe(1);
    expect(await redis.hexists(q.keys.items, gone.callId)).toBe(1);
    // The next call to finish trims what is due, in its script.
    await pastExpiry(q.keys.calls, gone.callId);
    await expect(client.call(service, 'square', [5], NO_TIMEOUT)).resolves.toBe(25);
    expect(await redis.hexists(q.keys.dead, gone.callId)).toBe(0);
    expect(await redis.hexists(q.keys.items, gone.callId)).toBe(0);
    expect(await redis.hexists(q.keys.att, gone.callId)).toBe(0);
    expect(await redis.sismember(q.keys.seen, gone.callId)).toBe(0);
    expect(await redis.zscore(q.keys.calls, gone.callId)).toBeNull();
    // The one kept for 5 minutes is still there; counters keep the history.
    expect(await redis.hexists(q.keys.dead, kept.callId)).toBe(1);
    expect((await q.snapshot()).failed).toBe(failedBefore + 1);
  });

  test("an abandoned call's id and result are indexed for idTtlMs from when it completed, then go", async () => {
    const other = await connect({ redis: server.url, namespace: NS });
    const fileKept = join(dir, 'abandoned-kept');
    const fileGone = join(dir, 'abandoned-gone');
    const kept = other.call(service, 'gate', [fileKept], { ...NO_TIMEOUT, idTtlMs: 300_000 }).catch((e: unknown) => e);
    const gone = other.call(service, 'gate', [fileGone], { ...NO_TIMEOUT, idTtlMs: 1 }).catch((e: unknown) => e);
    const ids = await waitFor('both calls running', async () => {
      const members = await redis.zrange(q.keys.running, 0, -1);
      return members.length === 2 ? members.map((m) => m.slice(m.indexOf(':') + 1)) : undefined;
    });
    const payloadOf = async (id: string): Promise<string> => (await redis.hget(q.keys.items, id))!;
    const idKept = (await payloadOf(ids[0]!)).includes('abandoned-kept') ? ids[0]! : ids[1]!;
    const idGone = idKept === ids[0] ? ids[1]! : ids[0]!;
    // The caller goes away: nobody will collect these outcomes.
    await other.close();
    expect(await kept).toBeInstanceOf(ClientClosedError);
    expect(await gone).toBeInstanceOf(ClientClosedError);
    const t0 = await redisNowMs();
    // One at a time: a call finishing trims what is due, and the 1 ms one is due at once.
    writeFileSync(fileKept, 'k');
    await waitFor('the kept call completed', async () => (await redis.hexists(q.keys.results, idKept)) === 1);
    const t1 = await redisNowMs();
    writeFileSync(fileGone, 'g');
    await waitFor('both completed', async () => (await redis.zcard(q.keys.running)) === 0 && (await redis.hexists(q.keys.results, idGone)) === 1);
    const at = Number(await redis.zscore(q.keys.calls, idKept));
    expect(at).toBeGreaterThanOrEqual(t0 + 300_000);
    expect(at).toBeLessThanOrEqual(t1 + 300_000);
    expect(await redis.smismember(q.keys.seen, idKept, idGone)).toEqual([1, 1]);
    await pastExpiry(q.keys.calls, idGone);
    await expect(client.call(service, 'square', [5], NO_TIMEOUT)).resolves.toBe(25);
    expect(await redis.sismember(q.keys.seen, idGone)).toBe(0);
    expect(await redis.hexists(q.keys.results, idGone)).toBe(0);
    expect(await redis.zscore(q.keys.resultsIdx, idGone)).toBeNull();
    expect(await redis.zscore(q.keys.calls, idGone)).toBeNull();
    expect(await redis.sismember(q.keys.seen, idKept)).toBe(1);
    expect((await q.result(idKept))?.result).toBe('k');
  });

  test('a dead call replayed before its failure TTL is not trimmed while it is live again', async () => {
    const name = sdkBatchName('replay');
    const rq = new BatchQueue(redis, { namespace: NS, name });
    await rq.create({ maxAttempts: 1 });
    const reply = (failureTtlMs: number, idTtlMs = 60_000) => ({ key: randomBytes(32).toString('hex'), idTtlMs, failureTtlMs });
    await rq.enqueueMany([{ id: 'call:x:1', data: { reply: reply(1), fn: 'f', args: [] } }]);
    let { items } = await rq.claim(1, 10_000);
    await rq.fail([{ claim: items[0]!, error: { name: 'E', message: 'm' }, retryable: false }]);
    expect(await redis.zscore(rq.keys.calls, 'call:x:1')).not.toBeNull();
    expect(await rq.replay(['call:x:1'])).toBe(1);
    // Another call finishes once call:x:1's entry is due, but that item is live again.
    await rq.enqueueMany([{ id: 'call:x:2', data: { reply: reply(1), fn: 'f', args: [] } }]);
    ({ items } = await rq.claim(2, 10_000));
    expect(items.map((c) => c.id).sort()).toEqual(['call:x:1', 'call:x:2']);
    await pastExpiry(rq.keys.calls, 'call:x:1');
    await rq.complete([{ claim: items.find((c) => c.id === 'call:x:2')!, result: 1 }]);
    expect(await redis.zscore(rq.keys.calls, 'call:x:1')).toBeNull();
    expect(await redis.hexists(rq.keys.items, 'call:x:1')).toBe(1);
    expect(await redis.sismember(rq.keys.seen, 'call:x:1')).toBe(1);
    await rq.complete([{ claim: items.find((c) => c.id === 'call:x:1')!, result: 2 }]);
    expect((await rq.result('call:x:1'))?.result).toBe(2);
    expect(await rq.snapshot()).toMatchObject({ succeeded: 2, failed: 0, pending: 0, running: 0 });
  });

  test('a call dead-lettered because its worker died (its lease lapsed) is indexed for its failureTtlMs too', async () => {
    const name = sdkBatchName('lapsed');
    const lq = new BatchQueue(redis, { namespace: NS, name });
    await lq.create({ maxAttempts: 1 });
    const reply = { key: randomBytes(32).toString('hex'), idTtlMs: 60_000, failureTtlMs: 300_000 };
    await lq.enqueueMany([
      { id: 'call:y:1', data: { reply, fn: 'f', args: [] } },
      { id: 'plain', data: 1 },
    ]);
    await lq.claim(2, 100); // the holder dies: no renewal, no outcome
    await new Promise((r) => setTimeout(r, 150));
    const t0 = Number((await redis.time())[0]) * 1000;
    expect((await lq.reclaimExpired()).reclaimed).toBe(2);
    expect(await lq.snapshot()).toMatchObject({ failed: 2 });
    const at = Number(await redis.zscore(lq.keys.calls, 'call:y:1'));
    expect(at).toBeGreaterThanOrEqual(t0 + 300_000 - 1000);
    expect(at).toBeLessThanOrEqual(t0 + 300_000 + 2000);
    // Only calls are indexed.
    expect(await redis.zscore(lq.keys.calls, 'plain')).toBeNull();
  });
});
