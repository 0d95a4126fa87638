import { allowedFailures } from '../../api/failure-policy.js';
import { itemSource, itemsField } from '../../api/items.js';
import type { TaskBatchSpec } from '../../api/taskbatch.js';
import { SPEC_DEFAULTS } from '../../api/types.generated.js';
import { workerSettingsEnv } from '../../api/worker-settings.js';
import { loadConfig } from '../../worker/index.js';

// api/ is the one home of what a TaskBatch spec means; the operator, `taskbatch run`, the SDK and
// the CLI use it. These tests pin the meanings, and check that the standalone worker's own
// defaults agree with the CRD's (the worker does not import api/, so they could drift).

const spec = (s: Partial<TaskBatchSpec>): TaskBatchSpec => ({ handler: { builtin: 'noop' }, ...s }) as TaskBatchSpec;

test('the worker settings a spec implies, with the CRD defaults', () => {
  expect(workerSettingsEnv(spec({}))).toEqual({
    TASKBATCH_HANDLER: '{"builtin":"noop"}',
    TASKBATCH_POOL_MODE: 'thread',
    TASKBATCH_POOL_SIZE: '4',
    TASKBATCH_ITEM_TIMEOUT_SECONDS: '600',
    TASKBATCH_LEASE_SECONDS: '30',
  });
  expect(workerSettingsEnv(spec({ pool: { mode: 'async', size: 64, maxItemsPerExecutor: 10, maxMemoryMiB: 512 }, itemTimeoutSeconds: 5, leaseSeconds: 10 }))).toMatchObject({
    TASKBATCH_POOL_MODE: 'async',
    TASKBATCH_POOL_SIZE: '64',
    TASKBATCH_ITEM_TIMEOUT_SECONDS: '5',
    TASKBATCH_LEASE_SECONDS: '10',
    TASKBATCH_MAX_ITEMS_PER_EXECUTOR: '10',
    TASKBATCH_MAX_MEMORY_MIB: '512',
  });
});

test("the standalone worker's defaults agree with the CRD's", () => {
  const c = loadConfig({ TASKBATCH_BATCH: 'b', TASKBATCH_HANDLER: 'noop', TASKBATCH_REDIS_URL: 'redis://127.0.0.1:6379' });
  expect(c.itemTimeoutMs).toBe(SPEC_DEFAULTS.itemTimeoutSeconds * 1000);
  expect(c.leaseMs).toBe(SPEC_DEFAULTS.leaseSeconds * 1000);
  expect(c.pool.mode).toBe(SPEC_DEFAULTS['pool.mode']);
});

test('item sources: ids by position, range defaults, the field named in messages', () => {
  expect(itemSource(spec({ range: { end: 7, start: 1, step: 3 } }))!.slice(0, 10)).toEqual([
    { id: 'i0', data: { i: 1 } },
    { id: 'i1', data: { i: 4 } },
  ]);
  expect(itemSource(spec({ range: { end: 3 } }))!.total).toBe(3);
  expect(itemSource(spec({ open: true }))).toBeUndefined();
  expect(itemsField(spec({ items: [{}] }))).toBe('spec.items');
  expect(itemsField(spec({ itemsFrom: { configMapKeyRef: { name: 'c', key: 'k' } } }))).toBe('spec.itemsFrom');
});

test.each([
  [{}, 100, 0],
  [{ maxFailedItems: 5 }, 100, 5],
  [{ maxFailedPercent: 10 }, 55, 5],
  [{ maxFailedItems: 3, maxFailedPercent: 10 }, 100, 3],
])('failurePolicy %j of %i items allows %i failures', (failurePolicy, total, allowed) => {
  expect(allowedFailures(spec({ failurePolicy }), total)).toBe(allowed);
});
