import { readFileSync } from 'node:fs';
import { CRD_PATH, TYPES_PATH, generateTypes } from '../../hack/gen-types.js';
import { setCondition } from '../../operator/reconcile/conditions.js';
import { itemSource } from '../../api/items.js';
import { buildWorkerPod, type WorkerPodConfig } from '../../operator/reconcile/pods.js';
import { loadConfig } from '../../operator/config.js';
import type { TaskBatch } from '../../api/taskbatch.js';

test('the TypeScript types are generated from the CRD and up to date', () => {
  expect(readFileSync(TYPES_PATH, 'utf8')).toBe(generateTypes(readFileSync(CRD_PATH, 'utf8')));
});

describe('conditions', () => {
  test('lastTransitionTime moves only when the status flips', () => {
    const t1 = new Date('2026-01-01T00:00:00Z');
    const t2 = new Date('2026-01-01T00:01:00Z');
    let c = setCondition([], { type: 'Progressing', status: 'True', reason: 'ItemsRunning', message: '1/10' }, 1, t1);
    c = setCondition(c, { type: 'Progressing', status: 'True', reason: 'ItemsRunning', message: '5/10' }, 2, t2);
    expect(c).toEqual([{ type: 'Progressing', status: 'True', reason: 'ItemsRunning', message: '5/10', observedGeneration: 2, lastTransitionTime: '2026-01-01T00:00:00Z' }]);
    c = setCondition(c, { type: 'Progressing', status: 'False', reason: 'Finished', message: 'x'.repeat(5000) }, 2, t2);
    expect(c[0]!.lastTransitionTime).toBe('2026-01-01T00:01:00Z');
    expect(c[0]!.message!.length).toBeLessThanOrEqual(1024);
  });
});

describe('item sources', () => {
  test('range items have deterministic ids and values', () => {
    const s = itemSource({ handler: { builtin: 'noop' }, range: { start: 10, end: 20, step: 3 } })!;
    expect(s.total).toBe(4);
    expect(s.slice(0, 10)).toEqual([
      { id: 'i0', data: { i: 10 } },
      { id: 'i1', data: { i: 13 } },
      { id: 'i2', data: { i: 16 } },
      { id: 'i3', data: { i: 19 } },
    ]);
    expect(s.slice(3, 10)).toEqual([{ id: 'i3', data: { i: 19 } }]);
    expect(s.slice(4, 10)).toEqual([]);
  });

  test('negative steps count down', () => {
    expect(
      itemSource({ handler: { builtin: 'noop' }, range: { start: 5, end: 0, step: -2 } })!
        .slice(0, 9)
        .map((i) => i.data),
    ).toEqual([{ i: 5 }, { i: 3 }, { i: 1 }]);
  });

  test('JSON Lines from a ConfigMap; a bad line names its number', () => {
    const spec = { handler: { builtin: 'noop' as const }, itemsFrom: { configMapKeyRef: { name: 'in', key: 'items.jsonl' } } };
    const s = itemSource(spec, '{"a":1}\n\n"two"\n{bad\n')!;
    expect(s.total).toBe(3);
    expect(s.slice(0, 2)).toEqual([
      { id: 'i0', data: { a: 1 } },
      { id: 'i1', data: 'two' },
    ]);
    expect(() => s.slice(2, 1)).toThrow(/line 3 of ConfigMap in key items.jsonl is not valid JSON/);
  });
});

describe('worker pods', () => {
  const cfg: WorkerPodConfig = {
    image: 'taskbatch/worker:dev',
    command: ['node', '/app/dist/worker/main.js'],
    metricsPort: 9090,
    restrictedSecurityContext: true,
    podSecurity: 'restricted',
    terminationGracePeriodSeconds: 60,
    defaultRedis: { url: 'redis://redis:6379' },
  };
  const batch = (template?: unknown): TaskBatch => ({
    apiVersion: 'taskbatch.dev/v1alpha1',
    kind: 'TaskBatch',
    metadata: { name: 'resize', namespace: 'media', uid: 'u-1' },
    spec: { handler: { builtin: 'sleep' }, pool: { mode: 'process', size: 3 }, range: { end: 10 }, ...(template ? { template: template as Record<string, unknown> } : {}) },
  });

  test('a default pod: owned, labelled, restricted, with the worker env', () => {
    const pod = buildWorkerPod(batch(), 'e1', cfg);
    expect(pod.metadata.ownerReferences).toEqual([{ apiVersion: 'taskbatch.dev/v1alpha1', kind: 'TaskBatch', name: 'resize', uid: 'u-1', controller: true, blockOwnerDeletion: true }]);
    expect(pod.metadata.labels?.['taskbatch.dev/batch']).toBe('resize');
    expect(pod.metadata.annotations?.['taskbatch.dev/queue-epoch']).toBe('e1');
    const c = pod.spec.containers[0]!;
    expect(c).toMatchObject({ name: 'worker', image: 'taskbatch/worker:dev', command: ['node', '/app/dist/worker/main.js'] });
    const env = Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value ?? e.valueFrom]));
    expect(env).toMatchObject({
      TASKBATCH_BATCH: 'resize',
      TASKBATCH_NAMESPACE: 'media',
      TASKBATCH_POOL_MODE: 'process',
      TASKBATCH_POOL_SIZE: '3',
      TASKBATCH_QUEUE_EPOCH: 'e1',
      TASKBATCH_REDIS_URL: 'redis://redis:6379',
      TASKBATCH_HANDLER: '{"builtin":"sleep"}',
    });
    expect(c.securityContext).toMatchObject({ runAsNonRoot: true, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } });
    expect(pod.spec.restartPolicy).toBe('Never');
    expect(c.readinessProbe).toMatchObject({ httpGet: { path: '/readyz', port: 9090 } });
    expect(c.livenessProbe).toMatchObject({ httpGet: { path: '/healthz', port: 9090 } });
  });

  test('the template is kept; the container named worker gets the command and env', () => {
    const pod = buildWorkerPod(
      batch({
        metadata: { labels: { team: 'a' } },
        spec: {
          containers: [
            { name: 'sidecar', image: 'envoy' },
            {
              name: 'worker',
              image: 'mine:1',
              env: [
                { name: 'MY_VAR', value: '1' },
                { name: 'TASKBATCH_BATCH', value: 'spoofed' },
              ],
              securityContext: { runAsUser: 1000 },
            },
          ],
        },
      }),
      'e1',
      cfg,
    );
    expect(pod.metadata.labels).toMatchObject({ team: 'a', 'taskbatch.dev/batch': 'resize' });
    // workerPodSecurity=restricted (the default) hardens the sidecar too; it used to pass through bare.
    expect(pod.spec.containers[0]).toEqual({ name: 'sidecar', image: 'envoy', securityContext: { allowPrivilegeEscalation: false, runAsNonRoot: true, capabilities: { drop: ['ALL'] } } });
    const w = pod.spec.containers[1]!;
    expect(w.image).toBe('mine:1');
    expect(w.env?.filter((e) => e.name === 'TASKBATCH_BATCH')).toEqual([{ name: 'TASKBATCH_BATCH', value: 'resize' }]);
    expect(w.env?.find((e) => e.name === 'MY_VAR')?.value).toBe('1');
    expect(w.securityContext).toMatchObject({ runAsUser: 1000, runAsNonRoot: true });
  });

  test("the termination grace covers the item timeout (+30 s), so a draining worker deleted mid-item is not killed; a template's own value wins", () => {
    expect(buildWorkerPod(batch(), 'e1', cfg).spec.terminationGracePeriodSeconds).toBe(630); // itemTimeoutSeconds defaults to 600
    const withTimeout = (itemTimeoutSeconds: number, template?: unknown): TaskBatch => ({ ...batch(template), spec: { ...batch(template).spec, itemTimeoutSeconds } });
    expect(buildWorkerPod(withTimeout(3600), 'e1', cfg).spec.terminationGracePeriodSeconds).toBe(3630);
    expect(buildWorkerPod(withTimeout(10), 'e1', cfg).spec.terminationGracePeriodSeconds).toBe(60); // never below the installer's worker grace
    expect(buildWorkerPod(withTimeout(3600, { spec: { terminationGracePeriodSeconds: 5, containers: [{ name: 'worker' }] } }), 'e1', cfg).spec.terminationGracePeriodSeconds).toBe(5);
  });
});

describe('operator config', () => {
  test('defaults and validation errors name the variable', () => {
    expect(loadConfig({}).concurrency).toBe(4);
    // The worker image's init, so that orphaned processes are reaped (Dockerfile.worker's ENTRYPOINT).
    expect(loadConfig({}).workerCommand).toEqual(['tini', '--', 'node', '/app/dist/worker/main.js']);
    expect(() => loadConfig({ TASKBATCH_CONCURRENCY: 'lots' })).toThrow(/TASKBATCH_CONCURRENCY="lots" is invalid: expected an integer between 1 and 64/);
    expect(() => loadConfig({ TASKBATCH_WORKER_COMMAND: 'node x.js' })).toThrow(/TASKBATCH_WORKER_COMMAND=.* expected a JSON array of strings/);
    expect(() => loadConfig({ TASKBATCH_LEADER_ELECTION: 'yes' })).toThrow(/expected true or false/);
  });
});
