/**
 * Pod Security for worker pods: the operator's `workerPodSecurity` level, enforced on the
 * TaskBatch's pod template before any pod is built. Creating a TaskBatch must grant nothing
 * more than creating a Job, but the operator creates the pods with its own identity — so the
 * namespace's Pod Security Admission still applies to them (it judges the pod, not the
 * creator), while this check is what holds on clusters or namespaces without such labels.
 *
 * The controls follow the Kubernetes Pod Security Standards (Baseline and Restricted, as of
 * Kubernetes 1.34). Pure functions; table-tested in test/unit/operator-pod-security.test.ts.
 */

export type PodSecurityLevel = 'restricted' | 'baseline' | 'unrestricted';

export const POD_SECURITY_LEVELS: readonly PodSecurityLevel[] = ['restricted', 'baseline', 'unrestricted'];

export interface PodSecurityViolation {
  /** Field path relative to the pod template, e.g. `spec.containers[1].securityContext.privileged`. */
  path: string;
  /** What is wrong with the value (shown after the path). */
  detail: string;
}

/** Loosely typed JSON objects of a pod spec: the template is user input, so nothing is trusted. */
type Obj = Record<string, unknown>;

interface SecurityContextShape {
  privileged?: unknown;
  allowPrivilegeEscalation?: unknown;
  runAsNonRoot?: unknown;
  runAsUser?: unknown;
  procMount?: unknown;
  capabilities?: { add?: unknown; drop?: unknown };
  seccompProfile?: { type?: unknown };
  appArmorProfile?: { type?: unknown };
  seLinuxOptions?: { type?: unknown; user?: unknown; role?: unknown };
  windowsOptions?: { hostProcess?: unknown };
  sysctls?: unknown;
}

/** Capabilities Baseline allows adding (the container runtimes' default set). */
const BASELINE_CAPABILITIES = new Set(['AUDIT_WRITE', 'CHOWN', 'DAC_OVERRIDE', 'FOWNER', 'FSETID', 'KILL', 'MKNOD', 'NET_BIND_SERVICE', 'SETFCAP', 'SETGID', 'SETPCAP', 'SETUID', 'SYS_CHROOT']);

/** The "safe" sysctls: namespaced and isolated from other pods on the node. */
const SAFE_SYSCTLS = new Set([
  'kernel.shm_rmid_forced',
  'net.ipv4.ip_local_port_range',
  'net.ipv4.ip_unprivileged_port_start',
  'net.ipv4.tcp_syncookies',
  'net.ipv4.ping_group_range',
  'net.ipv4.ip_local_reserved_ports',
  'net.ipv4.tcp_keepalive_time',
  'net.ipv4.tcp_fin_timeout',
  'net.ipv4.tcp_keepalive_intvl',
  'net.ipv4.tcp_keepalive_probes',
]);

const SELINUX_TYPES = new Set(['', 'container_t', 'container_init_t', 'container_kvm_t', 'container_engine_t']);

/** Restricted allows only these volume sources (core, non-host, ephemeral or PV-backed). */
const RESTRICTED_VOLUME_SOURCES = new Set(['configMap', 'csi', 'downwardAPI', 'emptyDir', 'ephemeral', 'persistentVolumeClaim', 'projected', 'secret']);

const APPARMOR_ANNOTATION = 'container.apparmor.security.beta.kubernetes.io/';

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function list(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

function sc(v: unknown): SecurityContextShape {
  return isObj(v) ? (v as SecurityContextShape) : {};
}

/** The containers of every kind the Standards look at, with their field paths. */
function containersOf(spec: Obj): { path: string; container: Obj }[] {
  const out: { path: string; container: Obj }[] = [];
  for (const kind of ['initContainers', 'containers', 'ephemeralContainers'] as const) {
    list(spec[kind]).forEach((c, i) => {
      if (isObj(c)) out.push({ path: `spec.${kind}[${i}]`, container: c });
    });
  }
  return out;
}

/** Controls shared by the pod-level and container-level security contexts. */
function checkCommonContext(level: 'restricted' | 'baseline', ctx: SecurityContextShape, path: string, add: (path: string, detail: string) => void): void {
  if (ctx.windowsOptions?.hostProcess === true) add(`${path}.windowsOptions.hostProcess`, 'HostProcess containers have privileged access to the node');
  const seccomp = ctx.seccompProfile?.type;
  if (seccomp === 'Unconfined') add(`${path}.seccompProfile.type`, 'Unconfined seccomp is not allowed; use RuntimeDefault or Localhost');
  const apparmor = ctx.appArmorProfile?.type;
  if (apparmor !== undefined && apparmor !== 'RuntimeDefault' && apparmor !== 'Localhost')
    add(`${path}.appArmorProfile.type`, `${JSON.stringify(apparmor)} is not allowed; use RuntimeDefault or Localhost`);
  const se = ctx.seLinuxOptions;
  if (se) {
    if (se.type !== undefined && !SELINUX_TYPES.has(String(se.type)))
      add(`${path}.seLinuxOptions.type`, `${JSON.stringify(se.type)} is not allowed; use container_t, container_init_t, container_kvm_t or container_engine_t`);
    if (se.user !== undefined && se.user !== '') add(`${path}.seLinuxOptions.user`, 'custom SELinux users are not allowed');
    if (se.role !== undefined && se.role !== '') add(`${path}.seLinuxOptions.role`, 'custom SELinux roles are not allowed');
  }
  if (level === 'restricted') {
    if (ctx.runAsNonRoot === false) add(`${path}.runAsNonRoot`, 'containers must run as non-root');
    if (ctx.runAsUser === 0) add(`${path}.runAsUser`, 'running as uid 0 (root) is not allowed');
  }
}

/**
 * The template's contradictions of the level, each naming its field path (relative to the pod
 * template: `spec.…` and `metadata.annotations[…]`). Fields left unset are not violations:
 * hardenPodSpec fills them in for `restricted`. `unrestricted` never refuses anything.
 */
export function checkPodSecurity(level: PodSecurityLevel, podSpec: Obj, annotations: Record<string, string> = {}): PodSecurityViolation[] {
  if (level === 'unrestricted') return [];
  const out: PodSecurityViolation[] = [];
  const add = (path: string, detail: string): void => {
    out.push({ path, detail });
  };

  // Host namespaces.
  for (const field of ['hostNetwork', 'hostPID', 'hostIPC'] as const) {
    if (podSpec[field] === true) add(`spec.${field}`, "sharing the host's namespaces is not allowed");
  }

  // Pod-level security context.
  const podCtx = sc(podSpec.securityContext);
  checkCommonContext(level, podCtx, 'spec.securityContext', add);
  list(podCtx.sysctls).forEach((s, i) => {
    const name = isObj(s) ? s.name : undefined;
    if (typeof name !== 'string' || !SAFE_SYSCTLS.has(name)) add(`spec.securityContext.sysctls[${i}].name`, `${JSON.stringify(name)} is not one of the safe sysctls`);
  });

  // Volumes.
  list(podSpec.volumes).forEach((v, i) => {
    if (!isObj(v)) return;
    for (const source of Object.keys(v)) {
      if (source === 'name') continue;
      if (source === 'hostPath') add(`spec.volumes[${i}].hostPath`, 'hostPath volumes are not allowed');
      else if (level === 'restricted' && !RESTRICTED_VOLUME_SOURCES.has(source))
        add(`spec.volumes[${i}].${source}`, `${source} volumes are not allowed; use configMap, csi, downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected or secret`);
    }
  });

  // AppArmor by annotation (the pre-1.30 way, still honoured by the kubelet).
  for (const [key, value] of Object.entries(annotations)) {
    if (key.startsWith(APPARMOR_ANNOTATION) && value !== 'runtime/default' && !value.startsWith('localhost/')) {
      add(`metadata.annotations[${JSON.stringify(key)}]`, `${JSON.stringify(value)} is not allowed; use runtime/default or localhost/<profile>`);
    }
  }

  // Every container, init containers and sidecars included.
  for (const { path, container } of containersOf(podSpec)) {
    if (path.startsWith('spec.ephemeralContainers')) {
      // A pod is created without ephemeral containers (the API refuses them on create); one in
      // a template is a mistake at best, and would escape hardening.
      add(path, 'ephemeral containers cannot be part of a worker pod template');
      continue;
    }
    const ctx = sc(container.securityContext);
    const cpath = `${path}.securityContext`;
    if (ctx.privileged === true) add(`${cpath}.privileged`, 'privileged containers are not allowed');
    checkCommonContext(level, ctx, cpath, add);
    if (ctx.procMount !== undefined && ctx.procMount !== 'Default') add(`${cpath}.procMount`, `${JSON.stringify(ctx.procMount)} is not allowed; use Default`);
    const allowedCaps = level === 'restricted' ? new Set(['NET_BIND_SERVICE']) : BASELINE_CAPABILITIES;
    list(ctx.capabilities?.add).forEach((cap, j) => {
      if (typeof cap !== 'string' || !allowedCaps.has(cap))
        add(`${cpath}.capabilities.add[${j}]`, `adding ${JSON.stringify(cap)} is not allowed${level === 'restricted' ? '; only NET_BIND_SERVICE may be added' : ''}`);
    });
    if (level === 'restricted' && ctx.allowPrivilegeEscalation === true) add(`${cpath}.allowPrivilegeEscalation`, 'privilege escalation is not allowed');
    list(container.ports).forEach((p, j) => {
      const hostPort = isObj(p) ? p.hostPort : undefined;
      if (hostPort !== undefined && hostPort !== 0) add(`${path}.ports[${j}].hostPort`, 'host ports are not allowed');
    });
  }
  return out;
}

/** One line per violation: `<prefix><path>: forbidden by workerPodSecurity=<level> (<detail>)`. */
export function describeViolations(level: PodSecurityLevel, violations: readonly PodSecurityViolation[], prefix = 'spec.template.'): string {
  return violations.map((v) => `${prefix}${v.path}: forbidden by workerPodSecurity=${level} (${v.detail})`).join('; ');
}

/**
 * With `restricted`, fills in what the Restricted standard requires wherever the template left
 * it unset, on every container (init containers and sidecars too): non-root, no privilege
 * escalation, all capabilities dropped, RuntimeDefault seccomp for the pod. Only call it on a
 * spec checkPodSecurity accepted: it never overrides a value, so it cannot fix a contradiction.
 * Other levels return the spec unchanged. Returns a new spec; the input is not modified.
 */
export function hardenPodSpec<T extends Obj>(level: PodSecurityLevel, podSpec: T): T {
  const spec = structuredClone(podSpec) as Obj;
  if (level !== 'restricted') return spec as T;
  const podCtx = isObj(spec.securityContext) ? spec.securityContext : {};
  podCtx.runAsNonRoot ??= true;
  podCtx.seccompProfile ??= { type: 'RuntimeDefault' };
  spec.securityContext = podCtx;
  for (const kind of ['initContainers', 'containers'] as const) {
    for (const c of list(spec[kind])) {
      if (!isObj(c)) continue;
      const ctx = isObj(c.securityContext) ? c.securityContext : {};
      ctx.allowPrivilegeEscalation ??= false;
      ctx.runAsNonRoot ??= true;
      const caps = isObj(ctx.capabilities) ? ctx.capabilities : {};
      const drop = list(caps.drop);
      // Dropping ALL is compatible with any narrower drop list the user wrote; keep theirs.
      caps.drop = drop.includes('ALL') ? drop : [...drop, 'ALL'];
      ctx.capabilities = caps;
      c.securityContext = ctx;
    }
  }
  return spec as T;
}
