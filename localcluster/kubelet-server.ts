/**
 * The one kubelet endpoint the API server needs for `kubectl logs`: GET
 * /containerLogs/{namespace}/{pod}/{container} (follow, tailLines, limitBytes, previous).
 * HTTPS with a self-signed certificate; the API server does not verify kubelet certificates unless
 * --kubelet-certificate-authority is set (it is not here). Bound to 127.0.0.1 only.
 */
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ServerResponse } from 'node:http';
import { createCA, issueCert } from './certs.js';

export interface LogSource {
  /** Log files of the container, oldest attempt first; undefined when the pod is unknown. */
  logFiles(namespace: string, pod: string, container: string | undefined): string[] | undefined;
  /** Whether the container may still write (follow keeps the stream open while true). */
  isActive(namespace: string, pod: string, container: string | undefined): boolean;
}

export interface KubeletServer {
  port: number;
  close(): Promise<void>;
}

export async function startKubeletServer(source: LogSource, host = '127.0.0.1'): Promise<KubeletServer> {
  const dir = mkdtempSync(join(tmpdir(), 'tb-kubelet-'));
  let server: Server;
  try {
    const ca = await createCA(dir, 'kubelet-ca', 'taskbatch-local-kubelet-ca');
    const cert = await issueCert(dir, ca, { name: 'kubelet', commonName: 'taskbatch-local-kubelet', usage: 'server', dnsNames: ['localhost'], ips: [host] });
    server = createServer({ cert: readFileSync(cert.certPath), key: readFileSync(cert.keyPath) }, (req, res) => {
      const url = new URL(req.url ?? '/', 'https://localhost');
      if (url.pathname === '/healthz') {
        res.end('ok');
        return;
      }
      const m = /^\/containerLogs\/([^/]+)\/([^/]+)(?:\/([^/]+))?$/.exec(url.pathname);
      if (req.method !== 'GET' || !m) {
        res.writeHead(404, { 'Content-Type': 'text/plain' }).end(`the local node agent only serves /containerLogs (not ${url.pathname})\n`);
        return;
      }
      const [, ns = '', pod = '', container] = m.map((s) => (s ? decodeURIComponent(s) : s));
      serveLogs(source, ns, pod, container, url.searchParams, res);
      req.on('close', () => res.destroy());
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function serveLogs(source: LogSource, ns: string, pod: string, container: string | undefined, q: URLSearchParams, res: ServerResponse): void {
  const files = source.logFiles(ns, pod, container);
  if (!files) {
    res.writeHead(404, { 'Content-Type': 'text/plain' }).end(`pod ${ns}/${pod} is not on this node\n`);
    return;
  }
  const previous = q.get('previous') === 'true';
  const file = previous ? files[files.length - 2] : files[files.length - 1];
  if (!file) {
    res.writeHead(previous ? 400 : 200, { 'Content-Type': 'text/plain' }).end(previous ? `previous terminated container not found\n` : '');
    return;
  }
  let text = readFileSync(file, 'utf8');
  const tail = q.get('tailLines');
  if (tail !== null) {
    const n = Number(tail);
    const lines = text.split('\n');
    const last = lines[lines.length - 1] === '' ? lines.slice(0, -1) : lines;
    text = last
      .slice(Math.max(0, last.length - n))
      .map((l) => `${l}\n`)
      .join('');
  }
  const limit = q.get('limitBytes');
  if (limit !== null) text = Buffer.from(text).subarray(0, Number(limit)).toString('utf8');
  res.writeHead(200, { 'Content-Type': 'text/plain' });
  res.write(text);
  if (q.get('follow') !== 'true' || previous) {
    res.end();
    return;
  }
  let offset = statSync(file).size;
  const timer = setInterval(() => {
    try {
      const size = statSync(file).size;
      if (size > offset) {
        const fd = openSync(file, 'r');
        const buf = Buffer.alloc(size - offset);
        readSync(fd, buf, 0, buf.length, offset);
        closeSync(fd);
        offset = size;
        res.write(buf);
      }
      const current = source.logFiles(ns, pod, container);
      const rotated = current && current[current.length - 1] !== file;
      if (rotated || !source.isActive(ns, pod, container)) {
        clearInterval(timer);
        res.end();
      }
    } catch {
      clearInterval(timer);
      res.end();
    }
  }, 250);
  res.on('close', () => clearInterval(timer));
}
