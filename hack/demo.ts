// `make demo`: the whole product on this machine. Starts a local redis-server and a real
// Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager, built from Go
// modules) with a node agent that runs pods as local processes; runs the operator; applies
// examples/collatz.yaml; shows live progress until Complete; prints `kubectl get tb` and a
// summary of the results; then tears everything down.
//
// `make demo ARGS=--real-node` (or `node dist/hack/demo.js --real-node [manifest]`) runs it as it
// runs in a user's cluster instead: a real kubelet + containerd node, the images hack/build-images.sh
// built, and the Helm chart installed with its default values and bundled Redis.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { startControlPlane, startNodeAgent, repoRoot, type ToolResult } from '../localcluster/index.js';
import { imageArchives, startRealCluster } from '../localcluster/realnode/index.js';
import { startRedisServer } from '../localcluster/redis-server.js';
import { KubeClient } from '../kube/client.js';
import { batchPath, type TaskBatch } from '../api/taskbatch.js';
import { BatchQueue, connectRedis } from '../queue/index.js';
import { installCrd, startOperator } from '../test/support/operator-env.js';

const root = repoRoot();
const args = process.argv.slice(2);
const realNode = args.includes('--real-node');
const manifestPath = args.find((a) => !a.startsWith('--')) ?? join(root, 'examples/collatz.yaml');
const say = (s: string): void => console.log(`\u001b[1m==>\u001b[0m ${s}`);
const t0 = Date.now();

interface DemoCluster {
  kube: KubeClient;
  kubectl(args: string[]): Promise<ToolResult>;
  /** A Redis URL this process can reach, where the batch's items live. */
  redisUrl: string;
  teardown(): Promise<void>;
}

async function nodeAgentCluster(): Promise<DemoCluster> {
  say('Starting redis-server and the local Kubernetes control plane');
  const redis = await startRedisServer();
  const cp = await startControlPlane({ controllerManager: true, record: true });
  const agent = await startNodeAgent({ kubeConfig: cp.kubeConfig });
  const kube = new KubeClient(cp.kubeConfig);
  console.log(`    kube-apiserver ${cp.server}, redis ${redis.url}, node ${agent.nodeName} (started in ${((Date.now() - t0) / 1000).toFixed(1)}s)`);
  console.log(`    kubectl: eval "$(hack/kubeconfig.sh)" in another terminal while the demo runs`);
  let operator: Awaited<ReturnType<typeof startOperator>> | undefined;
  const teardown = async (): Promise<void> => {
    await operator?.kill('SIGTERM').catch(() => undefined);
    await agent.stop().catch(() => undefined);
    await cp.stop().catch(() => undefined);
    await redis.stop().catch(() => undefined);
  };
  say('Installing the TaskBatch CRD and starting the operator');
  await installCrd(kube);
  operator = await startOperator({ cp, agent, redis, kube, stop: teardown });
  return { kube, kubectl: (a) => cp.kubectl(a), redisUrl: redis.url, teardown };
}

async function realNodeCluster(): Promise<DemoCluster> {
  const imagesDir = process.env.TASKBATCH_IMAGES_DIR;
  if (!imagesDir) throw new Error('TASKBATCH_IMAGES_DIR is not set: run the demo through hack/demo.sh --real-node, which builds the images');
  say('Starting the local control plane and a real node (kubelet + containerd + runc, kube-proxy, CoreDNS)');
  const cluster = await startRealCluster({ record: true, node: { images: imageArchives(imagesDir) } });
  const { cp, node } = cluster;
  const kube = new KubeClient(cp.kubeConfig);
  console.log(`    kube-apiserver ${cp.server}, node ${node.nodeName} at ${node.net.nodeIP} (started in ${((Date.now() - t0) / 1000).toFixed(1)}s)`);
  console.log(`    kubectl: eval "$(hack/kubeconfig.sh)" in another terminal while the demo runs`);
  say('helm install taskbatch charts/taskbatch --namespace taskbatch-system --create-namespace (default values, bundled Redis)');
  const tHelm = Date.now();
  const r = await cp.helm(['install', 'taskbatch', 'charts/taskbatch', '--namespace', 'taskbatch-system', '--create-namespace', '--wait', '--timeout', '5m'], { cwd: root, timeoutMs: 400_000 });
  if (r.code !== 0) {
    await cluster.stop();
    throw new Error(`helm install failed:\n${r.stdout}${r.stderr}`);
  }
  console.log(`    installed in ${((Date.now() - tHelm) / 1000).toFixed(1)}s`);
  // The bundled Redis's ClusterIP: the host reaches the Service range through the node.
  const svc = await kube.get<{ spec: { clusterIP: string } }>('/api/v1/namespaces/taskbatch-system/services/taskbatch-redis');
  return { kube, kubectl: (a) => cp.kubectl(a), redisUrl: `redis://${svc.spec.clusterIP}:6379`, teardown: () => cluster.stop() };
}

const demo = realNode ? await realNodeCluster() : await nodeAgentCluster();
const { kube, redis } = { kube: demo.kube, redis: { url: demo.redisUrl } };
let stopped = false;
const teardown = async (): Promise<void> => {
  if (stopped) return;
  stopped = true;
  await demo.teardown();
};
process.on('SIGINT', () => void teardown().then(() => process.exit(130)));

const manifest = parse(readFileSync(manifestPath, 'utf8')) as TaskBatch;
const ns = manifest.metadata.namespace ?? 'default';
const name = manifest.metadata.name!;
say(`Applying ${manifestPath.replace(`${root}/`, '')} (TaskBatch ${ns}/${name})`);
const applied = Date.now();
await kube.create(batchPath(ns), { ...manifest, metadata: { ...manifest.metadata, namespace: ns } });

// The first processed item is read from Redis's counters (the status is updated at most every 2 s).
const queueRedis = connectRedis({ url: redis.url });
let firstItemAt = 0;
const firstItemWatch = setInterval(() => {
  if (firstItemAt) return;
  void new BatchQueue(queueRedis, { namespace: ns, name })
    .snapshot()
    .then((snap) => {
      if (snap.succeeded + snap.failed > 0 && !firstItemAt) firstItemAt = Date.now();
    })
    .catch(() => undefined);
}, 50);
let lastPrinted = 0;
let last: TaskBatch | undefined;
const samples: { t: number; done: number }[] = [];
for (;;) {
  last = await kube.get<TaskBatch>(batchPath(ns, name));
  const s = last.status;
  const done = (s?.items?.succeeded ?? 0) + (s?.items?.failed ?? 0);
  const total = s?.items?.total ?? 0;
  samples.push({ t: Date.now(), done });
  while (samples.length > 1 && samples[0]!.t < Date.now() - 5000) samples.shift();
  const first = samples[0]!;
  const rate = samples.length > 1 ? ((done - first.done) * 1000) / Math.max(1, Date.now() - first.t) : 0;
  const eta = rate > 0 && total ? `${Math.ceil((total - done) / rate)}s` : '--';
  const width = 30;
  const filled = total ? Math.round((done / total) * width) : 0;
  const line = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total || '?'}  ${Math.round(rate)} items/s  ETA ${eta}  workers ${s?.workers?.summary ?? '-'}  ${s?.state ?? 'Pending'}`;
  if (process.stdout.isTTY) {
    process.stdout.write(`\r    ${line}    `);
  } else if (Date.now() - lastPrinted >= 2000) {
    lastPrinted = Date.now();
    console.log(`    ${line}`);
  }
  const finished = s?.conditions?.find((c) => (c.type === 'Complete' || c.type === 'Failed') && c.status === 'True');
  if (finished) break;
  if (Date.now() - applied > 15 * 60_000) throw new Error('the demo batch did not finish within 15 minutes');
  await new Promise((r) => setTimeout(r, 500));
}
const finishedAt = Date.now();
clearInterval(firstItemWatch);
if (process.stdout.isTTY) process.stdout.write('\n');

say('kubectl get taskbatches');
console.log((await demo.kubectl(['get', 'taskbatches', '-n', ns, '-o', 'wide'])).stdout.trimEnd());

const s = last.status!;
const q = new BatchQueue(queueRedis, { namespace: ns, name }, { expectedEpoch: s.queueEpoch ?? '' });
const results = await q.results(0, 100_000);
const best = results.reduce<{ i: number; longest: number; steps: number } | undefined>((acc, r) => {
  const v = r.result as { i: number; longest: number; steps: number };
  return !acc || v.steps > acc.steps ? v : acc;
}, undefined);
say('Summary');
console.log(`    outcome:         ${s.state} (${s.conditions?.find((c) => c.type === 'Complete' || c.type === 'Failed')?.message ?? ''})`);
console.log(`    items:           ${JSON.stringify(s.items)}`);
console.log(`    results stored:  ${results.length}${best ? `; longest Collatz chain below ${20000 * 100}: ${best.longest} (${best.steps} steps)` : ''}`);
console.log(`    apply -> first item processed: ${firstItemAt ? ((firstItemAt - applied) / 1000).toFixed(1) : '?'}s`);
console.log(`    apply -> Complete:             ${((finishedAt - applied) / 1000).toFixed(1)}s`);
q.redis.disconnect();
await teardown();
process.exit(s.state === 'Complete' ? 0 : 1);
