// `make demo`: the whole product on this machine. Starts a local redis-server and a real
// Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager, built from Go
// modules) with a node agent that runs pods as local processes; runs the operator; applies
// examples/collatz.yaml; shows live progress until Complete; prints `kubectl get tb` and a
// summary of the results; then tears everything down.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { startControlPlane, startNodeAgent, repoRoot } from '../localcluster/index.js';
import { startRedisServer } from '../localcluster/redis-server.js';
import { KubeClient } from '../operator/kube/client.js';
import { batchPath, type TaskBatch } from '../operator/api/taskbatch.js';
import { BatchQueue, connectRedis } from '../queue/index.js';
import { installCrd, startOperator } from '../test/support/operator-env.js';

const root = repoRoot();
const manifestPath = process.argv[2] ?? join(root, 'examples/collatz.yaml');
const say = (s: string): void => console.log(`\u001b[1m==>\u001b[0m ${s}`);
const t0 = Date.now();

say('Starting redis-server and the local Kubernetes control plane');
const redis = await startRedisServer();
const cp = await startControlPlane({ controllerManager: true, record: true });
const agent = await startNodeAgent({ kubeConfig: cp.kubeConfig });
const kube = new KubeClient(cp.kubeConfig);
let stopped = false;
const teardown = async (): Promise<void> => {
  if (stopped) return;
  stopped = true;
  await operator.kill('SIGTERM').catch(() => undefined);
  await agent.stop().catch(() => undefined);
  await cp.stop().catch(() => undefined);
  await redis.stop().catch(() => undefined);
};
process.on('SIGINT', () => void teardown().then(() => process.exit(130)));
console.log(`    kube-apiserver ${cp.server}, redis ${redis.url}, node ${agent.nodeName} (started in ${((Date.now() - t0) / 1000).toFixed(1)}s)`);
console.log(`    kubectl: eval "$(hack/kubeconfig.sh)" in another terminal while the demo runs`);

say('Installing the TaskBatch CRD and starting the operator');
await installCrd(kube);
const operator = await startOperator({ cp, agent, redis, kube, stop: teardown });

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
console.log((await cp.kubectl(['get', 'taskbatches', '-n', ns, '-o', 'wide'])).stdout.trimEnd());

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
void operator;
await teardown();
process.exit(s.state === 'Complete' ? 0 : 1);
