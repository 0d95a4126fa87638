/**
 * A byte relay between TCP and Unix sockets, run as its own process:
 *
 *   node relay.js --listen tcp:127.0.0.1:6443 --listen tcp:10.245.0.2:6443 --to unix:/state/api.sock
 *   node relay.js --listen unix:/state/api.sock --to tcp:127.0.0.1:41234
 *
 * Why: the API server listens on the host's loopback only, and the node lives in its own network
 * namespace, whose loopback is another one. A Unix socket is a file, visible in both namespaces, so
 * a relay on each side joins them without any server listening on a non-loopback host address.
 * TLS passes through untouched (the API server's certificate names 127.0.0.1 and 10.0.0.1).
 */
import { rmSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';

type Endpoint = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

export function parseEndpoint(text: string): Endpoint {
  if (text.startsWith('unix:')) {
    const path = text.slice(5);
    if (!path) throw new Error(`relay endpoint ${JSON.stringify(text)}: empty socket path`);
    return { kind: 'unix', path };
  }
  const m = /^tcp:(.+):(\d+)$/.exec(text);
  if (!m?.[1] || !m[2]) throw new Error(`relay endpoint ${JSON.stringify(text)}: expected tcp:HOST:PORT or unix:PATH`);
  return { kind: 'tcp', host: m[1], port: Number(m[2]) };
}

function dial(to: Endpoint): Socket {
  return to.kind === 'unix' ? connect(to.path) : connect(to.port, to.host);
}

function pipeBoth(a: Socket, b: Socket): void {
  a.pipe(b);
  b.pipe(a);
  const end = (): void => {
    a.destroy();
    b.destroy();
  };
  a.on('error', end);
  b.on('error', end);
  a.on('close', end);
  b.on('close', end);
}

function main(argv: string[]): void {
  const listens: Endpoint[] = [];
  let to: Endpoint | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = argv[++i];
    if (a === '--listen' && v) listens.push(parseEndpoint(v));
    else if (a === '--to' && v) to = parseEndpoint(v);
    else throw new Error(`relay: unknown argument ${a}; usage: relay --listen EP [--listen EP] --to EP`);
  }
  if (!to || listens.length === 0) throw new Error('relay: need at least one --listen and one --to');
  const target = to;
  for (const ep of listens) {
    const server = createServer((client) => pipeBoth(client, dial(target)));
    server.on('error', (err) => {
      process.stderr.write(JSON.stringify({ level: 'error', msg: 'Relay failed', listen: ep, error: err.message }) + '\n');
      process.exit(1);
    });
    if (ep.kind === 'unix') {
      rmSync(ep.path, { force: true });
      server.listen(ep.path);
    } else server.listen(ep.port, ep.host);
    server.on('listening', () => process.stdout.write(JSON.stringify({ level: 'info', msg: 'Relay listening', listen: ep, to: target }) + '\n'));
  }
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => process.exit(0));
}

if (process.argv[1] && /relay\.js$/.test(process.argv[1])) main(process.argv.slice(2));
