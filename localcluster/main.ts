/**
 * Runs a local cluster in the foreground until interrupted: control plane (with
 * kube-controller-manager) and a node agent. Records the kubeconfig for hack/kubeconfig.sh.
 *
 *   node dist/localcluster/main.js [--no-controller-manager] [--no-node] [--node-name NAME]
 *
 * Prints one JSON line when ready: {"server", "kubeconfig", "binDir", "node", ...}.
 */
import { join } from 'node:path';
import { startControlPlane } from './controlplane.js';
import { createLogger } from './log.js';
import { startNodeAgent, type NodeAgent } from './node-agent.js';
import { localClusterStateDir } from './paths.js';

interface CliOptions {
  controllerManager: boolean;
  node: boolean;
  nodeName?: string;
}

function parseArgs(argv: string[]): CliOptions {
  const o: CliOptions = { controllerManager: true, node: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--no-controller-manager') o.controllerManager = false;
    else if (a === '--no-node') o.node = false;
    else if (a === '--node-name') o.nodeName = argv[++i];
    else if (a === '--help' || a === '-h') {
      process.stdout.write('usage: node dist/localcluster/main.js [--no-controller-manager] [--no-node] [--node-name NAME]\n');
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  return o;
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const log = createLogger('localcluster');
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

main().catch((err: unknown) => {
  process.stderr.write(`localcluster: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
