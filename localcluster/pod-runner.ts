/**
 * One pod on the local node: its loopback IP, its ServiceAccount credentials, its containers as
 * local processes (init containers in order, then the others side by side), restarts by
 * restartPolicy with back-off, readiness/liveness probes, status reports, and termination on
 * deletion (SIGTERM, grace period, SIGKILL, then the pod object is removed).
 */
import type { CoreV1Api, V1Container, V1Pod } from '@kubernetes/client-node';
import { mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import { resolveContainerCommand, type ImageRule } from './image-map.js';
import { isNotFound, k8sTime, strategicMergePatch } from './kube.js';
import { writeKubeconfig } from './kubeconfig.js';
import { describeError, type Logger } from './log.js';
import type { PodIpAllocator } from './pod-ips.js';
import { EnvConfigError, resolveContainerEnv, type EnvSources } from './pod-env.js';
import { runProbe } from './probes.js';
import { spawnManaged, type ExitStatus, type ManagedProcess } from './process.js';

export interface RunnerContext {
  core: CoreV1Api;
  nodeName: string;
  hostIP: string;
  apiServer: { host: string; port: number; server: string; caPem: string };
  imageMap: readonly ImageRule[];
  /** Environment every container starts from (PATH, HOME is per pod). */
  baseEnv: Record<string, string>;
  podsDir: string;
  ips: PodIpAllocator;
  backoff: { initialMs: number; maxMs: number };
  envSources: EnvSources;
  nodeCpu: number;
  nodeMemoryBytes: number;
  /** Lifetime of ServiceAccount tokens handed to pods (rotated at 80 %). */
  tokenExpirationSeconds: number;
  logger: Logger;
}

type Waiting = { waiting: { reason: string; message?: string } };
type Running = { running: { startedAt: string } };
interface TerminatedState {
  exitCode: number;
  signal?: number;
  reason: string;
  message?: string;
  startedAt?: string;
  finishedAt: string;
  containerID?: string;
}
type Terminated = { terminated: TerminatedState };
type ContainerStateJson = Waiting | Running | Terminated;

interface ContainerRun {
  name: string;
  spec: V1Container;
  init: boolean;
  restartCount: number;
  state: ContainerStateJson;
  lastState?: ContainerStateJson;
  proc?: ManagedProcess;
  ready: boolean;
  started: boolean;
  logDir: string;
  /** Set when an init container has completed successfully. */
  done: boolean;
}

export interface PodProcessInfo {
  pid: number;
  container: string;
  podIP: string;
  restartCount: number;
  logFile: string;
}

const ts = (): string => k8sTime();

export class PodRunner {
  readonly uid: string;
  readonly namespace: string;
  readonly name: string;
  readonly dir: string;
  podIP = '';
  private pod: V1Pod;
  private readonly ctx: RunnerContext;
  private readonly log: Logger;
  private readonly containers: ContainerRun[];
  private prepared = false;
  private startTime: string | undefined;
  private terminating = false;
  /** The pod object is gone from the API: report nothing more. */
  private gone = false;
  private terminalPhase: 'Succeeded' | 'Failed' | undefined;
  private deletedByUs = false;
  private killTimer: NodeJS.Timeout | undefined;
  private killDeadline = Infinity;
  private tokenTimer: NodeJS.Timeout | undefined;
  private readonly wakers = new Set<() => void>();
  private readonly conditionTimes = new Map<string, { status: string; time: string }>();
  private statusDirty = false;
  private statusWriting: Promise<void> | undefined;
  private lastStatusKey = '';
  private runDone: Promise<void> | undefined;
  private disposed = false;
  private readonly onDisposed: (r: PodRunner) => void;

  constructor(ctx: RunnerContext, pod: V1Pod, onDisposed: (r: PodRunner) => void) {
    this.ctx = ctx;
    this.pod = pod;
    this.uid = pod.metadata?.uid ?? '';
    this.namespace = pod.metadata?.namespace ?? 'default';
    this.name = pod.metadata?.name ?? '';
    this.dir = join(ctx.podsDir, `${this.namespace}_${this.name}_${this.uid}`);
    this.log = ctx.logger.child('pod');
    this.onDisposed = onDisposed;
    const existing = new Map((pod.status?.containerStatuses ?? []).map((s) => [s.name, s.restartCount ?? 0]));
    const mk = (spec: V1Container, init: boolean): ContainerRun => ({
      name: spec.name,
      spec,
      init,
      // A pod this node ran before (agent restart): carry on counting.
      restartCount: existing.get(spec.name) ?? 0,
      state: { waiting: { reason: init ? 'PodInitializing' : 'ContainerCreating' } },
      ready: false,
      started: false,
      logDir: join(this.dir, 'logs', spec.name),
      done: false,
    });
    this.containers = [...(pod.spec?.initContainers ?? []).map((c) => mk(c, true)), ...(pod.spec?.containers ?? []).map((c) => mk(c, false))];
  }

  get key(): string {
    return `${this.namespace}/${this.name}`;
  }

  /** Called with every newer version of the pod object. */
  update(pod: V1Pod): void {
    this.pod = pod;
    if (pod.metadata?.deletionTimestamp) {
      const grace = pod.metadata.deletionGracePeriodSeconds ?? pod.spec?.terminationGracePeriodSeconds ?? 30;
      void this.terminate(grace);
      return;
    }
    if (!this.runDone) this.runDone = this.run();
  }

  /** The pod object disappeared from the API (force deletion): stop its processes promptly. */
  apiDeleted(): void {
    this.gone = true;
    void this.terminate(Math.min(2, this.pod.spec?.terminationGracePeriodSeconds ?? 2));
  }

  /** Agent shutdown: SIGKILL everything now, report nothing. */
  async kill(): Promise<void> {
    this.gone = true;
    this.terminating = true;
    this.wakeAll();
    await Promise.all(this.containers.map((c) => c.proc?.stop(0)));
    await this.runDone;
    this.dispose();
  }

  processInfo(container?: string): PodProcessInfo | undefined {
    const c = container ? this.containers.find((x) => x.name === container) : (this.containers.find((x) => !x.init && x.proc) ?? this.containers.find((x) => x.proc));
    if (!c?.proc) return undefined;
    return { pid: c.proc.pid, container: c.name, podIP: this.podIP, restartCount: c.restartCount, logFile: c.proc.logFile };
  }

  containerNames(): string[] {
    return this.containers.map((c) => c.name);
  }

  /** Log files of a container, oldest attempt first. */
  logFiles(container?: string): string[] {
    const c = container ? this.containers.find((x) => x.name === container) : this.containers.find((x) => !x.init);
    if (!c) return [];
    try {
      return readdirSync(c.logDir)
        .filter((f) => f.endsWith('.log'))
        .sort((a, b) => parseInt(a, 10) - parseInt(b, 10))
        .map((f) => join(c.logDir, f));
    } catch {
      return [];
    }
  }

  /** True while the container may still write to its log (for `kubectl logs -f`). */
  isActive(container?: string): boolean {
    if (this.disposed) return false;
    const c = container ? this.containers.find((x) => x.name === container) : this.containers.find((x) => !x.init);
    return !!c && !('terminated' in c.state && (this.terminating || this.terminalPhase !== undefined));
  }

  // ---- lifecycle -------------------------------------------------------------------------

  private async run(): Promise<void> {
    try {
      if (!(await this.prepare())) return;
      for (const c of this.containers.filter((x) => x.init)) {
        const result = await this.runContainer(c);
        if (result !== 'succeeded') return;
        c.done = true;
      }
      await Promise.all(this.containers.filter((x) => !x.init).map((c) => this.runContainer(c)));
    } catch (err) {
      this.log.error('Pod worker failed', { pod: this.key, error: describeError(err) });
    } finally {
      this.scheduleStatus();
    }
  }

  private async prepare(): Promise<boolean> {
    this.podIP = this.pod.spec?.hostNetwork ? this.ctx.hostIP : this.ctx.ips.allocate();
    mkdirSync(join(this.dir, 'home'), { recursive: true });
    for (const c of this.containers) mkdirSync(c.logDir, { recursive: true });
    this.startTime = ts();
    this.scheduleStatus();
    let delay = this.ctx.backoff.initialMs;
    for (;;) {
      if (this.terminating) return false;
      try {
        await this.setupServiceAccount();
        break;
      } catch (err) {
        const message = describeError(err);
        this.log.info('Waiting to start pod', { pod: this.key, reason: message });
        for (const c of this.containers) if ('waiting' in c.state) c.state = { waiting: { reason: 'ContainerCreating', message } };
        this.scheduleStatus();
        await this.sleep(delay);
        delay = Math.min(delay * 2, this.ctx.backoff.maxMs);
      }
    }
    this.prepared = true;
    this.scheduleStatus();
    this.log.info('Started pod sandbox', { pod: this.key, podIP: this.podIP, dir: this.dir });
    return true;
  }

  private saDir(): string {
    return join(this.dir, 'serviceaccount');
  }

  private kubeconfigPath(): string {
    return join(this.dir, 'kubeconfig');
  }

  private hasCredentials = false;

  /** A bound token from the TokenRequest API, written with ca.crt and namespace, plus a kubeconfig using it. */
  private async setupServiceAccount(): Promise<void> {
    const spec = this.pod.spec;
    const named = spec?.serviceAccountName || spec?.serviceAccount;
    const saName = named || 'default';
    let automount = spec?.automountServiceAccountToken;
    try {
      const sa = await this.ctx.core.readNamespacedServiceAccount({ name: saName, namespace: this.namespace });
      automount ??= sa.automountServiceAccountToken ?? true;
    } catch (err) {
      if (!isNotFound(err)) throw err;
      // Without the ServiceAccount admission plugin a pod may name none; `default` need not exist then.
      if (!named) return;
      throw new Error(`serviceaccount "${saName}" not found`);
    }
    if (!automount) return;
    await this.refreshToken(saName);
    this.hasCredentials = true;
  }

  private async refreshToken(saName: string): Promise<void> {
    const tr = await this.ctx.core.createNamespacedServiceAccountToken({
      name: saName,
      namespace: this.namespace,
      body: {
        spec: {
          audiences: [],
          expirationSeconds: this.ctx.tokenExpirationSeconds,
          boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: this.name, uid: this.uid },
        },
      },
    });
    const token = tr.status?.token;
    if (!token) throw new Error(`TokenRequest for serviceaccount ${this.namespace}/${saName} returned no token`);
    const dir = this.saDir();
    mkdirSync(dir, { recursive: true });
    writeAtomic(join(dir, 'token'), token);
    writeAtomic(join(dir, 'ca.crt'), this.ctx.apiServer.caPem);
    writeAtomic(join(dir, 'namespace'), this.namespace);
    const tmp = `${this.kubeconfigPath()}.tmp`;
    writeKubeconfig(tmp, {
      name: 'in-cluster',
      server: this.ctx.apiServer.server,
      caPem: this.ctx.apiServer.caPem,
      namespace: this.namespace,
      credentials: { kind: 'token', token, file: join(dir, 'token') },
    });
    renameSync(tmp, this.kubeconfigPath());
    clearTimeout(this.tokenTimer);
    this.tokenTimer = setTimeout(() => {
      if (this.terminating) return;
      this.refreshToken(saName).catch((err: unknown) => this.log.warn('Token refresh failed', { pod: this.key, error: describeError(err) }));
    }, this.ctx.tokenExpirationSeconds * 800);
    this.tokenTimer.unref();
  }

  private async containerEnv(c: ContainerRun, imageEnv: Record<string, string>): Promise<Record<string, string>> {
    const resolved = await resolveContainerEnv(
      c.spec,
      {
        pod: this.pod,
        podIP: this.podIP,
        hostIP: this.ctx.hostIP,
        nodeName: this.ctx.nodeName,
        apiServerHost: this.ctx.apiServer.host,
        apiServerPort: this.ctx.apiServer.port,
        nodeCpu: this.ctx.nodeCpu,
        nodeMemoryBytes: this.ctx.nodeMemoryBytes,
      },
      this.ctx.envSources,
    );
    // Secret volumes: no mount namespaces here, so each is written into the pod's directory and
    // an environment value naming a path under its mountPath is pointed there instead.
    const mounts = await this.secretVolumeDirs(c);
    for (const [k, v] of Object.entries(resolved)) {
      for (const [mountPath, dir] of mounts) {
        if (v === mountPath || v.startsWith(`${mountPath}/`)) resolved[k] = dir + v.slice(mountPath.length);
      }
    }
    return {
      ...this.ctx.baseEnv,
      HOME: join(this.dir, 'home'),
      HOSTNAME: this.pod.spec?.hostname ?? this.name,
      ...(this.hasCredentials ? { KUBECONFIG: this.kubeconfigPath() } : {}),
      ...imageEnv,
      ...resolved,
    };
  }

  /**
   * The container's Secret volume mounts as [mountPath, directory in the pod dir], the Secret's
   * keys (or its `items`) written there at container start (not refreshed while it runs). A
   * missing Secret or key that is not optional is an EnvConfigError (retried, as the kubelet does).
   */
  private async secretVolumeDirs(c: ContainerRun): Promise<[string, string][]> {
    const out: [string, string][] = [];
    for (const m of c.spec.volumeMounts ?? []) {
      const vol = (this.pod.spec?.volumes ?? []).find((v) => v.name === m.name);
      const src = vol?.secret;
      if (!src) continue;
      const secret = await this.ctx.envSources.getSecret(this.namespace, src.secretName ?? '');
      if (!secret && !src.optional) throw new EnvConfigError(`secret "${src.secretName}" not found (volume ${m.name})`);
      const dir = join(this.dir, 'volumes', m.name);
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir, { recursive: true });
      const data = secret?.data ?? {};
      const items = src.items ?? Object.keys(data).map((key) => ({ key, path: key }));
      for (const item of items) {
        const v = data[item.key];
        if (v === undefined) {
          if (src.optional) continue;
          throw new EnvConfigError(`couldn't find key ${item.key} in Secret ${this.namespace}/${src.secretName} (volume ${m.name})`);
        }
        writeFileSync(join(dir, item.path), Buffer.from(v, 'base64'), { mode: 0o600 });
      }
      out.push([m.mountPath.replace(/\/+$/, ''), dir]);
    }
    return out;
  }

  /** Runs a container until it is done by its restart policy; 'aborted' when the pod is terminating. */
  private async runContainer(c: ContainerRun): Promise<'succeeded' | 'failed' | 'aborted'> {
    const policy = this.pod.spec?.restartPolicy ?? 'Always';
    let backoff = this.ctx.backoff.initialMs;
    for (;;) {
      if (this.terminating) return 'aborted';
      let exit: TerminatedState;
      const startedAt = ts();
      const startedMs = Date.now();
      // The command first (its image rule supplies ENV), then the environment (PATH may matter for lookup).
      const probeCmd = resolveContainerCommand(c.spec, this.ctx.imageMap, this.ctx.baseEnv.PATH ?? '');
      let env: Record<string, string>;
      try {
        env = await this.containerEnv(c, probeCmd.ok ? probeCmd.imageEnv : {});
      } catch (err) {
        if (!(err instanceof EnvConfigError) && !isTransient(err)) throw err;
        c.state = { waiting: { reason: 'CreateContainerConfigError', message: err instanceof Error ? err.message : String(err) } };
        this.scheduleStatus();
        await this.sleep(Math.min(this.ctx.backoff.maxMs, 1000));
        continue;
      }
      const cmd = env.PATH === this.ctx.baseEnv.PATH ? probeCmd : resolveContainerCommand(c.spec, this.ctx.imageMap, env.PATH ?? '');
      const cwd = cmd.ok ? (cmd.workingDir ?? join(this.dir, 'home')) : undefined;
      if (!cmd.ok) {
        exit = { exitCode: 128, reason: cmd.reason, message: cmd.message, startedAt, finishedAt: ts() };
        this.log.warn('Container failed to start', { pod: this.key, container: c.name, reason: cmd.reason, message: cmd.message });
      } else {
        let proc: ManagedProcess | undefined;
        try {
          proc = await spawnManaged({
            name: `${this.key}/${c.name}`,
            command: cmd.executable,
            args: cmd.args,
            cwd,
            env,
            logFile: join(c.logDir, `${c.restartCount}.log`),
          });
        } catch (err) {
          exit = { exitCode: 128, reason: 'StartError', message: describeError(err), startedAt, finishedAt: ts() };
        }
        if (proc) {
          c.proc = proc;
          c.started = true;
          c.state = { running: { startedAt } };
          const containerID = `localproc://${this.ctx.nodeName}/${proc.pid}`;
          this.log.info('Started container', { pod: this.key, container: c.name, pid: proc.pid, podIP: this.podIP });
          if (this.terminating) proc.signal('SIGTERM');
          const stopProbes = this.startProbes(c, proc, env, cwd);
          this.scheduleStatus();
          const status = await proc.exited;
          stopProbes();
          c.proc = undefined;
          exit = { ...exitState(status), startedAt, finishedAt: ts(), containerID };
          this.log.info('Container exited', { pod: this.key, container: c.name, exitCode: exit.exitCode, signal: status.signal });
        } else {
          exit ??= { exitCode: 128, reason: 'StartError', message: 'not started', startedAt, finishedAt: ts() };
        }
      }
      c.ready = false;
      c.state = { terminated: exit };
      const succeeded = exit.exitCode === 0;
      const restart = !this.terminating && (c.init ? !succeeded && policy !== 'Never' : policy === 'Always' || (policy === 'OnFailure' && !succeeded));
      if (!restart) {
        this.scheduleStatus();
        return succeeded ? 'succeeded' : 'failed';
      }
      if (Date.now() - startedMs > 60_000) backoff = this.ctx.backoff.initialMs;
      c.lastState = c.state;
      c.restartCount++;
      c.state = { waiting: { reason: 'CrashLoopBackOff', message: `back-off ${backoff} ms restarting failed container=${c.name} pod=${this.name}` } };
      this.scheduleStatus();
      await this.sleep(backoff);
      backoff = Math.min(backoff * 2, this.ctx.backoff.maxMs);
    }
  }

  /** Readiness (sets `ready`) and liveness (restarts the container) probes; returns a stop function. */
  private startProbes(c: ContainerRun, proc: ManagedProcess, env: Record<string, string>, cwd: string | undefined): () => void {
    const timers = new Set<NodeJS.Timeout>();
    let stopped = false;
    const readiness = c.spec.readinessProbe;
    const liveness = c.spec.livenessProbe;
    if (!readiness) c.ready = true;
    const loop = (kind: 'readiness' | 'liveness'): void => {
      const probe = kind === 'readiness' ? readiness : liveness;
      if (!probe) return;
      let successes = 0;
      let failures = 0;
      const tick = async (): Promise<void> => {
        if (stopped) return;
        const r = await runProbe(probe, { podIP: this.podIP, container: c.spec, env, cwd });
        if (stopped) return;
        if (r.ok) {
          successes++;
          failures = 0;
          if (kind === 'readiness' && !c.ready && successes >= (probe.successThreshold ?? 1)) {
            c.ready = true;
            this.scheduleStatus();
          }
        } else {
          failures++;
          successes = 0;
          if (failures >= (probe.failureThreshold ?? 3)) {
            if (kind === 'readiness' && c.ready) {
              c.ready = false;
              this.scheduleStatus();
            }
            if (kind === 'liveness') {
              this.log.info('Liveness probe failed; restarting container', { pod: this.key, container: c.name, message: r.message });
              stopped = true;
              const grace = probe.terminationGracePeriodSeconds ?? this.pod.spec?.terminationGracePeriodSeconds ?? 30;
              void proc.stop(grace * 1000);
              return;
            }
          }
        }
        const t = setTimeout(() => void tick(), (probe.periodSeconds ?? 10) * 1000);
        timers.add(t);
      };
      const t = setTimeout(() => void tick(), (probe.initialDelaySeconds ?? 0) * 1000);
      timers.add(t);
    };
    loop('readiness');
    loop('liveness');
    return () => {
      stopped = true;
      for (const t of timers) clearTimeout(t);
    };
  }

  /** Deletion: SIGTERM to every container's main process, SIGKILL to the groups after the grace period, then remove the pod. */
  private async terminate(graceSeconds: number): Promise<void> {
    const deadline = Date.now() + Math.max(0, graceSeconds) * 1000;
    if (deadline < this.killDeadline) {
      this.killDeadline = deadline;
      clearTimeout(this.killTimer);
      this.killTimer = setTimeout(
        () => {
          for (const c of this.containers) if (c.proc) void c.proc.stop(0);
        },
        Math.max(0, deadline - Date.now()),
      );
    }
    if (this.terminating) return;
    this.terminating = true;
    this.wakeAll();
    this.log.info('Killing pod', { pod: this.key, gracePeriodSeconds: graceSeconds });
    for (const c of this.containers) c.proc?.signal('SIGTERM');
    await this.runDone;
    clearTimeout(this.killTimer);
    for (const c of this.containers) {
      if ('waiting' in c.state) c.state = { waiting: { reason: c.state.waiting.reason } };
    }
    this.scheduleStatus();
    await this.statusIdle();
    if (!this.gone && !this.deletedByUs) {
      this.deletedByUs = true;
      try {
        await this.ctx.core.deleteNamespacedPod({
          name: this.name,
          namespace: this.namespace,
          gracePeriodSeconds: 0,
          body: { gracePeriodSeconds: 0, preconditions: { uid: this.uid } },
        });
        this.log.info('Removed pod', { pod: this.key });
      } catch (err) {
        if (!isNotFound(err) && (err as { code?: number }).code !== 409) {
          this.log.warn('Removing pod failed', { pod: this.key, error: describeError(err) });
        }
      }
    }
    this.dispose();
  }

  private dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    clearTimeout(this.tokenTimer);
    clearTimeout(this.killTimer);
    if (this.podIP && !this.pod.spec?.hostNetwork) this.ctx.ips.release(this.podIP);
    this.onDisposed(this);
  }

  private sleep(ms: number): Promise<void> {
    if (this.terminating) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(t);
        this.wakers.delete(wake);
        resolve();
      };
      const t = setTimeout(wake, ms);
      this.wakers.add(wake);
    });
  }

  private wakeAll(): void {
    for (const w of [...this.wakers]) w();
  }

  // ---- status ----------------------------------------------------------------------------

  private scheduleStatus(): void {
    this.statusDirty = true;
    if (!this.statusWriting) this.statusWriting = this.flushStatus().finally(() => (this.statusWriting = undefined));
  }

  private async statusIdle(): Promise<void> {
    while (this.statusWriting) await this.statusWriting;
  }

  private async flushStatus(): Promise<void> {
    let failures = 0;
    while (this.statusDirty && !this.gone) {
      this.statusDirty = false;
      const status = this.computeStatus();
      const key = JSON.stringify(status, (k, v: unknown) => (k === 'lastProbeTime' ? undefined : v));
      if (key === this.lastStatusKey) continue;
      try {
        await this.ctx.core.patchNamespacedPodStatus({ name: this.name, namespace: this.namespace, body: { status } }, strategicMergePatch);
        this.lastStatusKey = key;
        failures = 0;
      } catch (err) {
        if (isNotFound(err)) {
          this.gone = true;
          return;
        }
        failures++;
        this.log.warn('Pod status update failed', { pod: this.key, error: describeError(err), failures });
        this.statusDirty = true;
        await new Promise((r) => setTimeout(r, Math.min(5000, 200 * 2 ** failures)));
      }
    }
  }

  private phase(): 'Pending' | 'Running' | 'Succeeded' | 'Failed' {
    if (this.terminalPhase) return this.terminalPhase;
    const policy = this.pod.spec?.restartPolicy ?? 'Always';
    const inits = this.containers.filter((c) => c.init);
    const mains = this.containers.filter((c) => !c.init);
    let result: 'Pending' | 'Running' | 'Succeeded' | 'Failed';
    const initFailed = inits.some((c) => 'terminated' in c.state && c.state.terminated.exitCode !== 0 && (policy === 'Never' || this.terminating));
    if (initFailed) result = 'Failed';
    else if (!this.prepared || inits.some((c) => !c.done)) result = this.terminating && this.runFinished() ? 'Failed' : 'Pending';
    else {
      let running = 0;
      let waiting = 0;
      let stopped = 0;
      let succeeded = 0;
      for (const c of mains) {
        if ('running' in c.state) running++;
        else if ('terminated' in c.state) {
          stopped++;
          if (c.state.terminated.exitCode === 0) succeeded++;
        } else if (c.lastState) stopped++;
        else waiting++;
      }
      const podIsTerminal = this.terminating && this.runFinished();
      if (waiting > 0 && !podIsTerminal) result = 'Pending';
      else if (running > 0) result = 'Running';
      else if (stopped > 0 || podIsTerminal) {
        if (podIsTerminal) result = stopped === succeeded && waiting === 0 ? 'Succeeded' : 'Failed';
        else if (policy === 'Always') result = 'Running';
        else if (stopped === succeeded) result = 'Succeeded';
        else if (policy === 'Never') result = 'Failed';
        else result = 'Running';
      } else result = 'Pending';
    }
    if (result === 'Succeeded' || result === 'Failed') this.terminalPhase = result;
    return result;
  }

  private runFinished(): boolean {
    return this.containers.every((c) => !c.proc);
  }

  private condition(type: string, ok: boolean, reason?: string): Record<string, unknown> {
    const status = ok ? 'True' : 'False';
    const prev = this.conditionTimes.get(type);
    let time = prev?.time ?? ts();
    if (prev && prev.status !== status) time = ts();
    this.conditionTimes.set(type, { status, time });
    return { type, status, lastProbeTime: null, lastTransitionTime: time, ...(reason && !ok ? { reason } : {}) };
  }

  private computeStatus(): Record<string, unknown> {
    const phase = this.phase();
    const terminal = phase === 'Succeeded' || phase === 'Failed';
    const mains = this.containers.filter((c) => !c.init);
    const initialized = this.containers.filter((c) => c.init).every((c) => c.done);
    const containersReady = !terminal && mains.every((c) => c.ready && 'running' in c.state);
    const gates = (this.pod.spec?.readinessGates ?? []).every((g) => this.pod.status?.conditions?.find((x) => x.type === g.conditionType)?.status === 'True');
    const notReadyReason = terminal ? 'PodCompleted' : 'ContainersNotReady';
    const conditions = [
      this.condition('PodReadyToStartContainers', this.prepared && !terminal),
      this.condition('Initialized', initialized, terminal ? 'PodCompleted' : 'ContainersNotInitialized'),
      this.condition('ContainersReady', containersReady, notReadyReason),
      this.condition('Ready', containersReady && gates, containersReady ? 'ReadinessGatesNotReady' : notReadyReason),
    ];
    const statusOf = (c: ContainerRun): Record<string, unknown> => ({
      name: c.name,
      image: c.spec.image ?? '',
      imageID: `localproc://${c.spec.image ?? ''}`,
      ...('running' in c.state ? { containerID: `localproc://${this.ctx.nodeName}/${c.proc?.pid ?? 0}` } : {}),
      ...('terminated' in c.state && c.state.terminated.containerID ? { containerID: c.state.terminated.containerID } : {}),
      ready: c.ready && 'running' in c.state,
      started: 'running' in c.state,
      restartCount: c.restartCount,
      state: stateJson(c.state),
      lastState: c.lastState ? stateJson(c.lastState) : {},
    });
    const ips = this.podIP ? { podIP: this.podIP, podIPs: [{ ip: this.podIP }] } : {};
    return {
      phase,
      conditions,
      hostIP: this.ctx.hostIP,
      hostIPs: [{ ip: this.ctx.hostIP }],
      ...ips,
      ...(this.startTime ? { startTime: this.startTime } : {}),
      ...(this.containers.some((c) => c.init) ? { initContainerStatuses: this.containers.filter((c) => c.init).map(statusOf) } : {}),
      containerStatuses: mains.map(statusOf),
    };
  }
}

function stateJson(s: ContainerStateJson): Record<string, unknown> {
  if ('terminated' in s) {
    const t = s.terminated;
    return {
      terminated: {
        exitCode: t.exitCode,
        ...(t.signal ? { signal: t.signal } : {}),
        reason: t.reason,
        ...(t.message ? { message: t.message } : {}),
        ...(t.startedAt ? { startedAt: t.startedAt } : {}),
        finishedAt: t.finishedAt,
        ...(t.containerID ? { containerID: t.containerID } : {}),
      },
    };
  }
  return s;
}

function exitState(status: ExitStatus): Omit<TerminatedState, 'finishedAt'> {
  if (status.signal) {
    const num = osConstants.signals[status.signal] ?? 0;
    return { exitCode: 128 + num, signal: num, reason: 'Error', message: `killed by ${status.signal}` };
  }
  const code = status.code ?? 0;
  return { exitCode: code, reason: code === 0 ? 'Completed' : 'Error' };
}

function isTransient(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return (typeof code === 'number' && (code >= 500 || code === 429)) || (err instanceof Error && /ECONNREFUSED|ECONNRESET|fetch failed|socket/i.test(err.message));
}

function writeAtomic(path: string, data: string): void {
  writeFileSync(`${path}.tmp`, data, { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
}
