/**
 * The node agent's pure parts (image map, env resolution, $(VAR) expansion, quantities), table
 * tested without a cluster. They sit in the cluster tier because they belong to its harness.
 */
import type { V1ConfigMap, V1Container, V1Pod, V1Secret } from '@kubernetes/client-node';
import { join } from 'node:path';
import { defaultImageMap, EnvConfigError, expandVars, parseQuantity, resolveContainerCommand, resolveContainerEnv, type EnvSources } from '../../localcluster/index.js';

const ROOT = '/repo';
const NODE = process.execPath;
const rules = defaultImageMap(ROOT, NODE);

describe('image map', () => {
  test.each([
    ['taskbatch/worker:dev', ['node', '/app/dist/worker/main.js', '--x'], NODE, ['/repo/dist/worker/main.js', '--x'], '/repo'],
    ['ghcr.io/acme/taskbatch-operator:0.1.0', undefined, NODE, ['/repo/dist/operator/main.js'], '/repo'],
    ['ghcr.io/taskbatch/worker:0.1.0', undefined, NODE, ['/repo/dist/worker/main.js'], '/repo'],
    // The worker image's init runs what follows it: the agent's processes have no PID 1 to be.
    ['ghcr.io/taskbatch/worker:0.1.0', ['tini', '--', 'node', '/app/dist/worker/main.js'], NODE, ['/repo/dist/worker/main.js'], '/repo'],
    ['ghcr.io/taskbatch/worker:0.1.0', ['tini', '-s', 'node', '/app/dist/worker/main.js', '--', '-x'], NODE, ['/repo/dist/worker/main.js', '--', '-x'], '/repo'],
  ])('%s with command %j runs %s %j in %s', (image, command, exe, args, cwd) => {
    const r = resolveContainerCommand({ image, ...(command ? { command } : {}) }, rules, '/usr/bin:/bin');
    expect(r).toMatchObject({ ok: true, executable: exe, args, workingDir: cwd });
  });

  test('args replace the image CMD; --flag=/app/... paths are rewritten; workingDir is mapped', () => {
    const r = resolveContainerCommand({ image: 'taskbatch/worker:dev', args: ['--handler=/app/handlers/x.js', '/apple'], workingDir: '/app/sub' }, rules, '/usr/bin');
    expect(r).toMatchObject({ ok: true, args: ['/repo/dist/worker/main.js', '--handler=/repo/handlers/x.js', '/apple'], workingDir: '/repo/sub' });
  });

  test('other images run their command as is when it exists here, else fail with StartError', () => {
    expect(resolveContainerCommand({ image: 'busybox', command: ['sh', '-c', 'true'] }, rules, '/usr/bin:/bin')).toMatchObject({ ok: true, executable: expect.stringMatching(/\/sh$/) });
    const missing = resolveContainerCommand({ image: 'busybox', command: ['no-such-binary'] }, rules, '/usr/bin:/bin');
    expect(missing).toMatchObject({ ok: false, reason: 'StartError' });
    const noCommand = resolveContainerCommand({ image: 'nginx:1' }, rules, '/usr/bin');
    expect(noCommand).toMatchObject({ ok: false, reason: 'StartError', message: expect.stringContaining('has no command') });
  });

  test('a custom rule: regexp match, command replacement, image ENV', () => {
    const custom = [{ image: /^docker\.io\/library\/redis:/, entrypoint: ['redis-server'], commands: { 'redis-server': '/bin/true' }, env: { FROM_IMAGE: '1' } }];
    expect(resolveContainerCommand({ image: 'docker.io/library/redis:7', args: ['--port', '1'] }, custom, '')).toMatchObject({
      ok: true,
      executable: '/bin/true',
      args: ['--port', '1'],
      imageEnv: { FROM_IMAGE: '1' },
    });
  });
});

describe('$(VAR) expansion (Kubernetes rules)', () => {
  const vars: Record<string, string> = { A: 'a', B: 'b$(A)' };
  const map = (n: string): string => vars[n] ?? `$(${n})`;
  test.each([
    ['plain', 'plain'],
    ['$(A)', 'a'],
    ['x$(A)y$(B)', 'xayb$(A)'],
    ['$$(A)', '$(A)'],
    ['$$$(A)', '$a'],
    ['$(MISSING)', '$(MISSING)'],
    ['$(A', '$(A'],
    ['$A', '$A'],
    ['end$', 'end$'],
  ])('%s -> %s', (input, out) => expect(expandVars(input, map)).toBe(out));
});

test.each([
  ['500m', 0.5],
  ['2', 2],
  ['1Gi', 2 ** 30],
  ['64Mi', 64 * 2 ** 20],
  ['1k', 1000],
  ['1e3', 1000],
  ['1.5', 1.5],
])('parseQuantity(%s) = %d', (q, n) => expect(parseQuantity(q)).toBeCloseTo(n));

describe('container env', () => {
  const secrets: Record<string, V1Secret> = { s: { data: { k: Buffer.from('secret-v').toString('base64'), 'bad key': 'eA==' } } };
  const configMaps: Record<string, V1ConfigMap> = { c: { data: { k: 'cm-v', OTHER: 'o' } } };
  const sources: EnvSources = { getSecret: async (_ns, n) => secrets[n], getConfigMap: async (_ns, n) => configMaps[n] };
  const pod: V1Pod = { metadata: { name: 'p', namespace: 'ns', uid: 'u-1', annotations: { note: 'hi' } }, spec: { containers: [], serviceAccountName: 'sa' } };
  const ctx = { pod, podIP: '127.0.10.7', hostIP: '127.0.0.1', nodeName: 'n1', apiServerHost: '127.0.0.1', apiServerPort: 6443, nodeCpu: 2, nodeMemoryBytes: 2 ** 33 };
  const env = (c: Partial<V1Container>): Promise<Record<string, string>> => resolveContainerEnv({ name: 'c', ...c }, ctx, sources);

  test('envFrom first, env overrides, service variables last', async () => {
    const e = await env({
      envFrom: [{ configMapRef: { name: 'c' } }, { secretRef: { name: 's' }, prefix: 'S_' }],
      env: [
        { name: 'OTHER', value: 'env wins' },
        { name: 'REF', value: '$(k)/$(S_k)/$(KUBERNETES_SERVICE_PORT)' },
      ],
    });
    expect(e).toMatchObject({ k: 'cm-v', OTHER: 'env wins', S_k: 'secret-v', REF: 'cm-v/secret-v/6443', KUBERNETES_SERVICE_HOST: '127.0.0.1' });
    expect(e['S_bad key']).toBeUndefined();
  });

  test('downward API and resources', async () => {
    const e = await env({
      env: [
        { name: 'IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
        { name: 'NOTE', valueFrom: { fieldRef: { fieldPath: "metadata.annotations['note']" } } },
        { name: 'CPU', valueFrom: { resourceFieldRef: { resource: 'limits.cpu' } } },
        { name: 'CPU_M', valueFrom: { resourceFieldRef: { resource: 'requests.cpu', divisor: '1m' } } },
      ],
      resources: { requests: { cpu: '250m' } },
    });
    expect(e).toMatchObject({ IP: '127.0.10.7', NOTE: 'hi', CPU: '2', CPU_M: '250' });
  });

  test('a missing non-optional source is an EnvConfigError naming it', async () => {
    await expect(env({ env: [{ name: 'X', valueFrom: { secretKeyRef: { name: 'nope', key: 'k' } } }] })).rejects.toThrow(new EnvConfigError('secret "nope" not found'));
    await expect(env({ env: [{ name: 'X', valueFrom: { configMapKeyRef: { name: 'c', key: 'absent' } } }] })).rejects.toThrow("couldn't find key absent in ConfigMap ns/c");
    await expect(env({ envFrom: [{ secretRef: { name: 'gone', optional: true } }] })).resolves.toBeDefined();
  });
});

test('the default map points at this repository when built from it', () => {
  const r = resolveContainerCommand({ image: 'taskbatch/worker:x' }, defaultImageMap('/r/'), '/usr/bin');
  expect(r.ok && r.args[0]).toBe(join('/r', 'dist/worker/main.js'));
});
