import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Call replies (docs/sdk.md#remote-calls, docs/queue.md#call-replies). A call item's data is
 * `{reply: {key, idTtlMs, failureTtlMs}, fn, args}`: `key` is a secret the caller drew for this
 * call alone (32 random bytes, hex). The worker that completes or dead-letters the item signs the
 * outcome with HMAC-SHA256 keyed by it, and complete.lua / fail.lua publish the signature, never
 * the key. The caller keeps the key in memory and accepts an outcome only if the signature
 * matches. `idTtlMs` / `failureTtlMs` are how long Redis keeps the call's id and its dead letter
 * once it finished (the scripts index them in the batch's `calls` zset and trim them).
 */

/** Items whose id is `call:<client>:<n>` are remote calls: their outcome is announced to <client> (see BatchQueue.enableReplies). */
export const CALL_ID_PREFIX = 'call:';

/** How complete/fail announce call outcomes: sharded Pub/Sub (Redis 7+) or classic Pub/Sub. */
export type ReplyMode = 'spublish' | 'publish';

/** What a call item's data carries, besides {fn, args}, about its reply. */
export interface CallReplyTerms {
  /** 64 hex digits: the HMAC key of this call's reply. */
  key: string;
  /** How long the id of the finished call stays in the idempotence set (ms, from when it finished). */
  idTtlMs: number;
  /** How long the dead letter (record, payload, attempts) of a call that failed for good is kept (ms). */
  failureTtlMs: number;
}

/** Bounds of idTtlMs and failureTtlMs, ms. */
export const CALL_TTL_MAX_MS = 90 * 86_400_000;

/**
 * One reply line as published: "r<TAB>id<TAB>mac<TAB>result JSON" (completed; result '' = none)
 * or "e<TAB>id<TAB>mac<TAB>attempts<TAB>error JSON" (failed for good). A line of the format
 * before signatures ("r<TAB>id<TAB>json", "e<TAB>id<TAB>record") parses with mac '' and never
 * verifies.
 */
export type SignedCallReply =
  | { kind: 'result'; id: string; mac: string /** The result's JSON; '' when the handler returned undefined. */; json: string }
  | { kind: 'error'; id: string; mac: string; attempts: number /** The error record's JSON: {name, message, stack?}. */; errorJson: string };

/** What parseCallReplies found: the well-formed lines, and how many were not. */
export interface ParsedCallReplies {
  replies: SignedCallReply[];
  malformed: number;
}

/** Parses one reply message (lines joined by "\n"); never throws. */
export function parseCallReplies(message: string): ParsedCallReplies {
  const out: ParsedCallReplies = { replies: [], malformed: 0 };
  for (const line of message.split('\n')) {
    const f = line.split('\t');
    const id = f[1] ?? '';
    if (!id.startsWith(CALL_ID_PREFIX)) {
      out.malformed++;
    } else if (f.length === 3 && (f[0] === 'r' || f[0] === 'e')) {
      // The format before signatures: explicit, so it is counted as unsigned, not as noise.
      out.replies.push(f[0] === 'r' ? { kind: 'result', id, mac: '', json: f[2]! } : { kind: 'error', id, mac: '', attempts: 0, errorJson: '' });
    } else if (f[0] === 'r' && f.length === 4) {
      out.replies.push({ kind: 'result', id, mac: f[2]!, json: f[3]! });
    } else if (f[0] === 'e' && f.length === 5 && /^[1-9]\d{0,8}$/.test(f[3]!)) {
      out.replies.push({ kind: 'error', id, mac: f[2]!, attempts: Number(f[3]), errorJson: f[4]! });
    } else {
      out.malformed++;
    }
  }
  return out;
}

function macOf(key: Buffer, kind: 'r' | 'e', id: string, body: string): Buffer {
  return createHmac('sha256', key).update(`${kind}\t${id}\t${body}`).digest();
}

/** Whether `reply` was signed with `key` (constant-time compare; an empty or odd mac never matches). */
export function verifyCallReply(key: Buffer, reply: SignedCallReply): boolean {
  if (!/^[0-9a-f]{64}$/.test(reply.mac)) return false;
  const expected = reply.kind === 'result' ? macOf(key, 'r', reply.id, reply.json) : macOf(key, 'e', reply.id, `${reply.attempts}\t${reply.errorJson}`);
  return timingSafeEqual(expected, Buffer.from(reply.mac, 'hex'));
}

/** How the SDK serializes the start of a call item's data: read without parsing arguments of up to 1 MB. */
const SDK_PREFIX = /^\{"reply":\{"key":"([0-9a-f]{64})","idTtlMs":(\d{1,10}),"failureTtlMs":(\d{1,10})\}/;

/** The reply terms in a call item's payload, or undefined when it has none (not an SDK call, or malformed). */
function replyTermsOf(payload: string): CallReplyTerms | undefined {
  const ttl = (v: unknown): number => (typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= CALL_TTL_MAX_MS ? v : 0);
  const m = SDK_PREFIX.exec(payload);
  if (m) return { key: m[1]!, idTtlMs: ttl(Number(m[2])), failureTtlMs: ttl(Number(m[3])) };
  let data: unknown;
  try {
    data = JSON.parse(payload);
  } catch {
    return undefined;
  }
  const t = (data as { reply?: Partial<CallReplyTerms> } | null)?.reply;
  if (!t || typeof t !== 'object' || typeof t.key !== 'string' || !/^[0-9a-f]{64}$/.test(t.key)) return undefined;
  return { key: t.key, idTtlMs: ttl(t.idTtlMs), failureTtlMs: ttl(t.failureTtlMs) };
}

/** What a claim must carry for its call reply to be signed: the payload (and, for failures, the attempt). */
export interface SignableClaim {
  token: string;
  payload?: string;
  attempt?: number;
}

/**
 * The script arguments that sign one outcome of `claim` — [mac, keep ms] — or ['', 0] when the
 * item is not a call with reply terms (nothing signed, nothing indexed for expiry). `body` is the
 * result JSON ('' = none) or, for a failure, the error JSON.
 */
export function callReplySeal(claim: SignableClaim, outcome: 'result' | 'error', body: string): [mac: string, keepMs: number] {
  const id = claim.token.slice(claim.token.indexOf(':') + 1);
  if (!id.startsWith(CALL_ID_PREFIX) || claim.payload === undefined) return ['', 0];
  const terms = replyTermsOf(claim.payload);
  if (!terms) return ['', 0];
  const key = Buffer.from(terms.key, 'hex');
  if (outcome === 'result') return [macOf(key, 'r', id, body).toString('hex'), terms.idTtlMs];
  // The script records the attempt as the claim's (fencing: a lease lost meanwhile publishes nothing).
  if (claim.attempt === undefined) return ['', terms.failureTtlMs];
  return [macOf(key, 'e', id, `${claim.attempt}\t${body}`).toString('hex'), terms.failureTtlMs];
}
