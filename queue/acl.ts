import { createHash } from 'node:crypto';
import { InvalidArgumentError } from './errors.js';
import type { RedisClient } from './scripts.js';

/**
 * Per-namespace Redis ACL users (docs/security.md, docs/queue.md#acl-users). Every key of a
 * batch is `<prefix>:{<namespace>/<name>}:<part>` and every reply channel
 * `<prefix>:{<namespace>/<name>}:reply:<client>` (keys.ts, Queue.replyChannel), so one glob,
 * `<prefix>:{<namespace>/*`, covers exactly one namespace's keys and channels: a namespace is a
 * DNS label, so it holds no glob character and cannot be a prefix of another (the '/' ends it).
 */

/** The ACL user of a namespace on the Redis the operator manages. */
export function namespaceAclUser(namespace: string): string {
  return `tb-ns-${namespace}`;
}

/** Key and channel glob of one namespace. */
export function namespaceKeyPattern(namespace: string, prefix = 'tb'): string {
  if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(namespace) || namespace.length > 63) {
    throw new InvalidArgumentError(`namespace ${JSON.stringify(namespace)} is not a DNS label; no ACL key pattern is made for it`);
  }
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(prefix)) throw new InvalidArgumentError(`key prefix ${JSON.stringify(prefix)} is invalid: 1-64 letters, digits, '_', '.' or '-'`);
  return `${prefix}:{${namespace}/*`;
}

/**
 * Every command a namespace user may run, and nothing else. Scripts run with the caller's ACL
 * (Redis 7): each command a script calls needs the permission too, and its keys and channels
 * must match the user's patterns, so the patterns protect what scripts touch as well.
 * - scripts (queue/lua): EVALSHA, EVAL (ioredis falls back to EVAL on NOSCRIPT) and the
 *   commands inside them;
 * - direct calls (queue.ts, presence.ts, sdk/calls.ts): HGET HMGET HSETNX HSCAN ZSCORE ZRANGE,
 *   SREM HDEL ZREM (forgetCalls), INFO (the reply mode; ioredis's ready check),
 *   (S)SUBSCRIBE/(S)UNSUBSCRIBE (call replies);
 * - the connection: PING, HELLO, AUTH, SELECT (a db in the URL), CLIENT SETNAME/SETINFO,
 *   and on Redis Cluster CLUSTER SLOTS/SHARDS/INFO, READONLY, ASKING (ioredis's topology).
 * Never KEYS, SCAN, FLUSHALL, FLUSHDB, CONFIG, ACL, DEBUG, SHUTDOWN, MODULE, MONITOR,
 * CLIENT LIST/KILL, SCRIPT FLUSH/KILL, FUNCTION, PSUBSCRIBE (a pattern subscription is checked
 * against the pattern literally, so it is refused anyway), nor anything without a key.
 */
export const NAMESPACE_ACL_COMMANDS: readonly string[] = [
  // scripts
  'evalsha',
  'eval',
  // inside the scripts (grep "redis.call('" queue/lua)
  'time',
  'hget',
  'hmget',
  'hset',
  'hdel',
  'hexists',
  'hgetall',
  'hincrby',
  'hlen',
  'hstrlen',
  'llen',
  'lrange',
  'ltrim',
  'lpop',
  'lpush',
  'rpush',
  'sadd',
  'srem',
  'sismember',
  'smembers',
  'zadd',
  'zrem',
  'zcard',
  'zcount',
  'zrange',
  'zrangebyscore',
  'zscore',
  'pexpire',
  'unlink',
  'publish',
  'spublish',
  // direct calls
  'blpop', // an idle worker waiting for a wake-up (its batch's wake lists only)
  'hsetnx',
  'hscan',
  'info',
  'subscribe',
  'ssubscribe',
  'unsubscribe',
  'sunsubscribe',
  // connection
  'ping',
  'hello',
  'auth',
  'select',
  'client|setname',
  'client|setinfo',
  'client|getname',
  'readonly',
  'asking',
  'cluster|slots',
  'cluster|shards',
  'cluster|info',
];

/** SHA-256 of a password in hex, the form ACL SETUSER takes after '#' and '!' and ACL GETUSER lists. */
export function passwordHash(password: string): string {
  return createHash('sha256').update(password, 'utf8').digest('hex');
}

/**
 * The ACL SETUSER rules of a namespace user: `reset` first, so the user has exactly these
 * rules whatever it had before (an edited user is repaired); then every password hash to accept
 * (two during a rotation). `resetchannels` is part of `reset`: no channel but the namespace's.
 */
export function namespaceAclRules(namespace: string, passwordHashes: readonly string[], prefix = 'tb'): string[] {
  if (passwordHashes.length === 0)
    throw new InvalidArgumentError(`ACL user ${namespaceAclUser(namespace)}: at least one password hash is required (a user without one would accept any password or none)`);
  for (const h of passwordHashes) if (!/^[0-9a-f]{64}$/.test(h)) throw new InvalidArgumentError(`ACL user ${namespaceAclUser(namespace)}: a password hash must be 64 lowercase hex digits`);
  const pattern = namespaceKeyPattern(namespace, prefix);
  return ['reset', 'on', ...passwordHashes.map((h) => `#${h}`), `~${pattern}`, `&${pattern}`, '-@all', ...NAMESPACE_ACL_COMMANDS.map((c) => `+${c}`)];
}

/** The password hashes the user currently accepts ([] when the user does not exist). */
export async function aclPasswordHashes(admin: RedisClient, user: string): Promise<string[]> {
  const reply = (await admin.call('ACL', 'GETUSER', user)) as unknown[] | null;
  if (!reply) return [];
  for (let i = 0; i + 1 < reply.length; i += 2) {
    if (String(reply[i]) === 'passwords') return (reply[i + 1] as unknown[]).map(String);
  }
  return [];
}

/**
 * Creates or repairs a namespace's user with exactly `passwordHashes`. One ACL SETUSER is
 * atomic: a client never sees the user half-configured. On a Redis Cluster, ACLs are per node:
 * the rules are sent to every master (and replica) the client knows.
 */
export async function setNamespaceAclUser(admin: RedisClient, namespace: string, passwordHashes: readonly string[], prefix = 'tb'): Promise<void> {
  const nodes = 'nodes' in admin && typeof admin.nodes === 'function' ? admin.nodes('all') : [admin];
  await Promise.all(nodes.map((n) => setUserOnNode(n, namespaceAclUser(namespace), namespaceAclRules(namespace, passwordHashes, prefix))));
}

/** Removes a namespace's user (every node of a Redis Cluster the client knows); a missing user is fine. */
export async function deleteNamespaceAclUser(admin: RedisClient, namespace: string): Promise<void> {
  const nodes = 'nodes' in admin && typeof admin.nodes === 'function' ? admin.nodes('all') : [admin];
  await Promise.all(nodes.map((n) => n.call('ACL', 'DELUSER', namespaceAclUser(namespace))));
}

/**
 * A command the server does not know (CLIENT SETINFO before Redis 7.2, CLUSTER SHARDS before
 * 7.0) fails the whole SETUSER; such a command cannot be called either, so its rule is dropped.
 */
async function setUserOnNode(node: RedisClient, user: string, rules: string[]): Promise<void> {
  let left = [...rules];
  for (let attempt = 0; attempt < NAMESPACE_ACL_COMMANDS.length; attempt++) {
    try {
      await node.call('ACL', 'SETUSER', user, ...left);
      return;
    } catch (err) {
      const unknown = /modifier '(\+[a-z|]+)': Unknown command/i.exec((err as Error).message)?.[1];
      if (!unknown || !left.includes(unknown)) throw err;
      left = left.filter((r) => r !== unknown);
    }
  }
}
