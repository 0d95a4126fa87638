import { isIP } from 'node:net';

/**
 * The Redis addresses the installer allows TaskBatches to name (TASKBATCH_ALLOWED_REDIS, chart
 * `redis.allowedAddresses`). Without a list, `spec.redis.url` would make the operator connect
 * from its own network position to any host and port: a port scanner (connection errors say
 * what is open) and a writer into any unauthenticated Redis it can reach. The check runs before
 * any connection is opened. The installer's default Redis is always allowed.
 */
export type RedisAddressRule =
  | { kind: 'any' }
  /** A hostname or IP literal, any port when `port` is undefined. Service names are normalised (see normaliseHost). */
  | { kind: 'host'; host: string; port?: number }
  /** IP literals inside a CIDR (a hostname is never resolved to match one: DNS could answer differently when connecting). */
  | { kind: 'cidr'; family: 4 | 6; bits: bigint; prefix: number; port?: number; text: string };

export class RedisAllowListError extends Error {
  override name = 'RedisAllowListError';
}

/** Lower case, no trailing dot; `<svc>.<ns>.svc.cluster.local` is the same Service as `<svc>.<ns>.svc`. */
function normaliseHost(host: string): string {
  const h = host
    .toLowerCase()
    .replace(/\.$/, '')
    .replace(/^\[|\]$/g, '');
  return h.endsWith('.svc.cluster.local') ? h.slice(0, -'.cluster.local'.length) : h;
}

function ipBits(ip: string): { family: 4 | 6; bits: bigint } | undefined {
  const family = isIP(ip);
  if (family === 4) return { family: 4, bits: ip.split('.').reduce((acc, o) => (acc << 8n) | BigInt(Number(o)), 0n) };
  if (family !== 6) return undefined;
  // Expand "::" and an embedded IPv4 tail to eight 16-bit groups.
  let s = ip.toLowerCase();
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (v4) {
    const n = ipBits(v4[1]!)!.bits;
    s = s.slice(0, -v4[1]!.length) + `${(n >> 16n).toString(16)}:${(n & 0xffffn).toString(16)}`;
  }
  const [head = '', tail] = s.split('::');
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return { family: 6, bits: groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n) };
}

/** Parses TASKBATCH_ALLOWED_REDIS: comma-separated `*` (any), host, host:port, [IPv6]:port, CIDR, IPv4-CIDR:port, Service name. */
export function parseAllowedRedis(raw: string, name = 'TASKBATCH_ALLOWED_REDIS'): RedisAddressRule[] {
  const rules: RedisAddressRule[] = [];
  for (const entry of raw
    .split(',')
    .map((e) => e.trim())
    .filter(Boolean)) {
    const bad = (why: string): RedisAllowListError =>
      new RedisAllowListError(`${name}: entry ${JSON.stringify(entry)} is invalid: ${why}; expected *, a host, host:port, [IPv6]:port, a CIDR such as 10.0.0.0/8, or a Service name <svc>.<ns>.svc`);
    if (entry === '*') {
      rules.push({ kind: 'any' });
      continue;
    }
    let addr = entry;
    let port: number | undefined;
    const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(entry);
    if (bracket) {
      addr = bracket[1]!;
      if (bracket[2]) port = Number(bracket[2]);
    } else if (!entry.includes('/') && (entry.match(/:/g) ?? []).length === 1) {
      const i = entry.lastIndexOf(':');
      addr = entry.slice(0, i);
      port = Number(entry.slice(i + 1));
    } else if (entry.includes('/') && /^[^:]*\/\d+:\d+$/.test(entry)) {
      // IPv4 CIDR with a port: 10.0.0.0/8:6379
      const i = entry.lastIndexOf(':');
      addr = entry.slice(0, i);
      port = Number(entry.slice(i + 1));
    }
    if (port !== undefined && (!Number.isInteger(port) || port < 1 || port > 65535)) throw bad('the port must be 1-65535');
    if (addr.includes('/')) {
      const [ip = '', len = ''] = addr.split('/');
      const parsed = ipBits(ip);
      const prefix = Number(len);
      if (!parsed || !/^\d+$/.test(len) || prefix > (parsed.family === 4 ? 32 : 128)) throw bad('not a CIDR');
      rules.push({ kind: 'cidr', family: parsed.family, bits: parsed.bits, prefix, text: addr, ...(port !== undefined ? { port } : {}) });
      continue;
    }
    const host = normaliseHost(addr);
    if (!isIP(host) && !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/.test(host)) throw bad('not a hostname or IP address');
    rules.push({ kind: 'host', host, ...(port !== undefined ? { port } : {}) });
  }
  return rules;
}

/** Whether host:port is allowed by the rules (the installer's default Redis is added by the caller). */
export function isRedisAddressAllowed(rules: readonly RedisAddressRule[], host: string, port: number): boolean {
  const h = normaliseHost(host);
  const ip = ipBits(h);
  return rules.some((r) => {
    if (r.kind === 'any') return true;
    if (r.port !== undefined && r.port !== port) return false;
    if (r.kind === 'host') {
      if (r.host === h) return true;
      // The same IP written another way (fd00::1 = fd00:0:0:0:0:0:0:1).
      const listed = ipBits(r.host);
      return Boolean(ip && listed && ip.family === listed.family && ip.bits === listed.bits);
    }
    if (!ip || ip.family !== r.family) return false;
    const width = BigInt(r.family === 4 ? 32 : 128);
    const shift = width - BigInt(r.prefix);
    return ip.bits >> shift === r.bits >> shift;
  });
}

/** A TaskBatch names a Redis outside the allowed list: terminal, and nothing was connected to. */
export class RedisNotAllowedError extends Error {
  override name = 'RedisNotAllowedError';
}

interface BatchRedisRef {
  metadata: { namespace?: string };
  spec: { redis?: { url?: string; secretRef?: { name: string; urlKey?: string } } };
}

const NOT_ALLOWED_ADVICE = 'the operator did not connect to it. Leave spec.redis unset to use the default Redis, or ask the installer to add the address (Helm value redis.allowedAddresses)';

/** What the operator's Redis clients are held to (constructed once from the operator's config). */
export class RedisGuard {
  constructor(
    private readonly rules: readonly RedisAddressRule[],
    /** The installer's default Redis URL: always allowed. */
    private readonly defaultUrl: string | undefined,
    /** Most bytes one reply may take (queue/reply-limit.ts). */
    readonly maxReplyBytes: number,
  ) {}

  /**
   * Throws RedisNotAllowedError when the batch's own Redis (`url`, already read from the spec
   * or its Secret) is outside the list. Called before any connection is opened. A URL that does
   * not parse is left to the caller's existing error (it never reaches a socket either).
   */
  check(batch: BatchRedisRef, url: string): void {
    const r = batch.spec.redis;
    if (!r) return;
    const at = parseHostPort(url);
    if (!at) return;
    if (this.allows(at.host, at.port)) return;
    const advice = NOT_ALLOWED_ADVICE;
    if (r.url) throw new RedisNotAllowedError(`spec.redis.url: host ${JSON.stringify(at.host)} port ${at.port} is not in the installer's allowed Redis addresses (TASKBATCH_ALLOWED_REDIS); ${advice}`);
    // From a Secret: name the Secret and the key, never the value.
    const ref = r.secretRef;
    throw new RedisNotAllowedError(
      `spec.redis.secretRef: the URL in key ${ref?.urlKey ?? 'url'} of Secret ${batch.metadata.namespace}/${ref?.name ?? ''} names a Redis address that is not in the installer's allowed Redis addresses (TASKBATCH_ALLOWED_REDIS; the value is not shown); ${advice}`,
    );
  }

  /**
   * Throws RedisNotAllowedError naming spec.redis.sentinel.addresses[i] for the first sentinel
   * outside the list. Called before any connection: no sentinel is asked anything until every
   * one listed is allowed.
   */
  checkSentinels(addresses: readonly { host: string; port: number }[]): void {
    addresses.forEach((a, i) => {
      if (this.allows(a.host, a.port)) return;
      throw new RedisNotAllowedError(
        `spec.redis.sentinel.addresses[${i}]: host ${JSON.stringify(a.host)} port ${a.port} is not in the installer's allowed Redis addresses (TASKBATCH_ALLOWED_REDIS), which must list every sentinel; ${NOT_ALLOWED_ADVICE}`,
      );
    });
  }

  /**
   * The primary the sentinels named for `masterName`, checked before the operator dials it (on
   * every connection, so after each failover too): whoever can reach a sentinel can make it
   * monitor any address (SENTINEL MONITOR), so an allowed sentinel does not make its answer allowed.
   */
  checkSentinelPrimary(masterName: string, host: string, port: number): void {
    if (this.allows(host, port)) return;
    throw new RedisNotAllowedError(
      `spec.redis.sentinel: the sentinels name host ${JSON.stringify(host)} port ${port} as primary ${JSON.stringify(masterName)}, which is not in the installer's allowed Redis addresses (TASKBATCH_ALLOWED_REDIS); the operator did not connect to it and asks the sentinels again with backoff. Ask the installer to add the data nodes' addresses too (Helm value redis.allowedAddresses)`,
    );
  }

  /** host:port is the installer's default Redis or on the list. */
  private allows(host: string, port: number): boolean {
    const dflt = this.defaultUrl ? parseHostPort(this.defaultUrl) : undefined;
    if (dflt && normaliseHost(dflt.host) === normaliseHost(host) && dflt.port === port) return true;
    return isRedisAddressAllowed(this.rules, host, port);
  }
}

function parseHostPort(url: string): { host: string; port: number } | undefined {
  try {
    const u = new URL(url);
    if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') return undefined;
    return { host: u.hostname.replace(/^\[|\]$/g, ''), port: u.port ? Number(u.port) : 6379 };
  } catch {
    return undefined;
  }
}
