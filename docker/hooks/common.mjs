// @ts-check
// Shared by the Helm chart's hook scripts, which run in the operator image (/app is the
// repository layout: /app/dist, /app/node_modules, /app/docker/hooks). They use the operator's
// own Kubernetes adapter, so they authenticate exactly like it: in-cluster ServiceAccount
// credentials, or KUBECONFIG when set.
import { KubeConfig } from '@kubernetes/client-node';
import { KubeClient } from '../../dist/kube/client.js';

export { ALL_BATCHES_PATH, batchPath } from '../../dist/api/taskbatch.js';
export { ALL_SCHEDULES_PATH, schedulePath } from '../../dist/operator/schedule/api.js';
export { isNotFound } from '../../dist/kube/client.js';

/** @returns {KubeClient} */
export function kubeClient() {
  const kc = new KubeConfig();
  kc.loadFromDefault();
  return new KubeClient(kc);
}

/**
 * One structured JSON log line, like the operator's.
 * @param {'info' | 'warn' | 'error'} level
 * @param {string} msg
 * @param {Record<string, unknown>} [fields]
 */
export function log(level, msg, fields = {}) {
  process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), level, component: process.env.TASKBATCH_HOOK ?? 'taskbatch-hook', msg, ...fields })}\n`);
}

/** @param {number} ms */
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * @param {string} name
 * @param {number} dflt
 */
export function intEnv(name, dflt) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return dflt;
  const v = Number(raw);
  if (!Number.isInteger(v) || v < 0) {
    log('error', `${name}=${JSON.stringify(raw)} is invalid: expected a non-negative integer`);
    process.exit(2);
  }
  return v;
}

/**
 * @param {unknown} err
 * @returns {string}
 */
export function describe(err) {
  return err instanceof Error ? err.message : String(err);
}
