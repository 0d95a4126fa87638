import { connect } from 'node:net';
import type { RedisClient } from '../../queue/index.js';
import type { Clock } from '../workqueue.js';
import { describeFailure, EndpointHealth, type AttemptContext, type BackoffPolicy, type RedisFailure } from './redis-health.js';

export interface EndpointTimings {
  /** Bound on one connection attempt's TCP (and TLS) connect. */
  connectTimeoutMs: number;
  /** How long the first caller of a new endpoint waits for its first attempt. */
  firstTryMs: number;
  backoff: BackoffPolicy;
}

export interface EndpointOptions {
  /** host:port (it goes into messages; the pool redacts it per batch when a Secret supplied it). */
  address: string;
  /** TLS is on (rediss:// or spec.redis.tls): for the words of a timeout. */
  tls: boolean;
  /** A Redis Cluster's seed node: its client hides why a node refused, so a plain TCP probe asks. */
  clusterSeed?: { host: string; port: number };
  clock: Clock;
  timings: EndpointTimings;
  random?: () => number;
}

/** The one ioredis Cluster option set after construction (its first attempt fails asynchronously, after that). */
interface ClusterRetry {
  options: { clusterRetryStrategy?: (times: number) => number | null };
}

/** Opens the client; `retryDelayMs` must become its retry strategy (it records the failure and paces the next attempt). */
export type OpenClient = (retryDelayMs: () => number) => RedisClient;

/**
 * One Redis client and its health. The client reconnects in the background on the endpoint's
 * own backoff (its retry strategy is the health's); callers never wait on it except the first
 * ones, for at most `firstTryMs`. Between attempts they get a RedisUnavailableError at once.
 */
export class RedisEndpoint {
  readonly client: RedisClient;
  readonly address: string;
  private readonly clock: Clock;
  private readonly timings: EndpointTimings;
  private readonly health: EndpointHealth;
  /** The most telling error of the attempt in flight (see noteError). */
  private attemptError: unknown;
  private attemptStartedAt: number;
  private firstTry: Promise<void> | undefined;
  private handshakeTimer: unknown;
  /** The cluster seed probe in flight. */
  private probing: Promise<void> | undefined;
  private readonly context: AttemptContext;
  private readonly clusterSeed: { host: string; port: number } | undefined;
  private onTransition: ((up: boolean, failure?: RedisFailure) => void) | undefined;
  /** Reconciles holding the client now (withClient): never closed under them. */
  leases = 0;
  lastUsedAt: number;

  constructor(open: OpenClient, options: EndpointOptions) {
    this.address = options.address;
    this.clock = options.clock;
    this.timings = options.timings;
    this.context = { connectTimeoutMs: options.timings.connectTimeoutMs, tls: options.tls };
    this.clusterSeed = options.clusterSeed;
    this.health = new EndpointHealth(options.timings.backoff, options.random);
    this.attemptStartedAt = options.clock.now();
    this.lastUsedAt = options.clock.now();
    this.client = open(() => this.attemptFailed());
    // A Redis Cluster client takes its retry strategy from its own options, not the nodes'.
    if (this.client.isCluster) (this.client as unknown as ClusterRetry).options.clusterRetryStrategy = () => this.attemptFailed();
    this.client.on('error', (err: unknown) => this.noteError(err));
    this.client.on('node error', (err: unknown) => this.noteError(err));
    // Through Sentinel, each sentinel that could not name the primary says why here (the round's
    // 'error' comes after the round's retry strategy has already recorded the attempt).
    this.client.on('sentinelError', (err: unknown) => this.noteError(err));
    this.client.on('connecting', () => {
      // Errors arrive after this (from the socket), so whatever is noted belongs to an earlier connection.
      this.attemptStartedAt = this.clock.now();
      this.attemptError = undefined;
    });
    // ioredis bounds the TCP/TLS connect (connectTimeout) but not the Redis handshake after it
    // (AUTH, the ready check): a port that accepts and stays silent would hold the attempt forever.
    this.client.on('connect', () => this.armHandshakeTimer());
    this.client.on('close', () => this.clearHandshakeTimer());
    this.client.on('ready', () => {
      this.clearHandshakeTimer();
      const wasDown = this.health.consecutiveFailures > 0;
      this.health.succeeded();
      this.attemptError = undefined;
      if (wasDown) this.onTransition?.(true);
    });
    this.firstTry = this.waitFirstTry();
  }

  /** Called with (true) when the endpoint comes back, (false, failure) on its first failure in a row. */
  onChange(listener: (up: boolean, failure?: RedisFailure) => void): void {
    this.onTransition = listener;
  }

  /** The client if connected; else the RedisUnavailableError saying why and when to ask again. */
  async get(): Promise<RedisClient> {
    this.lastUsedAt = this.clock.now();
    if (this.connected) return this.client;
    if (this.firstTry) await this.firstTry;
    if (this.connected) return this.client;
    const now = this.clock.now();
    const inFlight = this.client.status === 'connecting' || this.client.status === 'connect';
    throw this.health.unavailable(this.address, now, inFlight ? this.attemptStartedAt + this.timings.connectTimeoutMs : 0, this.timings.connectTimeoutMs);
  }

  get connected(): boolean {
    return this.client.status === 'ready';
  }

  /** Whether the client was closed for good (by close(), or by ioredis giving up). */
  get ended(): boolean {
    return this.client.status === 'end';
  }

  close(): void {
    this.clearHandshakeTimer();
    this.client.disconnect();
  }

  private armHandshakeTimer(): void {
    const stream = (this.client as { stream?: { destroy(): void } }).stream;
    // A Cluster client bounds its handshake itself (slotsRefreshTimeout) and has no single stream.
    if (!stream) return;
    this.clearHandshakeTimer();
    this.handshakeTimer = this.clock.setTimeout(() => {
      this.handshakeTimer = undefined;
      if (this.connected) return;
      this.attemptError = Object.assign(new Error('the Redis handshake timed out'), { code: 'ETIMEDOUT', phase: 'handshake' });
      // Destroying the socket ends the attempt: ioredis then retries on this endpoint's backoff.
      stream.destroy();
    }, this.timings.connectTimeoutMs);
  }

  private clearHandshakeTimer(): void {
    if (this.handshakeTimer !== undefined) this.clock.clearTimeout(this.handshakeTimer);
    this.handshakeTimer = undefined;
  }

  /**
   * Settles when the first attempt succeeds or fails, or after firstTryMs, whichever is first;
   * later callers do not wait at all.
   */
  private waitFirstTry(): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = (): void => {
        this.clock.clearTimeout(timer);
        this.client.off('ready', done);
        this.client.off('reconnecting', failed);
        this.client.off('end', done);
        this.firstTry = undefined;
        resolve();
      };
      const timer = this.clock.setTimeout(done, this.timings.firstTryMs);
      // A failed attempt ends the wait, once the probe (clusters) has found its cause.
      const failed = (): void => void (this.probing ?? Promise.resolve()).then(done);
      this.client.on('ready', done);
      this.client.on('reconnecting', failed);
      this.client.on('end', done);
    });
  }

  /** An attempt ended without a connection: records why, returns the delay before the next one. */
  private attemptFailed(): number {
    const failure = describeFailure(this.attemptError, this.context);
    this.attemptError = undefined;
    const first = this.health.consecutiveFailures === 0;
    const delay = this.health.failed(failure, this.clock.now());
    if (first) this.onTransition?.(false, failure);
    if (this.clusterSeed && (failure.kind === 'closed' || failure.kind === 'other')) this.probeSeed(this.clusterSeed);
    return delay;
  }

  /**
   * A cluster client reports a refused or unresolvable seed node as "Connection is closed";
   * one TCP connect (bounded by the connect timeout) finds the cause a user can act on.
   */
  private probeSeed(seed: { host: string; port: number }): void {
    if (this.probing) return;
    this.probing = new Promise<void>((resolve) => {
      const socket = connect({ host: seed.host, port: seed.port, timeout: this.timings.connectTimeoutMs });
      const end = (err?: Error): void => {
        socket.destroy();
        if (err && !this.connected) this.health.refine(describeFailure(err, this.context));
        this.probing = undefined;
        resolve();
      };
      socket.once('connect', () => end());
      socket.once('timeout', () => end(Object.assign(new Error('connect ETIMEDOUT'), { code: 'ETIMEDOUT' })));
      socket.once('error', end);
    });
  }

  /**
   * Several errors can arrive for one attempt (a cluster reports each node's, then "Failed to
   * refresh slots cache"; a closing socket adds "Connection is closed"): keep the first one that
   * carries a system or server code, which is the one a user can act on.
   */
  private noteError(err: unknown): void {
    // ioredis' summary of a failed round of sentinels, sent after the round's retry strategy
    // recorded it: it would stand for the next round, with a delay in its words that changes.
    const message = (err as { message?: unknown } | undefined)?.message;
    if (typeof message === 'string' && message.startsWith('All sentinels are unreachable')) return;
    // The ready check timing out (commandTimeout) is the same silence the handshake timer catches.
    if (this.client.status === 'connect' && (err as { message?: unknown } | undefined)?.message === 'Command timed out') {
      err = Object.assign(new Error('the Redis handshake timed out'), { code: 'ETIMEDOUT', phase: 'handshake' });
    }
    if (this.attemptError === undefined || (!hasCode(this.attemptError) && hasCode(err))) this.attemptError = err;
  }
}

function hasCode(err: unknown): boolean {
  if (!err || typeof err !== 'object') return false;
  const e = err as { code?: unknown; message?: unknown; lastNodeError?: unknown };
  if (e.lastNodeError) return hasCode(e.lastNodeError);
  return typeof e.code === 'string' || (typeof e.message === 'string' && /^[A-Z]{4,}\b/.test(e.message));
}
