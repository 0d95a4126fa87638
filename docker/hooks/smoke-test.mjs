#!/usr/bin/env node
// @ts-check
// `helm test`: runs a small TaskBatch end to end (the operator seeds it into Redis, starts a
// worker pod, the worker runs the items) and checks it completes with every item succeeded,
// then deletes it and checks the finalizer (Redis clean-up) lets it go. Environment:
//   TASKBATCH_TEST_NAMESPACE        where to create the batch (a namespace the operator manages)
//   TASKBATCH_TEST_NAME             the batch's name
//   TASKBATCH_TEST_ITEMS            items (default 20)
//   TASKBATCH_TEST_TIMEOUT_SECONDS  how long to wait for Complete (default 180)
import { batchPath, describe, intEnv, isNotFound, kubeClient, log, sleep } from './common.mjs';

process.env.TASKBATCH_HOOK ??= 'taskbatch-helm-test';
const namespace = process.env.TASKBATCH_TEST_NAMESPACE || 'default';
const name = process.env.TASKBATCH_TEST_NAME || 'taskbatch-helm-test';
const items = intEnv('TASKBATCH_TEST_ITEMS', 20);
const timeoutMs = intEnv('TASKBATCH_TEST_TIMEOUT_SECONDS', 180) * 1000;
const kube = kubeClient();
const path = batchPath(namespace, name);

/** @typedef {{ metadata: { name: string }, status?: { progress?: string, items?: Record<string, number>, conditions?: { type: string, status: string, reason?: string, message?: string }[] } }} Batch */

/** @param {Batch} b @param {string} type */
const isTrue = (b, type) => (b.status?.conditions ?? []).find((c) => c.type === type && c.status === 'True');

async function deleteAndWait() {
  try {
    await kube.delete(path);
  } catch (err) {
    if (isNotFound(err)) return true;
    throw err;
  }
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if ((await kube.find(path)) === undefined) return true;
    await sleep(500);
  }
  return false;
}

async function main() {
  // A leftover from an interrupted run would make create fail.
  await deleteAndWait();
  await kube.create(batchPath(namespace), {
    apiVersion: 'taskbatch.dev/v1alpha1',
    kind: 'TaskBatch',
    metadata: { name, namespace, labels: { 'app.kubernetes.io/part-of': 'taskbatch', 'taskbatch.dev/helm-test': 'true' } },
    spec: { range: { start: 0, end: items }, handler: { builtin: 'noop' }, pool: { mode: 'async', size: 2 }, workers: { max: 1 } },
  });
  log('info', 'Created TaskBatch', { taskbatch: `${namespace}/${name}`, items });
  const deadline = Date.now() + timeoutMs;
  /** @type {Batch | undefined} */
  let b;
  for (;;) {
    b = /** @type {Batch} */ (await kube.get(path));
    if (isTrue(b, 'Complete') || isTrue(b, 'Failed')) break;
    if (Date.now() > deadline) {
      log('error', `TaskBatch did not finish within ${timeoutMs / 1000}s`, { taskbatch: `${namespace}/${name}`, progress: b.status?.progress, conditions: b.status?.conditions });
      await deleteAndWait();
      return 1;
    }
    await sleep(1000);
  }
  const failed = isTrue(b, 'Failed');
  const counts = b.status?.items ?? {};
  const ok = !failed && counts.succeeded === items && (counts.failed ?? 0) === 0;
  log(ok ? 'info' : 'error', ok ? 'TaskBatch completed' : 'TaskBatch did not complete as expected', {
    taskbatch: `${namespace}/${name}`,
    items: counts,
    ...(failed ? { failed: failed.message } : {}),
  });
  if (!(await deleteAndWait())) {
    log('error', 'TaskBatch was not deleted within 60s: the operator did not remove its finalizer (Redis clean-up)', { taskbatch: `${namespace}/${name}` });
    return 1;
  }
  log('info', 'Deleted TaskBatch', { taskbatch: `${namespace}/${name}` });
  return ok ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    log('error', 'Test failed', { error: describe(err) });
    process.exit(1);
  },
);
