import { createConnection, createServer, type Server, type Socket } from 'node:net';

/**
 * A TCP proxy on loopback in front of one upstream (a redis-server), for hung-connection tests.
 * freeze() stops forwarding in both directions without closing anything: sockets stay open,
 * bytes and closes are held back, as on a network path that silently stops delivering.
 * thaw() delivers what was held (as TCP would after a partition heals) and forwards again.
 * Each client connection's state is kept, so a test can see which ones the client gave up on.
 */
export interface ProxiedConnection {
  readonly id: number;
  /** Accepted while the proxy was frozen. */
  readonly openedFrozen: boolean;
  /** The client closed (or reset) its end. */
  closedByClient: boolean;
}

interface Pipe {
  info: ProxiedConnection;
  client: Socket;
  upstream: Socket;
  /** Held while frozen, in arrival order: bytes, or the end of one direction. */
  held: { to: 'upstream' | 'client'; data: Buffer | 'end' }[];
}

export class TcpProxy {
  private frozen = false;
  private nextId = 1;
  private readonly pipes = new Set<Pipe>();
  readonly connections: ProxiedConnection[] = [];

  private constructor(
    private readonly server: Server,
    readonly port: number,
    private readonly upstream: { host: string; port: number },
  ) {}

  /** Listens on 127.0.0.1 (a free port) and forwards each connection to host:port. */
  static async start(upstream: { host: string; port: number }): Promise<TcpProxy> {
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('the proxy did not get a TCP port');
    const proxy = new TcpProxy(server, address.port, upstream);
    server.on('connection', (client) => proxy.accept(client));
    return proxy;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Stops forwarding bytes in both directions; every socket stays open. */
  freeze(): void {
    this.frozen = true;
  }

  /** Delivers what was held meanwhile and forwards again. */
  thaw(): void {
    this.frozen = false;
    for (const pipe of this.pipes) {
      for (const h of pipe.held.splice(0)) this.deliver(pipe, h.to, h.data);
    }
  }

  /** Client connections whose client end has not closed. */
  open(): ProxiedConnection[] {
    return this.connections.filter((c) => !c.closedByClient);
  }

  async close(): Promise<void> {
    for (const pipe of this.pipes) {
      pipe.client.destroy();
      pipe.upstream.destroy();
    }
    this.pipes.clear();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: Socket): void {
    const info: ProxiedConnection = { id: this.nextId++, openedFrozen: this.frozen, closedByClient: false };
    this.connections.push(info);
    const upstream = createConnection(this.upstream);
    const pipe: Pipe = { info, client, upstream, held: [] };
    this.pipes.add(pipe);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    const relay = (to: 'upstream' | 'client', data: Buffer | 'end'): void => {
      if (this.frozen) pipe.held.push({ to, data });
      else this.deliver(pipe, to, data);
    };
    client.on('data', (b: Buffer) => relay('upstream', b));
    upstream.on('data', (b: Buffer) => relay('client', b));
    client.on('end', () => relay('upstream', 'end'));
    upstream.on('end', () => relay('client', 'end'));
    client.on('close', () => {
      info.closedByClient = true;
      // A reset client: what it sent before still reaches Redis, then its end (as in TCP).
      relay('upstream', 'end');
    });
    upstream.on('close', () => relay('client', 'end'));
    client.on('error', () => undefined);
    upstream.on('error', () => undefined);
  }

  private deliver(pipe: Pipe, to: 'upstream' | 'client', data: Buffer | 'end'): void {
    const socket = to === 'upstream' ? pipe.upstream : pipe.client;
    if (socket.destroyed || socket.writableEnded) return;
    if (data === 'end') socket.end();
    else socket.write(data);
    if (pipe.client.destroyed && pipe.upstream.writableEnded) this.pipes.delete(pipe);
  }
}
