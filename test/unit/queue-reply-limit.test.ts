import { ReplySizeGuard, ReplyTooLargeError } from '../../queue/reply-limit.js';

const feed = (g: ReplySizeGuard, ...chunks: string[]): void => {
  for (const c of chunks) g.push(Buffer.from(c, 'latin1'));
};

describe('ReplySizeGuard follows RESP framing and bounds each reply', () => {
  test('many small replies add up to more than the bound without tripping it', () => {
    const g = new ReplySizeGuard(64);
    for (let i = 0; i < 100; i++) feed(g, '+OK\r\n', ':42\r\n', '$5\r\nhello\r\n', '*2\r\n$1\r\na\r\n*1\r\n:1\r\n', '$-1\r\n', '*0\r\n');
  });

  test('a reply split across chunks is counted as one', () => {
    const g = new ReplySizeGuard(30);
    feed(g, '*3\r\n$5\r\nab', 'cde\r\n:1', '\r\n+x\r\n');
    feed(g, '+next\r\n');
    expect(() => feed(g, '*2\r\n$10\r\n0123456789\r\n', '$10\r\n0123456789\r\n')).toThrow(ReplyTooLargeError);
  });

  test('a bulk string announced over the bound is refused on its header, before its payload', () => {
    const g = new ReplySizeGuard(1024);
    expect(() => feed(g, '$1000000000\r\n')).toThrow('a Redis reply announced a 1000000000-byte string, more than 1024 bytes');
  });

  test('an array announcing more elements than fit is refused on its header', () => {
    const g = new ReplySizeGuard(1024);
    expect(() => feed(g, '*1000000\r\n')).toThrow('a Redis reply announced 1000000 elements');
  });

  test('a simple string with no end is counted as it arrives', () => {
    const g = new ReplySizeGuard(1000);
    feed(g, '+' + 'x'.repeat(900));
    expect(() => feed(g, 'x'.repeat(200))).toThrow(ReplyTooLargeError);
  });

  test('nested aggregates close correctly (the next reply starts from zero)', () => {
    const g = new ReplySizeGuard(40);
    feed(g, '*2\r\n*2\r\n:1\r\n:2\r\n*1\r\n$3\r\nabc\r\n'); // 33 bytes
    feed(g, '*2\r\n*2\r\n:1\r\n:2\r\n*1\r\n$3\r\nabc\r\n'); // another 33: fine, a new reply
  });
});
