import { type HttpMethod, RequestContext, Watch, type KubeConfig } from '@kubernetes/client-node';
import { fetch, type Dispatcher } from 'undici';

/**
 * A small REST adapter over the API server. @kubernetes/client-node provides kubeconfig
 * loading, authentication and TLS (in-cluster, exec plugins, client certs); requests are
 * plain JSON over its undici dispatcher, so every verb, subresource and patch type is
 * reachable without the generated clients' per-kind methods.
 */
export class KubeApiError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = 'KubeApiError';
  }
}

/**
 * A write refused before it was sent because this replica no longer leads (see
 * KubeClient.setWriteGuard). Nothing reached the API server; the replica that leads now
 * reconciles the object.
 */
export class NotLeaderError extends Error {
  override name = 'NotLeaderError';
  constructor(
    readonly method: string,
    readonly path: string,
  ) {
    super(`${method} ${path} not sent: this operator replica no longer holds the leader Lease; the replica that does reconciles this object`);
  }
}

/** Consulted just before every write is sent; false refuses it with NotLeaderError. */
export type WriteGuard = () => boolean;

export interface KubeClientOptions {
  /** Timeout of reads (GET, list). Default 10 s. */
  requestTimeoutMs?: number;
  /** Timeout of writes (POST, PUT, PATCH, DELETE). Default: requestTimeoutMs. */
  writeTimeoutMs?: number;
}

/**
 * 10 s, client-go's renew deadline: below the 15 s leader lease, so no request of a deposed
 * leader is still waiting when another replica may take over (the operator sets writes
 * tighter still, see operator/main.ts).
 */
const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;

export type PatchType = 'merge' | 'json' | 'strategic' | 'apply';
const PATCH_CONTENT_TYPES: Record<PatchType, string> = {
  merge: 'application/merge-patch+json',
  json: 'application/json-patch+json',
  strategic: 'application/strategic-merge-patch+json',
  apply: 'application/apply-patch+yaml',
};

export interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
  ownerReferences?: {
    apiVersion: string;
    kind: string;
    name: string;
    uid: string;
    controller?: boolean;
    blockOwnerDeletion?: boolean;
  }[];
}

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
}

export interface KubeList<T> {
  metadata: { resourceVersion: string; continue?: string };
  items: T[];
}

export type Query = Record<string, string | number | boolean | undefined>;

export interface WatchEvent<T> {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: T;
}

const READ_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

export class KubeClient {
  readonly server: string;
  private readonly readTimeoutMs: number;
  private readonly writeTimeoutMs: number;
  private writeGuard: WriteGuard | undefined;
  private readonly writesInFlight = new Set<Promise<unknown>>();
  /**
   * The TLS connection pool requests go through. client-node builds a new one per request (a TLS
   * handshake each time: 40% of the operator's CPU in bench/operator.ts); it is kept and rebuilt
   * every DISPATCHER_TTL_MS so rotated client certificate files are picked up.
   */
  private dispatcher: { value: Dispatcher | undefined; builtAt: number } | undefined;

  constructor(
    readonly kubeConfig: KubeConfig,
    options: KubeClientOptions = {},
  ) {
    const cluster = kubeConfig.getCurrentCluster();
    if (!cluster) throw new Error('kubeconfig has no current cluster: set a current-context');
    this.server = cluster.server.replace(/\/$/, '');
    this.readTimeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.writeTimeoutMs = options.writeTimeoutMs ?? this.readTimeoutMs;
    for (const [name, v] of [
      ['requestTimeoutMs', this.readTimeoutMs],
      ['writeTimeoutMs', this.writeTimeoutMs],
    ] as const) {
      if (!Number.isInteger(v) || v <= 0) throw new Error(`KubeClient options.${name} must be a positive integer of milliseconds, got ${v}`);
    }
  }

  /**
   * Fences writes: every create/replace/patch/delete asks `guard` right before it is sent and
   * fails with NotLeaderError when it says no. The operator installs "this replica leads";
   * the leader elector uses a client of its own, without a guard.
   */
  setWriteGuard(guard: WriteGuard | undefined): void {
    this.writeGuard = guard;
  }

  /**
   * Resolves once every write already sent has been answered or has timed out (each is
   * bounded by writeTimeoutMs). With the guard closed no new write starts, so after this
   * nothing of this client's can still reach the API server.
   */
  async writesSettled(): Promise<void> {
    await Promise.allSettled([...this.writesInFlight]);
  }

  async get<T>(path: string, query?: Query): Promise<T> {
    return this.request<T>('GET', path, undefined, query);
  }

  /** GET that returns undefined for 404. */
  async find<T>(path: string): Promise<T | undefined> {
    try {
      return await this.get<T>(path);
    } catch (err) {
      if (err instanceof KubeApiError && err.status === 404) return undefined;
      throw err;
    }
  }

  async list<T>(path: string, query?: Query): Promise<KubeList<T>> {
    return this.request<KubeList<T>>('GET', path, undefined, query);
  }

  async create<T>(path: string, body: unknown, query?: Query): Promise<T> {
    return this.request<T>('POST', path, body, query);
  }

  async replace<T>(path: string, body: unknown, query?: Query): Promise<T> {
    return this.request<T>('PUT', path, body, query);
  }

  async patch<T>(path: string, body: unknown, type: PatchType = 'merge', query?: Query): Promise<T> {
    return this.request<T>('PATCH', path, body, query, PATCH_CONTENT_TYPES[type]);
  }

  async delete<T = unknown>(path: string, body?: unknown, query?: Query): Promise<T | undefined> {
    try {
      return await this.request<T>('DELETE', path, body, query);
    } catch (err) {
      if (err instanceof KubeApiError && err.status === 404) return undefined;
      throw err;
    }
  }

  /**
   * Starts a watch; `onEvent` gets each event, `onDone` the error that ended it (null for a
   * clean close). Returns a function that stops it.
   */
  async watch<T>(path: string, query: Query, onEvent: (e: WatchEvent<T>) => void, onDone: (err: unknown) => void): Promise<() => void> {
    const watcher = new Watch(this.kubeConfig);
    const controller = await watcher.watch(path, query, (type: string, object: unknown) => onEvent({ type: type as WatchEvent<T>['type'], object: object as T }), onDone);
    return () => controller.abort();
  }

  private dispatcherFor(ctx: RequestContext): Dispatcher | undefined {
    const now = Date.now();
    if (!this.dispatcher || now - this.dispatcher.builtAt > DISPATCHER_TTL_MS) {
      const old = this.dispatcher?.value;
      this.dispatcher = { value: ctx.getDispatcher() as Dispatcher | undefined, builtAt: now };
      // Requests still on the old pool finish first (close() is graceful).
      void old?.close().catch(() => undefined);
    }
    return this.dispatcher.value;
  }

  private async request<T>(method: string, path: string, body: unknown, query: Query | undefined, contentType = 'application/json'): Promise<T> {
    const url = new URL(this.server + path);
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
    const ctx = new RequestContext(url.toString(), method as HttpMethod);
    await this.kubeConfig.applySecurityAuthentication(ctx);
    const headers: Record<string, string> = { ...ctx.getHeaders(), accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = contentType;
    const write = !READ_METHODS.has(method);
    // Asked after authentication (which may await a token refresh), right before sending.
    if (write && this.writeGuard && !this.writeGuard()) throw new NotLeaderError(method, path);
    const sent = (async () => {
      const response = await fetch(url, {
        method,
        headers,
        dispatcher: this.dispatcherFor(ctx),
        ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
        signal: AbortSignal.timeout(write ? this.writeTimeoutMs : this.readTimeoutMs),
      });
      return { response, text: await response.text() };
    })();
    if (write) {
      this.writesInFlight.add(sent);
      void sent.catch(() => undefined).finally(() => this.writesInFlight.delete(sent));
    }
    const { response, text } = await sent;
    if (!response.ok) {
      let status: { reason?: string; message?: string; details?: unknown } = {};
      try {
        status = JSON.parse(text) as typeof status;
      } catch {
        status = { message: text };
      }
      throw new KubeApiError(response.status, status.reason ?? String(response.status), `${method} ${path}: ${response.status} ${status.message ?? response.statusText}`, status.details);
    }
    return (text ? JSON.parse(text) : undefined) as T;
  }
}

const DISPATCHER_TTL_MS = 5 * 60_000;

export function isConflict(err: unknown): boolean {
  return err instanceof KubeApiError && err.status === 409;
}

export function isNotFound(err: unknown): boolean {
  return err instanceof KubeApiError && err.status === 404;
}
