/** Shared helpers of the cluster tier: unique names, polling, pod phases, tiny node scripts as containers. */
import type { CoreV1Api, V1Pod } from '@kubernetes/client-node';
import { randomBytes } from 'node:crypto';

export function uniqueName(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString('hex')}`;
}

/** Polls until fn returns a value other than undefined/false; throws naming `what` on timeout. */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 30_000, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (last error: ${(lastError as Error).message})` : ''}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export async function createNamespace(core: CoreV1Api, prefix: string): Promise<string> {
  const name = uniqueName(prefix);
  await core.createNamespace({ body: { metadata: { name } } });
  return name;
}

export async function waitForPhase(core: CoreV1Api, namespace: string, name: string, phases: string[], timeoutMs = 30_000): Promise<V1Pod> {
  return waitFor(
    `pod ${namespace}/${name} to reach ${phases.join('|')}`,
    async () => {
      const p = await core.readNamespacedPod({ name, namespace });
      return phases.includes(p.status?.phase ?? '') ? p : undefined;
    },
    timeoutMs,
  );
}

export async function waitForPodGone(core: CoreV1Api, namespace: string, name: string, timeoutMs = 30_000): Promise<void> {
  await waitFor(
    `pod ${namespace}/${name} to disappear`,
    async () => {
      try {
        await core.readNamespacedPod({ name, namespace });
        return false;
      } catch (err) {
        if ((err as { code?: number }).code === 404) return true;
        throw err;
      }
    },
    timeoutMs,
  );
}

/** A container command running a small Node script with the Node binary the tests (and the node agent) run on. */
export function nodeScript(script: string): string[] {
  return [process.execPath, '-e', script];
}
