/** Where things live: the repository root, the cache, the control-plane binaries. */
import { execFileSync } from 'node:child_process';
import { accessSync, constants, existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root: the nearest parent of this (compiled) module holding taskbatch's package.json. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'taskbatch') return dir;
      } catch {
        // keep looking
      }
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`cannot find the taskbatch repository root above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
}

/** TASKBATCH_CACHE, else $XDG_CACHE_HOME/taskbatch, else ~/.cache/taskbatch (as hack/setup.sh). */
function cacheRoot(): string {
  return process.env.TASKBATCH_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'taskbatch');
}

/** Where a long-running local cluster records its kubeconfig for hack/kubeconfig.sh. */
export function localClusterStateDir(): string {
  return join(cacheRoot(), 'local-cluster');
}

const CONTROL_PLANE_TOOLS = ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kubectl', 'helm'] as const;
export type ControlPlaneTool = (typeof CONTROL_PLANE_TOOLS)[number];
export type ControlPlaneBinaries = Record<ControlPlaneTool, string> & { dir: string };

/** Paths of `tools` in `dir`; throws naming every one that is missing or not executable. */
function findBinaries<T extends string>(dir: string, tools: readonly T[], what: string): Record<T, string> & { dir: string } {
  const result = { dir } as Record<T, string> & { dir: string };
  const missing: string[] = [];
  for (const tool of tools) {
    const p = join(dir, tool);
    try {
      accessSync(p, constants.X_OK);
    } catch {
      missing.push(tool);
    }
    (result as Record<T, string>)[tool] = p;
  }
  if (missing.length > 0) {
    throw new Error(
      `${what} binaries missing in ${dir}: ${missing.join(', ')}; build them with hack/build-controlplane.sh ` +
        `(tens of minutes on a cold cache, seconds when cached) or point TASKBATCH_CONTROLPLANE_BIN at a directory holding them`,
    );
  }
  return result;
}

/**
 * The built control-plane binaries: TASKBATCH_CONTROLPLANE_BIN (set by hack/test.sh), else the
 * directory `hack/build-controlplane.sh --print-dir` names. Throws, naming what is missing and
 * how to build it, when a binary is absent.
 */
export function findControlPlaneBinaries(binDir?: string): ControlPlaneBinaries {
  return findBinaries(binDir ?? process.env.TASKBATCH_CONTROLPLANE_BIN ?? printBuildDir(), CONTROL_PLANE_TOOLS, 'control-plane');
}

function printBuildDir(): string {
  const script = resolve(repoRoot(), 'hack', 'build-controlplane.sh');
  try {
    const out = execFileSync('bash', [script, '--print-dir'], { encoding: 'utf8' }).trim().split('\n');
    const last = out[out.length - 1];
    if (!last) throw new Error('printed nothing');
    return last;
  } catch (err) {
    throw new Error(`cannot locate the control-plane binaries: ${script} --print-dir failed: ${(err as Error).message}`);
  }
}

const NODE_TOOLS = ['kubelet', 'kube-proxy', 'kube-scheduler', 'coredns', 'pause'] as const;
export type NodeTool = (typeof NODE_TOOLS)[number];
export type NodeBinaries = Record<NodeTool, string> & { dir: string };

/**
 * The real node's binaries (kubelet, kube-proxy, kube-scheduler, CoreDNS, the pause process), built
 * by hack/build-controlplane.sh next to the control plane's. Throws naming what is missing.
 */
export function findNodeBinaries(binDir?: string): NodeBinaries {
  return findBinaries(binDir ?? process.env.TASKBATCH_CONTROLPLANE_BIN ?? printBuildDir(), NODE_TOOLS, 'real-node');
}
