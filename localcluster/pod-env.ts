/**
 * A container's environment, the kubelet's way: envFrom (ConfigMaps and Secrets, with prefix),
 * then env (literal values with $(VAR) expansion, secretKeyRef, configMapKeyRef, downward API
 * fieldRef and resourceFieldRef), then the API server's KUBERNETES_SERVICE_* variables where not
 * already set. A missing non-optional source is an EnvConfigError (the kubelet's
 * CreateContainerConfigError, retried until the source appears).
 */
import type { V1ConfigMap, V1Container, V1Pod, V1Secret } from '@kubernetes/client-node';

export class EnvConfigError extends Error {
  override readonly name = 'EnvConfigError';
}

export interface EnvSources {
  /** undefined when the Secret does not exist. */
  getSecret(namespace: string, name: string): Promise<V1Secret | undefined>;
  getConfigMap(namespace: string, name: string): Promise<V1ConfigMap | undefined>;
}

export interface EnvContext {
  pod: V1Pod;
  podIP: string;
  hostIP: string;
  nodeName: string;
  /** The API server as pods reach it. */
  apiServerHost: string;
  apiServerPort: number;
  /** Node capacity, the value of limits.* a container does not set. */
  nodeCpu: number;
  nodeMemoryBytes: number;
}

const ENV_NAME = /^[-._a-zA-Z][-._a-zA-Z0-9]*$/;

export async function resolveContainerEnv(container: V1Container, ctx: EnvContext, sources: EnvSources): Promise<Record<string, string>> {
  const ns = ctx.pod.metadata?.namespace ?? 'default';
  const env: Record<string, string> = {};
  for (const from of container.envFrom ?? []) {
    const prefix = from.prefix ?? '';
    if (from.configMapRef) {
      const name = from.configMapRef.name ?? '';
      const cm = await sources.getConfigMap(ns, name);
      if (!cm) {
        if (from.configMapRef.optional) continue;
        throw new EnvConfigError(`configmap "${name}" not found`);
      }
      for (const [k, v] of Object.entries(cm.data ?? {})) if (ENV_NAME.test(prefix + k)) env[prefix + k] = v;
    } else if (from.secretRef) {
      const name = from.secretRef.name ?? '';
      const secret = await sources.getSecret(ns, name);
      if (!secret) {
        if (from.secretRef.optional) continue;
        throw new EnvConfigError(`secret "${name}" not found`);
      }
      for (const [k, v] of Object.entries(secret.data ?? {})) if (ENV_NAME.test(prefix + k)) env[prefix + k] = decodeSecret(v);
      for (const [k, v] of Object.entries(secret.stringData ?? {})) if (ENV_NAME.test(prefix + k)) env[prefix + k] = v;
    }
  }
  const service = serviceEnv(ctx.apiServerHost, ctx.apiServerPort);
  const mapping = (name: string): string => env[name] ?? service[name] ?? `$(${name})`;
  for (const e of container.env ?? []) {
    if (e.value !== undefined) {
      env[e.name] = expandVars(e.value, mapping);
      continue;
    }
    const vf = e.valueFrom;
    if (!vf) {
      env[e.name] = '';
      continue;
    }
    if (vf.fieldRef) {
      env[e.name] = fieldRefValue(vf.fieldRef.fieldPath, ctx);
    } else if (vf.resourceFieldRef) {
      const target = vf.resourceFieldRef.containerName
        ? [...(ctx.pod.spec?.containers ?? []), ...(ctx.pod.spec?.initContainers ?? [])].find((c) => c.name === vf.resourceFieldRef?.containerName)
        : container;
      if (!target) throw new EnvConfigError(`resourceFieldRef of ${e.name}: no container ${vf.resourceFieldRef.containerName}`);
      env[e.name] = resourceFieldValue(vf.resourceFieldRef.resource, vf.resourceFieldRef.divisor, target, ctx);
    } else if (vf.configMapKeyRef) {
      const ref = vf.configMapKeyRef;
      const cm = await sources.getConfigMap(ns, ref.name ?? '');
      const v = cm?.data?.[ref.key];
      if (v === undefined) {
        if (ref.optional) continue;
        throw new EnvConfigError(cm ? `couldn't find key ${ref.key} in ConfigMap ${ns}/${ref.name}` : `configmap "${ref.name}" not found`);
      }
      env[e.name] = v;
    } else if (vf.secretKeyRef) {
      const ref = vf.secretKeyRef;
      const secret = await sources.getSecret(ns, ref.name ?? '');
      const raw = secret?.data?.[ref.key];
      const v = raw !== undefined ? decodeSecret(raw) : secret?.stringData?.[ref.key];
      if (v === undefined) {
        if (ref.optional) continue;
        throw new EnvConfigError(secret ? `couldn't find key ${ref.key} in Secret ${ns}/${ref.name}` : `secret "${ref.name}" not found`);
      }
      env[e.name] = v;
    } else {
      throw new EnvConfigError(`env ${e.name}: unsupported valueFrom`);
    }
  }
  for (const [k, v] of Object.entries(service)) if (!(k in env)) env[k] = v;
  return env;
}

function decodeSecret(b64: string): string {
  return Buffer.from(b64, 'base64').toString('utf8');
}

/** The variables a pod gets for the `kubernetes` Service in default; here they name the API server directly. */
function serviceEnv(host: string, port: number): Record<string, string> {
  return {
    KUBERNETES_SERVICE_HOST: host,
    KUBERNETES_SERVICE_PORT: String(port),
    KUBERNETES_SERVICE_PORT_HTTPS: String(port),
    KUBERNETES_PORT: `tcp://${host}:${port}`,
    [`KUBERNETES_PORT_${port}_TCP`]: `tcp://${host}:${port}`,
    [`KUBERNETES_PORT_${port}_TCP_PROTO`]: 'tcp',
    [`KUBERNETES_PORT_${port}_TCP_PORT`]: String(port),
    [`KUBERNETES_PORT_${port}_TCP_ADDR`]: host,
  };
}

/** Kubernetes' $(VAR) expansion: $(NAME) is replaced when defined, $$ escapes, anything else stays. */
export function expandVars(input: string, mapping: (name: string) => string): string {
  let out = '';
  let checkpoint = 0;
  for (let cursor = 0; cursor < input.length; cursor++) {
    if (input[cursor] !== '$' || cursor + 1 >= input.length) continue;
    out += input.slice(checkpoint, cursor);
    const rest = input.slice(cursor + 1);
    if (rest[0] === '$') {
      out += '$';
      cursor += 1;
    } else if (rest[0] === '(') {
      const close = rest.indexOf(')');
      if (close > 0) {
        out += mapping(rest.slice(1, close));
        cursor += close + 1;
      } else {
        out += '$(';
        cursor += 1;
      }
    } else {
      out += '$' + rest[0];
      cursor += 1;
    }
    checkpoint = cursor + 1;
  }
  return out + input.slice(checkpoint);
}

function fieldRefValue(path: string, ctx: EnvContext): string {
  const m = ctx.pod.metadata;
  const sub = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(path);
  if (sub) {
    const map = sub[1] === 'labels' ? m?.labels : m?.annotations;
    return map?.[sub[2] ?? ''] ?? '';
  }
  switch (path) {
    case 'metadata.name':
      return m?.name ?? '';
    case 'metadata.namespace':
      return m?.namespace ?? '';
    case 'metadata.uid':
      return m?.uid ?? '';
    case 'metadata.labels':
      return formatMap(m?.labels);
    case 'metadata.annotations':
      return formatMap(m?.annotations);
    case 'spec.nodeName':
      return ctx.nodeName;
    case 'spec.serviceAccountName':
      return ctx.pod.spec?.serviceAccountName ?? '';
    case 'status.podIP':
    case 'status.podIPs':
      return ctx.podIP;
    case 'status.hostIP':
    case 'status.hostIPs':
      return ctx.hostIP;
    default:
      throw new EnvConfigError(`unsupported fieldRef ${path}`);
  }
}

function formatMap(map: Record<string, string> | undefined): string {
  return Object.entries(map ?? {})
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
    .join('\n');
}

function resourceFieldValue(resource: string, divisor: string | undefined, container: V1Container, ctx: EnvContext): string {
  const [kind, name] = resource.split('.') as [string, string | undefined];
  const set = kind === 'limits' ? container.resources?.limits : kind === 'requests' ? container.resources?.requests : undefined;
  if (kind !== 'limits' && kind !== 'requests') throw new EnvConfigError(`unsupported resourceFieldRef ${resource}`);
  const given = set?.[name ?? ''];
  if (name === 'cpu') {
    const cores = given !== undefined ? parseQuantity(String(given)) : kind === 'limits' ? ctx.nodeCpu : 0;
    const div = divisor ? parseQuantity(divisor) : 1;
    return String(Math.ceil(Math.round(cores * 1000) / Math.round(div * 1000)));
  }
  if (name === 'memory' || name === 'ephemeral-storage') {
    const bytes = given !== undefined ? parseQuantity(String(given)) : kind === 'limits' ? ctx.nodeMemoryBytes : 0;
    const div = divisor ? parseQuantity(divisor) : 1;
    return String(Math.ceil(bytes / div));
  }
  throw new EnvConfigError(`unsupported resourceFieldRef ${resource}`);
}

const SUFFIX: Record<string, number> = {
  n: 1e-9,
  u: 1e-6,
  m: 1e-3,
  '': 1,
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

/** A Kubernetes quantity ("500m", "1Gi", "1e3") as a number. */
export function parseQuantity(q: string): number {
  const m = /^([+-]?[0-9.]+)(?:([eE][+-]?[0-9]+)|([a-zA-Z]*))$/.exec(q.trim());
  if (!m) throw new EnvConfigError(`invalid quantity ${JSON.stringify(q)}`);
  const base = Number(m[1]);
  if (m[2]) return base * 10 ** Number(m[2].slice(1));
  const mult = SUFFIX[m[3] ?? ''];
  if (mult === undefined) throw new EnvConfigError(`invalid quantity suffix in ${JSON.stringify(q)}`);
  return base * mult;
}
