/** The per-namespace item quota, as pure functions. */
import { itemsHeldByOthers, quotaDecision, type HeldBatch } from '../../operator/reconcile/quota.js';

const b = (name: string, total: number, done: number, finished = false): HeldBatch => ({ name, total, done, finished });

test('items held by the other unfinished batches of the namespace', () => {
  const batches = [b('self', 500, 0), b('a', 300, 100), b('b', 1000, 1000, true), b('c', 50, 60)];
  expect(itemsHeldByOthers(batches, 'self')).toBe(200);
  expect(itemsHeldByOthers([], 'self')).toBe(0);
});

test.each([
  { quota: 0, total: 10 ** 9, need: 10 ** 9, held: 10 ** 9, kind: 'fits' },
  { quota: 1000, total: 1000, need: 1000, held: 0, kind: 'fits' },
  { quota: 1000, total: 300, need: 300, held: 700, kind: 'fits' },
  { quota: 1000, total: 300, need: 300, held: 701, kind: 'wait' },
  { quota: 1000, total: 300, need: 100, held: 900, kind: 'fits' },
  { quota: 1000, total: 1001, need: 0, held: 0, kind: 'never' },
])('quota $quota, total $total, need $need, held by others $held: $kind', ({ quota, total, need, held, kind }) => {
  const d = quotaDecision(quota, 'team-a', 'spec.range', total, need, held);
  expect(d.kind).toBe(kind);
  if (d.kind === 'never') expect(d.message).toMatch(/^spec\.range: 1001 items exceed namespace team-a's quota of 1000 items held in Redis \(operator setting TASKBATCH_NAMESPACE_ITEM_QUOTA\)/);
  if (d.kind === 'wait') expect(d.message).toContain('other batches hold 701 items and this one needs 300, over the quota of 1000');
});
