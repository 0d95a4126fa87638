/**
 * A real Kubernetes node next to the local control plane: kubelet + containerd + runc, the CNI
 * bridge, kube-proxy (iptables), CoreDNS and kube-scheduler, with images loaded from OCI archives.
 *
 * The node lives in namespaces of its own — PID, mount and network — held by a small init process
 * (the pause binary as PID 1). So:
 * - killing that init (teardown, or the reaper after a SIGKILL of the owner) kills every node
 *   process, shims and containers included, and drops every mount the kubelet and containerd made;
 * - the bridge, pod veths, iptables chains, routes and the node's address exist only inside the
 *   node's network namespace, which vanishes with it; the host sees one veth pair (host end
 *   `hostIP`, node end `nodeIP`) and routes for the pod and Service ranges pointing at it;
 * - the kernel tunables the kubelet insists on setting (vm.overcommit_memory, kernel.panic, …) are
 *   files bind-mounted over /proc/sys inside the node's mount namespace: the host keeps its values.
 * What remains on the host is undone at teardown and by the reaper: cgroups under `cgroupRoot`,
 * the uplink counter chain, the veth, and the few empty directories the node needed.
 */
import { CoreV1Api } from '@kubernetes/client-node';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { Resolver } from 'node:dns/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runCommand, type ControlPlane, type ToolResult } from '../controlplane.js';
import { createLogger, describeError, type Logger } from '../log.js';
import { findNodeBinaries } from '../paths.js';
import { freePort } from '../ports.js';
import { spawnManaged, tailFile, type ManagedProcess } from '../process.js';
import { signalGroup, trackCleanup, trackDir, untrackCleanup, untrackDir } from '../reaper.js';
import { containerdConfig, corefile, cniConfList, DEFAULT_NODE_NETWORK, kubeletConfig, kubeProxyConfig, type NodeNetwork } from './config.js';
import { uplinkChainRules, uplinkPacketCount } from './uplink.js';

export interface RealNodeOptions {
  controlPlane: ControlPlane;
  /** Default: node-<random>. */
  nodeName?: string;
  /** OCI archives to load into containerd before the kubelet starts (the pause image among them). */
  images?: string[];
  /** The sandbox ("pause") image's name as loaded from `images` (default localhost/pause:1). */
  sandboxImage?: string;
  binDir?: string;
  net?: NodeNetwork;
  /** Keep the state dir (configs, logs) after stop(). Default TASKBATCH_LOCALCLUSTER_KEEP=1. */
  keepDir?: boolean;
  startTimeoutMs?: number;
  logger?: Logger;
}

export interface RealNodeTimings {
  namespacesMs: number;
  containerdMs: number;
  imagesMs: number;
  kubeletReadyMs: number;
  servicesMs: number;
  totalMs: number;
}

export interface RealNode {
  readonly nodeName: string;
  readonly net: NodeNetwork;
  /** State dir: configs, logs/, containerd/, kubelet/. */
  readonly dir: string;
  readonly logDir: string;
  readonly timings: RealNodeTimings;
  /** Runs a command inside the node's namespaces (e.g. `iptables -t nat -S`, `ctr`, `ip route`). */
  exec(argv: string[], options?: { input?: string; timeoutMs?: number }): Promise<ToolResult>;
  /** `ctr -n k8s.io` against the node's containerd. */
  ctr(args: string[]): Promise<ToolResult>;
  /** Loads OCI archives into the node's containerd (names as in the archives). */
  loadImages(archives: string[]): Promise<void>;
  /** Packets the host sent or forwarded towards the node's private ranges by any interface but the
   * node's veth and loopback, or from the pods' ranges out of the host: must stay 0. */
  uplinkPackets(): Promise<number>;
  /** Stops everything, deletes the Node, undoes the host changes. Idempotent. */
  stop(): Promise<void>;
}

export type RealNodeSupport = { ok: true } | { ok: false; reason: string };

const HOST_TOOLS = ['unshare', 'nsenter', 'ip', 'iptables', 'containerd', 'ctr', 'runc', 'conntrack'];
const CNI_BIN_DIR = '/usr/lib/cni';
/** Directories the node's components insist on (hard-coded in kubelet and containerd's CNI library);
 * created empty on the host if missing, masked with a tmpfs inside the node, removed at teardown. */
const MASKED_DIRS = ['/var/lib/kubelet', '/var/lib/cni'];
/** Kernel tunables the kubelet sets at start-up; diverted to files inside the node's mount namespace. */
const DIVERTED_SYSCTLS = ['vm/overcommit_memory', 'vm/panic_on_oom', 'kernel/panic', 'kernel/panic_on_oops', 'kernel/keys/root_maxkeys', 'kernel/keys/root_maxbytes'];
const LOCK_FILE = join(tmpdir(), 'taskbatch-realnode.lock');

/**
 * Whether this machine can run the real node: root, cgroup v1 or v2 mounted, the host tools from
 * Debian's packages, the CNI plugins, and namespaces. The reason names what is missing and how to
 * install it; callers skip with it (never silently).
 */
export function realNodeSupport(binDir?: string): RealNodeSupport {
  if (process.platform !== 'linux') return { ok: false, reason: `the real node needs Linux (this is ${process.platform})` };
  if (process.getuid?.() !== 0) return { ok: false, reason: 'the real node needs root (containerd, runc, network namespaces, iptables)' };
  const missing = HOST_TOOLS.filter((t) => !onPath(t));
  if (missing.length > 0) {
    return { ok: false, reason: `missing host tools: ${missing.join(', ')}; install with apt-get install -y containerd runc iptables conntrack iproute2 util-linux` };
  }
  for (const plugin of ['bridge', 'host-local', 'loopback']) {
    if (!existsSync(join(CNI_BIN_DIR, plugin))) return { ok: false, reason: `missing CNI plugin ${CNI_BIN_DIR}/${plugin}; install with apt-get install -y containernetworking-plugins` };
  }
  try {
    findNodeBinaries(binDir);
  } catch (err) {
    return { ok: false, reason: describeError(err) };
  }
  try {
    execFileSync('unshare', ['--pid', '--fork', '--mount', '--net', '--mount-proc', 'true'], { stdio: 'pipe', timeout: 10_000 });
  } catch (err) {
    return { ok: false, reason: `cannot create PID, mount and network namespaces (unshare failed: ${(err as { stderr?: Buffer }).stderr?.toString().trim() || describeError(err)})` };
  }
  if (!existsSync('/sys/fs/cgroup/memory') && !existsSync('/sys/fs/cgroup/cgroup.controllers')) return { ok: false, reason: 'no cgroup hierarchy mounted under /sys/fs/cgroup' };
  return { ok: true };
}

function onPath(cmd: string): boolean {
  return (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin')
    .split(':')
    .concat(['/usr/sbin', '/sbin'])
    .some((d) => d && existsSync(join(d, cmd)));
}

export async function startRealNode(options: RealNodeOptions): Promise<RealNode> {
  const support = realNodeSupport(options.binDir ?? options.controlPlane.binDir);
  if (!support.ok) throw new Error(`cannot start a real node: ${support.reason}`);
  const log = options.logger ?? createLogger('realnode');
  const cp = options.controlPlane;
  const bins = findNodeBinaries(options.binDir ?? cp.binDir);
  const net = options.net ?? DEFAULT_NODE_NETWORK;
  const nodeName = options.nodeName ?? `node-${randomBytes(3).toString('hex')}`;
  const id = randomBytes(3).toString('hex');
  const timeoutMs = options.startTimeoutMs ?? 90_000;
  const t0 = Date.now();
  takeLock();

  // Short paths: unix socket paths must stay under 108 bytes.
  const dir = mkdtempSync(join(tmpdir(), 'tb-node-'));
  const keepDir = options.keepDir ?? process.env.TASKBATCH_LOCALCLUSTER_KEEP === '1';
  const logDir = join(dir, 'logs');
  const certDir = join(dir, 'certs');
  for (const d of [
    logDir,
    certDir,
    join(dir, 'sysctl'),
    join(dir, 'cni', 'net.d'),
    join(dir, 'cni', 'ipam'),
    join(dir, 'kubelet'),
    join(dir, 'pod-logs'),
    join(dir, 'manifests'),
    join(dir, 'volume-plugins'),
  ]) {
    mkdirSync(d, { recursive: true });
  }
  const hostVeth = `tbh${id}`;
  const nodeVeth = `tbn${id}`;
  const uplinkChain = `TB-UPLINK-${id}`.toUpperCase();
  const cgroupRoot = `/taskbatch-node-${id}`;
  const createdDirs = MASKED_DIRS.filter((d) => !existsSync(d));
  for (const d of createdDirs) mkdirSync(d, { recursive: true });
  const cgroupDirs = cgroupHierarchies().map((h) => join(h, cgroupRoot));
  const processes: ManagedProcess[] = [];
  let holderPid = 0;
  let stopped = false;

  const teardownScript = hostTeardownScript({ hostVeth, uplinkChain, cgroupDirs, createdDirs, lockFile: LOCK_FILE });
  const cleanupId = `realnode-${id}`;
  trackCleanup(cleanupId, ['bash', '-c', teardownScript, 'teardown', '0']);
  if (!keepDir) trackDir(dir);

  const nsExecArgs = (argv: string[]): string[] => ['--target', String(holderPid), '--pid', '--mount', '--net', '--', ...argv];
  const exec = (argv: string[], o: { input?: string; timeoutMs?: number } = {}): Promise<ToolResult> =>
    runCommand('nsenter', nsExecArgs(argv), { env: process.env, timeoutMs: o.timeoutMs ?? 60_000, ...(o.input !== undefined ? { input: o.input } : {}) });
  const host = async (argv: string[], what: string): Promise<string> => {
    const [cmd, ...args] = argv;
    const r = await runCommand(cmd ?? 'true', args, { env: process.env, timeoutMs: 60_000 });
    if (r.code !== 0) throw new Error(`real node ${nodeName}: cannot ${what}: ${argv.join(' ')} exited ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
    return r.stdout;
  };
  const inNode = async (argv: string[], what: string): Promise<string> => {
    const r = await exec(argv);
    if (r.code !== 0) throw new Error(`real node ${nodeName}: cannot ${what}: ${argv.join(' ')} exited ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
    return r.stdout;
  };
  const daemon = async (name: string, argv: string[]): Promise<ManagedProcess> => {
    const proc = await spawnManaged({ name, command: 'nsenter', args: nsExecArgs(argv), logFile: join(logDir, `${name}.log`), env: nodeEnv() });
    processes.push(proc);
    return proc;
  };
  const socket = join(dir, 'containerd', 'containerd.sock');
  const ctr = (args: string[]): Promise<ToolResult> => runCommand('ctr', ['--address', socket, '-n', 'k8s.io', ...args], { env: process.env, timeoutMs: 300_000 });
  const loadImages = async (archives: string[]): Promise<void> => {
    for (const archive of archives) {
      const r = await ctr(['images', 'import', '--no-unpack=false', archive]);
      if (r.code !== 0) throw new Error(`real node ${nodeName}: cannot load image archive ${archive}: ${r.stderr.trim() || r.stdout.trim()}`);
      log.info('Loaded image archive', { archive, out: r.stdout.trim() });
    }
  };

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    // Graceful first for the host-side scheduler; the node's processes all die with its PID 1.
    for (const p of processes.filter((q) => q.name === 'kube-scheduler' || q.name === 'api-relay-host')) await p.stop(3000);
    for (const p of processes) signalGroup(p.pid, 'SIGKILL');
    await Promise.all(processes.map((p) => p.exited));
    try {
      await cp.kubeConfig.makeApiClient(CoreV1Api).deleteNode({ name: nodeName });
    } catch {
      // the control plane may already be gone
    }
    const r = await runCommand('bash', ['-c', teardownScript, 'teardown', String(holderPid)], { env: process.env, timeoutMs: 60_000 });
    if (r.code !== 0) log.warn('Host teardown reported errors', { stderr: r.stderr.trim() });
    untrackCleanup(cleanupId);
    if (!keepDir) {
      rmSync(dir, { recursive: true, force: true });
      untrackDir(dir);
    }
    log.info('Stopped real node', { nodeName, dir });
  };

  try {
    // 1. Namespaces: the holder (pause as PID 1) sets up the node's mounts, then waits forever.
    prepareCgroups(cgroupDirs);
    const holderScript = nodeInitScript({ stateDir: dir, pause: bins.pause, maskedDirs: MASKED_DIRS });
    const holder = await spawnManaged({
      name: 'node-init',
      command: 'unshare',
      args: ['--pid', '--fork', '--kill-child', '--mount', '--propagation', 'private', '--net', '--mount-proc', '--', 'sh', '-c', holderScript],
      logFile: join(logDir, 'node-init.log'),
      env: nodeEnv(),
    });
    processes.push(holder);
    holderPid = await waitFor('the node init process', timeoutMs, holder, async () => {
      const children = readChildren(holder.pid);
      return children[0] !== undefined && existsSync(join(dir, 'init.ready')) ? children[0] : undefined;
    });
    await host(['ip', 'link', 'add', hostVeth, 'type', 'veth', 'peer', 'name', nodeVeth], 'create the veth pair');
    await host(['ip', 'link', 'set', nodeVeth, 'netns', String(holderPid)], 'move the veth into the node namespace');
    await host(['ip', 'addr', 'add', `${net.hostIP}/${prefixLength(net.linkCIDR)}`, 'dev', hostVeth], 'address the host end of the veth');
    await host(['ip', 'link', 'set', hostVeth, 'up'], 'bring the host veth up');
    await inNode(['ip', 'link', 'set', nodeVeth, 'name', 'eth0'], 'rename the node veth');
    await inNode(['ip', 'addr', 'add', `${net.nodeIP}/${prefixLength(net.linkCIDR)}`, 'dev', 'eth0'], 'address the node');
    await inNode(['ip', 'link', 'set', 'eth0', 'up'], 'bring the node veth up');
    // The host reaches pods and Services only through the node; nothing of these ranges goes to its default route.
    await host(['ip', 'route', 'replace', net.podCIDR, 'via', net.nodeIP, 'dev', hostVeth], 'route the pod range to the node');
    await host(['ip', 'route', 'replace', net.serviceCIDR, 'via', net.nodeIP, 'dev', hostVeth], 'route the Service range to the node');
    for (const rule of uplinkChainRules(uplinkChain, hostVeth, net)) await host(['iptables', '-w', ...rule], 'install the uplink counter');
    const namespacesMs = Date.now() - t0;

    // 2. containerd.
    const tContainerd = Date.now();
    writeFileSync(join(dir, 'cni', 'net.d', '10-taskbatch.conflist'), cniConfList(net, join(dir, 'cni', 'ipam')));
    const containerdToml = join(dir, 'containerd.toml');
    writeFileSync(
      containerdToml,
      containerdConfig({
        root: join(dir, 'containerd', 'root'),
        state: join(dir, 'containerd', 'state'),
        socket,
        runcRoot: join(dir, 'containerd', 'runc'),
        optDir: join(dir, 'containerd', 'opt'),
        cniConfDir: join(dir, 'cni', 'net.d'),
        cniBinDir: CNI_BIN_DIR,
        runcBinary: which('runc'),
        sandboxImage: options.sandboxImage ?? 'localhost/pause:1',
      }),
    );
    const containerd = await daemon('containerd', ['containerd', '--config', containerdToml, '--log-level', 'warn']);
    await waitFor('containerd', timeoutMs, containerd, async () => ((await ctr(['version'])).code === 0 ? true : undefined));
    const containerdMs = Date.now() - tContainerd;

    const tImages = Date.now();
    await loadImages(options.images ?? []);
    const imagesMs = Date.now() - tImages;

    // 3. The API server, reachable inside the node at 127.0.0.1:<its port> (kubeconfigs) and at
    //    nodeIP:6443 (the `kubernetes` Service's endpoint for pods), through a Unix socket.
    const relayJs = join(fileURLToPath(new URL('.', import.meta.url)), 'relay.js');
    const apiSock = join(dir, 'api.sock');
    const relayHost = await spawnManaged({
      name: 'api-relay-host',
      command: process.execPath,
      args: [relayJs, '--listen', `unix:${apiSock}`, '--to', `tcp:${cp.host}:${cp.port}`],
      logFile: join(logDir, 'api-relay-host.log'),
      env: nodeEnv(),
    });
    processes.push(relayHost);
    const relayNode = await daemon('api-relay-node', [process.execPath, relayJs, '--listen', `tcp:127.0.0.1:${cp.port}`, '--listen', `tcp:${net.nodeIP}:6443`, '--to', `unix:${apiSock}`]);
    await waitFor('the API relay', timeoutMs, relayNode, async () => (existsSync(apiSock) && tailFile(relayNode.logFile, 5).split('Relay listening').length > 2 ? true : undefined));

    // 4. Cluster objects a node needs: RBAC for node components, the `kubernetes` and kube-dns endpoints.
    const apply = await cp.kubectl(['apply', '-f', '-'], { input: clusterObjects(net) });
    if (apply.code !== 0) throw new Error(`real node ${nodeName}: cannot create the node's cluster objects: ${apply.stderr.trim()}`);

    // 5. kubelet.
    const tKubelet = Date.now();
    const kubeletUser = await cp.createUserKubeconfig(`system:node:${nodeName}`, ['system:nodes']);
    const serving = await cp.issueCertificate(certDir, {
      name: 'kubelet-serving',
      commonName: `system:node:${nodeName}`,
      organizations: ['system:nodes'],
      usage: 'server',
      dnsNames: [nodeName],
      ips: [net.nodeIP],
    });
    writeFileSync(join(dir, 'resolv.conf'), '# no upstream: names outside cluster.local do not resolve\n');
    const kubeletYaml = join(dir, 'kubelet.yaml');
    writeFileSync(
      kubeletYaml,
      kubeletConfig({
        net,
        cgroupRoot,
        maxPods: 60,
        paths: {
          caFile: cp.caCertPath,
          tlsCertFile: serving.certPath,
          tlsKeyFile: serving.keyPath,
          containerdSocket: socket,
          resolvConf: join(dir, 'resolv.conf'),
          podLogsDir: join(dir, 'pod-logs'),
          volumePluginDir: join(dir, 'volume-plugins'),
          staticPodPath: join(dir, 'manifests'),
        },
      }),
    );
    const kubelet = await daemon('kubelet', [
      bins.kubelet,
      `--config=${kubeletYaml}`,
      `--kubeconfig=${kubeletUser.path}`,
      `--root-dir=${join(dir, 'kubelet')}`,
      `--cert-dir=${certDir}`,
      `--hostname-override=${nodeName}`,
      `--node-ip=${net.nodeIP}`,
      '--v=1',
    ]);
    const core = cp.kubeConfig.makeApiClient(CoreV1Api);
    await waitFor(`Node ${nodeName} Ready`, timeoutMs, kubelet, async () => {
      try {
        const node = await core.readNode({ name: nodeName });
        return node.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ? true : undefined;
      } catch {
        return undefined;
      }
    });
    const kubeletReadyMs = Date.now() - tKubelet;

    // 6. Services and DNS: kube-proxy, CoreDNS; and the scheduler on the host.
    const tServices = Date.now();
    const proxyUser = await cp.createUserKubeconfig('system:kube-proxy');
    const proxyYaml = join(dir, 'kube-proxy.yaml');
    writeFileSync(proxyYaml, kubeProxyConfig({ net, kubeconfig: proxyUser.path, nodeName }));
    const proxy = await daemon('kube-proxy', [bins['kube-proxy'], `--config=${proxyYaml}`, '--v=1']);
    const dnsUser = await cp.createUserKubeconfig('taskbatch-local:coredns');
    writeFileSync(join(dir, 'Corefile'), corefile(net, dnsUser.path, 'taskbatch-local'));
    const coredns = await daemon('coredns', [bins.coredns, '-conf', join(dir, 'Corefile')]);
    const schedPort = await freePort('127.0.0.1');
    const scheduler = await spawnManaged({
      name: 'kube-scheduler',
      command: bins['kube-scheduler'],
      args: [
        `--kubeconfig=${cp.kubeconfigPath}`,
        `--authentication-kubeconfig=${cp.kubeconfigPath}`,
        `--authorization-kubeconfig=${cp.kubeconfigPath}`,
        '--bind-address=127.0.0.1',
        `--secure-port=${schedPort}`,
        '--leader-elect=false',
        '--v=1',
      ],
      logFile: join(logDir, 'kube-scheduler.log'),
      env: nodeEnv(),
    });
    processes.push(scheduler);
    await waitFor('kube-proxy rules for the kubernetes Service', timeoutMs, proxy, async () => {
      const r = await exec(['iptables', '-w', '-t', 'nat', '-S', 'KUBE-SERVICES']);
      return r.code === 0 && r.stdout.includes('default/kubernetes:https') ? true : undefined;
    });
    await waitFor('CoreDNS answering for kubernetes.default.svc.cluster.local', timeoutMs, coredns, async () => {
      const resolver = new Resolver({ timeout: 1000, tries: 1 });
      resolver.setServers([net.nodeIP]);
      try {
        const ips = await resolver.resolve4('kubernetes.default.svc.cluster.local');
        return ips.includes(firstHost(net.serviceCIDR)) ? true : undefined;
      } catch {
        return undefined;
      }
    });
    await waitFor('kube-scheduler', timeoutMs, scheduler, async () => {
      try {
        const res = await fetch(`https://127.0.0.1:${schedPort}/healthz`, { signal: AbortSignal.timeout(2000) });
        return res.ok ? true : undefined;
      } catch {
        // self-signed serving certificate: fall back to the log line
        return /Serving securely|Starting DynamicServingCertificateController/.test(tailFile(scheduler.logFile, 50)) ? true : undefined;
      }
    });
    const servicesMs = Date.now() - tServices;

    const timings: RealNodeTimings = { namespacesMs, containerdMs, imagesMs, kubeletReadyMs, servicesMs, totalMs: Date.now() - t0 };
    log.info('Started real node', { nodeName, dir, ...timings });
    return {
      nodeName,
      net,
      dir,
      logDir,
      timings,
      exec,
      ctr,
      loadImages,
      uplinkPackets: async () => uplinkPacketCount(await host(['iptables', '-w', '-L', uplinkChain, '-v', '-x', '-n'], 'read the uplink counter')),
      stop,
    };
  } catch (err) {
    const logs = processes.map((p) => `--- ${p.name} (${p.logFile}):\n${tailFile(p.logFile, 15)}`).join('\n');
    await stop().catch(() => undefined);
    throw new Error(`${describeError(err)}\n${logs}`);
  }
}

/** Node components see the host's PATH (sbin included for iptables/ip), no KUBECONFIG. */
function nodeEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { PATH: `${process.env.PATH ?? ''}:/usr/local/sbin:/usr/sbin:/sbin`, HOME: process.env.HOME ?? '/root', LANG: 'C.UTF-8' };
  return env;
}

function which(cmd: string): string {
  for (const d of nodeEnv().PATH?.split(':') ?? []) if (d && existsSync(join(d, cmd))) return join(d, cmd);
  throw new Error(`${cmd} not found on PATH`);
}

function takeLock(): void {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(LOCK_FILE, String(process.pid), { flag: 'wx' });
      return;
    } catch {
      const holder = Number(readFileSync(LOCK_FILE, 'utf8').trim());
      if (holder > 0 && isAlive(holder)) {
        throw new Error(`another real node is running on this machine (owner pid ${holder}, lock ${LOCK_FILE}); one at a time: stop it first`);
      }
      unlinkSync(LOCK_FILE);
    }
  }
  throw new Error(`cannot take ${LOCK_FILE}`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function readChildren(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Every mounted cgroup v1 hierarchy (and the unified one of a hybrid or v2 system). */
function cgroupHierarchies(): string[] {
  const base = '/sys/fs/cgroup';
  if (existsSync(join(base, 'cgroup.controllers'))) return [base];
  return readdirSync(base, { withFileTypes: true })
    .filter((e) => e.isDirectory() && !e.isSymbolicLink())
    .map((e) => join(base, e.name))
    .filter((p) => existsSync(join(p, 'cgroup.procs')));
}

/** The kubelet wants its cgroupRoot to exist in every hierarchy; a v1 cpuset starts empty, so copy the parent's. */
function prepareCgroups(dirs: string[]): void {
  for (const d of dirs) {
    mkdirSync(d, { recursive: true });
    if (d.includes('/cpuset/')) {
      for (const f of ['cpuset.cpus', 'cpuset.mems']) {
        const parent = join(d, '..', f);
        if (existsSync(parent)) writeFileSync(join(d, f), readFileSync(parent, 'utf8'));
      }
    }
  }
}

function prefixLength(cidr: string): string {
  return cidr.split('/')[1] ?? '32';
}

/** The first host address of a CIDR (the API server's ClusterIP in the Service range). */
export function firstHost(cidr: string): string {
  const [ip = ''] = cidr.split('/');
  const parts = ip.split('.').map(Number);
  parts[3] = (parts[3] ?? 0) + 1;
  return parts.join('.');
}

/** PID 1 of the node: mounts that keep the node's writes off the host, then the pause process. */
export function nodeInitScript(o: { stateDir: string; pause: string; maskedDirs: string[] }): string {
  const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
  return [
    'set -eu',
    // Node-private /run (containerd shim sockets, xtables lock) and /var/log (pod log links).
    'mount -t tmpfs -o mode=0755 tmpfs /run',
    'mount -t tmpfs -o mode=0755 tmpfs /var/log',
    ...o.maskedDirs.map((d) => `mount -t tmpfs -o mode=0755 tmpfs ${q(d)}`),
    ...DIVERTED_SYSCTLS.map((s) => {
      const file = `${o.stateDir}/sysctl/${s.replace(/\//g, '_')}`;
      return `if [ -e /proc/sys/${s} ]; then cat /proc/sys/${s} > ${q(file)}; mount --bind ${q(file)} /proc/sys/${s}; fi`;
    }),
    // Per network namespace: route between the veth and the pod bridge; let bridged pod traffic
    // through iptables so Service DNAT works between pods on the same bridge.
    'echo 1 > /proc/sys/net/ipv4/ip_forward',
    'if [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]; then echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables; fi',
    'ip link set lo up',
    `touch ${q(`${o.stateDir}/init.ready`)}`,
    `exec ${q(o.pause)}`,
  ].join('\n');
}

/**
 * Undoes what the node left on the host. $1 is the node's PID 1 (0 when unknown): wait for it and
 * every process of the node to be gone, then remove cgroups, the veth, the counter chain, the
 * directories created for the node, and the lock. Safe to run twice.
 */
export function hostTeardownScript(o: { hostVeth: string; uplinkChain: string; cgroupDirs: string[]; createdDirs: string[]; lockFile: string }): string {
  const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
  return [
    // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
    'pid="${1:-0}"',
    'for i in $(seq 1 100); do { [ "$pid" = 0 ] || [ ! -e /proc/$pid ]; } && break; sleep 0.1; done',
    // Processes of a dying PID namespace linger a moment; a cgroup dir goes once it has none.
    ...o.cgroupDirs.map((d) => `for i in $(seq 1 50); do [ -d ${q(d)} ] || break; find ${q(d)} -depth -type d -exec rmdir {} + 2>/dev/null; [ -d ${q(d)} ] || break; sleep 0.1; done`),
    `ip link del ${q(o.hostVeth)} 2>/dev/null || true`,
    `while iptables -w -D OUTPUT -j ${q(o.uplinkChain)} 2>/dev/null; do :; done`,
    `while iptables -w -D FORWARD -j ${q(o.uplinkChain)} 2>/dev/null; do :; done`,
    `iptables -w -F ${q(o.uplinkChain)} 2>/dev/null; iptables -w -X ${q(o.uplinkChain)} 2>/dev/null`,
    ...o.createdDirs.map((d) => `rmdir ${q(d)} 2>/dev/null || true`),
    `[ "$(cat ${q(o.lockFile)} 2>/dev/null)" = "${process.pid}" ] && rm -f ${q(o.lockFile)}`,
    'exit 0',
  ].join('\n');
}

/** RBAC for the node's components and the endpoints the local control plane does not manage. */
export function clusterObjects(net: NodeNetwork): string {
  return `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "taskbatch-local:nodes"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:node"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:nodes"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "taskbatch-local:coredns"}
rules:
- {apiGroups: [""], resources: [endpoints, services, pods, namespaces], verbs: [list, watch]}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "taskbatch-local:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "taskbatch-local:coredns"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "taskbatch-local:coredns"}]
---
# The API server runs with --endpoint-reconciler-type=none: pods reach it through the node's relay.
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes
  namespace: default
  labels: {kubernetes.io/service-name: kubernetes, endpointslice.kubernetes.io/managed-by: taskbatch-localcluster}
addressType: IPv4
endpoints: [{addresses: ["${net.nodeIP}"], conditions: {ready: true}}]
ports: [{name: https, port: 6443, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns, kubernetes.io/name: CoreDNS}
spec:
  clusterIP: ${net.dnsServiceIP}
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: 53}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-node
  namespace: kube-system
  labels: {kubernetes.io/service-name: kube-dns, endpointslice.kubernetes.io/managed-by: taskbatch-localcluster}
addressType: IPv4
endpoints: [{addresses: ["${net.nodeIP}"], conditions: {ready: true}}]
ports:
- {name: dns, port: 53, protocol: UDP}
- {name: dns-tcp, port: 53, protocol: TCP}
`;
}

async function waitFor<T>(what: string, timeoutMs: number, proc: ManagedProcess, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const status = proc.exitStatus();
    if (status) throw new Error(`${proc.name} exited (code ${status.code}, signal ${status.signal}) while waiting for ${what}; log ${proc.logFile}:\n${tailFile(proc.logFile, 25)}`);
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; log ${proc.logFile}:\n${tailFile(proc.logFile, 25)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
