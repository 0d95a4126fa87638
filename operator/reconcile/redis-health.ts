/**
 * Health of one Redis endpoint, as pure bookkeeping: why the last connection attempt failed (in
 * words a user understands), how many failed in a row, and when the next one is due. The pool
 * (redis-pool.ts) feeds it events of the endpoint's client; while an endpoint is backing off,
 * batches naming it fail at once with a RedisUnavailableError instead of each waiting for a
 * connection, so one dead Redis cannot hold the operator's reconcile loops.
 */

export type RedisFailureKind = 'refused' | 'timeout' | 'dns' | 'unreachable' | 'closed' | 'auth' | 'tls' | 'protocol' | 'connecting' | 'other';

export interface RedisFailure {
  kind: RedisFailureKind;
  /** The system or server code: ECONNREFUSED, ETIMEDOUT, ENOTFOUND, WRONGPASS, DEPTH_ZERO_SELF_SIGNED_CERT, ... */
  code: string;
  /** What the Redis did, completing "Redis at host:port ...", e.g. "refused the connection". */
  text: string;
}

export interface BackoffPolicy {
  /** Delay after the first failed attempt. */
  initialMs: number;
  /** The delay doubles up to this. */
  maxMs: number;
  /** Fraction (0..1) of each delay taken off at random, so the clients of one Redis do not retry in step. */
  jitter: number;
}

export const DEFAULT_BACKOFF: Readonly<BackoffPolicy> = Object.freeze({ initialMs: 500, maxMs: 30_000, jitter: 0.2 });

/** The nominal delay after `failures` consecutive failed attempts (1-based): initialMs doubling, capped. */
export function backoffStepMs(failures: number, policy: BackoffPolicy): number {
  if (failures <= 0) return 0;
  // 2 ** 30 overflows nothing but is far past any cap; stop doubling there.
  return Math.min(policy.maxMs, policy.initialMs * 2 ** Math.min(30, failures - 1));
}

/** The actual delay: the step less up to `jitter` of it, so never more than the step a message announces. */
export function backoffDelayMs(failures: number, policy: BackoffPolicy, random: () => number): number {
  const step = backoffStepMs(failures, policy);
  return Math.max(1, Math.round(step * (1 - policy.jitter * Math.min(1, Math.max(0, random())))));
}

interface ErrorLike {
  name?: string;
  code?: string;
  message?: string;
  lastNodeError?: unknown;
  /** 'handshake': the socket connected but the Redis handshake (AUTH, ready check) did not finish in time. */
  phase?: string;
}

const TLS_TRUST: Record<string, string> = {
  DEPTH_ZERO_SELF_SIGNED_CERT: 'presented a self-signed certificate the operator does not trust: set spec.redis.tls.caSecretRef to its CA',
  SELF_SIGNED_CERT_IN_CHAIN: 'presented a certificate chain ending in a CA the operator does not trust: set spec.redis.tls.caSecretRef to that CA',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'presented a certificate signed by a CA the operator does not trust: set spec.redis.tls.caSecretRef to that CA',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'presented a certificate signed by a CA the operator does not trust: set spec.redis.tls.caSecretRef to that CA',
  CERT_HAS_EXPIRED: 'presented an expired TLS certificate',
  CERT_NOT_YET_VALID: 'presented a TLS certificate that is not valid yet',
  ERR_TLS_CERT_ALTNAME_INVALID: 'presented a TLS certificate for another host name',
};

/** How the endpoint connects, for the words of a failure. */
export interface AttemptContext {
  connectTimeoutMs: number;
  tls: boolean;
}

/** Why a connection attempt failed, from the error its client reported (or none: the server closed it). */
export function describeFailure(err: unknown, { connectTimeoutMs, tls }: AttemptContext): RedisFailure {
  if (err === undefined || err === null) return { kind: 'closed', code: 'CONNECTION_CLOSED', text: 'closed the connection' };
  let e = err as ErrorLike;
  // A Redis Cluster reports "Failed to refresh slots cache" with the seed node's own error inside.
  if (e.lastNodeError && typeof e.lastNodeError === 'object') e = e.lastNodeError as ErrorLike;
  const code = typeof e.code === 'string' ? e.code : '';
  const message = typeof e.message === 'string' ? e.message : String(err);
  const serverCode = /^([A-Z]{4,})\b/.exec(message)?.[1] ?? '';
  switch (code) {
    case 'ECONNREFUSED':
      return { kind: 'refused', code, text: 'refused the connection' };
    case 'ETIMEDOUT':
      if (e.phase === 'handshake') return { kind: 'timeout', code, text: `accepted the connection but did not answer as Redis within ${seconds(connectTimeoutMs)}: is this the Redis port?` };
      // The connect timeout covers TCP and the TLS handshake; a plain Redis never answers a TLS hello.
      if (tls) return { kind: 'timeout', code, text: `did not complete the connection and TLS handshake within ${seconds(connectTimeoutMs)}: is TLS enabled on that port?` };
      return { kind: 'timeout', code, text: `did not accept the connection within ${seconds(connectTimeoutMs)}` };
    case 'ENOTFOUND':
    case 'EAI_NONAME':
      return { kind: 'dns', code, text: 'could not be found: its host name does not resolve' };
    case 'EAI_AGAIN':
      return { kind: 'dns', code, text: 'could not be found: DNS did not answer for its host name' };
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EHOSTDOWN':
    case 'ENETDOWN':
    case 'EADDRNOTAVAIL':
      return { kind: 'unreachable', code, text: "is unreachable from the operator's network" };
  }
  if (TLS_TRUST[code]) return { kind: 'tls', code, text: TLS_TRUST[code] };
  // ioredis words a sentinel's failure itself and drops the cause's code.
  const sentinel = /^failed to connect to sentinel (\S+) because ([\s\S]*)$/.exec(message);
  if (sentinel) {
    const [, at = '', why = ''] = sentinel;
    if (why.startsWith('spec.redis.sentinel:')) return { kind: 'other', code: 'PRIMARY_NOT_ALLOWED', text: `is refused: ${why}` };
    const inner = /\b(E[A-Z]{3,}|[A-Z]{4,})\b/.exec(why)?.[1];
    return { kind: 'other', code: inner ?? 'SENTINEL', text: `could not be found: sentinel ${at} failed: ${why}` };
  }
  const unknown = /^connected to sentinel (\S+) successfully, but got an invalid reply/.exec(message);
  if (unknown) return { kind: 'other', code: 'NO_PRIMARY', text: `could not be found: sentinel ${unknown[1]} knows no primary of that name (check spec.redis.sentinel.masterName)` };
  if (code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_') || /\bTLS\b|\bSSL\b|certificate/i.test(message)) {
    // Plain Redis on the port (or TLS where plain was expected) is the usual cause.
    const hint = /wrong version number|packet length|before secure TLS connection/i.test(message) ? ': is TLS enabled on that port? (spec.redis.tls, or rediss://)' : `: ${message}`;
    return { kind: 'tls', code: code || 'TLS', text: `failed the TLS handshake${hint}` };
  }
  switch (serverCode) {
    case 'WRONGPASS':
      return { kind: 'auth', code: serverCode, text: "refused the credentials: check the username and password (spec.redis.username, the Secret's password key)" };
    case 'NOAUTH':
      return { kind: 'auth', code: serverCode, text: 'requires a password and none was given: set spec.redis.secretRef with a password key' };
    case 'NOPERM':
      return { kind: 'auth', code: serverCode, text: 'denied its user a command the operator needs (ACL NOPERM)' };
  }
  if (/invalid password|invalid username-password/i.test(message)) return { kind: 'auth', code: 'WRONGPASS', text: 'refused the credentials: check the username and password' };
  if (code === 'ECONNRESET' || code === 'EPIPE' || code === 'ECONNABORTED') return { kind: 'closed', code, text: 'closed the connection' };
  if (message === 'Connection is closed.') return { kind: 'closed', code: 'CONNECTION_CLOSED', text: 'closed the connection' };
  if (e.name === 'ReplyTooLargeError') return { kind: 'protocol', code: 'REPLY_TOO_LARGE', text: 'sent a reply larger than the operator reads (TASKBATCH_MAX_REDIS_REPLY_BYTES)' };
  if (/protocol error/i.test(message)) return { kind: 'protocol', code: 'PROTOCOL', text: 'did not answer as a Redis server (protocol error): is this the Redis port?' };
  return { kind: 'other', code: code || serverCode || e.name || 'ERROR', text: `failed: ${message}` };
}

/** "0.5s", "4s", "30s". */
export function seconds(ms: number): string {
  return ms < 1000 ? `${Math.max(0.1, Math.round(ms / 100) / 10)}s` : `${Math.round(ms / 1000)}s`;
}

/**
 * A batch's Redis cannot be used now; `retryAt` (epoch ms) is when it is worth asking again: the
 * endpoint's next connection attempt, or the end of the one in flight. Thrown at once, never
 * after a wait on the connection. Its message names the address and the cause and is the same on
 * every pass within one backoff step (so Events and status messages do not churn).
 */
export class RedisUnavailableError extends Error {
  override name = 'RedisUnavailableError';
  constructor(
    /** host:port (or a placeholder naming the Secret it came from). */
    readonly address: string,
    override readonly cause: RedisFailure,
    readonly retryAt: number,
    message: string,
  ) {
    super(message);
  }
}

/** Consecutive failures, the last cause and the next attempt of one endpoint. */
export class EndpointHealth {
  private failures = 0;
  private last: RedisFailure | undefined;
  private nextAttemptAt = 0;

  constructor(
    private readonly policy: BackoffPolicy = DEFAULT_BACKOFF,
    private readonly random: () => number = Math.random,
  ) {}

  /** An attempt failed at `now`; returns the delay before the next one (the client's retry delay). */
  failed(failure: RedisFailure, now: number): number {
    this.failures++;
    this.last = failure;
    const delay = backoffDelayMs(this.failures, this.policy, this.random);
    this.nextAttemptAt = now + delay;
    return delay;
  }

  /** A better account of the last failure, found after it was recorded (the counters stay). */
  refine(failure: RedisFailure): void {
    if (this.failures > 0) this.last = failure;
  }

  /** Connected: the next failure starts from the first step again. */
  succeeded(): void {
    this.failures = 0;
    this.last = undefined;
    this.nextAttemptAt = 0;
  }

  get consecutiveFailures(): number {
    return this.failures;
  }

  get lastFailure(): RedisFailure | undefined {
    return this.last;
  }

  /** When the next attempt starts (epoch ms); 0 before any failure. */
  get retryAt(): number {
    return this.nextAttemptAt;
  }

  /** Whether a failure is recorded and its next attempt has not started yet. */
  backingOff(now: number): boolean {
    return this.failures > 0 && now < this.nextAttemptAt;
  }

  /**
   * The error for a batch asking while the endpoint is not connected. `attemptEndsAt` is when the
   * attempt in flight gives up at the latest (0 when none is in flight).
   */
  unavailable(address: string, now: number, attemptEndsAt: number, connectTimeoutMs: number): RedisUnavailableError {
    if (!this.last) {
      // The very first attempt is still running: nothing failed yet.
      const retryAt = Math.max(now + 1, attemptEndsAt);
      return new RedisUnavailableError(
        address,
        { kind: 'connecting', code: 'CONNECTING', text: 'has not answered yet' },
        retryAt,
        `Redis at ${address} has not answered yet; the operator keeps connecting in the background (each attempt up to ${seconds(connectTimeoutMs)})`,
      );
    }
    const waiting = this.backingOff(now);
    const retryAt = waiting ? this.nextAttemptAt : Math.max(now + 1, attemptEndsAt);
    const next = waiting || attemptEndsAt === 0 ? `next attempt within ${seconds(backoffStepMs(this.failures, this.policy))}` : `trying again now (up to ${seconds(connectTimeoutMs)})`;
    const message = `Redis at ${address} ${this.last.text} (${this.last.code}); ${next}`;
    return new RedisUnavailableError(address, this.last, retryAt, message);
  }
}
