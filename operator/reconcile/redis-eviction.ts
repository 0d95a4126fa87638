/**
 * The operator's view of each Redis's maxmemory-policy, read at most every 15 s per client:
 * the policy can be changed at runtime (CONFIG SET), and a fixed Redis lets its batches go on.
 */
import { evictionProblem, readEvictionPolicy, type RedisClient } from '../../queue/index.js';

const RECHECK_MS = 15_000;

export class EvictionPolicies {
  private readonly seen = new WeakMap<RedisClient, { at: number; problem: string | undefined }>();

  constructor(private readonly now: () => number) {}

  /** Why this Redis is unsafe for batches (its policy evicts keys), or undefined. */
  async problem(client: RedisClient): Promise<string | undefined> {
    const cached = this.seen.get(client);
    if (cached && this.now() - cached.at < RECHECK_MS) return cached.problem;
    const problem = evictionProblem(await readEvictionPolicy(client));
    this.seen.set(client, { at: this.now(), problem });
    return problem;
  }

  /** How long a batch on a misconfigured Redis waits before it is looked at again. */
  static readonly retryAfterMs = RECHECK_MS;
}
