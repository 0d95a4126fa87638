/**
 * A bound on what one Redis reply may make a client hold in memory. ioredis (and its RESP
 * parser) buffer a reply until it is complete, whatever its size: a hostile or broken server
 * answering any command with a 1 GB bulk string, or an array header announcing a billion
 * elements, makes the client buffer it. ReplySizeGuard watches the bytes a connection receives,
 * follows the RESP framing (headers only; bulk payloads are skipped by length) and reports the
 * first reply larger than `maxReplyBytes` as soon as its header or its bytes show it, so the
 * connection is closed after at most one more socket chunk (64 KiB).
 */
export class ReplyTooLargeError extends Error {
  override name = 'ReplyTooLargeError';
}

const CR_LF = 2;
/** Longest header line looked at (type byte + length); longer simple strings are only counted. */
const HEADER_KEEP = 32;

export class ReplySizeGuard {
  private bytes = 0;
  private bulkLeft = 0;
  private header = '';
  /** Elements still expected by each open aggregate (array, map, set, push), innermost last. */
  private readonly open: number[] = [];

  constructor(readonly maxReplyBytes: number) {}

  /** Feeds received bytes; throws ReplyTooLargeError at the first reply over the bound. */
  push(chunk: Uint8Array): void {
    let i = 0;
    while (i < chunk.length) {
      if (this.bulkLeft > 0) {
        const take = Math.min(this.bulkLeft, chunk.length - i);
        this.bulkLeft -= take;
        this.count(take);
        i += take;
        if (this.bulkLeft === 0) this.elementDone();
        continue;
      }
      const nl = chunk.indexOf(10, i);
      const end = nl < 0 ? chunk.length : nl + 1;
      if (this.header.length < HEADER_KEEP) this.header += Buffer.from(chunk.subarray(i, Math.min(end, i + HEADER_KEEP))).toString('latin1');
      this.count(end - i);
      i = end;
      if (nl >= 0) {
        const line = this.header;
        this.header = '';
        this.onHeader(line);
      }
    }
  }

  private count(n: number): void {
    this.bytes += n;
    if (this.bytes > this.maxReplyBytes) throw new ReplyTooLargeError(`a Redis reply exceeded ${this.maxReplyBytes} bytes (the client's maxReplyBytes); the connection was closed`);
  }

  private onHeader(line: string): void {
    const type = line[0];
    const n = Number.parseInt(line.slice(1), 10);
    switch (type) {
      case '$': // bulk string
      case '=': // RESP3 verbatim string
      case '!': // RESP3 bulk error
        if (!(n >= 0)) return this.elementDone();
        // Refused on the header: the payload never needs to arrive.
        if (n > this.maxReplyBytes)
          throw new ReplyTooLargeError(`a Redis reply announced a ${n}-byte string, more than ${this.maxReplyBytes} bytes (the client's maxReplyBytes); the connection was closed`);
        this.bulkLeft = n + CR_LF;
        return;
      case '*': // array
      case '~': // RESP3 set
      case '>': // RESP3 push
      case '%': // RESP3 map (key and value per entry)
      case '|': {
        // RESP3 attribute: its map, then the reply it annotates
        const elements = type === '%' ? 2 * n : type === '|' ? 2 * n + 1 : n;
        if (!(elements > 0)) return this.elementDone();
        // Every element takes at least 3 bytes ("_\r\n"): a header announcing more cannot fit.
        if (elements * 3 > this.maxReplyBytes)
          throw new ReplyTooLargeError(`a Redis reply announced ${elements} elements, more than fit in ${this.maxReplyBytes} bytes (the client's maxReplyBytes); the connection was closed`);
        this.open.push(elements);
        return;
      }
      default: // simple string, error, integer, null, double, boolean, big number
        return this.elementDone();
    }
  }

  private elementDone(): void {
    while (this.open.length > 0) {
      const left = this.open.pop()! - 1;
      if (left > 0) {
        this.open.push(left);
        return;
      }
    }
    // A whole top-level reply has arrived.
    this.bytes = 0;
  }
}

/** The parts of an ioredis client the guard attaches to. */
interface GuardedClient {
  on(event: 'connect', listener: () => void): unknown;
  on(event: '+node', listener: (node: GuardedClient) => void): unknown;
  stream?: { on(event: 'data', listener: (chunk: Buffer) => void): unknown; destroy(err?: Error): unknown };
}

/**
 * Bounds every reply on every connection of `client` (each node of a Cluster too). On each new
 * connection a fresh guard follows the stream; a reply over the bound destroys the socket, so
 * pending commands fail and ioredis reconnects (with the caller's retry strategy).
 */
export function limitReplySize(client: GuardedClient, maxReplyBytes: number, onExceeded?: (err: ReplyTooLargeError) => void): void {
  const attach = (c: GuardedClient): void => {
    c.on('connect', () => {
      const stream = c.stream;
      if (!stream) return;
      const guard = new ReplySizeGuard(maxReplyBytes);
      let tripped = false;
      stream.on('data', (chunk: Buffer) => {
        if (tripped) return;
        try {
          guard.push(chunk);
        } catch (err) {
          tripped = true;
          onExceeded?.(err as ReplyTooLargeError);
          stream.destroy(err as Error);
        }
      });
    });
  };
  attach(client);
  client.on('+node', (node) => attach(node));
}
