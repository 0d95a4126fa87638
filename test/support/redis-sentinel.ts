import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { freePort } from '../../localcluster/ports.js';
import { startRedisServer, type RedisServer } from '../../localcluster/redis-server.js';

/**
 * A Sentinel-managed Redis on loopback, from real processes: a primary, one replica
 * (--replicaof) and three sentinels (quorum 2) that declare the primary down after 1 s
 * without a reply and promote the replica. No persistence: a node that is killed and started
 * again comes back empty, and the sentinels make it a replica of whoever is primary then.
 */
export interface SentinelGroup {
  masterName: string;
  /** The two data nodes; which one is primary changes with failovers (see primaryPort()). */
  nodes: RedisServer[];
  sentinels: { host: string; port: number }[];
  /** The primary's port as the sentinels report it. */
  primaryPort(): Promise<number>;
  /** The data node the sentinels name as primary. */
  primary(): Promise<RedisServer>;
  /** Resolves once the sentinels name another primary than `oldPort` and it answers ROLE as master. */
  waitForFailover(oldPort: number, timeoutMs?: number): Promise<number>;
  /**
   * Starts a killed node again (empty) as a replica of the current primary, as an operator would:
   * at once, rather than after the sentinels notice an old primary is back (about 20 s), and
   * without a window in which an empty primary could be mistaken for the real one.
   */
  rejoin(node: RedisServer): Promise<void>;
  /** Resolves once the primary reports `n` replicas online and caught up with its offset. */
  waitForReplicas(n: number, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

const HOST = '127.0.0.1';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function startSentinelGroup(masterName = 'tbprimary'): Promise<SentinelGroup> {
  const primary = await startRedisServer({ host: HOST });
  const replica = await startRedisServer({ host: HOST, args: ['--replicaof', HOST, String(primary.port)] });
  const nodes = [primary, replica];
  const dir = mkdtempSync(join(tmpdir(), 'tb-sentinel-'));
  const procs: ChildProcess[] = [];
  const sentinels: { host: string; port: number }[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(procs.map((p) => stopProcess(p)));
    await Promise.all(nodes.map((n) => n.stop()));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await untilReplicas(primary.port, 1, 15_000);
    for (let i = 0; i < 3; i++) {
      const port = await freePort(HOST);
      const conf = join(dir, `sentinel-${i}.conf`);
      // The sentinel rewrites its file (known replicas, epochs): each has its own.
      writeFileSync(
        conf,
        [
          `port ${port}`,
          `bind ${HOST}`,
          'protected-mode no',
          `dir ${dir}`,
          `sentinel monitor ${masterName} ${HOST} ${primary.port} 2`,
          `sentinel down-after-milliseconds ${masterName} 1000`,
          `sentinel failover-timeout ${masterName} 3000`,
          `sentinel parallel-syncs ${masterName} 1`,
          '',
        ].join('\n'),
      );
      procs.push(await startSentinel(conf, port));
      sentinels.push({ host: HOST, port });
    }
    // Each sentinel must know the replica (from the primary's INFO, every 10 s at first) and the
    // other sentinels (hello messages every 2 s) before it can fail over.
    await untilSentinelsReady(sentinels, masterName, 30_000);
  } catch (err) {
    await stop();
    throw err;
  }

  const primaryPort = async (): Promise<number> => {
    for (const s of sentinels) {
      const c = new Redis(s.port, s.host, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      c.on('error', () => undefined);
      try {
        const addr = (await c.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', masterName)) as [string, string] | null;
        if (addr) return Number(addr[1]);
      } catch {
        // try the next sentinel
      } finally {
        c.disconnect();
      }
    }
    throw new Error(`no sentinel of ${sentinels.map((s) => s.port).join(',')} names a primary for ${masterName}`);
  };
  const primaryNode = async (): Promise<RedisServer> => {
    const port = await primaryPort();
    const node = nodes.find((n) => n.port === port);
    if (!node) throw new Error(`the sentinels name port ${port} as primary, which is none of the nodes ${nodes.map((n) => n.port).join(',')}`);
    return node;
  };
  return {
    masterName,
    nodes,
    sentinels,
    primaryPort,
    primary: primaryNode,
    waitForFailover: async (oldPort, timeoutMs = 30_000) => {
      const until = Date.now() + timeoutMs;
      while (Date.now() < until) {
        const port = await primaryPort().catch(() => oldPort);
        if (port !== oldPort && (await roleOf(port)) === 'master') return port;
        await sleep(100);
      }
      throw new Error(`the sentinels did not promote a new primary (other than port ${oldPort}) within ${timeoutMs} ms`);
    },
    rejoin: async (node) => {
      const port = await primaryPort();
      await node.start();
      await withClient(node.port, (c) => c.call('REPLICAOF', HOST, String(port)));
    },
    waitForReplicas: async (n, timeoutMs = 30_000) => untilReplicas(await primaryPort(), n, timeoutMs),
    stop,
  };
}

function startSentinel(conf: string, port: number): Promise<ChildProcess> {
  const child = spawn('redis-server', [conf, '--sentinel'], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`sentinel on port ${port} did not start in 10 s:\n${out}`)), 10_000);
    const onData = (b: Buffer): void => {
      out += b.toString();
      if (out.includes('+monitor')) {
        clearTimeout(timer);
        child.removeAllListeners('exit');
        // Keep draining output so the pipe never blocks the sentinel.
        child.stdout?.off('data', onData);
        child.stderr?.off('data', onData);
        child.stdout?.resume();
        child.stderr?.resume();
        resolve(child);
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`sentinel on port ${port} exited with ${code}:\n${out}`));
    });
  });
}

function stopProcess(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => p.kill('SIGKILL'), 5000);
    p.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    p.kill('SIGTERM');
  });
}

async function withClient<T>(port: number, f: (c: Redis) => Promise<T>): Promise<T> {
  const c = new Redis(port, HOST, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  c.on('error', () => undefined);
  try {
    return await f(c);
  } finally {
    c.disconnect();
  }
}

async function roleOf(port: number): Promise<string | undefined> {
  return withClient(port, async (c) => ((await c.call('ROLE')) as [string])[0]).catch(() => undefined);
}

async function untilReplicas(primaryPort: number, n: number, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < until) {
    last = await withClient(primaryPort, (c) => c.info('replication')).catch((err: Error) => err.message);
    const offset = Number(/master_repl_offset:(\d+)/.exec(last)?.[1] ?? -1);
    const online = [...last.matchAll(/^slave\d+:.*state=online,offset=(\d+)/gm)].filter((m) => Number(m[1]) >= offset);
    if (online.length >= n) return;
    await sleep(100);
  }
  throw new Error(`the primary on port ${primaryPort} did not get ${n} caught-up replica(s) within ${timeoutMs} ms:\n${last}`);
}

async function untilSentinelsReady(sentinels: { host: string; port: number }[], masterName: string, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < until) {
    const ready = await Promise.all(
      sentinels.map((s) =>
        withClient(s.port, async (c) => {
          const m = (await c.call('SENTINEL', 'MASTER', masterName)) as string[];
          const field = (k: string): number => Number(m[m.indexOf(k) + 1]);
          last = `sentinel ${s.port}: ${field('num-slaves')} replicas, ${field('num-other-sentinels')} other sentinels`;
          return field('num-slaves') >= 1 && field('num-other-sentinels') >= sentinels.length - 1;
        }).catch(() => false),
      ),
    );
    if (ready.every(Boolean)) return;
    await sleep(200);
  }
  throw new Error(`the sentinels did not all see the replica and each other within ${timeoutMs} ms (${last})`);
}
