/** The Helm chart under test: running the real helm CLI on it and reading what it renders. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { findControlPlaneBinaries, repoRoot, runCommand, type ToolResult } from '../../localcluster/index.js';

export const CHART_DIR = join(repoRoot(), 'charts/taskbatch');
export const CRD_SOURCE = join(repoRoot(), 'crds/taskbatch.dev_taskbatches.yaml');

/** Images the node agent maps to this repository's entry points (localcluster/image-map.ts). */
export const LOCAL_IMAGE_VALUES = {
  operator: { image: { repository: 'taskbatch/operator', tag: 'dev', pullPolicy: 'Never' } },
  worker: { image: { repository: 'taskbatch/worker', tag: 'dev' } },
};

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [key: string]: unknown;
}

export interface Rendered extends ToolResult {
  objects: K8sObject[];
}

let helmHome: string | undefined;

/** helm's cache/config/data dirs: one temp dir per test process, so tests never touch ~/.cache/helm. */
function helmEnv(): NodeJS.ProcessEnv {
  if (!helmHome) {
    const dir = mkdtempSync(join(tmpdir(), 'tb-helm-'));
    helmHome = dir;
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  }
  return { ...process.env, HELM_CACHE_HOME: join(helmHome, 'cache'), HELM_CONFIG_HOME: join(helmHome, 'config'), HELM_DATA_HOME: join(helmHome, 'data') };
}

export function helmPath(): string {
  return findControlPlaneBinaries().helm;
}

/** Runs helm without a cluster (lint, template, package). */
export function helm(args: string[], cwd?: string): Promise<ToolResult> {
  return runCommand(helmPath(), args, { env: helmEnv(), ...(cwd ? { cwd } : {}) });
}

/** helm's warning about the CRD symlink (files/crds/ → crds/): expected, and not an error. */
export function withoutSymlinkNotice(stderr: string): string {
  return stderr
    .split('\n')
    .filter((l) => !/found symbolic link in path: .*Contents of linked file included and used/.test(l))
    .join('\n')
    .trim();
}

/** Writes values to a temp file (helm -f), so nested values need no --set escaping. */
export function valuesFile(values: unknown): string {
  const dir = mkdtempSync(join(tmpdir(), 'tb-values-'));
  const path = join(dir, 'values.json');
  writeFileSync(path, JSON.stringify(values));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  return path;
}

export interface TemplateOptions {
  release?: string;
  namespace?: string;
  values?: unknown;
  set?: string[];
  /** --api-versions, e.g. monitoring.coreos.com/v1 to render the Prometheus Operator objects. */
  apiVersions?: string[];
  /** --show-only templates/... */
  showOnly?: string;
  extraArgs?: string[];
}

/** `helm template` of the chart; `objects` are the rendered manifests (empty when it failed). */
export async function helmTemplate(o: TemplateOptions = {}): Promise<Rendered> {
  const args = ['template', o.release ?? 'tb', CHART_DIR, '--namespace', o.namespace ?? 'taskbatch-system'];
  if (o.values !== undefined) args.push('-f', valuesFile(o.values));
  for (const s of o.set ?? []) args.push('--set', s);
  for (const v of o.apiVersions ?? []) args.push('--api-versions', v);
  if (o.showOnly) args.push('--show-only', o.showOnly);
  args.push(...(o.extraArgs ?? []));
  const r = await helm(args);
  return { ...r, stderr: withoutSymlinkNotice(r.stderr), objects: r.code === 0 ? parseManifests(r.stdout) : [] };
}

/** Multi-document YAML → objects (empty documents dropped); throws on a YAML error. */
export function parseManifests(text: string): K8sObject[] {
  const out: K8sObject[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) throw new Error(`invalid YAML in rendered manifests: ${doc.errors.map((e) => e.message).join('; ')}`);
    const v = doc.toJS({ maxAliasCount: -1 }) as K8sObject | null;
    if (v && typeof v === 'object') out.push(v);
  }
  return out;
}

export function findObject(objects: K8sObject[], kind: string, name?: string): K8sObject | undefined {
  return objects.find((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
}

export function getObject(objects: K8sObject[], kind: string, name?: string): K8sObject {
  const o = findObject(objects, kind, name);
  if (!o) throw new Error(`no ${kind}${name ? ` ${name}` : ''} among the rendered objects: ${objects.map((x) => `${x.kind}/${x.metadata.name}`).join(', ')}`);
  return o;
}

export function kinds(objects: K8sObject[]): string[] {
  return objects.map((o) => `${o.kind}/${o.metadata.name}`).sort();
}

/** Hook annotations mark objects Helm does not manage as release resources. */
export function isHook(o: K8sObject): boolean {
  return Boolean(o.metadata.annotations?.['helm.sh/hook']);
}

interface ContainerLike {
  name: string;
  image?: string;
  env?: { name: string; value?: string; valueFrom?: unknown }[];
  securityContext?: Record<string, unknown>;
  resources?: { requests?: Record<string, unknown>; limits?: Record<string, unknown> };
  [key: string]: unknown;
}

interface PodSpecLike {
  containers: ContainerLike[];
  securityContext?: Record<string, unknown>;
  serviceAccountName?: string;
  [key: string]: unknown;
}

/** The pod spec of a Deployment, Job or Pod. */
export function podSpecOf(o: K8sObject): PodSpecLike {
  if (o.kind === 'Pod') return o.spec as PodSpecLike;
  const spec = o.spec as { template?: { spec?: PodSpecLike } };
  if (!spec.template?.spec) throw new Error(`${o.kind}/${o.metadata.name} has no pod template`);
  return spec.template.spec;
}

/** The container's env as name → value (valueFrom shown as JSON). */
export function envOf(c: ContainerLike): Record<string, string> {
  return Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value ?? JSON.stringify(e.valueFrom)]));
}
