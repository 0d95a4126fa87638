import { evictionProblem, readEvictionPolicy, type RedisClient } from '../queue/index.js';

/**
 * Reads the Redis's maxmemory-policy at each (re)connection, since a failover or restart can
 * bring a differently configured server, and reports an evicting one (queue/eviction-policy.ts).
 * Resolves once the first connection's policy is known (or after `firstWithinMs` without a
 * connection: the worker's own loops then wait for Redis, and the check runs when it comes).
 */
export function watchEvictionPolicy(redis: RedisClient, onProblem: (problem: string) => void, firstWithinMs = 5000): Promise<void> {
  const check = async (): Promise<void> => {
    const problem = evictionProblem(await readEvictionPolicy(redis));
    if (problem) onProblem(problem);
  };
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, firstWithinMs);
    timer.unref();
    const checked = (): void => {
      clearTimeout(timer);
      resolve();
    };
    redis.on('ready', () => void check().then(checked));
    if (redis.status === 'ready') void check().then(checked);
  });
}
