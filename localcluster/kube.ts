/** Small helpers over @kubernetes/client-node's errors and patch calls. */
import { PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';

/** The HTTP status of an ApiException (or a watch error), else undefined. */
function apiStatus(err: unknown): number | undefined {
  const e = err as { code?: unknown; statusCode?: unknown };
  if (typeof e?.code === 'number') return e.code;
  if (typeof e?.statusCode === 'number') return e.statusCode;
  return undefined;
}

export const isNotFound = (err: unknown): boolean => apiStatus(err) === 404;
export const isConflict = (err: unknown): boolean => apiStatus(err) === 409;

/** Request options for a strategic-merge patch (what the kubelet uses for pod status). */
export const strategicMergePatch = setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch);

/** RFC 3339 with whole seconds, as Kubernetes writes metav1.Time. */
export function k8sTime(d: Date = new Date()): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}
