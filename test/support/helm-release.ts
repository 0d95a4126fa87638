/** A Helm release of the chart on the local control plane: install, inspect, and find what it left behind. */
import type { ControlPlane, ToolResult } from '../../localcluster/index.js';
import { CHART_DIR, LOCAL_IMAGE_VALUES, valuesFile } from './helm-chart.js';

export interface InstalledObject {
  kind: string;
  name: string;
  namespace?: string;
}

/** Values that run the chart on the local cluster: images the node agent maps, the test's Redis. */
export function localValues(redisUrl: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return deepMerge({ ...LOCAL_IMAGE_VALUES, redis: { url: redisUrl }, operator: { ...LOCAL_IMAGE_VALUES.operator, logLevel: 'debug' } }, extra);
}

function deepMerge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const prev = out[k];
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && prev && typeof prev === 'object' && !Array.isArray(prev) ? deepMerge(prev as Record<string, unknown>, v as Record<string, unknown>) : v;
  }
  return out;
}

/** helm upgrade --install, waiting for the operator to be ready. */
export function helmUpgradeInstall(cp: ControlPlane, release: string, namespace: string, values: Record<string, unknown>, extra: string[] = []): Promise<ToolResult> {
  return cp.helm(['upgrade', '--install', release, CHART_DIR, '--namespace', namespace, '--create-namespace', '-f', valuesFile(values), '--wait', '--timeout', '3m', ...extra], { timeoutMs: 240_000 });
}

/** Throws with helm's output when it failed. */
export function expectOk(r: ToolResult, what: string): ToolResult {
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
  return r;
}

/** Every object of every listable resource type in `namespace` (events excepted). */
export async function namespacedObjects(cp: Pick<ControlPlane, 'kubectl'>, namespace: string): Promise<InstalledObject[]> {
  const types = expectOk(await cp.kubectl(['api-resources', '--verbs=list', '--namespaced', '-o', 'name']), 'kubectl api-resources')
    .stdout.split('\n')
    .map((s) => s.trim())
    .filter((t) => t && !/^events(\.events\.k8s\.io)?$/.test(t));
  const r = expectOk(await cp.kubectl(['get', types.join(','), '-n', namespace, '-o', 'json', '--ignore-not-found']), `kubectl get -n ${namespace}`);
  if (!r.stdout.trim()) return [];
  const list = JSON.parse(r.stdout) as { items: { kind: string; metadata: { name: string; namespace?: string } }[] };
  return list.items.map((o) => ({ kind: o.kind, name: o.metadata.name, namespace: o.metadata.namespace }));
}

/** Cluster-scoped objects labelled as the release's (app.kubernetes.io/instance). */
export async function clusterObjectsOf(cp: Pick<ControlPlane, 'kubectl'>, release: string): Promise<InstalledObject[]> {
  const types = expectOk(await cp.kubectl(['api-resources', '--verbs=list', '--namespaced=false', '-o', 'name']), 'kubectl api-resources')
    .stdout.split('\n')
    .map((s) => s.trim())
    .filter(Boolean);
  const r = expectOk(await cp.kubectl(['get', types.join(','), '-l', `app.kubernetes.io/instance=${release}`, '-o', 'json', '--ignore-not-found']), 'kubectl get cluster-scoped');
  if (!r.stdout.trim()) return [];
  const list = JSON.parse(r.stdout) as { items: { kind: string; metadata: { name: string } }[] };
  return list.items.map((o) => ({ kind: o.kind, name: o.metadata.name }));
}

/** `kubectl auth can-i` as someone else; true when allowed. */
export async function canI(cp: ControlPlane, kubeconfigPath: string, args: string[]): Promise<boolean> {
  const r = await cp.kubectl(['auth', 'can-i', ...args], { kubeconfigPath });
  const answer = r.stdout.trim();
  if (answer !== 'yes' && answer !== 'no') throw new Error(`kubectl auth can-i ${args.join(' ')}: ${r.stdout}${r.stderr}`);
  return answer === 'yes';
}
