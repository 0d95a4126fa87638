/**
 * A stand-in kubelet for port-forwarding, which the local node agent does not serve: it registers
 * a Node whose kubelet endpoint is this HTTPS server, and answers the API server's proxied
 * `GET /portForward/{namespace}/{pod}?port=P` WebSocket upgrade with the kubelet's own protocol
 * (v4.channel.k8s.io: channel byte, the port as the first 2 bytes of each channel, data on
 * channel 0, errors on channel 1) by dialling a real local address for that pod and port — as a
 * kubelet dials inside the pod's network namespace. Everything between the SDK and this server
 * is real: the API server's authentication, RBAC on pods/portforward, and its upgrade proxy.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import { createConnection, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { createCA, issueCert } from '../../localcluster/certs.js';
import type { KubeClient } from '../../kube/client.js';

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

export interface FakeKubelet {
  nodeName: string;
  port: number;
  /** Port-forward connections served, per "ns/pod:port". */
  connections: Map<string, number>;
  /** Upgrade requests seen (path and query), for assertions. */
  requests: string[];
  /** Where "ns/pod:port" really is. */
  route(namespace: string, pod: string, port: number, target: { host: string; port: number }): void;
  /** Forgets "ns/pod:port" and cuts its open connections (the pod went away). */
  drop(namespace: string, pod: string, port: number): void;
  /** A Running, Ready pod on this node (status written as a kubelet would). */
  runPod(kube: KubeClient, namespace: string, name: string, labels: Record<string, string>, containerPort: number, podIP?: string): Promise<void>;
  stop(kube?: KubeClient): Promise<void>;
}

export async function startFakeKubelet(kube: KubeClient): Promise<FakeKubelet> {
  const dir = mkdtempSync(join(tmpdir(), 'tb-fake-kubelet-'));
  let server: Server;
  const routes = new Map<string, { host: string; port: number }>();
  const connections = new Map<string, number>();
  const requests: string[] = [];
  const open = new Set<Duplex | Socket>();
  const byTarget = new Map<string, Set<Duplex>>();
  try {
    const ca = await createCA(dir, 'ca', 'fake-kubelet-ca');
    const cert = await issueCert(dir, ca, { name: 'kubelet', commonName: 'fake-kubelet', usage: 'server', dnsNames: ['localhost'], ips: ['127.0.0.1'] });
    server = createServer({ cert: readFileSync(cert.certPath), key: readFileSync(cert.keyPath) }, (req, res) => {
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`fake kubelet: only port-forward upgrades (${req.url})\n`);
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  server.on('upgrade', (req, socket: Duplex) => {
    open.add(socket);
    socket.on('close', () => open.delete(socket));
    const url = new URL(req.url ?? '/', 'https://kubelet');
    requests.push(`${url.pathname}${url.search}`);
    const m = /^\/portForward\/([^/]+)\/([^/]+)$/.exec(url.pathname);
    const key = req.headers['sec-websocket-key'];
    const protocols = String(req.headers['sec-websocket-protocol'] ?? '')
      .split(',')
      .map((s) => s.trim());
    const port = Number(url.searchParams.get('port') ?? url.searchParams.get('ports'));
    if (!m || !key || !protocols.includes('v4.channel.k8s.io') || !port) {
      socket.end('HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\n\r\nfake kubelet: expected a v4.channel.k8s.io port-forward upgrade\n');
      return;
    }
    const [, ns, pod] = m;
    const id = `${ns}/${pod}:${port}`;
    const accept = createHash('sha1').update(`${key}${WS_GUID}`).digest('base64');
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\nSec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n`);
    const portBytes = Buffer.alloc(2);
    portBytes.writeUInt16LE(port);
    socket.write(frame(2, Buffer.concat([Buffer.from([0]), portBytes])));
    socket.write(frame(2, Buffer.concat([Buffer.from([1]), portBytes])));
    const target = routes.get(id);
    if (!target) {
      socket.write(frame(2, Buffer.concat([Buffer.from([1]), Buffer.from(`no route to ${id} on this node`)])));
      socket.end(frame(8, Buffer.alloc(0)));
      return;
    }
    connections.set(id, (connections.get(id) ?? 0) + 1);
    if (!byTarget.has(id)) byTarget.set(id, new Set());
    byTarget.get(id)!.add(socket);
    socket.on('close', () => byTarget.get(id)?.delete(socket));
    const upstream = createConnection(target);
    open.add(upstream);
    upstream.on('close', () => open.delete(upstream));
    upstream.on('data', (d: Buffer) => socket.write(frame(2, Buffer.concat([Buffer.from([0]), d]))));
    upstream.on('end', () => socket.end(frame(8, Buffer.alloc(0))));
    upstream.on('error', (err) => {
      socket.write(frame(2, Buffer.concat([Buffer.from([1]), Buffer.from(`error dialing ${id}: ${err.message}`)])));
      socket.end(frame(8, Buffer.alloc(0)));
    });
    readFrames(socket, (opcode, payload) => {
      if (opcode === 2 && payload[0] === 0) upstream.write(payload.subarray(1));
      else if (opcode === 9) socket.write(frame(10, payload));
      else if (opcode === 8) {
        socket.end(frame(8, Buffer.alloc(0)));
        upstream.end();
      }
    });
    socket.on('close', () => upstream.destroy());
    socket.on('error', () => upstream.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  const nodeName = `pf-node-${randomBytes(3).toString('hex')}`;
  await kube.create('/api/v1/nodes', { apiVersion: 'v1', kind: 'Node', metadata: { name: nodeName, labels: { 'kubernetes.io/hostname': nodeName } } });
  const now = new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
  await kube.patch(
    `/api/v1/nodes/${nodeName}/status`,
    {
      status: {
        addresses: [
          { type: 'InternalIP', address: '127.0.0.1' },
          { type: 'Hostname', address: nodeName },
        ],
        daemonEndpoints: { kubeletEndpoint: { Port: port } },
        conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'fake kubelet (port-forward only)', lastHeartbeatTime: now, lastTransitionTime: now }],
      },
    },
    'strategic',
  );
  return {
    nodeName,
    port,
    connections,
    requests,
    route: (ns, pod, p, target) => void routes.set(`${ns}/${pod}:${p}`, target),
    drop: (ns, pod, p) => {
      const id = `${ns}/${pod}:${p}`;
      routes.delete(id);
      for (const s of byTarget.get(id) ?? []) s.destroy();
    },
    runPod: async (k, ns, name, labels, containerPort, podIP = '127.0.0.1') => {
      await k.create(`/api/v1/namespaces/${ns}/pods`, {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name, namespace: ns, labels },
        spec: { nodeName, containers: [{ name: 'main', image: 'redis:7', ports: [{ name: 'redis', containerPort }] }] },
      });
      const t = new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
      await k.patch(
        `/api/v1/namespaces/${ns}/pods/${name}/status`,
        {
          status: {
            phase: 'Running',
            podIP,
            podIPs: [{ ip: podIP }],
            hostIP: '127.0.0.1',
            startTime: t,
            conditions: [
              { type: 'Ready', status: 'True', lastTransitionTime: t },
              { type: 'ContainersReady', status: 'True', lastTransitionTime: t },
            ],
            containerStatuses: [{ name: 'main', ready: true, restartCount: 0, image: 'redis:7', imageID: '', started: true, state: { running: { startedAt: t } } }],
          },
        },
        'strategic',
      );
    },
    stop: async (k) => {
      for (const s of open) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      if (k) await k.delete(`/api/v1/nodes/${nodeName}`).catch(() => undefined);
    },
  };
}

/** An unmasked server-to-client frame. */
function frame(opcode: number, payload: Buffer): Buffer {
  const n = payload.length;
  const head = n < 126 ? Buffer.from([0x80 | opcode, n]) : n < 65_536 ? Buffer.from([0x80 | opcode, 126, n >> 8, n & 0xff]) : Buffer.concat([Buffer.from([0x80 | opcode, 127]), bigLength(n)]);
  return Buffer.concat([head, payload]);
}

function bigLength(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
}

/** Parses masked client frames (fragmented messages are joined); calls back per message. */
function readFrames(socket: Duplex, onMessage: (opcode: number, payload: Buffer) => void): void {
  let buf = Buffer.alloc(0);
  let fragments: Buffer[] = [];
  let fragOpcode = 0;
  socket.on('data', (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      if (buf.length < 2) return;
      const fin = (buf[0]! & 0x80) !== 0;
      const opcode = buf[0]! & 0x0f;
      const masked = (buf[1]! & 0x80) !== 0;
      let len = buf[1]! & 0x7f;
      let off = 2;
      if (len === 126) {
        if (buf.length < 4) return;
        len = buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (buf.length < 10) return;
        len = Number(buf.readBigUInt64BE(2));
        off = 10;
      }
      const maskLen = masked ? 4 : 0;
      if (buf.length < off + maskLen + len) return;
      const mask = masked ? buf.subarray(off, off + 4) : undefined;
      const payload = Buffer.from(buf.subarray(off + maskLen, off + maskLen + len));
      if (mask) for (let i = 0; i < payload.length; i++) payload[i]! ^= mask[i % 4]!;
      buf = buf.subarray(off + maskLen + len);
      if (opcode === 0) {
        fragments.push(payload);
        if (fin) {
          onMessage(fragOpcode, Buffer.concat(fragments));
          fragments = [];
        }
      } else if (!fin) {
        fragOpcode = opcode;
        fragments = [payload];
      } else {
        onMessage(opcode, payload);
      }
    }
  });
}
