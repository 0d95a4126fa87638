/**
 * The path users take, on a real node: images built without Docker (hack/build-images.sh) and
 * loaded into containerd, a real kubelet + runc running them, kube-proxy Services, CoreDNS, and
 * the Helm chart installed exactly as docs/helm.md says (default values, bundled Redis) into a
 * namespace that enforces the restricted Pod Security Standard. Then every manifest in examples/
 * reaches its documented end state, `helm test` passes, worker pods log JSON that `kubectl logs`
 * shows, a SIGTERMed worker drains, /metrics answers through the Service, `helm upgrade` and
 * `helm uninstall` leave nothing behind but the CRDs, and no packet left the machine.
 *
 * Runs only where the harness finds what a real node needs (root, namespaces, containerd, runc,
 * the CNI plugins, the built binaries and images); otherwise it is skipped with the reason printed.
 *
 * The same assertions run against an existing cluster (hack/kind-e2e.sh does this for kind):
 * TASKBATCH_E2E_KUBECONFIG=<kubeconfig> with `kubectl` and `helm` on PATH and the images already on
 * the nodes. The checks only a harness-owned node allows (containerd's image list, the uplink
 * counter) are then left out, and say so.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { repoRoot, runCommand, type ToolOptions, type ToolResult } from '../../localcluster/index.js';
import { imageArchives, realNodeSupport, startRealCluster, type RealNode } from '../../localcluster/realnode/index.js';
import { batchPath } from '../../api/taskbatch.js';
import { KubeClient } from '../../kube/client.js';
import type { Pod } from '../../kube/pod.js';
import { eventually } from '../support/batches.js';
import { clusterObjectsOf, expectOk, namespacedObjects } from '../support/helm-release.js';
import { aTaskBatch, getBatch, waitForCondition, workerPods } from '../support/operator-env.js';

const ROOT = repoRoot();
const RELEASE = 'taskbatch';
const SYSTEM_NS = 'taskbatch-system';
const EXAMPLES_NS = 'examples';
const WORK_NS = 'work';
const T = 420_000;
const APP_VERSION = /^appVersion:\s*"?([^"\s]+)"?/m.exec(readFileSync(join(ROOT, 'charts/taskbatch/Chart.yaml'), 'utf8'))?.[1] ?? '';

const externalKubeconfig = process.env.TASKBATCH_E2E_KUBECONFIG;
const imagesDir = process.env.TASKBATCH_IMAGES_DIR;
function whyNot(): string | undefined {
  if (externalKubeconfig) return undefined;
  const support = realNodeSupport();
  if (!support.ok) return support.reason;
  return imagesDir ? undefined : 'TASKBATCH_IMAGES_DIR is not set (hack/test.sh sets it after hack/build-images.sh)';
}
const skipReason = whyNot();
if (skipReason) console.warn(`[e2e] SKIPPED: the real-node tier cannot run on this machine: ${skipReason}`);
const d = skipReason ? describe.skip : describe;

/** Where the e2e runs: a harness-started real node, or an existing cluster. */
interface Target {
  kubeConfig: KubeConfig;
  kubectl(args: string[], o?: ToolOptions): Promise<ToolResult>;
  helm(args: string[], o?: ToolOptions): Promise<ToolResult>;
  /** Only when the harness owns the node. */
  node?: RealNode;
  stop(): Promise<void>;
}

async function startTarget(): Promise<Target> {
  if (externalKubeconfig) {
    const kc = new KubeConfig();
    kc.loadFromFile(externalKubeconfig);
    const tool =
      (bin: string) =>
      (args: string[], o: ToolOptions = {}): Promise<ToolResult> =>
        runCommand(bin, args, { ...o, env: { ...process.env, KUBECONFIG: o.kubeconfigPath ?? externalKubeconfig } });
    return { kubeConfig: kc, kubectl: tool('kubectl'), helm: tool('helm'), stop: async () => undefined };
  }
  const c = await startRealCluster({ node: { images: imageArchives(imagesDir!) } });
  console.log(`[e2e] real node ${c.node.nodeName} up: ${JSON.stringify({ controlPlane: c.cp.timings, node: c.node.timings })}`);
  return { kubeConfig: c.cp.kubeConfig, kubectl: c.cp.kubectl, helm: c.cp.helm, node: c.node, stop: c.stop };
}

let target: Target;
let kube: KubeClient;
const timings: Record<string, number> = {};

async function timed<R>(what: string, fn: () => Promise<R>): Promise<R> {
  const t0 = Date.now();
  try {
    return await fn();
  } finally {
    timings[what] = Date.now() - t0;
  }
}

async function kubectl(args: string[], input?: string): Promise<string> {
  return expectOk(await target.kubectl(args, { timeoutMs: 300_000, ...(input !== undefined ? { input } : {}) }), `kubectl ${args.join(' ')}`).stdout;
}

async function helm(args: string[]): Promise<string> {
  return expectOk(await target.helm(args, { timeoutMs: 400_000, cwd: ROOT }), `helm ${args.join(' ')}`).stdout;
}

async function restrictedNamespace(name: string): Promise<void> {
  await kubectl(['create', 'namespace', name]);
  await kubectl(['label', 'namespace', name, 'pod-security.kubernetes.io/enforce=restricted', 'pod-security.kubernetes.io/enforce-version=latest']);
}

async function pods(ns: string, selector: string): Promise<Pod[]> {
  return (await kube.list<Pod>(`/api/v1/namespaces/${ns}/pods`, { labelSelector: selector })).items;
}

async function runningOperator(): Promise<Pod> {
  return eventually(
    async () => {
      const ps = (await pods(SYSTEM_NS, 'app.kubernetes.io/component=operator')).filter((p) => !p.metadata.deletionTimestamp && p.status?.phase === 'Running');
      return ps.length === 1 ? ps[0] : undefined;
    },
    120_000,
    'one running operator pod',
  );
}

d('on a real node (kubelet + containerd + runc)', () => {
  beforeAll(async () => {
    target = await timed('cluster start', startTarget);
    kube = new KubeClient(target.kubeConfig);
  }, 300_000);

  afterAll(async () => {
    console.log(`[e2e] timings (ms): ${JSON.stringify(timings)}`);
    await target?.stop();
  }, 120_000);

  test(
    'the node is a real kubelet on containerd, Ready, with the images loaded',
    async () => {
      const nodes = JSON.parse(await kubectl(['get', 'nodes', '-o', 'json'])) as {
        items: {
          metadata: { name: string };
          status: { nodeInfo: { kubeletVersion: string; containerRuntimeVersion: string }; addresses: { type: string; address: string }[]; conditions: { type: string; status: string }[] };
        }[];
      };
      expect(nodes.items.length).toBeGreaterThan(0);
      for (const node of nodes.items) {
        expect(node.status.nodeInfo.containerRuntimeVersion).toMatch(/^containerd:\/\//);
        expect(node.status.conditions).toContainEqual(expect.objectContaining({ type: 'Ready', status: 'True' }));
      }
      const own = target.node;
      if (!own) return console.warn('[e2e] existing cluster: node version, address and image checks left out');
      const node = nodes.items.find((n) => n.metadata.name === own.nodeName)!;
      expect(node.status.nodeInfo.kubeletVersion).toBe('v1.34.4');
      expect(node.status.addresses).toContainEqual({ type: 'InternalIP', address: own.net.nodeIP });
      const images = (await own.ctr(['images', 'ls', '-q'])).stdout;
      for (const img of [`ghcr.io/taskbatch/operator:${APP_VERSION}`, `ghcr.io/taskbatch/worker:${APP_VERSION}`, 'docker.io/library/redis:7', 'localhost/pause:1']) expect(images).toContain(img);
    },
    T,
  );

  test(
    'pods start (create -> Running, measured and printed; not a timed assertion)',
    async () => {
      const PODS = 20;
      await kubectl(['create', 'namespace', 'podstart']);
      const latencies: number[] = [];
      for (let i = 0; i < PODS; i++) {
        const name = `p${i}`;
        const t0 = Date.now();
        await kubectl(
          ['apply', '-f', '-'],
          JSON.stringify({
            apiVersion: 'v1',
            kind: 'Pod',
            metadata: { name, namespace: 'podstart' },
            spec: {
              containers: [{ name: 'c', image: `ghcr.io/taskbatch/worker:${APP_VERSION}`, imagePullPolicy: 'IfNotPresent', command: ['node', '-e', 'setInterval(() => {}, 1000)'] }],
              terminationGracePeriodSeconds: 0,
            },
          }),
        );
        await eventually(async () => (await kube.get<Pod>(`/api/v1/namespaces/podstart/pods/${name}`)).status?.phase === 'Running', 60_000, `pod ${name} Running`);
        latencies.push(Date.now() - t0);
      }
      latencies.sort((a, b) => a - b);
      timings['pod start p50'] = latencies[Math.floor(latencies.length / 2)]!;
      timings['pod start p95'] = latencies[Math.ceil(latencies.length * 0.95) - 1]!;
      timings['pod start max'] = latencies[latencies.length - 1]!;
      console.log(`[e2e] pod create -> Running (ms, sorted): ${latencies.join(', ')}`);
      await kubectl(['delete', 'namespace', 'podstart', '--wait=false']);
      expect(latencies).toHaveLength(PODS);
    },
    T,
  );

  test(
    'helm install with default values (bundled Redis) into a restricted namespace, as docs/helm.md says',
    async () => {
      await restrictedNamespace(SYSTEM_NS);
      // docs/helm.md: helm install taskbatch charts/taskbatch --namespace taskbatch-system --create-namespace
      const out = await timed('helm install', () => helm(['install', RELEASE, 'charts/taskbatch', '--namespace', SYSTEM_NS, '--create-namespace', '--wait', '--timeout', '5m']));
      expect(out).toMatch(/STATUS: deployed/);
      const op = await runningOperator();
      expect(op.spec.containers[0]!.image).toBe(`ghcr.io/taskbatch/operator:${APP_VERSION}`);
      // In-cluster configuration: no kubeconfig is given; the ServiceAccount token and the
      // `kubernetes` Service (through kube-proxy) are all the operator has, and it leads.
      expect((op.spec.containers[0]!.env ?? []).map((e) => e.name)).not.toContain('KUBECONFIG');
      const lease = await eventually(
        async () => {
          const l = await kube.find<{ spec: { holderIdentity?: string } }>(`/apis/coordination.k8s.io/v1/namespaces/${SYSTEM_NS}/leases/${RELEASE}`);
          return l?.spec.holderIdentity === op.metadata.name ? l : undefined;
        },
        90_000,
        'the operator pod to hold the leader Lease',
      );
      expect(lease.spec.holderIdentity).toBe(op.metadata.name);
      const redisPods = await pods(SYSTEM_NS, 'app.kubernetes.io/component=redis');
      expect(redisPods.filter((p) => p.status?.phase === 'Running')).toHaveLength(1);
    },
    T,
  );

  test(
    'every manifest in examples/ reaches its documented end state',
    async () => {
      await restrictedNamespace(EXAMPLES_NS);
      const files = readdirSync(join(ROOT, 'examples'))
        .filter((f) => f.endsWith('.yaml'))
        .sort();
      expect(files).toEqual(['collatz.yaml', 'math-batch.yaml', 'math-service.yaml', 'nightly-schedule.yaml']);
      for (const f of files) await kubectl(['apply', '-n', EXAMPLES_NS, '-f', join(ROOT, 'examples', f)]);
      const collatz = await timed('collatz', () => waitForCondition(kube, EXAMPLES_NS, 'collatz', 'Complete', 400_000));
      expect(collatz.status?.items).toMatchObject({ total: 20000, succeeded: 20000, failed: 0 });
      // math-batch: the division by zero fails once, the failure policy allows it, so it completes.
      const math = await waitForCondition(kube, EXAMPLES_NS, 'math-batch', 'Complete', 200_000);
      expect(math.status?.items).toMatchObject({ total: 6, succeeded: 5, failed: 1 });
      // math-service: open, serving, with its one minimum worker ready.
      await eventually(
        async () => {
          const b = await getBatch(kube, EXAMPLES_NS, 'math-service');
          const ready = (await workerPods(kube, EXAMPLES_NS, 'math-service')).filter((p) => p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'));
          return b.status?.state === 'Running' && ready.length >= 1;
        },
        120_000,
        'math-service running with a ready worker',
      );
      // nightly-schedule: accepted and scheduled, no run before 02:30 Berlin time.
      const sched = JSON.parse(await kubectl(['get', 'taskschedules', 'nightly-squares', '-n', EXAMPLES_NS, '-o', 'json'])) as { spec: { schedule: string } };
      expect(sched.spec.schedule).toBe('30 2 * * *');
    },
    T,
  );

  test(
    'a worker pod: JSON logs through kubectl logs, Redis by Service DNS, the restricted context enforced by runc',
    async () => {
      const worker = (await workerPods(kube, EXAMPLES_NS, 'math-service')).find((p) => p.status?.phase === 'Running')!;
      expect(worker).toBeDefined();
      const url = (worker.spec.containers[0]!.env ?? []).find((e) => e.name === 'TASKBATCH_REDIS_URL')?.value ?? '';
      const host = new URL(url).hostname;
      expect(host).toMatch(/\.svc(\.cluster\.local)?$/);
      const logs = (await kubectl(['logs', '-n', EXAMPLES_NS, worker.metadata.name!])).trim().split('\n');
      expect(logs.length).toBeGreaterThan(0);
      for (const line of logs) expect(() => JSON.parse(line) as unknown).not.toThrow();
      // Inside the container: resolve the Service name with cluster DNS, and the runtime's limits hold.
      const probe = `const dns=require('node:dns');const fs=require('node:fs');dns.lookup(${JSON.stringify(host)},(e,a)=>{let ro='writable';try{fs.writeFileSync('/x','y')}catch(err){ro=err.code}console.log(JSON.stringify({addr:a,err:e&&e.code,uid:process.getuid(),ro}))})`;
      const out = JSON.parse(await kubectl(['exec', '-n', EXAMPLES_NS, worker.metadata.name!, '--', 'node', '-e', probe])) as { addr?: string; err?: string; uid: number; ro: string };
      expect(out.err).toBeFalsy();
      expect(out.addr).toMatch(/^10\.0\.0\.\d+$/);
      expect(out.uid).toBe(1000);
      expect(out.ro).toBe('EROFS');

      // PID 1 is tini, which reaps what is orphaned in the container; Node as PID 1 could not.
      const exec = (script: string): Promise<string> => kubectl(['exec', '-n', EXAMPLES_NS, worker.metadata.name!, '--', 'node', '-e', script]);
      const procs = async (): Promise<{ pid: number; ppid: number; state: string; comm: string }[]> =>
        JSON.parse(
          await exec(
            String.raw`const fs=require('node:fs');const out=[];for(const d of fs.readdirSync('/proc')){if(!/^\d+$/.test(d))continue;try{const st=fs.readFileSync('/proc/'+d+'/status','utf8');const f=(k)=>new RegExp('^'+k+':\\s*(\\S+)','m').exec(st)[1];out.push({pid:+d,ppid:+f('PPid'),state:f('State'),comm:f('Name')})}catch{}}console.log(JSON.stringify(out))`,
          ),
        ) as { pid: number; ppid: number; state: string; comm: string }[];
      expect((await procs()).find((p) => p.pid === 1)?.comm).toBe('tini');
      // Three processes whose parent exits at once: the kernel gives them to PID 1.
      const orphans = JSON.parse(
        await exec(`const {spawn}=require('node:child_process');console.log(JSON.stringify([1,2,3].map(()=>{const c=spawn('sleep',['2'],{detached:true,stdio:'ignore'});c.unref();return c.pid})))`),
      ) as number[];
      const adopted = (await procs()).filter((p) => orphans.includes(p.pid));
      expect(adopted.map((p) => p.ppid)).toEqual([1, 1, 1]);
      // Once they exit, nothing is left of them: no zombie waits for a parent that never reaps.
      const left = await eventually(
        async () => {
          const still = (await procs()).filter((p) => orphans.includes(p.pid));
          return still.length === 0 ? still : undefined;
        },
        30_000,
        `the orphaned processes ${orphans.join(', ')} to be reaped by PID 1`,
      ).catch(async (err: Error) => {
        throw new Error(`${err.message}; they are: ${JSON.stringify((await procs()).filter((p) => orphans.includes(p.pid)))}`);
      });
      expect(left).toEqual([]);
    },
    T,
  );

  test(
    'a SIGTERMed worker drains; scale-in drains; no item is retried',
    async () => {
      await restrictedNamespace(WORK_NS);
      const name = 'drain';
      await kube.create(
        batchPath(WORK_NS),
        aTaskBatch(WORK_NS, name, {
          items: Array.from({ length: 300 }, () => ({ ms: 100 })),
          handler: { builtin: 'sleep' },
          pool: { mode: 'async', size: 2 },
          workers: { max: 3, itemsPerWorker: 50, scaleDownDelaySeconds: 0 },
        }),
      );
      const victim = await eventually(
        async () => {
          const running = (await workerPods(kube, WORK_NS, name)).filter((p) => p.status?.phase === 'Running' && !p.metadata.deletionTimestamp);
          return running.length >= 2 ? running[0] : undefined;
        },
        120_000,
        'two running workers',
      );
      // The kubelet sends SIGTERM to the container's PID 1 (tini), which passes it to node: the
      // worker must finish its items and exit 0.
      await kubectl(['delete', 'pod', '-n', WORK_NS, victim.metadata.name!, '--wait=false']);
      const done = await waitForCondition(kube, WORK_NS, name, 'Complete', 300_000);
      expect(done.status?.items).toMatchObject({ total: 300, succeeded: 300, failed: 0, retries: 0 });
      const opLog = await kubectl(['logs', '-n', SYSTEM_NS, `deployment/${RELEASE}`, '--tail=-1']);
      expect(opLog.split('\n').some((l) => l.includes('"Requested worker drain"') && l.includes(`"batch":"${WORK_NS}/${name}"`))).toBe(true);
    },
    T,
  );

  test(
    'Prometheus /metrics answers through the metrics Service',
    async () => {
      const text = await kubectl(['get', '--raw', `/api/v1/namespaces/${SYSTEM_NS}/services/http:${RELEASE}-metrics:metrics/proxy/metrics`]);
      expect(text).toMatch(/^# HELP taskbatch_/m);
      expect(text).toMatch(/^taskbatch_batch_items\{[^}]*namespace="examples"[^}]*\} \d+/m);
    },
    T,
  );

  test(
    'helm test passes',
    async () => {
      const out = await timed('helm test', () => helm(['test', RELEASE, '--namespace', SYSTEM_NS, '--timeout', '5m']));
      expect(out).toMatch(/Phase:\s+Succeeded/);
    },
    T,
  );

  test(
    'helm upgrade with changed values rolls the operator',
    async () => {
      const before = await runningOperator();
      await timed('helm upgrade', () => helm(['upgrade', RELEASE, 'charts/taskbatch', '--namespace', SYSTEM_NS, '--set', 'operator.logLevel=debug', '--wait', '--timeout', '5m']));
      const after = await eventually(
        async () => {
          const p = await runningOperator();
          return p.metadata.name !== before.metadata.name ? p : undefined;
        },
        180_000,
        'a new operator pod',
      );
      expect((after.spec.containers[0]!.env ?? []).find((e) => e.name === 'TASKBATCH_LOG_LEVEL')?.value).toBe('debug');
      // The upgraded operator still serves: a small batch completes.
      await kube.create(batchPath(WORK_NS), aTaskBatch(WORK_NS, 'after-upgrade', { range: { start: 0, end: 100 }, handler: { builtin: 'noop' } }));
      await waitForCondition(kube, WORK_NS, 'after-upgrade', 'Complete', 200_000);
    },
    T,
  );

  test(
    'helm uninstall leaves nothing behind but the CRDs',
    async () => {
      await timed('helm uninstall', () => helm(['uninstall', RELEASE, '--namespace', SYSTEM_NS, '--wait', '--timeout', '5m']));
      const ordinary = (o: { kind: string; name: string }): boolean => !(o.kind === 'ServiceAccount' && o.name === 'default') && !(o.kind === 'ConfigMap' && o.name === 'kube-root-ca.crt');
      for (const ns of [SYSTEM_NS, EXAMPLES_NS, WORK_NS]) {
        const left = await eventually(
          async () => {
            const objs = (await namespacedObjects(target, ns)).filter(ordinary);
            return objs.length === 0 ? objs : undefined;
          },
          180_000,
          `nothing left in ${ns}`,
        ).catch(async () => (await namespacedObjects(target, ns)).filter(ordinary));
        expect(left).toEqual([]);
      }
      expect(await clusterObjectsOf(target, RELEASE)).toEqual([]);
      for (const crd of ['taskbatches.taskbatch.dev', 'taskschedules.taskbatch.dev']) await kubectl(['get', 'crd', crd]);
    },
    T,
  );

  test(
    'no packet of the node left the machine (uplink counter)',
    async () => {
      if (!target.node) return console.warn('[e2e] existing cluster: the uplink counter exists only on a harness-owned node');
      expect(await target.node.uplinkPackets()).toBe(0);
      // The counter is installed and hooked where it must be.
      const r = await runCommand('iptables', ['-w', '-S', 'OUTPUT'], { env: process.env });
      expect(r.stdout).toMatch(/-A OUTPUT -j TB-UPLINK-/);
    },
    T,
  );
});
