import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from './log.js';
import type { WorkerMetrics } from './metrics.js';

export interface HttpServerOptions {
  /** Address to bind ('' or '0.0.0.0' / '::' = all interfaces). */
  host: string;
  /** 0 = an ephemeral port (logged, and returned). */
  port: number;
  metrics?: WorkerMetrics;
  /** /readyz: connected to Redis, batch state present, executors started. */
  ready: () => boolean;
  /** /healthz: the event loop answers and the consumer loop is not wedged. */
  healthy: () => boolean;
  /** /status: a JSON snapshot for humans. */
  status?: () => unknown;
  logger?: Logger;
}

export interface HttpServer {
  host: string;
  port: number;
  url: string;
  close(): Promise<void>;
}

/** Serves /metrics (Prometheus text), /healthz, /readyz and /status. */
export async function startHttpServer(o: HttpServerOptions): Promise<HttpServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const reply = (code: number, body: string, type = 'text/plain; charset=utf-8'): void => {
      res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return reply(405, 'method not allowed\n');
    switch (path) {
      case '/metrics':
        if (!o.metrics) return reply(404, 'metrics disabled\n');
        o.metrics.registry.metrics().then(
          (text) => reply(200, text, o.metrics?.registry.contentType),
          (err: unknown) => reply(500, `metrics failed: ${(err as Error).message}\n`),
        );
        return;
      case '/healthz':
        return o.healthy() ? reply(200, 'ok\n') : reply(503, 'wedged: the consumer loop made no progress\n');
      case '/readyz':
        return o.ready() ? reply(200, 'ready\n') : reply(503, 'not ready\n');
      case '/status':
        return reply(200, `${JSON.stringify(o.status?.() ?? {}, null, 2)}\n`, 'application/json');
      default:
        return reply(404, 'not found: try /metrics, /healthz, /readyz, /status\n');
    }
  });
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const host = o.host === '' ? undefined : o.host;
    server.listen({ port: o.port, ...(host ? { host } : {}) }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.unref();
  const addr = server.address() as AddressInfo;
  const shownHost = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  o.logger?.info('Started HTTP server', { address: addr.address, port: addr.port, paths: ['/metrics', '/healthz', '/readyz', '/status'] });
  return {
    host: addr.address,
    port: addr.port,
    url: `http://${shownHost}:${addr.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
