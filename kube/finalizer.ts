import type { KubeClient, KubeObject } from './client.js';

/** What a controller is asked to do for an object guarded by a finalizer. */
export type FinalizerEvent<T> = { kind: 'apply'; object: T } | { kind: 'cleanup'; object: T };

/**
 * The finalizer dance, written once for every kind (as kube-rs's `finalizer()`):
 *
 * - not being deleted and the finalizer is missing: add it (with the observed resourceVersion,
 *   so a concurrent change makes this a 409 and the pass is retried); the write's own watch
 *   event brings the object back, so nothing else happens this pass;
 * - not being deleted: `apply`;
 * - being deleted with the finalizer: `cleanup`, then remove the finalizer. A cleanup that
 *   throws keeps the finalizer (the work queue retries with backoff); one that returns lets the
 *   object go, so a cleanup that gives up must say so itself (an event) before returning;
 * - being deleted without it: nothing is ours to do.
 *
 * Returns the handler's result, or undefined when no handler ran to completion of `apply`.
 */
export async function withFinalizer<T extends KubeObject, R>(kube: KubeClient, path: string, object: T, finalizer: string, handle: (event: FinalizerEvent<T>) => Promise<R>): Promise<R | undefined> {
  const finalizers = object.metadata.finalizers ?? [];
  const has = finalizers.includes(finalizer);
  if (object.metadata.deletionTimestamp) {
    if (!has) return undefined;
    await handle({ kind: 'cleanup', object });
    await kube.patch(path, { metadata: { finalizers: finalizers.filter((f) => f !== finalizer), resourceVersion: object.metadata.resourceVersion } });
    return undefined;
  }
  if (!has) {
    await kube.patch(path, { metadata: { finalizers: [...finalizers, finalizer], resourceVersion: object.metadata.resourceVersion } });
    return undefined;
  }
  return handle({ kind: 'apply', object });
}
