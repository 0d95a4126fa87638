import { SPEC_DEFAULTS } from '../../api/types.generated.js';

/**
 * Resource requests and limits of worker pods, bounded by the installer (issue 11, item 6).
 * The operator creates worker pods with its own identity; without a bound a TaskBatch could ask
 * for any amount of CPU and memory (or a 1,024-thread pool in a pod with no memory limit), more
 * than the namespace's users may have meant to grant through "create TaskBatch". The installer
 * sets defaults (TASKBATCH_WORKER_RESOURCES, chart `worker.resources`) and a maximum
 * (TASKBATCH_WORKER_MAX_RESOURCES, chart `worker.maxResources`); a batch may override the
 * defaults in `spec.template` within the maximum. Pure functions, table-tested.
 */

export type ResourceList = Record<string, string>;

export interface WorkerResourceSettings {
  /** Filled into every container (and init container) of a worker pod where the template sets none. */
  defaults: { requests: ResourceList; limits: ResourceList };
  /** Per resource: the most any container may request or be limited to, and the most all containers of one pod may add up to. */
  max: ResourceList;
}

export class ResourceSettingsError extends Error {
  override name = 'ResourceSettingsError';
}

const SUFFIX: Record<string, number> = {
  '': 1,
  n: 1e-9,
  u: 1e-6,
  m: 1e-3,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};

/** A Kubernetes quantity ("500m", "1.5Gi", "1e3", 2) as a number of base units; undefined if malformed. */
export function parseQuantity(q: string | number): number | undefined {
  if (typeof q === 'number') return Number.isFinite(q) && q >= 0 ? q : undefined;
  const m = /^([+]?[0-9]*\.?[0-9]+)(?:([eE][+-]?[0-9]+)|(n|u|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?)$/.exec(q.trim());
  if (!m) return undefined;
  const base = Number(m[1]);
  if (m[2]) return base * 10 ** Number(m[2].slice(1));
  return base * SUFFIX[m[3] ?? '']!;
}

function resourceList(raw: unknown, what: string): ResourceList {
  if (raw === undefined || raw === null) return {};
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new ResourceSettingsError(`${what} must be an object of resource names to quantities`);
  const out: ResourceList = {};
  for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
    if ((typeof v !== 'string' && typeof v !== 'number') || parseQuantity(v) === undefined) throw new ResourceSettingsError(`${what}.${k}=${JSON.stringify(v)} is not a quantity (e.g. 500m, 1Gi)`);
    out[k] = String(v);
  }
  return out;
}

/** Reads TASKBATCH_WORKER_RESOURCES ({"requests":{...},"limits":{...}}) and TASKBATCH_WORKER_MAX_RESOURCES ({"cpu":"4","memory":"8Gi"}); "" = none. */
export function parseResourceSettings(defaultsJson: string, maxJson: string): WorkerResourceSettings {
  const json = (raw: string, name: string): unknown => {
    if (raw.trim() === '') return undefined;
    try {
      return JSON.parse(raw) as unknown;
    } catch {
      throw new ResourceSettingsError(`${name}=${JSON.stringify(raw)} is not JSON`);
    }
  };
  const d = json(defaultsJson, 'TASKBATCH_WORKER_RESOURCES') as { requests?: unknown; limits?: unknown } | undefined;
  if (d !== undefined && (typeof d !== 'object' || d === null || Array.isArray(d)))
    throw new ResourceSettingsError('TASKBATCH_WORKER_RESOURCES must be an object {"requests": {...}, "limits": {...}}');
  const settings: WorkerResourceSettings = {
    defaults: { requests: resourceList(d?.requests, 'TASKBATCH_WORKER_RESOURCES.requests'), limits: resourceList(d?.limits, 'TASKBATCH_WORKER_RESOURCES.limits') },
    max: resourceList(json(maxJson, 'TASKBATCH_WORKER_MAX_RESOURCES'), 'TASKBATCH_WORKER_MAX_RESOURCES'),
  };
  for (const kind of ['requests', 'limits'] as const) {
    for (const [r, v] of Object.entries(settings.defaults[kind])) {
      const cap = settings.max[r];
      if (cap !== undefined && parseQuantity(v)! > parseQuantity(cap)!)
        throw new ResourceSettingsError(`TASKBATCH_WORKER_RESOURCES.${kind}.${r}=${v} exceeds TASKBATCH_WORKER_MAX_RESOURCES.${r}=${cap}`);
    }
  }
  return settings;
}

interface ContainerLike {
  name?: string;
  resources?: { requests?: Record<string, unknown>; limits?: Record<string, unknown>; [k: string]: unknown };
  [k: string]: unknown;
}

/** The container's resources with the installer's defaults filled in where it sets none. */
function withDefaults(c: ContainerLike, settings: WorkerResourceSettings): { requests: Record<string, string | number>; limits: Record<string, string | number> } {
  const own = c.resources ?? {};
  const requests = { ...(own.requests ?? {}) } as Record<string, string | number>;
  const limits = { ...(own.limits ?? {}) } as Record<string, string | number>;
  for (const [r, v] of Object.entries(settings.defaults.limits)) {
    if (limits[r] !== undefined) continue;
    // A request the template raised above the default limit would make the pod invalid: the
    // limit follows the request (the maximum still applies to both).
    const req = requests[r] !== undefined ? parseQuantity(requests[r]) : undefined;
    limits[r] = req !== undefined && req > parseQuantity(v)! ? requests[r]! : v;
  }
  for (const [r, v] of Object.entries(settings.defaults.requests)) {
    if (requests[r] !== undefined) continue;
    // As Kubernetes does: an unset request never exceeds the limit.
    const lim = limits[r] !== undefined ? parseQuantity(limits[r]) : undefined;
    requests[r] = lim !== undefined && lim < parseQuantity(v)! ? limits[r]! : v;
  }
  return { requests, limits };
}

/** Sets the defaulted resources on every container and init container of a worker pod spec. */
export function applyWorkerResources(spec: { containers: ContainerLike[]; initContainers?: ContainerLike[] }, settings: WorkerResourceSettings): void {
  for (const c of [...spec.containers, ...(spec.initContainers ?? [])]) {
    const { requests, limits } = withDefaults(c, settings);
    if (Object.keys(requests).length === 0 && Object.keys(limits).length === 0) continue;
    c.resources = { ...(c.resources ?? {}), ...(Object.keys(requests).length ? { requests } : {}), ...(Object.keys(limits).length ? { limits } : {}) };
  }
}

/**
 * Executors per pool mode and their rough memory, for the pool-size bound. Measured with
 * node 24 (RSS of idle executors, no handler): a worker thread ~13 MiB, a child process
 * ~46 MiB; issue 11 measured 64 busy threads at ~1 GB (~16 MiB each). The figures leave room
 * for a handler's own heap. async runs items on the worker's own thread: no bound from memory
 * (the CRD caps it at 1024).
 */
const EXECUTOR_MIB = { thread: 24, process: 64 } as const;
/** The worker process itself (main thread, Redis client, metrics) before any executor. */
const WORKER_BASE_MIB = 96;

const MI = 2 ** 20;

/** Largest spec.pool.size a worker container with this memory limit can hold in `mode`; undefined = no bound. */
export function maxPoolSize(mode: string, memoryLimitBytes: number | undefined): number | undefined {
  if (memoryLimitBytes === undefined || (mode !== 'thread' && mode !== 'process')) return undefined;
  return Math.max(1, Math.floor((memoryLimitBytes / MI - WORKER_BASE_MIB) / EXECUTOR_MIB[mode]));
}

interface BatchLike {
  spec: { pool?: { mode?: string; size?: number }; template?: unknown };
}

interface TemplateLike {
  spec?: { containers?: ContainerLike[]; initContainers?: ContainerLike[] };
}

/** Every way the batch's worker pods would exceed the installer's maximum, each naming its field; [] = none. */
export function workerResourceViolations(batch: BatchLike, settings: WorkerResourceSettings): string[] {
  const template = (batch.spec.template ?? {}) as TemplateLike;
  const containers = template.spec?.containers?.length ? template.spec.containers : [{ name: 'worker' }];
  const lists: [string, ContainerLike[]][] = [
    ['containers', containers],
    ['initContainers', template.spec?.initContainers ?? []],
  ];
  const out: string[] = [];
  const sums: Record<string, number> = {};
  const maxOf = (r: string): number | undefined => (settings.max[r] !== undefined ? parseQuantity(settings.max[r]!) : undefined);
  for (const [list, cs] of lists) {
    cs.forEach((c, i) => {
      const eff = withDefaults(c, settings);
      for (const kind of ['requests', 'limits'] as const) {
        for (const [r, v] of Object.entries(eff[kind])) {
          const q = parseQuantity(v);
          const field = `spec.template.spec.${list}[${i}].resources.${kind}.${r}`;
          if (q === undefined) {
            out.push(`${field}: ${JSON.stringify(v)} is not a quantity`);
            continue;
          }
          if (kind === 'limits') sums[r] = (sums[r] ?? 0) + q;
          const cap = maxOf(r);
          if (cap !== undefined && q > cap) out.push(`${field}: ${v} exceeds the installer's maximum of ${settings.max[r]} (worker.maxResources, TASKBATCH_WORKER_MAX_RESOURCES)`);
        }
      }
    });
  }
  for (const [r, total] of Object.entries(sums)) {
    const cap = maxOf(r);
    const each = out.some((m) => m.includes(`.resources.limits.${r}:`));
    if (cap !== undefined && total > cap && !each)
      out.push(
        `spec.template.spec: the containers' resources.limits.${r} add up to ${fmt(r, total)}, more than the installer's maximum of ${settings.max[r]} per worker pod (worker.maxResources, TASKBATCH_WORKER_MAX_RESOURCES)`,
      );
  }
  const pool = batch.spec.pool ?? {};
  const mode = pool.mode ?? 'thread';
  const size = pool.size ?? SPEC_DEFAULTS['pool.size'];
  // The worker container: the one named worker, or the first (as pods.ts workerContainerIndex).
  const named = containers.findIndex((c) => c.name === 'worker');
  const worker = withDefaults(containers[Math.max(named, 0)]!, settings);
  const memory = worker.limits.memory !== undefined ? parseQuantity(worker.limits.memory) : undefined;
  const most = maxPoolSize(mode, memory);
  if (most !== undefined && size > most) {
    const need = WORKER_BASE_MIB + size * EXECUTOR_MIB[mode as 'thread' | 'process'];
    out.push(
      `spec.pool.size: ${size} ${mode} executors need about ${need}Mi (${WORKER_BASE_MIB}Mi + ${EXECUTOR_MIB[mode as 'thread' | 'process']}Mi each), more than the worker container's memory limit of ${worker.limits.memory} holds (at most ${most}); ` +
        `lower spec.pool.size, or raise the worker container's resources.limits.memory in spec.template${settings.max.memory ? ` (up to the installer's maximum of ${settings.max.memory})` : ''}`,
    );
  }
  return out;
}

function fmt(resource: string, v: number): string {
  if (resource === 'memory' || resource.endsWith('storage')) return `${Math.round(v / MI)}Mi`;
  return String(Math.round(v * 1000) / 1000);
}
