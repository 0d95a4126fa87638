import { isIP, createConnection, createServer, type Server, type Socket } from 'node:net';
import { HttpMethod, RequestContext } from '@kubernetes/client-node';
import { WebSocket, type Dispatcher } from 'undici';
import type { Pod } from '../kube/pod.js';
import { PortForwardError } from './errors.js';
import { translateKubeError, type KubeAccess } from './kube.js';

/**
 * Port-forwarding through the API server, as `kubectl port-forward` does, so a laptop reaches a
 * Redis that only has a cluster address.
 *
 * Protocol: one WebSocket per TCP connection to
 * `/api/v1/namespaces/{ns}/pods/{pod}/portforward?ports={port}` with subprotocol
 * `v4.channel.k8s.io`. The API server proxies it to the pod's kubelet, which dials the port
 * inside the pod. Every binary message starts with a channel byte: 0 = data, 1 = errors; the
 * first message on each channel carries the port (2 bytes, little endian). kubectl 1.31+
 * tunnels SPDY inside a WebSocket instead; the API server still proxies this plain WebSocket
 * form, which needs no SPDY implementation.
 */

export interface ForwardTarget {
  namespace: string;
  pod: string;
  port: number;
  /** What the target was found from, for messages ("service redis", "pod redis-0"). */
  via: string;
}

interface Service {
  metadata: { name: string; namespace?: string };
  spec?: { selector?: Record<string, string>; clusterIP?: string; ports?: { name?: string; port: number; targetPort?: number | string }[] };
}

const CLUSTER_SUFFIXES = ['.svc.cluster.local', '.svc'];

/**
 * Finds the pod and port behind a cluster address: `svc`, `svc.ns`, `svc.ns.svc[.cluster.local]`
 * (a Service: its selector picks a running, ready pod, and the port maps to the targetPort),
 * `pod.svc.ns.svc…` (a StatefulSet pod), a Service's cluster IP or a pod IP in `defaultNamespace`.
 */
export async function resolveForwardTarget(access: KubeAccess, host: string, port: number, defaultNamespace: string): Promise<ForwardTarget> {
  const kube = access.kube;
  const wrap = async <T>(what: string, fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      throw translateKubeError(err, what, access.server);
    }
  };
  if (isIP(host)) {
    const services = await wrap(`listing Services in ${defaultNamespace}`, () => kube.list<Service>(`/api/v1/namespaces/${defaultNamespace}/services`));
    const svc = services.items.find((s) => s.spec?.clusterIP === host);
    if (svc) return serviceTarget(access, svc, port);
    const pods = await wrap(`listing pods in ${defaultNamespace}`, () => kube.list<Pod>(`/api/v1/namespaces/${defaultNamespace}/pods`));
    const pod = pods.items.find((p) => p.status?.podIP === host);
    if (pod) return { namespace: defaultNamespace, pod: pod.metadata.name!, port, via: `pod ${pod.metadata.name} (IP ${host})` };
    throw new PortForwardError(`no Service or pod with IP ${host} in namespace ${defaultNamespace}: cannot port-forward to it; pass a --redis-url the client can reach`);
  }
  let name = host.toLowerCase().replace(/\.$/, '');
  for (const suffix of CLUSTER_SUFFIXES) {
    if (name.endsWith(suffix)) {
      name = name.slice(0, -suffix.length);
      break;
    }
  }
  const labels = name.split('.');
  let podName: string | undefined;
  let svcName: string;
  let namespace = defaultNamespace;
  if (labels.length >= 3) [podName, svcName, namespace] = labels as [string, string, string];
  else if (labels.length === 2) [svcName, namespace] = labels as [string, string];
  else svcName = labels[0]!;
  if (podName) {
    const pod = await wrap(`reading pod ${namespace}/${podName}`, () => kube.find<Pod>(`/api/v1/namespaces/${namespace}/pods/${podName}`));
    if (!pod) throw new PortForwardError(`pod ${namespace}/${podName} (from Redis host ${host}) not found`);
    return { namespace, pod: podName, port, via: `pod ${podName}` };
  }
  const svc = await wrap(`reading Service ${namespace}/${svcName}`, () => kube.find<Service>(`/api/v1/namespaces/${namespace}/services/${svcName}`));
  if (svc) return serviceTarget(access, svc, port);
  const pod = await wrap(`reading pod ${namespace}/${svcName}`, () => kube.find<Pod>(`/api/v1/namespaces/${namespace}/pods/${svcName}`));
  if (pod) return { namespace, pod: svcName, port, via: `pod ${svcName}` };
  throw new PortForwardError(`Redis host ${host} is neither a Service nor a pod in namespace ${namespace}: cannot port-forward to it; pass a --redis-url the client can reach`);
}

async function serviceTarget(access: KubeAccess, svc: Service, port: number): Promise<ForwardTarget> {
  const ns = svc.metadata.namespace!;
  const selector = svc.spec?.selector ?? {};
  if (Object.keys(selector).length === 0) throw new PortForwardError(`Service ${ns}/${svc.metadata.name} has no selector: cannot pick a pod to port-forward to`);
  const ports = svc.spec?.ports ?? [];
  const sp = ports.find((p) => p.port === port) ?? (ports.length === 1 ? ports[0] : undefined);
  if (!sp) throw new PortForwardError(`Service ${ns}/${svc.metadata.name} has no port ${port}`);
  const labelSelector = Object.entries(selector)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
  let pods: Pod[];
  try {
    pods = (await access.kube.list<Pod>(`/api/v1/namespaces/${ns}/pods`, { labelSelector })).items;
  } catch (err) {
    throw translateKubeError(err, `listing the pods of Service ${ns}/${svc.metadata.name}`, access.server);
  }
  const ready = (p: Pod): boolean => p.status?.phase === 'Running' && (p.status.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
  const candidates = pods
    .filter((p) => !p.metadata.deletionTimestamp && p.status?.phase === 'Running')
    .sort((a, b) => Number(ready(b)) - Number(ready(a)) || a.metadata.name!.localeCompare(b.metadata.name!));
  const pod = candidates[0];
  if (!pod) throw new PortForwardError(`Service ${ns}/${svc.metadata.name} has no running pod (selector ${labelSelector})`);
  let target = sp.targetPort ?? sp.port;
  if (typeof target === 'string') {
    const named = pod.spec.containers.flatMap((c) => c.ports ?? []).find((p) => p.name === target);
    if (!named) throw new PortForwardError(`pod ${ns}/${pod.metadata.name} has no container port named ${JSON.stringify(target)} (Service ${svc.metadata.name} targetPort)`);
    target = named.containerPort;
  }
  return { namespace: ns, pod: pod.metadata.name!, port: target, via: `service ${svc.metadata.name} → pod ${pod.metadata.name}` };
}

/** Tries a TCP connection to host:port: undefined when it opens within timeoutMs, else why not. */
export function probeConnect(host: string, port: number, timeoutMs = 1500): Promise<string | undefined> {
  return new Promise((resolve) => {
    const sock = createConnection({ host, port });
    const done = (problem: string | undefined): void => {
      clearTimeout(timer);
      sock.destroy();
      resolve(problem);
    };
    const timer = setTimeout(() => done(`no connection within ${timeoutMs} ms`), timeoutMs);
    sock.once('connect', () => done(undefined));
    sock.once('error', (err: NodeJS.ErrnoException) => done(err.code ?? err.message));
  });
}

export interface PortForwardStats {
  /** TCP connections accepted locally (each is one WebSocket through the API server). */
  connections: number;
  /** Connections that ended with an error from the API server or kubelet. */
  errors: number;
  lastError?: string;
}

/**
 * A local listener (127.0.0.1, a free port) forwarding each accepted connection to the target
 * through its own WebSocket. Close it with close(); open connections are cut.
 */
export class PortForward {
  readonly stats: PortForwardStats = { connections: 0, errors: 0 };
  private readonly sockets = new Set<Socket>();
  private readonly webSockets = new Set<WebSocket>();

  /** After a failed connection the target is looked up again (e.g. the pod was replaced). */
  private stale = false;

  private constructor(
    private readonly server: Server,
    readonly localPort: number,
    public target: ForwardTarget,
    private readonly reresolve: (() => Promise<ForwardTarget>) | undefined,
  ) {}

  /**
   * Listens locally and forwards to `target`. `reresolve` (e.g. Service → pod again) is used
   * for the next connection after one failed, so a restarted pod behind a Service is found.
   */
  static async start(access: KubeAccess, target: ForwardTarget, onError?: (message: string) => void, reresolve?: () => Promise<ForwardTarget>): Promise<PortForward> {
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const addr = server.address();
    const pf = new PortForward(server, typeof addr === 'object' && addr ? addr.port : 0, target, reresolve);
    server.on('connection', (sock) => void pf.accept(access, sock, onError));
    // Fail early with a clear message when the API server refuses the port-forward.
    try {
      await pf.probe(access);
    } catch (err) {
      await pf.close();
      throw err;
    }
    return pf;
  }

  /** `redis://127.0.0.1:<localPort>` keeping the original URL's scheme, database and user. */
  localUrl(originalUrl: string): string {
    const u = new URL(originalUrl);
    u.hostname = '127.0.0.1';
    u.port = String(this.localPort);
    return u.toString().replace(/\/$/, '');
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    for (const w of this.webSockets) w.close();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async probe(access: KubeAccess): Promise<void> {
    const ws = await openWebSocket(access, this.target);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        ws.close();
        reject(new PortForwardError(`port-forward to ${this.describe()} through ${access.server} did not open within 10 s`));
      }, 10_000);
      ws.addEventListener('open', () => {
        clearTimeout(timer);
        ws.close();
        resolve();
      });
      ws.addEventListener('error', (ev) => {
        clearTimeout(timer);
        reject(
          new PortForwardError(
            `port-forward to ${this.describe()} through ${access.server} failed: ${describeWsError(ev)} (the user needs "create" on pods/portforward, and the node's kubelet must serve port-forwarding)`,
          ),
        );
      });
    });
  }

  private describe(): string {
    return `${this.target.namespace}/${this.target.pod}:${this.target.port} (${this.target.via})`;
  }

  private async accept(access: KubeAccess, sock: Socket, onError?: (message: string) => void): Promise<void> {
    this.stats.connections++;
    this.sockets.add(sock);
    sock.setNoDelay(true);
    const pending: Buffer[] = [];
    let ws: WebSocket | undefined;
    let open = false;
    let errorText = '';
    const fail = (message: string): void => {
      this.stats.errors++;
      this.stats.lastError = message;
      this.stale = true;
      onError?.(message);
      sock.destroy();
      ws?.close();
    };
    sock.on('data', (d: Buffer) => {
      const frame = Buffer.allocUnsafe(d.length + 1);
      frame[0] = 0;
      d.copy(frame, 1);
      if (open && ws) ws.send(frame);
      else pending.push(frame);
    });
    sock.on('close', () => {
      this.sockets.delete(sock);
      ws?.close();
    });
    sock.on('error', () => undefined);
    if (this.stale && this.reresolve) {
      try {
        this.target = await this.reresolve();
        this.stale = false;
      } catch (err) {
        fail(`port-forward: looking up ${this.target.via} again failed: ${(err as Error).message}`);
        return;
      }
    }
    openWebSocket(access, this.target).then(
      (w) => {
        ws = w;
        this.webSockets.add(w);
        if (sock.destroyed) {
          w.close();
          return;
        }
        const seen = [false, false];
        w.addEventListener('open', () => {
          open = true;
          for (const f of pending) w.send(f);
          pending.length = 0;
        });
        w.addEventListener('message', (ev) => {
          const buf = Buffer.from(ev.data as ArrayBuffer);
          if (buf.length === 0) return;
          const channel = buf[0]!;
          let payload = buf.subarray(1);
          if (channel < 2 && !seen[channel]) {
            seen[channel] = true;
            payload = payload.subarray(2); // the port number, once per channel
          }
          if (payload.length === 0) return;
          if (channel === 0) sock.write(payload);
          else if (channel === 1) errorText += payload.toString('utf8');
        });
        w.addEventListener('close', () => {
          this.webSockets.delete(w);
          if (errorText) fail(`port-forward to ${this.describe()}: ${errorText.trim()}`);
          else sock.end();
        });
        w.addEventListener('error', (ev) => fail(`port-forward to ${this.describe()}: ${describeWsError(ev)}`));
      },
      (err: unknown) => fail(`port-forward to ${this.describe()}: ${(err as Error).message}`),
    );
  }
}

async function openWebSocket(access: KubeAccess, t: ForwardTarget): Promise<WebSocket> {
  const path = `/api/v1/namespaces/${encodeURIComponent(t.namespace)}/pods/${encodeURIComponent(t.pod)}/portforward?ports=${t.port}`;
  const httpUrl = `${access.kube.server}${path}`;
  const ctx = new RequestContext(httpUrl, HttpMethod.GET);
  try {
    await access.kube.kubeConfig.applySecurityAuthentication(ctx);
  } catch (err) {
    throw new PortForwardError(`cannot authenticate to ${access.server}: ${(err as Error).message}`);
  }
  const headers = ctx.getHeaders();
  const dispatcher = ctx.getDispatcher() as Dispatcher | undefined;
  const ws = new WebSocket(httpUrl.replace(/^http/, 'ws'), {
    protocols: ['v4.channel.k8s.io'],
    headers,
    ...(dispatcher ? { dispatcher } : {}),
  });
  ws.binaryType = 'arraybuffer';
  return ws;
}

function describeWsError(ev: unknown): string {
  const e = ev as { error?: unknown; message?: string };
  const inner = e.error as { message?: string; cause?: { message?: string; code?: string } } | undefined;
  return inner?.cause?.message ?? inner?.cause?.code ?? inner?.message ?? e.message ?? 'the WebSocket failed (the API server refused the upgrade)';
}
