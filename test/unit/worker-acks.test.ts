import { AckBatcher, type AckKind } from '../../worker/acks.js';
import type { BatchQueue, CompleteInput, FailInput } from '../../queue/index.js';

/** A queue double that records calls; `failNext` makes the next calls throw like a dropped connection. */
function fakeQueue() {
  const calls: { kind: AckKind; tokens: string[] }[] = [];
  let failNext = 0;
  const q = {
    calls,
    failNext: (n: number) => (failNext = n),
    complete: async (entries: readonly CompleteInput[]) => {
      if (failNext-- > 0) throw new Error('Connection is closed.');
      calls.push({ kind: 'complete', tokens: entries.map((e) => e.claim.token) });
      return { completed: entries.length, rejected: entries.filter((e) => e.claim.token.startsWith('stale')).map((e) => e.claim.token) };
    },
    fail: async (entries: readonly FailInput[]) => {
      calls.push({ kind: 'fail', tokens: entries.map((e) => e.claim.token) });
      return { retried: entries.length, deadLettered: 0, rejected: [] };
    },
    release: async (claims: readonly { token: string }[]) => {
      calls.push({ kind: 'release', tokens: claims.map((c) => c.token) });
      return { released: claims.length, lost: [] };
    },
  };
  return q;
}

function batcher(q: ReturnType<typeof fakeQueue>, maxItems = 100, maxDelayMs = 5) {
  const settled: string[] = [];
  const rejected: string[] = [];
  const errors: string[] = [];
  const acks = new AckBatcher(
    () => q as unknown as BatchQueue,
    { maxItems, maxDelayMs },
    {
      onSettled: (t) => settled.push(...t),
      onRejected: (_k, t) => rejected.push(...t),
      onError: (_k, e) => errors.push((e as Error).message),
      onFlushed: () => undefined,
      onQueueError: () => undefined,
    },
  );
  return { acks, settled, rejected, errors };
}

test('acknowledgements are batched: one call per kind per flush, at most one flush in flight', async () => {
  const q = fakeQueue();
  const { acks, settled } = batcher(q);
  for (let i = 0; i < 250; i++) acks.complete({ claim: { token: `${i}:x${i}` } });
  acks.fail({ claim: { token: 'f:1' }, error: { name: 'E', message: 'm' } });
  acks.release('r:1');
  expect(await acks.flush()).toBe(true);
  expect(settled).toHaveLength(252);
  expect(q.calls.filter((c) => c.kind === 'complete').reduce((n, c) => n + c.tokens.length, 0)).toBe(250);
  // The first flush starts at 100 items; the rest arrived while it was in flight and went together.
  expect(q.calls.length).toBeLessThanOrEqual(5);
  expect(q.calls[0]).toEqual({ kind: 'complete', tokens: Array.from({ length: 100 }, (_, i) => `${i}:x${i}`) });
});

test('a lone acknowledgement is flushed after maxDelayMs', async () => {
  const q = fakeQueue();
  const { acks, settled } = batcher(q, 100, 20);
  acks.complete({ claim: { token: '1:a' } });
  await new Promise((r) => setTimeout(r, 5));
  expect(q.calls).toHaveLength(0);
  await new Promise((r) => setTimeout(r, 40));
  expect(q.calls).toEqual([{ kind: 'complete', tokens: ['1:a'] }]);
  expect(settled).toEqual(['1:a']);
});

test('a failed flush is retried and nothing is lost; rejected (fenced) tokens are reported', async () => {
  const q = fakeQueue();
  const { acks, settled, rejected, errors } = batcher(q, 2, 1);
  q.failNext(1);
  acks.complete({ claim: { token: '1:a' } });
  acks.complete({ claim: { token: 'stale:b' } });
  expect(await acks.flush(5000)).toBe(true);
  expect(errors).toEqual(['Connection is closed.']);
  expect(q.calls).toEqual([{ kind: 'complete', tokens: ['1:a', 'stale:b'] }]);
  expect(rejected).toEqual(['stale:b']);
  expect(settled.sort()).toEqual(['1:a', 'stale:b']);
});

test('drop() forgets a waiting acknowledgement (its lease was lost)', async () => {
  const q = fakeQueue();
  const { acks } = batcher(q, 100, 50);
  acks.complete({ claim: { token: '1:a' } });
  acks.complete({ claim: { token: '2:b' } });
  expect(acks.drop('1:a')).toBe(true);
  await acks.flush();
  expect(q.calls).toEqual([{ kind: 'complete', tokens: ['2:b'] }]);
});

test('sendNow writes what is waiting at once, even while a write is in flight, and flush waits for both', async () => {
  const sent: string[][] = [];
  const gates: (() => void)[] = [];
  const q = {
    complete: (entries: readonly CompleteInput[]) =>
      new Promise<{ completed: number; rejected: string[] }>((resolve) => {
        sent.push(entries.map((e) => e.claim.token));
        gates.push(() => resolve({ completed: entries.length, rejected: [] }));
      }),
  };
  const settled: string[] = [];
  const acks = new AckBatcher(
    () => q as unknown as BatchQueue,
    { maxItems: 100, maxDelayMs: 0 },
    { onSettled: (t) => settled.push(...t), onRejected: () => undefined, onError: () => undefined, onFlushed: () => undefined, onQueueError: () => undefined },
  );
  acks.complete({ claim: { token: '1:a' } });
  await new Promise((r) => setImmediate(r));
  expect(sent).toEqual([['1:a']]);
  // Without sendNow, b would wait for a's write to land.
  acks.complete({ claim: { token: '2:b' } });
  acks.sendNow();
  expect(sent).toEqual([['1:a'], ['2:b']]);
  const flushed = acks.flush();
  gates[1]!();
  await new Promise((r) => setImmediate(r));
  expect(acks.busy).toBe(true);
  gates[0]!();
  expect(await flushed).toBe(true);
  expect(settled.sort()).toEqual(['1:a', '2:b']);
});
