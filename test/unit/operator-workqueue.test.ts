import { WorkQueue } from '../../operator/workqueue.js';
import { ManualClock } from '../support/manual-clock.js';

test('deduplicates keys that are waiting', async () => {
  const q = new WorkQueue();
  q.add('a');
  q.add('b');
  q.add('a');
  expect(q.depth).toBe(2);
  expect(await q.get()).toBe('a');
  expect(await q.get()).toBe('b');
});

test('a key being processed is not handed out again; re-added keys come back after done()', async () => {
  const q = new WorkQueue();
  q.add('a');
  const k = await q.get();
  q.add('a');
  expect(q.depth).toBe(0);
  let second: string | undefined;
  void q.get().then((v) => (second = v));
  await new Promise((r) => setImmediate(r));
  expect(second).toBeUndefined();
  q.done(k!);
  await new Promise((r) => setImmediate(r));
  expect(second).toBe('a');
});

test('addAfter keeps the earliest requeue and fires on the clock', async () => {
  const clock = new ManualClock(0);
  const q = new WorkQueue({ clock });
  q.addAfter('a', 1000);
  q.addAfter('a', 5000);
  q.addAfter('a', 500);
  clock.advance(499);
  expect(q.depth).toBe(0);
  clock.advance(1);
  expect(q.depth).toBe(1);
  clock.advance(10_000);
  expect(q.depth).toBe(1);
});

test('per-key exponential backoff with a cap, reset by forget()', () => {
  const q = new WorkQueue({ clock: new ManualClock(0), baseBackoffMs: 100, maxBackoffMs: 1000 });
  expect([1, 2, 3, 4, 5, 6].map(() => q.addRateLimited('a'))).toEqual([100, 200, 400, 800, 1000, 1000]);
  expect(q.addRateLimited('b')).toBe(100);
  q.forget('a');
  expect(q.addRateLimited('a')).toBe(100);
});

test('shutdown releases waiting getters', async () => {
  const q = new WorkQueue();
  const p = q.get();
  q.shutdown();
  expect(await p).toBeUndefined();
  q.add('x');
  expect(await q.get()).toBeUndefined();
});
