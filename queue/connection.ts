import { readFileSync } from 'node:fs';
import { Redis, Cluster, type RedisOptions, type ClusterOptions } from 'ioredis';
import { InvalidArgumentError } from './errors.js';
import { limitReplySize } from './reply-limit.js';
import type { RedisClient } from './scripts.js';

/** A Redis primary found through Sentinel: the sentinels to ask, and the name they know it by. */
export interface SentinelOptions {
  /** A few of the sentinels (one is enough while it is up); tried in order. */
  addresses: { host: string; port: number }[];
  /** The monitored primary's name (`sentinel monitor <name> ...` in the sentinels' configuration). */
  masterName: string;
  /** Credentials of the sentinels themselves, when they require AUTH (the data nodes' are username/password). */
  username?: string;
  password?: string;
}

export interface RedisConnectionOptions {
  /**
   * redis://host:port[/db] or rediss:// for TLS. Credentials belong in username/password, not the URL.
   * With `sentinel`, only the URL's database number and scheme count (rediss:// = TLS to the data nodes);
   * its host is never dialled, so `redis://<masterName>/<db>` reads well.
   */
  url: string;
  username?: string;
  password?: string;
  /** TLS settings; `rediss://` turns TLS on with defaults. */
  tls?: { caFile?: string; ca?: string; insecureSkipVerify?: boolean; serverName?: string };
  /** Connect to a Redis Cluster, using the URL's host as the seed node. */
  cluster?: boolean;
  /**
   * Connect to the primary that these sentinels name, and to the new one after a failover: a
   * connection that drops asks the sentinels again, one that reaches a node that is no longer
   * the primary (its INFO role) is dropped and redialled, and so is one on which a write is
   * refused with READONLY (the primary was demoted while up). Not with `cluster`.
   */
  sentinel?: SentinelOptions;
  /**
   * Most bytes one reply may take; a larger one closes the connection (queue/reply-limit.ts).
   * Unset: unbounded (ioredis' default). The operator sets it for every Redis it connects to.
   */
  maxReplyBytes?: number;
  /** Extra ioredis options (timeouts, retryStrategy, ...). */
  redisOptions?: RedisOptions;
}

export interface ParsedRedisUrl {
  host: string;
  port: number;
  db: number;
  tls: boolean;
}

export function parseRedisUrl(url: string): ParsedRedisUrl {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new InvalidArgumentError(`Redis URL ${JSON.stringify(url)} is not a URL; expected redis://host:port or rediss://host:port`);
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') {
    throw new InvalidArgumentError(`Redis URL scheme ${JSON.stringify(u.protocol)} is not supported; use redis:// or rediss:// (TLS)`);
  }
  if (u.password) {
    throw new InvalidArgumentError('Redis URL must not contain a password: pass it separately (a Secret, or the password option)');
  }
  const db = u.pathname && u.pathname !== '/' ? Number(u.pathname.slice(1)) : 0;
  if (!Number.isInteger(db) || db < 0) throw new InvalidArgumentError(`Redis URL database ${JSON.stringify(u.pathname)} must be a non-negative integer`);
  const port = u.port ? Number(u.port) : 6379;
  return { host: u.hostname.replace(/^\[|\]$/g, ''), port, db, tls: u.protocol === 'rediss:' };
}

/** Opens a client for a standalone Redis or a Redis Cluster, with TLS and ACL credentials. */
export function connectRedis(options: RedisConnectionOptions): RedisClient {
  const parsed = parseRedisUrl(options.url);
  const username = options.username ?? (decodeURIComponent(new URL(options.url).username) || undefined);
  const useTls = parsed.tls || options.tls !== undefined;
  const tls = useTls
    ? {
        ...(options.tls?.caFile ? { ca: readFileSync(options.tls.caFile) } : {}),
        ...(options.tls?.ca ? { ca: options.tls.ca } : {}),
        ...(options.tls?.insecureSkipVerify ? { rejectUnauthorized: false } : {}),
        ...(options.tls?.serverName ? { servername: options.tls.serverName } : {}),
      }
    : undefined;
  const common: RedisOptions = {
    ...(username ? { username } : {}),
    ...(options.password ? { password: options.password } : {}),
    ...(tls ? { tls } : {}),
    maxRetriesPerRequest: null,
    enableAutoPipelining: false,
    // TCP keepalive from one idle second on (Node probes every second after that): a peer that is
    // gone is found on an idle connection too. It cannot find a peer whose kernel still answers
    // but whose Redis does not; that takes a command or socket timeout (the worker sets both).
    keepAlive: 1000,
    ...options.redisOptions,
  };
  if (options.cluster && options.sentinel) {
    throw new InvalidArgumentError('Redis options cluster and sentinel exclude each other: a Redis Cluster fails over by itself; pass one of them');
  }
  if (options.sentinel && useTls) {
    // ioredis would dial the primary the sentinels name in plain text unless told otherwise, and
    // that path is untested here: refuse rather than send credentials and items unencrypted.
    throw new InvalidArgumentError('TLS through Redis Sentinel is not supported yet: the connection to the primary would not be encrypted. Use a TLS-terminating proxy, or connect without sentinel');
  }
  if (options.sentinel) return bounded(new Redis({ ...sentinelOptions(options.sentinel), ...common, db: parsed.db }), options.maxReplyBytes);
  if (options.cluster) {
    const clusterOptions: ClusterOptions = { redisOptions: common, scaleReads: 'master' };
    return bounded(new Cluster([{ host: parsed.host, port: parsed.port }], clusterOptions), options.maxReplyBytes);
  }
  return bounded(new Redis({ ...common, host: parsed.host, port: parsed.port, db: parsed.db }), options.maxReplyBytes);
}

/** One sentinel's `host:port` (`[addr]:port` for IPv6, port 1-65535), or undefined when it is not one. */
export function parseSentinelAddress(entry: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(entry.trim());
  const port = Number(m?.[3]);
  if (!m || port < 1 || port > 65535) return undefined;
  return { host: (m[1] ?? m[2]) as string, port };
}

function sentinelOptions(s: SentinelOptions): RedisOptions {
  if (!Array.isArray(s.addresses) || s.addresses.length === 0) throw new InvalidArgumentError('sentinel.addresses must list at least one sentinel {host, port}');
  for (const a of s.addresses) {
    if (!a || typeof a.host !== 'string' || a.host === '' || !Number.isInteger(a.port) || a.port < 1 || a.port > 65535) {
      throw new InvalidArgumentError(`sentinel address ${JSON.stringify(a)} must be {host: non-empty string, port: 1-65535}`);
    }
  }
  if (typeof s.masterName !== 'string' || s.masterName === '') throw new InvalidArgumentError('sentinel.masterName must name the primary the sentinels monitor');
  return {
    sentinels: s.addresses.map((a) => ({ host: a.host, port: a.port })),
    name: s.masterName,
    role: 'master',
    ...(s.username ? { sentinelUsername: s.username } : {}),
    ...(s.password ? { sentinelPassword: s.password } : {}),
    // A primary that was demoted while up (a partition, a manual failover) refuses writes with
    // READONLY: reconnect, which asks the sentinels again. Not ioredis' failoverDetector: its
    // +switch-master handler closes the connector even mid-reconnection, and a reconnection cut
    // that way ends the client for good (status 'end'; seen in the failover test).
    reconnectOnError: (err: Error) => err.message.includes('READONLY'),
    // Sentinels all unreachable: keep asking (a restart of the sentinel fleet must not end the client).
    sentinelRetryStrategy: (times: number) => Math.min(100 * times, 2000),
  };
}

function bounded<C extends Redis | Cluster>(client: C, maxReplyBytes: number | undefined): C {
  if (maxReplyBytes !== undefined) limitReplySize(client as unknown as Parameters<typeof limitReplySize>[0], maxReplyBytes, (err) => client.emit('error', err));
  return client;
}
