/**
 * A Redis that evicts keys under memory pressure loses a batch's state one key at a time
 * (a payload here, the pending list there). The scripts detect that (TBPARTIAL), but only after
 * the fact: the operator and workers refuse an evicting Redis up front unless the installer
 * opts in. Managed Redis services often default to an evicting policy (volatile-lru,
 * allkeys-lru), so the message names the setting and both ways out.
 */
import type { RedisClient } from './scripts.js';

/** The server's maxmemory-policy, or undefined when neither CONFIG GET nor INFO shows it (both can be disabled). */
export async function readEvictionPolicy(client: RedisClient): Promise<string | undefined> {
  try {
    const reply = (await client.call('CONFIG', 'GET', 'maxmemory-policy')) as unknown;
    // RESP2: ['maxmemory-policy', value]; a Redis Cluster client answers from one node, which is enough:
    // the check is advice about the deployment, and every node of a cluster is configured alike.
    if (Array.isArray(reply) && typeof reply[1] === 'string') return reply[1];
  } catch {
    // CONFIG is commonly renamed or denied on managed services; INFO usually is not.
  }
  try {
    const info = String(await client.call('INFO', 'memory'));
    return /^maxmemory_policy:(\S+)/m.exec(info)?.[1];
  } catch {
    return undefined;
  }
}

/** Why a policy is unsafe for taskbatch, or undefined when it is safe (noeviction) or unknown. */
export function evictionProblem(policy: string | undefined): string | undefined {
  if (policy === undefined || policy === 'noeviction') return undefined;
  return `Redis maxmemory-policy is ${policy}: under memory pressure it deletes keys, and a batch whose keys are evicted loses items; set maxmemory-policy noeviction on the Redis (then a full Redis refuses writes, which taskbatch reports and retries)`;
}
