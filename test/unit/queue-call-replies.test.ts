// Signing and parsing of remote-call replies (queue/call-replies.ts), as pure functions: what a
// worker signs verifies with the call's key only, tampering with any signed field fails, and the
// parser sorts lines into replies (old unsigned format included, with an empty MAC) and malformed.
import { randomBytes } from 'node:crypto';
import { callReplySeal, parseCallReplies, verifyCallReply, type SignedCallReply } from '../../queue/index.js';

const key = randomBytes(32);
const terms = { key: key.toString('hex'), idTtlMs: 90_000, failureTtlMs: 86_400_000 };
const id = 'call:abc:7';

function claim(data: unknown, attempt = 1): { token: string; payload: string; attempt: number } {
  return { token: `41:${id}`, payload: JSON.stringify(data), attempt };
}

function lineOf(seal: [string, number], kind: 'r' | 'e', body: string, attempts = 1): SignedCallReply {
  const text = kind === 'r' ? `r\t${id}\t${seal[0]}\t${body}` : `e\t${id}\t${seal[0]}\t${attempts}\t${body}`;
  const { replies, malformed } = parseCallReplies(text);
  expect(malformed).toBe(0);
  return replies[0]!;
}

describe('callReplySeal', () => {
  test.each([
    ['the SDK order (read without parsing the arguments)', { reply: terms, fn: 'f', args: [1, 'x'] }],
    ['any other order (parsed)', { fn: 'f', args: [1], reply: { failureTtlMs: terms.failureTtlMs, idTtlMs: terms.idTtlMs, key: terms.key } }],
  ])('signs results and errors of %s with the call key, and returns its TTL', (_, data) => {
    const r = callReplySeal(claim(data), 'result', '{"v":1}');
    expect(r[1]).toBe(90_000);
    expect(verifyCallReply(key, lineOf(r, 'r', '{"v":1}'))).toBe(true);
    const e = callReplySeal(claim(data, 3), 'error', '{"name":"E","message":"m"}');
    expect(e[1]).toBe(86_400_000);
    expect(verifyCallReply(key, lineOf(e, 'e', '{"name":"E","message":"m"}', 3))).toBe(true);
  });

  test('a tampered id, body, attempts, kind or key does not verify', () => {
    const data = { reply: terms, fn: 'f', args: [] };
    const r = lineOf(callReplySeal(claim(data), 'result', '1'), 'r', '1') as Extract<SignedCallReply, { kind: 'result' }>;
    const e = lineOf(callReplySeal(claim(data, 2), 'error', '{"name":"E","message":"m"}'), 'e', '{"name":"E","message":"m"}', 2) as Extract<SignedCallReply, { kind: 'error' }>;
    expect(verifyCallReply(key, { ...r, json: '2' })).toBe(false);
    expect(verifyCallReply(key, { ...r, id: 'call:abc:8' })).toBe(false);
    expect(verifyCallReply(randomBytes(32), r)).toBe(false);
    expect(verifyCallReply(key, { ...e, attempts: 1 })).toBe(false);
    expect(verifyCallReply(key, { ...e, errorJson: '{"name":"E","message":"n"}' })).toBe(false);
    expect(verifyCallReply(key, { kind: 'error', id, mac: r.mac, attempts: 1, errorJson: '1' })).toBe(false);
    expect(verifyCallReply(key, { ...r, mac: r.mac.toUpperCase() })).toBe(false);
    expect(verifyCallReply(key, { ...r, mac: '' })).toBe(false);
  });

  test('items that are not calls with a reply key are not signed nor indexed', () => {
    expect(callReplySeal({ token: '1:plain', payload: JSON.stringify({ reply: terms }) }, 'result', '1')).toEqual(['', 0]);
    expect(callReplySeal({ token: `1:${id}` }, 'result', '1')).toEqual(['', 0]); // no payload given
    expect(callReplySeal({ token: `1:${id}`, payload: '{"fn":"f","args":[]}' }, 'result', '1')).toEqual(['', 0]);
    expect(callReplySeal({ token: `1:${id}`, payload: 'not json' }, 'result', '1')).toEqual(['', 0]);
    expect(callReplySeal({ token: `1:${id}`, payload: JSON.stringify({ reply: { ...terms, key: 'short' } }) }, 'result', '1')).toEqual(['', 0]);
    // A failure without the claim's attempt cannot be signed, but still expires.
    expect(callReplySeal({ token: `1:${id}`, payload: JSON.stringify({ reply: terms }) }, 'error', '{}')).toEqual(['', 86_400_000]);
    // TTLs out of range are not applied.
    expect(callReplySeal(claim({ reply: { ...terms, idTtlMs: 0 } }), 'result', '1')[1]).toBe(0);
  });
});

describe('parseCallReplies', () => {
  test('sorts lines into signed replies, unsigned (old format) replies and malformed lines, never throwing', () => {
    const mac = 'a'.repeat(64);
    const { replies, malformed } = parseCallReplies(
      [
        `r\t${id}\t${mac}\t{"v":"x"}`,
        `r\t${id}\t${mac}\t`,
        `e\t${id}\t${mac}\t2\t{"name":"E","message":"m"}`,
        `r\t${id}\t7`, // before signatures
        `e\t${id}\t{"attempts":1,"failedAt":1,"error":{}}`, // before signatures
        '',
        'garbage',
        `r\tnot-a-call\t${mac}\t1`,
        `e\t${id}\t${mac}\t0\t{}`,
        `e\t${id}\t${mac}\tx\t{}`,
        `q\t${id}\t${mac}\t1`,
        `r\t${id}\t${mac}\t1\textra`,
      ].join('\n'),
    );
    expect(replies).toEqual([
      { kind: 'result', id, mac, json: '{"v":"x"}' },
      { kind: 'result', id, mac, json: '' },
      { kind: 'error', id, mac, attempts: 2, errorJson: '{"name":"E","message":"m"}' },
      { kind: 'result', id, mac: '', json: '7' },
      { kind: 'error', id, mac: '', attempts: 0, errorJson: '' },
    ]);
    expect(malformed).toBe(7);
  });
});
