/**
 * The real node leaves the host as it found it: after stop(), and after its owner is killed with
 * SIGKILL (no handler runs; the reaper's cleanup command does the work). Checked from the host:
 * no node process, no veth, no uplink chain, no pod cgroups, no state dir, no lock, host sysctls
 * unchanged, the directories the node needed removed if they did not exist before.
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCommand } from '../../localcluster/index.js';
import { realNodeSupport } from '../../localcluster/realnode/index.js';
import { eventually } from '../support/batches.js';

const support = realNodeSupport();
if (!support.ok) console.warn(`[e2e] SKIPPED: the real-node teardown checks cannot run on this machine: ${support.reason}`);
const d = support.ok && !process.env.TASKBATCH_E2E_KUBECONFIG ? describe : describe.skip;

const SYSCTLS = ['vm/overcommit_memory', 'vm/panic_on_oom', 'kernel/panic', 'kernel/panic_on_oops'];
const readSysctls = (): string[] => SYSCTLS.map((s) => readFileSync(`/proc/sys/${s}`, 'utf8').trim());

interface HostState {
  veths: string[];
  chains: string[];
  cgroups: string[];
  nodeProcesses: string[];
  lock: boolean;
  sysctls: string[];
  varLib: boolean[];
}

async function hostState(nodeDir?: string): Promise<HostState> {
  const links = (await runCommand('ip', ['-o', 'link', 'show'], { env: process.env })).stdout;
  const chains = (await runCommand('iptables', ['-w', '-S'], { env: process.env })).stdout;
  const cgroups: string[] = [];
  for (const h of readdirSync('/sys/fs/cgroup')) {
    const dir = join('/sys/fs/cgroup', h);
    try {
      for (const e of readdirSync(dir)) if (e.startsWith('taskbatch-node-')) cgroups.push(join(dir, e));
    } catch {
      // not a directory
    }
  }
  const nodeProcesses: string[] = [];
  if (nodeDir) {
    for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
      try {
        const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
        if (cmd.includes(nodeDir)) nodeProcesses.push(`${pid}: ${cmd.slice(0, 120)}`);
      } catch {
        // gone
      }
    }
  }
  return {
    veths: [...links.matchAll(/\d+: (tbh[0-9a-f]+)/g)].map((m) => m[1]!),
    chains: chains.split('\n').filter((l) => l.includes('TB-UPLINK-')),
    cgroups,
    nodeProcesses,
    lock: existsSync('/tmp/taskbatch-realnode.lock'),
    sysctls: readSysctls(),
    varLib: ['/var/lib/kubelet', '/var/lib/cni'].map((p) => existsSync(p)),
  };
}

/** Starts a control plane + real node in a child process; resolves with the node's state dir once it is up. */
function startOwner(): { ready: Promise<string>; kill: () => void; exited: Promise<void> } {
  const script = `
    const { startRealCluster } = await import(${JSON.stringify(new URL('../../localcluster/realnode/index.js', import.meta.url).href)});
    const c = await startRealCluster();
    console.log('READY ' + c.node.dir);
    setInterval(() => {}, 1 << 30);
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'], env: process.env });
  let out = '';
  let err = '';
  const ready = new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString();
      const m = /READY (\S+)/.exec(out);
      if (m?.[1]) resolve(m[1]);
    });
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.on('exit', (code) => reject(new Error(`owner exited (${code}) before the node was up:\n${err.slice(-3000)}`)));
  });
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  return { ready, kill: () => child.kill('SIGKILL'), exited };
}

d('the real node leaves the host as it found it', () => {
  test('after its owner is killed with SIGKILL, the reaper undoes everything', async () => {
    const before = await hostState();
    expect(before.veths).toEqual([]);
    expect(before.chains).toEqual([]);
    const owner = startOwner();
    const nodeDir = await owner.ready;
    const during = await hostState(nodeDir);
    expect(during.veths).toHaveLength(1);
    expect(during.chains.length).toBeGreaterThan(0);
    expect(during.cgroups.length).toBeGreaterThan(0);
    expect(during.nodeProcesses.length).toBeGreaterThan(3);
    expect(during.lock).toBe(true);
    // The kubelet wanted other kernel tunables; the host kept its own.
    expect(during.sysctls).toEqual(before.sysctls);

    owner.kill();
    await owner.exited;
    const after = await eventually(
      async () => {
        const s = await hostState(nodeDir);
        return s.veths.length + s.chains.length + s.cgroups.length + s.nodeProcesses.length === 0 && !s.lock && !existsSync(nodeDir) ? s : undefined;
      },
      30_000,
      'the host cleaned up after the SIGKILLed owner',
    ).catch(async () => hostState(nodeDir));
    expect(after).toEqual({ ...before, nodeProcesses: [] });
    expect(existsSync(nodeDir)).toBe(false);
  }, 240_000);
});
