/**
 * Runs a local cluster in the foreground until interrupted: control plane (with
 * kube-controller-manager) and a node agent. Records the kubeconfig for hack/kubeconfig.sh.
 *
 *   node dist/localcluster/main.js [--no-controller-manager] [--no-node] [--node-name NAME]
 *   node dist/localcluster/main.js --real-node [--images DIR] [--node-name NAME]
 *
 * --real-node runs a real kubelet + containerd node (see realnode/) instead of the node agent,
 * with the OCI archives of DIR loaded (default: what hack/build-images.sh built).
 *
 * Prints one JSON line when ready: {"server", "kubeconfig", "binDir", "node", ...}.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { startControlPlane } from './controlplane.js';
import { createLogger, type Logger } from './log.js';
import { startNodeAgent, type NodeAgent } from './node-agent.js';
import { localClusterStateDir, repoRoot } from './paths.js';
import { imageArchives, startRealCluster } from './realnode/index.js';

interface CliOptions {
  controllerManager: boolean;
  node: boolean;
  realNode: boolean;
  imagesDir?: string;
  nodeName?: string;
}

function parseArgs(argv: string[]): CliOptions {
  const o: CliOptions = { controllerManager: true, node: true, realNode: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--no-controller-manager') o.controllerManager = false;
    else if (a === '--no-node') o.node = false;
    else if (a === '--node-name') o.nodeName = argv[++i];
    else if (a === '--real-node') o.realNode = true;
    else if (a === '--images') o.imagesDir = argv[++i];
    else if (a === '--help' || a === '-h') {
      process.stdout.write(
        'usage: node dist/localcluster/main.js [--no-controller-manager] [--no-node] [--node-name NAME]\n       node dist/localcluster/main.js --real-node [--images DIR] [--node-name NAME]\n',
      );
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  return o;
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const log = createLogger('localcluster');
  if (opts.realNode) return mainRealNode(opts, log);
  const cp = await startControlPlane({ controllerManager: opts.controllerManager, record: true });
  let agent: NodeAgent | undefined;
  try {
    if (opts.node) agent = await startNodeAgent({ kubeConfig: cp.kubeConfig, ...(opts.nodeName ? { nodeName: opts.nodeName } : {}) });
  } catch (err) {
    await cp.stop();
    throw err;
  }
  process.stdout.write(
    JSON.stringify({
      server: cp.server,
      kubeconfig: join(localClusterStateDir(), 'kubeconfig'),
      binDir: cp.binDir,
      dir: cp.dir,
      node: agent?.nodeName ?? null,
      podRanges: agent?.podRanges ?? [],
      timings: cp.timings,
      hint: 'eval "$(hack/kubeconfig.sh)" && kubectl get nodes',
    }) + '\n',
  );
  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info('Stopping local cluster', { signal });
    void (async () => {
      await agent?.stop();
      await cp.stop();
      process.exit(0);
    })();
  };
  process.once('SIGINT', () => shutdown('SIGINT'));
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  setInterval(() => undefined, 1 << 30);
}

async function mainRealNode(opts: CliOptions, log: Logger): Promise<void> {
  const imagesDir = opts.imagesDir ?? imagesBuildDir();
  const cluster = await startRealCluster({ record: true, node: { images: imageArchives(imagesDir), ...(opts.nodeName ? { nodeName: opts.nodeName } : {}) } });
  process.stdout.write(
    JSON.stringify({
      server: cluster.cp.server,
      kubeconfig: join(localClusterStateDir(), 'kubeconfig'),
      binDir: cluster.cp.binDir,
      dir: cluster.cp.dir,
      node: cluster.node.nodeName,
      nodeDir: cluster.node.dir,
      network: cluster.node.net,
      images: imagesDir,
      timings: { controlPlane: cluster.cp.timings, node: cluster.node.timings },
      hint: 'eval "$(hack/kubeconfig.sh)" && kubectl get nodes -o wide',
    }) + '\n',
  );
  const shutdown = (signal: string): void => {
    log.info('Stopping local cluster', { signal });
    void cluster.stop().then(() => process.exit(0));
  };
  process.once('SIGINT', () => shutdown('SIGINT'));
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  setInterval(() => undefined, 1 << 30);
}

/** The directory hack/build-images.sh writes its archives to (it prints it last). */
function imagesBuildDir(): string {
  const out = execFileSync('bash', [join(repoRoot(), 'hack', 'build-images.sh'), '--print-dir'], { encoding: 'utf8' })
    .trim()
    .split('\n');
  const dir = out[out.length - 1];
  if (!dir) throw new Error('hack/build-images.sh --print-dir printed nothing');
  return dir;
}

main().catch((err: unknown) => {
  process.stderr.write(`localcluster: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
