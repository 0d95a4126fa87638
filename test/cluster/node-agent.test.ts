/**
 * The node agent against a real API server: pods created through the API run as local
 * processes with the environment the pod spec gives them, report their exit codes as phases,
 * get SIGTERM (then SIGKILL after the grace period) on deletion, restart by policy, and each
 * serve on their own loopback IP.
 */
import { CoreV1Api, type V1Container, type V1Pod } from '@kubernetes/client-node';
import { request } from 'node:http';
import { join } from 'node:path';
import { repoRoot, startControlPlane, startNodeAgent, type ControlPlane, type NodeAgent } from '../../localcluster/index.js';
import { createNamespace, nodeScript, waitFor, waitForPhase, waitForPodGone } from './helpers.js';

// jest's per-project testTimeout does not apply (a global-only option), so each hook/test names its own.
const TIMEOUT_MS = 120_000;

let cp: ControlPlane;
let agent: NodeAgent;
let core: CoreV1Api;

beforeAll(async () => {
  cp = await startControlPlane();
  agent = await startNodeAgent({ kubeConfig: cp.kubeConfig, restartBackoff: { initialMs: 200, maxMs: 1000 } });
  core = cp.kubeConfig.makeApiClient(CoreV1Api);
}, TIMEOUT_MS);

afterAll(async () => {
  await agent?.stop();
  await cp?.stop();
}, TIMEOUT_MS);

function pod(name: string, container: Partial<V1Container>, spec: Partial<NonNullable<V1Pod['spec']>> = {}): V1Pod {
  return {
    metadata: { name, labels: { app: 'agent-test' } },
    spec: { restartPolicy: 'Never', ...spec, containers: [{ name: 'main', image: 'local/test', ...container }] },
  };
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function httpGet(host: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path: '/', timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.end();
  });
}

test(
  'registers a Ready node that kubectl sees',
  async () => {
    const node = await core.readNode({ name: agent.nodeName });
    expect(node.status?.conditions?.find((c) => c.type === 'Ready')?.status).toBe('True');
    expect(node.metadata?.labels?.['kubernetes.io/hostname']).toBe(agent.nodeName);
    expect(agent.podRanges[0]).toMatch(/^127\.0\.\d+\.0\/24$/);
    const r = await cp.kubectl(['get', 'lease', '-n', 'kube-node-lease', agent.nodeName, '-o', 'jsonpath={.spec.holderIdentity}']);
    expect(r.stdout).toBe(agent.nodeName);
  },
  TIMEOUT_MS,
);

test(
  'a pod runs as a local process with the env its spec gives it; its exit code becomes its phase',
  async () => {
    const ns = await createNamespace(core, 'env');
    await core.createNamespacedSecret({ namespace: ns, body: { metadata: { name: 'creds' }, stringData: { password: 's3cr3t', token: 'tok' } } });
    await core.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: 'settings' }, data: { mode: 'fast', LEVEL: 'debug' } } });
    await core.createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name: 'runner' } } });
    const names = [
      'PLAIN',
      'EXPANDED',
      'ESCAPED',
      'PASSWORD',
      'MODE',
      'CFG_LEVEL',
      'SEC_token',
      'POD_NAME',
      'POD_NAMESPACE',
      'POD_UID',
      'POD_IP',
      'NODE_NAME',
      'SA_NAME',
      'APP_LABEL',
      'MEM_LIMIT_MI',
      'KUBERNETES_SERVICE_HOST',
      'KUBERNETES_SERVICE_PORT',
      'KUBECONFIG',
      'HOME',
    ];
    const script = `
    const out = {};
    for (const n of ${JSON.stringify(names)}) out[n] = process.env[n];
    out.inheritedSecretsLeak = process.env.TASKBATCH_CONTROLPLANE_BIN ?? null;
    console.log(JSON.stringify(out));
    console.error('to stderr');
    process.exit(7);`;
    await core.createNamespacedPod({
      namespace: ns,
      body: pod(
        'env-check',
        {
          command: nodeScript(script),
          envFrom: [
            { configMapRef: { name: 'settings' }, prefix: 'CFG_' },
            { secretRef: { name: 'creds' }, prefix: 'SEC_' },
          ],
          env: [
            { name: 'PLAIN', value: 'plain value' },
            { name: 'EXPANDED', value: 'pod=$(POD_NAME_EARLY) mode=$(CFG_mode)' },
            { name: 'ESCAPED', value: '$$(NOT_EXPANDED) $(UNDEFINED_VAR)' },
            { name: 'PASSWORD', valueFrom: { secretKeyRef: { name: 'creds', key: 'password' } } },
            { name: 'MODE', valueFrom: { configMapKeyRef: { name: 'settings', key: 'mode' } } },
            { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
            { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
            { name: 'POD_UID', valueFrom: { fieldRef: { fieldPath: 'metadata.uid' } } },
            { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
            { name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
            { name: 'SA_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.serviceAccountName' } } },
            { name: 'APP_LABEL', valueFrom: { fieldRef: { fieldPath: "metadata.labels['app']" } } },
            { name: 'MEM_LIMIT_MI', valueFrom: { resourceFieldRef: { resource: 'limits.memory', divisor: '1Mi' } } },
            { name: 'OPTIONAL_MISSING', valueFrom: { secretKeyRef: { name: 'nope', key: 'x', optional: true } } },
          ],
          resources: { limits: { memory: '64Mi' } },
        },
        { serviceAccountName: 'runner' },
      ),
    });
    const done = await waitForPhase(core, ns, 'env-check', ['Succeeded', 'Failed']);
    expect(done.status?.phase).toBe('Failed');
    const cs = done.status?.containerStatuses?.[0];
    expect(cs?.state?.terminated?.exitCode).toBe(7);
    expect(cs?.state?.terminated?.reason).toBe('Error');
    expect(cs?.restartCount).toBe(0);
    expect(done.spec?.nodeName).toBe(agent.nodeName);

    const podIP = done.status?.podIP ?? '';
    expect(podIP).toMatch(/^127\.0\.\d+\.\d+$/);
    expect(podIP.startsWith('127.0.0.')).toBe(false);
    expect(done.status?.podIPs).toEqual([{ ip: podIP }]);

    const log = agent.podLog(ns, 'env-check');
    expect(log).toContain('to stderr');
    const env = JSON.parse(log.split('\n')[0] ?? '{}') as Record<string, string | null>;
    expect(env).toMatchObject({
      PLAIN: 'plain value',
      EXPANDED: 'pod=$(POD_NAME_EARLY) mode=fast',
      ESCAPED: '$(NOT_EXPANDED) $(UNDEFINED_VAR)',
      PASSWORD: 's3cr3t',
      MODE: 'fast',
      CFG_LEVEL: 'debug',
      SEC_token: 'tok',
      POD_NAME: 'env-check',
      POD_NAMESPACE: ns,
      POD_UID: done.metadata?.uid,
      POD_IP: podIP,
      NODE_NAME: agent.nodeName,
      SA_NAME: 'runner',
      APP_LABEL: 'agent-test',
      MEM_LIMIT_MI: '64',
      KUBERNETES_SERVICE_HOST: cp.host,
      KUBERNETES_SERVICE_PORT: String(cp.port),
      inheritedSecretsLeak: null,
    });
    expect(env.KUBECONFIG).toMatch(/kubeconfig$/);
    expect(env.HOME).toContain(agent.dir);
    expect(env.OPTIONAL_MISSING).toBeUndefined();

    // kubectl logs goes API server → the agent's kubelet endpoint.
    const logs = await cp.kubectl(['logs', '-n', ns, 'env-check']);
    expect(logs.code).toBe(0);
    expect(logs.stdout).toContain('"PLAIN":"plain value"');

    await core.createNamespacedPod({ namespace: ns, body: pod('ok', { command: nodeScript('process.exit(0)') }) });
    const ok = await waitForPhase(core, ns, 'ok', ['Succeeded', 'Failed']);
    expect(ok.status?.phase).toBe('Succeeded');
    expect(ok.status?.containerStatuses?.[0]?.state?.terminated?.reason).toBe('Completed');
    expect(ok.status?.conditions?.find((c) => c.type === 'Ready')).toMatchObject({ status: 'False', reason: 'PodCompleted' });
  },
  TIMEOUT_MS,
);

test(
  'a missing Secret keeps the container in CreateContainerConfigError until it exists',
  async () => {
    const ns = await createNamespace(core, 'cfgerr');
    await core.createNamespacedPod({
      namespace: ns,
      body: pod('waits', { command: nodeScript('console.log(process.env.X)'), env: [{ name: 'X', valueFrom: { secretKeyRef: { name: 'late', key: 'x' } } }] }),
    });
    const waiting = await waitFor('CreateContainerConfigError', async () => {
      const p = await core.readNamespacedPod({ namespace: ns, name: 'waits' });
      const w = p.status?.containerStatuses?.[0]?.state?.waiting;
      return w?.reason === 'CreateContainerConfigError' ? p : undefined;
    });
    expect(waiting.status?.phase).toBe('Pending');
    expect(waiting.status?.containerStatuses?.[0]?.state?.waiting?.message).toContain('secret "late" not found');
    await core.createNamespacedSecret({ namespace: ns, body: { metadata: { name: 'late' }, stringData: { x: 'arrived' } } });
    await waitForPhase(core, ns, 'waits', ['Succeeded']);
    expect(agent.podLog(ns, 'waits')).toBe('arrived\n');
  },
  TIMEOUT_MS,
);

test(
  'deleting a pod delivers SIGTERM; the pod disappears once its process exits',
  async () => {
    const ns = await createNamespace(core, 'term');
    const script = `
    process.on('SIGTERM', () => { console.log('got SIGTERM'); setTimeout(() => process.exit(0), 100); });
    console.log('ready'); setInterval(() => {}, 1000);`;
    await core.createNamespacedPod({ namespace: ns, body: pod('graceful', { command: nodeScript(script) }, { restartPolicy: 'Always', terminationGracePeriodSeconds: 30 }) });
    await waitForPhase(core, ns, 'graceful', ['Running']);
    const proc = await agent.waitForPodProcess(ns, 'graceful');
    await waitFor('the script to install its handler', () => agent.podLog(ns, 'graceful').includes('ready'));
    const t0 = Date.now();
    await core.deleteNamespacedPod({ namespace: ns, name: 'graceful' });
    await waitForPodGone(core, ns, 'graceful');
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(isAlive(proc.pid)).toBe(false);
    expect(agent.podLog(ns, 'graceful')).toContain('got SIGTERM');
  },
  TIMEOUT_MS,
);

test(
  'a pod ignoring SIGTERM is killed after its grace period',
  async () => {
    const ns = await createNamespace(core, 'kill');
    const script = `
    process.on('SIGTERM', () => console.log('ignoring SIGTERM'));
    console.log('ready'); setInterval(() => {}, 1000);`;
    await core.createNamespacedPod({ namespace: ns, body: pod('stubborn', { command: nodeScript(script) }, { terminationGracePeriodSeconds: 2 }) });
    const proc = await agent.waitForPodProcess(ns, 'stubborn');
    await waitFor('the script to install its handler', () => agent.podLog(ns, 'stubborn').includes('ready'));
    const t0 = Date.now();
    await core.deleteNamespacedPod({ namespace: ns, name: 'stubborn' });
    await waitFor('the process to die', () => !isAlive(proc.pid), 15_000, 20);
    const killedAfterMs = Date.now() - t0;
    expect(killedAfterMs).toBeGreaterThanOrEqual(1900);
    expect(killedAfterMs).toBeLessThan(6000);
    await waitForPodGone(core, ns, 'stubborn');
    expect(agent.podLog(ns, 'stubborn')).toContain('ignoring SIGTERM');
  },
  TIMEOUT_MS,
);

test(
  'restartPolicy: OnFailure restarts a failing container; Always restarts one killed with kill -9',
  async () => {
    const ns = await createNamespace(core, 'restart');
    // HOME is per pod and survives restarts: the first attempt fails, the second succeeds.
    const flaky = `
    const f = require('path').join(process.env.HOME, 'attempted');
    if (require('fs').existsSync(f)) { console.log('second attempt'); process.exit(0); }
    require('fs').writeFileSync(f, '1'); console.log('first attempt'); process.exit(3);`;
    await core.createNamespacedPod({ namespace: ns, body: pod('flaky', { command: nodeScript(flaky) }, { restartPolicy: 'OnFailure' }) });
    const done = await waitForPhase(core, ns, 'flaky', ['Succeeded', 'Failed']);
    expect(done.status?.phase).toBe('Succeeded');
    const cs = done.status?.containerStatuses?.[0];
    expect(cs?.restartCount).toBe(1);
    expect(cs?.lastState?.terminated?.exitCode).toBe(3);
    expect(agent.podLog(ns, 'flaky')).toBe('first attempt\nsecond attempt\n');
    // kubectl logs shows the current attempt; --previous the one before.
    expect((await cp.kubectl(['logs', '-n', ns, 'flaky'])).stdout).toBe('second attempt\n');
    expect((await cp.kubectl(['logs', '-n', ns, 'flaky', '--previous'])).stdout).toBe('first attempt\n');

    await core.createNamespacedPod({ namespace: ns, body: pod('victim', { command: nodeScript('setInterval(() => {}, 1000)') }, { restartPolicy: 'Always' }) });
    const first = await agent.waitForPodProcess(ns, 'victim');
    process.kill(first.pid, 'SIGKILL');
    const restarted = await waitFor('the container to restart', async () => {
      const p = await core.readNamespacedPod({ namespace: ns, name: 'victim' });
      const s = p.status?.containerStatuses?.[0];
      return s?.restartCount === 1 && s.state?.running ? p : undefined;
    });
    expect(restarted.status?.phase).toBe('Running');
    expect(restarted.status?.containerStatuses?.[0]?.lastState?.terminated).toMatchObject({ exitCode: 137, reason: 'Error' });
    const second = await agent.waitForPodProcess(ns, 'victim');
    expect(second.pid).not.toBe(first.pid);
    expect(second.podIP).toBe(first.podIP);
    await core.deleteNamespacedPod({ namespace: ns, name: 'victim', gracePeriodSeconds: 1 });
    await waitForPodGone(core, ns, 'victim');
  },
  TIMEOUT_MS,
);

test(
  'images: taskbatch images run the repository JS; unknown binaries fail the pod with a clear reason',
  async () => {
    const ns = await createNamespace(core, 'images');
    await core.createNamespacedPod({
      namespace: ns,
      body: pod('mapped', {
        image: 'ghcr.io/example/taskbatch-worker:dev',
        command: ['node', '/app/dist/test/cluster/fixtures/report.js', '--handler=/app/examples/x.js'],
        env: [{ name: 'REPORT_ENV', value: 'REPORT_ENV' }],
      }),
    });
    await waitForPhase(core, ns, 'mapped', ['Succeeded']);
    const report = JSON.parse(agent.podLog(ns, 'mapped').trim()) as { argv: string[]; cwd: string; execPath: string };
    const root = repoRoot();
    expect(report.execPath).toBe(process.execPath);
    expect(report.argv[1]).toBe(join(root, 'dist/test/cluster/fixtures/report.js'));
    expect(report.argv[2]).toBe(`--handler=${join(root, 'examples/x.js')}`);
    expect(report.cwd).toBe(root);

    await core.createNamespacedPod({ namespace: ns, body: pod('unknown', { image: 'docker.io/library/busybox:1.36', command: ['definitely-not-installed-here', '-c', 'true'] }) });
    const failed = await waitForPhase(core, ns, 'unknown', ['Failed', 'Succeeded']);
    expect(failed.status?.phase).toBe('Failed');
    const t = failed.status?.containerStatuses?.[0]?.state?.terminated;
    expect(t?.reason).toBe('StartError');
    expect(t?.exitCode).toBe(128);
    expect(t?.message).toContain('"definitely-not-installed-here" not found on this machine');
    expect(t?.message).toContain("busybox:1.36 has no rule in the node agent's image map");
  },
  TIMEOUT_MS,
);

test(
  'two pods listen on the same port side by side, each on its own IP; readiness follows the probe',
  async () => {
    const ns = await createNamespace(core, 'ports');
    const server = `
    setTimeout(() => require('http').createServer((req, res) => res.end(process.env.POD_NAME))
      .listen(8080, process.env.POD_IP, () => console.log('listening on', process.env.POD_IP)), 500);`;
    const mk = (name: string): V1Pod =>
      pod(
        name,
        {
          command: nodeScript(server),
          ports: [{ name: 'http', containerPort: 8080 }],
          env: [
            { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
            { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
          ],
          readinessProbe: { httpGet: { port: 'http', path: '/' }, periodSeconds: 1, failureThreshold: 1 },
        },
        { restartPolicy: 'Always', terminationGracePeriodSeconds: 5 },
      );
    await core.createNamespacedPod({ namespace: ns, body: mk('web-a') });
    await core.createNamespacedPod({ namespace: ns, body: mk('web-b') });
    const ready = async (name: string): Promise<V1Pod> =>
      waitFor(
        `${name} to be Ready`,
        async () => {
          const p = await core.readNamespacedPod({ namespace: ns, name });
          return p.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True' ? p : undefined;
        },
        20_000,
      );
    const [a, b] = await Promise.all([ready('web-a'), ready('web-b')]);
    const ipA = a.status?.podIP ?? '';
    const ipB = b.status?.podIP ?? '';
    expect(ipA).not.toBe(ipB);
    expect(await httpGet(ipA, 8080)).toBe('web-a');
    expect(await httpGet(ipB, 8080)).toBe('web-b');
    expect(a.status?.containerStatuses?.[0]?.ready).toBe(true);
    await core.deleteCollectionNamespacedPod({ namespace: ns });
    await Promise.all([waitForPodGone(core, ns, 'web-a'), waitForPodGone(core, ns, 'web-b')]);
  },
  TIMEOUT_MS,
);

test(
  'a force-deleted pod ignoring SIGTERM is stopped within seconds; a failing liveness probe restarts a container',
  async () => {
    const ns = await createNamespace(core, 'force');
    const stubborn = `process.on('SIGTERM', () => console.log('ignoring SIGTERM')); console.log('ready'); setInterval(() => {}, 1000);`;
    await core.createNamespacedPod({ namespace: ns, body: pod('forced', { command: nodeScript(stubborn) }, { terminationGracePeriodSeconds: 60 }) });
    const proc = await agent.waitForPodProcess(ns, 'forced');
    await waitFor('the script to install its handler', () => agent.podLog(ns, 'forced').includes('ready'));
    const t0 = Date.now();
    await core.deleteNamespacedPod({ namespace: ns, name: 'forced', gracePeriodSeconds: 0 });
    await waitFor('the process to die', () => !isAlive(proc.pid), 15_000, 20);
    expect(Date.now() - t0).toBeLessThan(5000);

    // Serves /healthz for ~1.5 s, then stops answering: the liveness probe fails and the container restarts.
    const flapping = `
    const srv = require('http').createServer((q, r) => r.end('ok')).listen(8081, process.env.POD_IP);
    setTimeout(() => srv.close(), 1500); setInterval(() => {}, 1000);`;
    await core.createNamespacedPod({
      namespace: ns,
      body: pod(
        'flapping',
        {
          command: nodeScript(flapping),
          env: [{ name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } }],
          livenessProbe: { tcpSocket: { port: 8081 }, initialDelaySeconds: 1, periodSeconds: 1, failureThreshold: 2 },
        },
        { restartPolicy: 'Always', terminationGracePeriodSeconds: 1 },
      ),
    });
    const restarted = await waitFor(
      'a liveness restart',
      async () => {
        const p = await core.readNamespacedPod({ namespace: ns, name: 'flapping' });
        return (p.status?.containerStatuses?.[0]?.restartCount ?? 0) >= 1 ? p : undefined;
      },
      30_000,
    );
    expect(restarted.status?.containerStatuses?.[0]?.lastState?.terminated?.exitCode).toBe(143);
    await core.deleteNamespacedPod({ namespace: ns, name: 'flapping', gracePeriodSeconds: 0 });
    await waitForPodGone(core, ns, 'flapping');
  },
  TIMEOUT_MS,
);
