import { applyWorkerResources, maxPoolSize, parseQuantity, parseResourceSettings, workerResourceViolations, type WorkerResourceSettings } from '../../operator/reconcile/worker-resources.js';
import { buildWorkerPod } from '../../operator/reconcile/pods.js';
import { ConfigError, loadConfig } from '../../operator/config.js';
import type { TaskBatch } from '../../api/taskbatch.js';

const settings: WorkerResourceSettings = { defaults: { requests: { cpu: '100m', memory: '256Mi' }, limits: { memory: '1Gi' } }, max: { cpu: '4', memory: '8Gi' } };
const batch = (spec: Record<string, unknown>): TaskBatch =>
  ({
    apiVersion: 'taskbatch.dev/v1alpha1',
    kind: 'TaskBatch',
    metadata: { name: 'b', namespace: 'team-a', uid: 'u' },
    spec: { handler: { builtin: 'noop' }, range: { end: 1 }, ...spec },
  }) as TaskBatch;
const worker = (resources: Record<string, unknown>, extra: Record<string, unknown>[] = []) => ({ template: { spec: { containers: [{ name: 'worker', resources }, ...extra] } } });

test.each<[string | number, number | undefined]>([
  ['100m', 0.1],
  ['4', 4],
  [2, 2],
  ['1Gi', 2 ** 30],
  ['512Mi', 512 * 2 ** 20],
  ['1G', 1e9],
  ['1.5Gi', 1.5 * 2 ** 30],
  ['1e3', 1000],
  ['lots', undefined],
  ['-1', undefined],
])('parseQuantity(%j) = %j', (q, v) => {
  expect(parseQuantity(q)).toBe(v);
});

describe('defaults', () => {
  test("every container without its own values gets the defaults; the template's own values win", () => {
    const spec = { containers: [{ name: 'worker', resources: { requests: { cpu: '2' } } }, { name: 'sidecar' }], initContainers: [{ name: 'init', resources: { limits: { memory: '64Mi' } } }] };
    applyWorkerResources(spec, settings);
    expect(spec.containers[0]!.resources).toEqual({ requests: { cpu: '2', memory: '256Mi' }, limits: { memory: '1Gi' } });
    expect(spec.containers[1]!.resources).toEqual({ requests: { cpu: '100m', memory: '256Mi' }, limits: { memory: '1Gi' } });
    // A limit under the default request: the request follows the limit (as Kubernetes defaults it).
    expect(spec.initContainers[0]!.resources).toEqual({ requests: { cpu: '100m', memory: '64Mi' }, limits: { memory: '64Mi' } });
  });

  test('a request above the default limit raises the limit with it', () => {
    const spec = { containers: [{ name: 'worker', resources: { requests: { memory: '2Gi' } } }] };
    applyWorkerResources(spec, settings);
    expect(spec.containers[0]!.resources).toEqual({ requests: { memory: '2Gi', cpu: '100m' }, limits: { memory: '2Gi' } });
  });

  test('buildWorkerPod applies them to the worker pod', () => {
    const pod = buildWorkerPod(batch({}), 'e1', {
      image: 'w',
      command: ['node'],
      metricsPort: 9090,
      restrictedSecurityContext: true,
      podSecurity: 'restricted',
      terminationGracePeriodSeconds: 30,
      resources: settings,
    });
    expect(pod.spec.containers[0]!.resources).toEqual({ requests: { cpu: '100m', memory: '256Mi' }, limits: { memory: '1Gi' } });
  });
});

describe("the installer's maximum", () => {
  test('within it: no violation', () => {
    expect(workerResourceViolations(batch(worker({ requests: { cpu: '4' }, limits: { memory: '8Gi' } })), settings)).toEqual([]);
  });

  test('a container over it is named by field', () => {
    expect(workerResourceViolations(batch(worker({ limits: { memory: '16Gi', cpu: '5' } })), settings)).toEqual([
      "spec.template.spec.containers[0].resources.limits.memory: 16Gi exceeds the installer's maximum of 8Gi (worker.maxResources, TASKBATCH_WORKER_MAX_RESOURCES)",
      "spec.template.spec.containers[0].resources.limits.cpu: 5 exceeds the installer's maximum of 4 (worker.maxResources, TASKBATCH_WORKER_MAX_RESOURCES)",
    ]);
    expect(workerResourceViolations(batch({ template: { spec: { containers: [{ name: 'worker' }], initContainers: [{ name: 'init', resources: { requests: { cpu: '8' } } }] } } }), settings)).toEqual([
      "spec.template.spec.initContainers[0].resources.requests.cpu: 8 exceeds the installer's maximum of 4 (worker.maxResources, TASKBATCH_WORKER_MAX_RESOURCES)",
      // Its limit follows nothing (no default CPU limit), so only the request is over.
    ]);
  });

  test('containers each within it but adding up to more: named at the pod', () => {
    const v = workerResourceViolations(batch(worker({ limits: { memory: '6Gi' } }, [{ name: 'sidecar', resources: { limits: { memory: '3Gi' } } }])), settings);
    expect(v).toEqual([
      "spec.template.spec: the containers' resources.limits.memory add up to 9216Mi, more than the installer's maximum of 8Gi per worker pod (worker.maxResources, TASKBATCH_WORKER_MAX_RESOURCES)",
    ]);
  });

  test('no maximum configured: nothing is refused', () => {
    expect(workerResourceViolations(batch(worker({ limits: { memory: '1Ti' } })), { defaults: { requests: {}, limits: {} }, max: {} })).toEqual([]);
  });
});

describe("spec.pool.size is bounded by the worker container's memory limit", () => {
  test.each<[string, number | undefined, number | undefined]>([
    ['thread', 2 ** 30, 38], // (1024 - 96) / 24
    ['process', 2 ** 30, 14], // (1024 - 96) / 64
    ['thread', 8 * 2 ** 30, 337],
    ['thread', 64 * 2 ** 20, 1], // never below 1
    ['async', 2 ** 30, undefined],
    ['thread', undefined, undefined], // no memory limit, no bound from memory
  ])('%s with %j bytes: at most %j', (mode, bytes, most) => {
    expect(maxPoolSize(mode, bytes)).toBe(most);
  });

  test('a pool over it is refused naming spec.pool.size, with the figure behind it', () => {
    expect(workerResourceViolations(batch({ pool: { mode: 'thread', size: 64 } }), settings)).toEqual([
      "spec.pool.size: 64 thread executors need about 1632Mi (96Mi + 24Mi each), more than the worker container's memory limit of 1Gi holds (at most 38); lower spec.pool.size, or raise the worker container's resources.limits.memory in spec.template (up to the installer's maximum of 8Gi)",
    ]);
    expect(workerResourceViolations(batch({ pool: { mode: 'thread', size: 38 } }), settings)).toEqual([]);
    expect(workerResourceViolations(batch({ pool: { mode: 'process', size: 15 } }), settings)).toHaveLength(1);
    expect(workerResourceViolations(batch({ pool: { mode: 'async', size: 1024 } }), settings)).toEqual([]);
    // A bigger memory limit in the template allows a bigger pool.
    expect(workerResourceViolations(batch({ pool: { mode: 'thread', size: 64 }, ...worker({ limits: { memory: '2Gi' } }) }), settings)).toEqual([]);
  });
});

describe('settings', () => {
  test('parsed from JSON; a default over the maximum or a bad quantity is a ConfigError naming the setting', () => {
    expect(parseResourceSettings('', '')).toEqual({ defaults: { requests: {}, limits: {} }, max: {} });
    expect(() => loadConfig({ TASKBATCH_WORKER_RESOURCES: '{"limits":{"memory":"16Gi"}}', TASKBATCH_WORKER_MAX_RESOURCES: '{"memory":"8Gi"}' })).toThrow(
      new ConfigError('TASKBATCH_WORKER_RESOURCES.limits.memory=16Gi exceeds TASKBATCH_WORKER_MAX_RESOURCES.memory=8Gi'),
    );
    expect(() => loadConfig({ TASKBATCH_WORKER_MAX_RESOURCES: '{"memory":"lots"}' })).toThrow(/TASKBATCH_WORKER_MAX_RESOURCES.memory="lots" is not a quantity/);
    expect(() => loadConfig({ TASKBATCH_WORKER_RESOURCES: 'nope' })).toThrow(/TASKBATCH_WORKER_RESOURCES="nope" is not JSON/);
  });
});
