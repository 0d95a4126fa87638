import { readFileSync } from 'node:fs';
import { Redis, Cluster, type RedisOptions, type ClusterOptions } from 'ioredis';
import { InvalidArgumentError } from './errors.js';
import { limitReplySize } from './reply-limit.js';
import type { RedisClient } from './scripts.js';

export interface RedisConnectionOptions {
  /** redis://host:port[/db] or rediss:// for TLS. Credentials belong in username/password, not the URL. */
  url: string;
  username?: string;
  password?: string;
  /** TLS settings; `rediss://` turns TLS on with defaults. */
  tls?: { caFile?: string; ca?: string; insecureSkipVerify?: boolean; serverName?: string };
  /** Connect to a Redis Cluster, using the URL's host as the seed node. */
  cluster?: boolean;
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
  if (options.cluster) {
    const clusterOptions: ClusterOptions = { redisOptions: common, scaleReads: 'master' };
    return bounded(new Cluster([{ host: parsed.host, port: parsed.port }], clusterOptions), options.maxReplyBytes);
  }
  return bounded(new Redis({ ...common, host: parsed.host, port: parsed.port, db: parsed.db }), options.maxReplyBytes);
}

function bounded<C extends Redis | Cluster>(client: C, maxReplyBytes: number | undefined): C {
  if (maxReplyBytes !== undefined) limitReplySize(client as unknown as Parameters<typeof limitReplySize>[0], maxReplyBytes, (err) => client.emit('error', err));
  return client;
}
