/**
 * A test stand-in for a kubelet (plus a trivial scheduler): registers a Node and keeps it alive
 * (Lease in kube-node-lease every few seconds, Ready condition), binds pending pods of the default
 * scheduler to it, and runs each pod's containers as local processes (see pod-runner.ts), each
 * pod on its own loopback IP. Pods are followed with a list+watch that relists on 410 and errors.
 *
 * Not emulated: Services, cluster DNS, kube-proxy, image pulls, volumes/volumeMounts (except Secret
 * volumes: written into the pod directory, env values naming a path under their mountPath pointed
 * there; see pod-runner.ts), cgroups and
 * resource limits, exec/attach/port-forward, startup probes, lifecycle hooks, affinity.
 */
import { CoordinationV1Api, CoreV1Api, V1MicroTime, VersionApi, type KubeConfig, type V1Node, type V1Pod, type V1Taint, type V1Toleration } from '@kubernetes/client-node';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { arch, availableParallelism, hostname, release, tmpdir, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { defaultImageMap, type ImageRule } from './image-map.js';
import { isConflict, isNotFound, k8sTime, strategicMergePatch } from './kube.js';
import { startKubeletServer, type KubeletServer } from './kubelet-server.js';
import { createLogger, describeError, type Logger } from './log.js';
import { repoRoot } from './paths.js';
import type { EnvSources } from './pod-env.js';
import { PodIpAllocator } from './pod-ips.js';
import { PodRunner, type PodProcessInfo, type RunnerContext } from './pod-runner.js';
import { trackDir, untrackDir } from './reaper.js';
import { startListWatch, type ListWatch } from './watch.js';

export interface NodeAgentOptions {
  /** Credentials of the agent itself (the admin kubeconfig of the harness works). */
  kubeConfig: KubeConfig;
  /** Default: local-<random>. */
  nodeName?: string;
  /** Extra Node labels (kubernetes.io/hostname, os and arch are always set). */
  labels?: Record<string, string>;
  /** Node taints (pods must tolerate NoSchedule/NoExecute ones to be bound here). */
  taints?: V1Taint[];
  /** Images → local programs; default defaultImageMap(repoRoot). Replaces the default entirely. */
  imageMap?: ImageRule[];
  /** Directory for pod dirs and logs (default: a temp dir, removed on stop unless keepDir). */
  dir?: string;
  keepDir?: boolean;
  /** Container restart back-off (default 1 s doubling to 10 s; the kubelet uses 10 s to 5 min). */
  restartBackoff?: { initialMs: number; maxMs: number };
  /** Node lease duration (default 40 s, renewed every quarter of it). */
  leaseDurationSeconds?: number;
  /** Names of the agent's environment variables passed on to every container (default PATH, LANG, LC_ALL, TZ). */
  inheritEnv?: string[];
  /** Serve /containerLogs so `kubectl logs` works through the API server (default true). */
  serveLogs?: boolean;
  /** ServiceAccount token lifetime (default 24 h, rotated at 80 %). */
  tokenExpirationSeconds?: number;
  logger?: Logger;
}

export interface NodeAgent {
  readonly nodeName: string;
  /** Where pod dirs (home, serviceaccount/, kubeconfig, logs/) live. */
  readonly dir: string;
  /** The pod address blocks this agent leased, e.g. ["127.0.10.0/24"]. */
  readonly podRanges: string[];
  /** Everything a container of the pod printed (stdout and stderr), all restarts, oldest first; '' if none. */
  podLog(namespace: string, name: string, container?: string): string;
  /** The pod's per-container log files (one per attempt). */
  podLogFiles(namespace: string, name: string, container?: string): string[];
  /** The pod's directory on this node (home/, logs/, serviceaccount/{token,ca.crt,namespace}, kubeconfig). */
  podDir(namespace: string, name: string): string | undefined;
  /** The running process of a pod's container (first running container by default). */
  podProcess(namespace: string, name: string, container?: string): PodProcessInfo | undefined;
  /** Waits until the pod's container has a running process. */
  waitForPodProcess(namespace: string, name: string, options?: { container?: string; timeoutMs?: number }): Promise<PodProcessInfo>;
  /** Kills every pod process at once (SIGKILL) and stops watching; the Node object stays. */
  stop(): Promise<void>;
}

const ROLE_LABEL = 'taskbatch.dev/local-node';

export async function startNodeAgent(options: NodeAgentOptions): Promise<NodeAgent> {
  const log = options.logger ?? createLogger('node-agent');
  const kc = options.kubeConfig;
  const core = kc.makeApiClient(CoreV1Api);
  const coordination = kc.makeApiClient(CoordinationV1Api);
  const nodeName = options.nodeName ?? `local-${randomBytes(3).toString('hex')}`;
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('node agent: the kubeconfig has no current cluster');
  const apiUrl = new URL(cluster.server);
  const caPem = cluster.caData ? Buffer.from(cluster.caData, 'base64').toString('utf8') : cluster.caFile ? readFileSync(cluster.caFile, 'utf8') : '';
  const keepDir = options.keepDir ?? process.env.TASKBATCH_LOCALCLUSTER_KEEP === '1';
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), `tb-node-${nodeName}-`));
  mkdirSync(join(dir, 'pods'), { recursive: true });
  if (!keepDir && !options.dir) trackDir(dir);
  const ips = new PodIpAllocator();
  const hostIP = '127.0.0.1';
  const inherit = options.inheritEnv ?? ['PATH', 'LANG', 'LC_ALL', 'TZ'];
  const baseEnv: Record<string, string> = {};
  for (const k of inherit) if (process.env[k] !== undefined) baseEnv[k] = process.env[k] ?? '';
  // `node` in a container is the Node that runs the agent.
  baseEnv.PATH = [dirname(process.execPath), baseEnv.PATH ?? '/usr/local/bin:/usr/bin:/bin'].join(':');

  const envSources: EnvSources = {
    getSecret: async (namespace, name) => {
      try {
        return await core.readNamespacedSecret({ name, namespace });
      } catch (err) {
        if (isNotFound(err)) return undefined;
        throw err;
      }
    },
    getConfigMap: async (namespace, name) => {
      try {
        return await core.readNamespacedConfigMap({ name, namespace });
      } catch (err) {
        if (isNotFound(err)) return undefined;
        throw err;
      }
    },
  };

  const ctx: RunnerContext = {
    core,
    nodeName,
    hostIP,
    apiServer: { host: apiUrl.hostname, port: Number(apiUrl.port || 443), server: cluster.server, caPem },
    imageMap: options.imageMap ?? defaultImageMap(repoRoot()),
    baseEnv,
    podsDir: join(dir, 'pods'),
    ips,
    backoff: options.restartBackoff ?? { initialMs: 1000, maxMs: 10_000 },
    envSources,
    nodeCpu: availableParallelism(),
    nodeMemoryBytes: totalmem(),
    tokenExpirationSeconds: options.tokenExpirationSeconds ?? 86_400,
    logger: log,
  };

  const runners = new Map<string, PodRunner>(); // by uid
  const latestByName = new Map<string, string>(); // ns/name -> pod dir of the latest pod with that name
  const binding = new Set<string>();
  let stopped = false;

  const runnerFor = (namespace: string, name: string): PodRunner | undefined => {
    let found: PodRunner | undefined;
    for (const r of runners.values()) if (r.namespace === namespace && r.name === name) found = r;
    return found;
  };

  const logFilesOf = (namespace: string, name: string, container?: string): string[] | undefined => {
    const r = runnerFor(namespace, name);
    if (r) return r.logFiles(container);
    const podDir = latestByName.get(`${namespace}/${name}`);
    if (!podDir) return undefined;
    const logs = join(podDir, 'logs');
    const c = container ?? (existsSync(logs) ? readdirSync(logs).sort()[0] : undefined);
    if (!c) return [];
    try {
      return readdirSync(join(logs, c))
        .filter((f) => f.endsWith('.log'))
        .sort((a, b) => parseInt(a, 10) - parseInt(b, 10))
        .map((f) => join(logs, c, f));
    } catch {
      return [];
    }
  };

  let kubelet: KubeletServer | undefined;
  if (options.serveLogs ?? true) {
    kubelet = await startKubeletServer({
      logFiles: logFilesOf,
      isActive: (ns, name, container) => runnerFor(ns, name)?.isActive(container) ?? false,
    });
  }

  const node = buildNode(nodeName, options, kubelet?.port ?? 0, await serverVersion(kc));
  await registerNode(core, node, log);
  const lease = startLeaseRenewal(coordination, core, nodeName, options.leaseDurationSeconds ?? 40, log);
  await lease.first;

  const handle = (pod: V1Pod): void => {
    if (stopped) return;
    const uid = pod.metadata?.uid ?? '';
    const assigned = pod.spec?.nodeName;
    if (!assigned) {
      if (pod.metadata?.deletionTimestamp || binding.has(uid)) return;
      const scheduler = pod.spec?.schedulerName ?? 'default-scheduler';
      if (scheduler !== 'default-scheduler' || !fits(pod, node)) return;
      binding.add(uid);
      void bind(core, pod, nodeName, log).finally(() => binding.delete(uid));
      return;
    }
    if (assigned !== nodeName) return;
    let runner = runners.get(uid);
    if (!runner) {
      const phase = pod.status?.phase;
      if (phase === 'Succeeded' || phase === 'Failed') {
        // Finished before this agent started: only its removal is left to do.
        if (pod.metadata?.deletionTimestamp) void removePod(core, pod, log);
        return;
      }
      runner = new PodRunner(ctx, pod, (r) => {
        if (runners.get(r.uid) === r) runners.delete(r.uid);
      });
      runners.set(uid, runner);
      latestByName.set(runner.key, runner.dir);
    }
    runner.update(pod);
  };

  const watch: ListWatch = startListWatch<V1Pod>({
    kubeConfig: kc,
    path: '/api/v1/pods',
    logger: log,
    list: async () => {
      const list = await core.listPodForAllNamespaces();
      return { items: list.items, resourceVersion: list.metadata?.resourceVersion ?? '' };
    },
    onSync: (items) => {
      const seen = new Set(items.map((p) => p.metadata?.uid ?? ''));
      for (const [uid, r] of runners) if (!seen.has(uid)) r.apiDeleted();
      for (const p of items) handle(p);
    },
    onEvent: (type, pod) => {
      if (type === 'DELETED') {
        runners.get(pod.metadata?.uid ?? '')?.apiDeleted();
        return;
      }
      handle(pod);
    },
  });
  await watch.synced;
  log.info('Started node agent', { node: nodeName, dir, podRanges: ips.ranges, kubeletPort: kubelet?.port });

  const agent: NodeAgent = {
    nodeName,
    dir,
    get podRanges() {
      return ips.ranges;
    },
    podLog: (namespace, name, container) =>
      (logFilesOf(namespace, name, container) ?? [])
        .map((f) => {
          try {
            return readFileSync(f, 'utf8');
          } catch {
            return '';
          }
        })
        .join(''),
    podLogFiles: (namespace, name, container) => logFilesOf(namespace, name, container) ?? [],
    podDir: (namespace, name) => runnerFor(namespace, name)?.dir ?? latestByName.get(`${namespace}/${name}`),
    podProcess: (namespace, name, container) => runnerFor(namespace, name)?.processInfo(container),
    waitForPodProcess: async (namespace, name, o = {}) => {
      const deadline = Date.now() + (o.timeoutMs ?? 30_000);
      for (;;) {
        const info = runnerFor(namespace, name)?.processInfo(o.container);
        if (info) return info;
        if (Date.now() > deadline) throw new Error(`pod ${namespace}/${name} has no running process on node ${nodeName} after ${o.timeoutMs ?? 30_000} ms`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    stop: async () => {
      if (stopped) return;
      stopped = true;
      watch.stop();
      lease.stop();
      await Promise.all([...runners.values()].map((r) => r.kill()));
      await kubelet?.close();
      ips.close();
      if (!keepDir && !options.dir) {
        rmSync(dir, { recursive: true, force: true });
        untrackDir(dir);
      }
      log.info('Stopped node agent', { node: nodeName });
    },
  };
  return agent;
}

async function serverVersion(kc: KubeConfig): Promise<string> {
  try {
    return (await kc.makeApiClient(VersionApi).getCode()).gitVersion;
  } catch {
    return 'v0.0.0';
  }
}

function buildNode(name: string, options: NodeAgentOptions, kubeletPort: number, version: string): V1Node {
  const cpu = String(availableParallelism());
  const memory = `${Math.floor(totalmem() / 1024)}Ki`;
  const resources = { cpu, memory, pods: '250', 'ephemeral-storage': '100Gi' };
  const goArch = arch() === 'x64' ? 'amd64' : arch();
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name,
      labels: {
        'kubernetes.io/hostname': name,
        'kubernetes.io/os': 'linux',
        'kubernetes.io/arch': goArch,
        'beta.kubernetes.io/os': 'linux',
        'beta.kubernetes.io/arch': goArch,
        [ROLE_LABEL]: 'true',
        ...options.labels,
      },
      annotations: { 'taskbatch.dev/host': hostname() },
    },
    spec: { ...(options.taints ? { taints: options.taints } : {}) },
    status: {
      capacity: resources,
      allocatable: resources,
      addresses: [
        { type: 'InternalIP', address: '127.0.0.1' },
        { type: 'Hostname', address: name },
      ],
      daemonEndpoints: { kubeletEndpoint: { Port: kubeletPort } },
      nodeInfo: {
        machineID: name,
        systemUUID: name,
        bootID: randomBytes(8).toString('hex'),
        kernelVersion: release(),
        osImage: 'taskbatch local node agent',
        containerRuntimeVersion: `localproc://node-${process.version}`,
        kubeletVersion: version,
        kubeProxyVersion: '',
        operatingSystem: 'linux',
        architecture: goArch,
      },
      conditions: [],
    },
  };
}

function nodeConditions(): Record<string, unknown>[] {
  const now = k8sTime();
  const c = (type: string, status: string, reason: string, message: string): Record<string, unknown> => ({
    type,
    status,
    reason,
    message,
    lastHeartbeatTime: now,
    lastTransitionTime: now,
  });
  return [
    c('MemoryPressure', 'False', 'KubeletHasSufficientMemory', 'local node agent has sufficient memory available'),
    c('DiskPressure', 'False', 'KubeletHasNoDiskPressure', 'local node agent has no disk pressure'),
    c('PIDPressure', 'False', 'KubeletHasSufficientPID', 'local node agent has sufficient PID available'),
    c('Ready', 'True', 'KubeletReady', 'local node agent is posting ready status'),
  ];
}

async function registerNode(core: CoreV1Api, node: V1Node, log: Logger): Promise<void> {
  const name = node.metadata?.name ?? '';
  try {
    await core.createNode({ body: node });
    log.info('Registered node', { node: name });
  } catch (err) {
    if (!isConflict(err)) throw new Error(`cannot register node ${name}: ${describeError(err)}`);
    await core.patchNode({ name, body: { metadata: { labels: node.metadata?.labels }, spec: node.spec } }, strategicMergePatch);
    log.info('Node already registered; taking it over', { node: name });
  }
  await patchNodeStatus(core, node);
}

async function patchNodeStatus(core: CoreV1Api, node: V1Node): Promise<void> {
  const { capacity, allocatable, addresses, daemonEndpoints, nodeInfo } = node.status ?? {};
  await core.patchNodeStatus({ name: node.metadata?.name ?? '', body: { status: { capacity, allocatable, addresses, daemonEndpoints, nodeInfo, conditions: nodeConditions() } } }, strategicMergePatch);
}

/** Renews the node's Lease (and, less often, its Ready heartbeat) so the node lifecycle controller keeps it Ready. */
function startLeaseRenewal(coordination: CoordinationV1Api, core: CoreV1Api, nodeName: string, durationSeconds: number, log: Logger): { first: Promise<void>; stop(): void } {
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let renewals = 0;
  const ns = 'kube-node-lease';
  const renew = async (): Promise<void> => {
    const now = new V1MicroTime();
    try {
      const lease = await coordination.readNamespacedLease({ name: nodeName, namespace: ns });
      lease.spec = { ...lease.spec, holderIdentity: nodeName, leaseDurationSeconds: durationSeconds, renewTime: now };
      await coordination.replaceNamespacedLease({ name: nodeName, namespace: ns, body: lease });
    } catch (err) {
      if (!isNotFound(err)) throw err;
      const node = await core.readNode({ name: nodeName });
      await coordination.createNamespacedLease({
        namespace: ns,
        body: {
          metadata: { name: nodeName, namespace: ns, ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name: nodeName, uid: node.metadata?.uid ?? '' }] },
          spec: { holderIdentity: nodeName, leaseDurationSeconds: durationSeconds, renewTime: now },
        },
      });
    }
    // The Ready condition's heartbeat, as kubelet's nodeStatusReportFrequency (here every 6th renewal).
    if (renewals++ % 6 === 5) await core.patchNodeStatus({ name: nodeName, body: { status: { conditions: nodeConditions() } } }, strategicMergePatch);
  };
  const loop = (): void => {
    timer = setTimeout(
      () => {
        renew()
          .catch((err: unknown) => log.warn('Node lease renewal failed', { node: nodeName, error: describeError(err) }))
          .finally(() => {
            if (!stopped) loop();
          });
      },
      (durationSeconds * 1000) / 4,
    );
    timer.unref();
  };
  const first = (async () => {
    // kube-node-lease is created by the API server shortly after it is ready.
    for (let attempt = 0; ; attempt++) {
      try {
        await renew();
        return;
      } catch (err) {
        if (attempt >= 50) throw new Error(`cannot create the lease of node ${nodeName}: ${describeError(err)}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  })().then(() => {
    if (!stopped) loop();
  });
  return {
    first,
    stop: () => {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

/** A minimal scheduler predicate: nodeSelector and taints/tolerations (no affinity, no resources). */
function fits(pod: V1Pod, node: V1Node): boolean {
  const labels = node.metadata?.labels ?? {};
  for (const [k, v] of Object.entries(pod.spec?.nodeSelector ?? {})) if (labels[k] !== v) return false;
  const tolerations = pod.spec?.tolerations ?? [];
  for (const t of node.spec?.taints ?? []) {
    if (t.effect === 'PreferNoSchedule') continue;
    if (!tolerations.some((tol) => tolerates(tol, t))) return false;
  }
  return true;
}

function tolerates(tol: V1Toleration, taint: V1Taint): boolean {
  if (tol.effect && tol.effect !== taint.effect) return false;
  if (!tol.key) return tol.operator === 'Exists';
  if (tol.key !== taint.key) return false;
  return tol.operator === 'Exists' || (tol.value ?? '') === (taint.value ?? '');
}

async function bind(core: CoreV1Api, pod: V1Pod, nodeName: string, log: Logger): Promise<void> {
  const name = pod.metadata?.name ?? '';
  const namespace = pod.metadata?.namespace ?? 'default';
  try {
    await core.createNamespacedPodBinding({
      name,
      namespace,
      body: { apiVersion: 'v1', kind: 'Binding', metadata: { name, namespace, uid: pod.metadata?.uid }, target: { apiVersion: 'v1', kind: 'Node', name: nodeName } },
    });
    log.info('Bound pod', { pod: `${namespace}/${name}`, node: nodeName });
  } catch (err) {
    // Conflict: bound meanwhile (by another node agent); NotFound: deleted meanwhile.
    if (!isConflict(err) && !isNotFound(err)) log.warn('Binding pod failed', { pod: `${namespace}/${name}`, error: describeError(err) });
  }
}

async function removePod(core: CoreV1Api, pod: V1Pod, log: Logger): Promise<void> {
  const name = pod.metadata?.name ?? '';
  const namespace = pod.metadata?.namespace ?? 'default';
  try {
    await core.deleteNamespacedPod({ name, namespace, gracePeriodSeconds: 0, body: { gracePeriodSeconds: 0, preconditions: { uid: pod.metadata?.uid } } });
  } catch (err) {
    if (!isNotFound(err) && !isConflict(err)) log.warn('Removing pod failed', { pod: `${namespace}/${name}`, error: describeError(err) });
  }
}
