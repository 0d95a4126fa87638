import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, createWriteStream, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { startControlPlane, startNodeAgent, repoRoot, type ControlPlane, type NodeAgent } from '../../localcluster/index.js';
import { KubeClient } from '../../kube/client.js';
import { batchPath, type TaskBatch } from '../../api/taskbatch.js';
import type { Pod } from '../../kube/pod.js';
import { startRedisServer, type RedisServer } from '../../localcluster/redis-server.js';
import { freePort } from '../../localcluster/ports.js';
import { eventually } from './batches.js';

export const CRD_FILE = join(repoRoot(), 'crds/taskbatch.dev_taskbatches.yaml');
export const WORKER_IMAGE = 'taskbatch/worker:dev';

export interface OperatorEnv {
  cp: ControlPlane;
  agent?: NodeAgent;
  redis: RedisServer;
  kube: KubeClient;
  stop(): Promise<void>;
}

/** A real control plane (+ controller manager), the TaskBatch CRD, a node agent and a redis-server. */
export async function startOperatorEnv(options: { nodeAgent?: boolean; extraApiServerArgs?: string[] } = {}): Promise<OperatorEnv> {
  const cp = await startControlPlane({ controllerManager: true, ...(options.extraApiServerArgs ? { extraApiServerArgs: options.extraApiServerArgs } : {}) });
  const kube = new KubeClient(cp.kubeConfig);
  await installCrd(kube);
  const redis = await startRedisServer();
  const agent = options.nodeAgent === false ? undefined : await startNodeAgent({ kubeConfig: cp.kubeConfig });
  return {
    cp,
    agent,
    redis,
    kube,
    stop: async () => {
      await agent?.stop();
      await redis.stop();
      await cp.stop();
    },
  };
}

export async function installCrd(kube: KubeClient): Promise<void> {
  const crd = parse(readFileSync(CRD_FILE, 'utf8')) as { metadata: { name: string } };
  const path = '/apis/apiextensions.k8s.io/v1/customresourcedefinitions';
  await kube.patch(`${path}/${crd.metadata.name}`, crd, 'apply', { fieldManager: 'taskbatch-tests', force: true });
  await eventually(
    async () => {
      const got = await kube.get<{ status?: { conditions?: { type: string; status: string }[] } }>(`${path}/${crd.metadata.name}`);
      return got.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True');
    },
    30_000,
    'CRD Established',
  );
}

export async function createNamespace(kube: KubeClient, name: string): Promise<string> {
  await kube.create('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name } });
  return name;
}

export interface OperatorProcess {
  proc: ChildProcess;
  logFile: string;
  metricsUrl: string;
  logs(): string;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** Runs the operator as a real process (node dist/operator/main.js) against the cluster. */
export async function startOperator(env: OperatorEnv, extraEnv: Record<string, string> = {}, port?: number): Promise<OperatorProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'tb-operator-'));
  const logFile = join(dir, 'operator.log');
  const out = createWriteStream(logFile);
  // A port the kernel reports free (a random one can collide with the ephemeral ports that
  // etcd, kube-apiserver and pods were given).
  const metricsPort = port ?? (await freePort());
  const proc = spawn(process.execPath, [join(repoRoot(), 'dist/operator/main.js')], {
    env: {
      PATH: process.env.PATH ?? '',
      KUBECONFIG: env.cp.kubeconfigPath,
      TASKBATCH_DEFAULT_REDIS_URL: env.redis.url,
      TASKBATCH_WORKER_IMAGE: WORKER_IMAGE,
      TASKBATCH_LEASE_NAMESPACE: 'default',
      TASKBATCH_METRICS_HOST: '127.0.0.1',
      TASKBATCH_METRICS_PORT: String(metricsPort),
      TASKBATCH_WORKER_GRACE_SECONDS: '15',
      TASKBATCH_LOG_LEVEL: 'debug',
      // Tests name Redis servers on loopback addresses and Service names freely; the allow list
      // itself is tested with its own setting (operator-redis-allow.test.ts).
      TASKBATCH_ALLOWED_REDIS: '*',
      ...extraEnv,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.stdout?.pipe(out);
  proc.stderr?.pipe(out);
  const handle: OperatorProcess = {
    proc,
    logFile,
    metricsUrl: `http://127.0.0.1:${metricsPort}/metrics`,
    logs: () => readFileSync(logFile, 'utf8'),
    kill: async (signal = 'SIGTERM') => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      await new Promise<void>((resolve) => {
        proc.once('exit', () => resolve());
        proc.kill(signal);
      });
    },
  };
  // Started means serving /healthz; an operator that exits first fails here with its log.
  await eventually(
    async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) throw new StartFailed(`operator exited (${proc.exitCode ?? proc.signalCode}):\n${handle.logs()}`);
      const r = await fetch(`http://127.0.0.1:${metricsPort}/healthz`).catch(() => undefined);
      return r?.ok;
    },
    30_000,
    'the operator to serve /healthz',
  ).catch((err: unknown) => {
    throw err instanceof StartFailed ? err : new Error(`${(err as Error).message}; log:\n${handle.logs()}`);
  });
  return handle;
}

class StartFailed extends Error {}

export async function getBatch(kube: KubeClient, ns: string, name: string): Promise<TaskBatch> {
  return kube.get<TaskBatch>(batchPath(ns, name));
}

export async function waitForCondition(kube: KubeClient, ns: string, name: string, type: string, timeoutMs = 120_000, status = 'True'): Promise<TaskBatch> {
  let last: TaskBatch | undefined;
  try {
    return await eventually(
      async () => {
        last = await getBatch(kube, ns, name);
        return last.status?.conditions?.some((c) => c.type === type && c.status === status) ? last : undefined;
      },
      timeoutMs,
      `TaskBatch ${ns}/${name} condition ${type}=${status}`,
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}; last status: ${JSON.stringify(last?.status)}`);
  }
}

export async function workerPods(kube: KubeClient, ns: string, batch: string): Promise<Pod[]> {
  return (await kube.list<Pod>(`/api/v1/namespaces/${ns}/pods`, { labelSelector: `taskbatch.dev/batch=${batch}` })).items;
}

/** A TaskBatch manifest with sensible test defaults. */
export function aTaskBatch(ns: string, name: string, spec: Record<string, unknown>): TaskBatch {
  return { apiVersion: 'taskbatch.dev/v1alpha1', kind: 'TaskBatch', metadata: { name, namespace: ns }, spec: { handler: { builtin: 'noop' }, ...spec } as TaskBatch['spec'] };
}
