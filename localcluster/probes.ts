/** Readiness and liveness probes (httpGet, tcpSocket, exec, grpc is not supported), run against a pod's loopback IP. */
import type { V1Container, V1Probe } from '@kubernetes/client-node';
import { execFile } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect } from 'node:net';

export interface ProbeTarget {
  podIP: string;
  container: V1Container;
  env: NodeJS.ProcessEnv;
  cwd: string | undefined;
}

export type ProbeResult = { ok: true } | { ok: false; message: string };

function resolvePort(port: number | string | undefined, container: V1Container): number | undefined {
  if (typeof port === 'number') return port;
  if (port === undefined) return undefined;
  if (/^\d+$/.test(port)) return Number(port);
  return container.ports?.find((p) => p.name === port)?.containerPort;
}

export async function runProbe(probe: V1Probe, t: ProbeTarget): Promise<ProbeResult> {
  const timeoutMs = (probe.timeoutSeconds ?? 1) * 1000;
  if (probe.httpGet) {
    const g = probe.httpGet;
    const port = resolvePort(g.port as number | string | undefined, t.container);
    if (port === undefined) return { ok: false, message: `httpGet probe: unknown port ${String(g.port)}` };
    const host = g.host || t.podIP;
    const https = (g.scheme ?? 'HTTP').toUpperCase() === 'HTTPS';
    const headers: Record<string, string> = { 'User-Agent': 'kube-probe/1.34' };
    for (const h of g.httpHeaders ?? []) headers[h.name] = h.value;
    return new Promise((resolve) => {
      const req = (https ? httpsRequest : httpRequest)({ host, port, path: g.path ?? '/', method: 'GET', headers, timeout: timeoutMs, ...(https ? { rejectUnauthorized: false } : {}) }, (res) => {
        res.resume();
        const code = res.statusCode ?? 0;
        resolve(code >= 200 && code < 400 ? { ok: true } : { ok: false, message: `HTTP probe failed with statuscode: ${code}` });
      });
      req.on('timeout', () => req.destroy(new Error(`timeout after ${timeoutMs} ms`)));
      req.on('error', (err) => resolve({ ok: false, message: `Get "http://${host}:${port}${g.path ?? '/'}": ${err.message}` }));
      req.end();
    });
  }
  if (probe.tcpSocket) {
    const port = resolvePort(probe.tcpSocket.port as number | string | undefined, t.container);
    if (port === undefined) return { ok: false, message: `tcpSocket probe: unknown port ${String(probe.tcpSocket.port)}` };
    const host = probe.tcpSocket.host || t.podIP;
    return new Promise((resolve) => {
      const sock = connect({ host, port, timeout: timeoutMs });
      sock.once('connect', () => {
        sock.destroy();
        resolve({ ok: true });
      });
      sock.once('timeout', () => {
        sock.destroy();
        resolve({ ok: false, message: `dial tcp ${host}:${port}: i/o timeout` });
      });
      sock.once('error', (err) => resolve({ ok: false, message: `dial tcp ${host}:${port}: ${err.message}` }));
    });
  }
  if (probe.exec?.command && probe.exec.command.length > 0) {
    const [cmd, ...args] = probe.exec.command as [string, ...string[]];
    return new Promise((resolve) => {
      execFile(cmd, args, { env: t.env, cwd: t.cwd, timeout: timeoutMs }, (err, stdout, stderr) => {
        if (!err) resolve({ ok: true });
        else resolve({ ok: false, message: `exec probe failed: ${(stderr || stdout || err.message).trim().slice(0, 300)}` });
      });
    });
  }
  return { ok: false, message: 'unsupported probe handler (httpGet, tcpSocket and exec are supported)' };
}
