import { execFileSync } from 'node:child_process';
import { Redis } from 'ioredis';
import { startRedisServer, type RedisServer } from '../../localcluster/redis-server.js';
import { eventually } from './batches.js';

export interface RedisClusterFixture {
  nodes: RedisServer[];
  seedUrl: string;
  stop(): Promise<void>;
}

/** A real Redis Cluster of `primaries` redis-server processes on loopback, no replicas. */
export async function startRedisCluster(primaries = 3): Promise<RedisClusterFixture> {
  const nodes: RedisServer[] = [];
  for (let i = 0; i < primaries; i++) {
    nodes.push(await startRedisServer({ args: ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '5000'] }));
  }
  execFileSync('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `${n.host}:${n.port}`), '--cluster-replicas', '0', '--cluster-yes'], { stdio: 'pipe' });
  await eventually(
    async () => {
      const checks = await Promise.all(
        nodes.map(async (n) => {
          const c = new Redis(n.port, n.host, { lazyConnect: true });
          try {
            await c.connect();
            const info = await c.cluster('INFO');
            return String(info).includes('cluster_state:ok');
          } finally {
            c.disconnect();
          }
        }),
      );
      return checks.every(Boolean);
    },
    20_000,
    'cluster_state:ok on every node',
  );
  return {
    nodes,
    seedUrl: nodes[0]!.url,
    stop: async () => {
      await Promise.all(nodes.map((n) => n.stop()));
    },
  };
}
