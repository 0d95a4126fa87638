#!/usr/bin/env node
// @ts-check
// The Helm chart's pre-delete hook. TaskBatches carry a finalizer (taskbatch.dev/redis-cleanup)
// that only the operator removes, after deleting the batch's Redis keys. Uninstalling the
// operator first would leave every TaskBatch undeletable (and its namespace stuck
// Terminating). So, while the operator still runs, this deletes every TaskSchedule it manages
// (first, so that no tick creates a run meanwhile: a run made after the operator is gone would
// be stuck on its finalizer), then every TaskBatch, and waits until they are gone; a batch
// that appears while it waits is deleted too. Environment:
//   TASKBATCH_WATCH_NAMESPACE        the operator's namespace scope ("" = all namespaces)
//   TASKBATCH_HOOK_TIMEOUT_SECONDS   how long to wait (default 300)
import { ALL_BATCHES_PATH, ALL_SCHEDULES_PATH, batchPath, describe, intEnv, isNotFound, kubeClient, log, schedulePath, sleep } from './common.mjs';

process.env.TASKBATCH_HOOK ??= 'taskbatch-uninstall';
const namespace = process.env.TASKBATCH_WATCH_NAMESPACE ?? '';
const timeoutMs = intEnv('TASKBATCH_HOOK_TIMEOUT_SECONDS', 300) * 1000;
const kube = kubeClient();
const listPath = namespace ? batchPath(namespace) : ALL_BATCHES_PATH;
const scheduleListPath = namespace ? schedulePath(namespace) : ALL_SCHEDULES_PATH;

/** @typedef {{ metadata: { name: string, namespace: string, deletionTimestamp?: string, finalizers?: string[] }, status?: { conditions?: { type: string, status: string, reason?: string, message?: string }[] } }} Batch */

/** @returns {Promise<Batch[] | undefined>} undefined when the TaskBatch API is not served */
async function list() {
  try {
    return (await kube.list(listPath)).items;
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/** Deletes the TaskSchedules in scope (they have no finalizer: gone at once). */
async function deleteSchedules() {
  let schedules;
  try {
    schedules = /** @type {{ items: { metadata: { name: string, namespace: string } }[] }} */ (await kube.list(scheduleListPath)).items;
  } catch (err) {
    if (isNotFound(err)) return;
    throw err;
  }
  for (const s of schedules) {
    try {
      await kube.delete(schedulePath(s.metadata.namespace, s.metadata.name));
      log('info', 'Deleted TaskSchedule', { taskschedule: `${s.metadata.namespace}/${s.metadata.name}` });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }
}

/** @param {Batch[]} batches */
async function deleteBatches(batches) {
  for (const b of batches) {
    if (b.metadata.deletionTimestamp) continue;
    try {
      await kube.delete(batchPath(b.metadata.namespace, b.metadata.name));
      log('info', 'Deleted TaskBatch', { taskbatch: `${b.metadata.namespace}/${b.metadata.name}` });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }
}

async function main() {
  const deadline = Date.now() + timeoutMs;
  await deleteSchedules();
  const first = await list();
  if (first === undefined) {
    log('info', 'Found no TaskBatch API (the CRD is not installed); nothing to delete');
    return 0;
  }
  log('info', 'Started deleting the TaskBatches the operator manages, before it is uninstalled', { scope: namespace || '(all namespaces)', count: first.length });
  await deleteBatches(first);
  for (;;) {
    const left = (await list()) ?? [];
    if (left.length === 0) {
      log('info', 'Deleted all TaskBatches', { deleted: first.length });
      return 0;
    }
    // A run its schedule created just before the schedule went.
    await deleteBatches(left);
    if (Date.now() > deadline) {
      for (const b of left) {
        const blocked = b.status?.conditions?.find((c) => c.type === 'CleanupBlocked' && c.status === 'True');
        log('error', 'Found a TaskBatch still present', {
          taskbatch: `${b.metadata.namespace}/${b.metadata.name}`,
          finalizers: b.metadata.finalizers ?? [],
          ...(blocked ? { cleanupBlocked: blocked.message } : {}),
        });
      }
      log(
        'error',
        `Timed out after ${timeoutMs / 1000}s waiting for TaskBatches to be deleted; is the operator running? Fix it and run helm uninstall again (helm uninstall --no-hooks would leave them stuck on their finalizer)`,
        { left: left.length },
      );
      return 1;
    }
    await sleep(1000);
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    log('error', 'Hook failed', { error: describe(err) });
    process.exit(1);
  },
);
