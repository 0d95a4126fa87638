import { InvalidArgumentError } from './errors.js';

/** Bumped on any incompatible change of the key layout or the scripts' contracts. */
// 2: the started hash (only started items are charged for a lapsed lease), signed call replies,
// the state-change count and byte-bounded claims.
// 3: wake-ups: every writer that makes items claimable pushes tokens on the wake list, on which
// idle workers block (a version-2 writer would leave them asleep).
export const PROTOCOL_VERSION = '3';

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export interface BatchRef {
  namespace: string;
  name: string;
}

export function batchId(ref: BatchRef): string {
  return `${ref.namespace}/${ref.name}`;
}

/** Validates a batch reference the way Kubernetes validates a namespaced object's name. */
export function validateBatchRef(ref: BatchRef): void {
  if (typeof ref.namespace !== 'string' || ref.namespace.length > 63 || !DNS_LABEL.test(ref.namespace)) {
    throw new InvalidArgumentError(`namespace ${JSON.stringify(ref.namespace)} is invalid: use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit`);
  }
  if (typeof ref.name !== 'string' || ref.name.length > 253 || !DNS_SUBDOMAIN.test(ref.name)) {
    throw new InvalidArgumentError(`batch name ${JSON.stringify(ref.name)} is invalid: use at most 253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit`);
  }
}

/**
 * Every key of one batch shares the hash tag {namespace/name}, so all of them live in one
 * Redis Cluster slot and every script can touch them atomically.
 */
export interface BatchKeys {
  meta: string; // hash: protocol version, epoch, config, counters
  pending: string; // list of ids ready to run
  delayed: string; // zset id -> due time (ms)
  running: string; // zset "<token>:<id>" -> lease expiry (ms)
  items: string; // hash id -> payload JSON, freed on success
  att: string; // hash id -> failed attempts so far
  seen: string; // set of caller-given ids ever enqueued (idempotence)
  dead: string; // hash id -> {attempts, failedAt, error}
  errors: string; // hash id -> last error of an item that will be retried
  results: string; // hash id -> result JSON
  resultsIdx: string; // zset id -> completion time, for TTL trimming and listing
  workers: string; // hash worker id -> presence JSON
  drain: string; // set of worker ids asked to drain
  started: string; // hash id -> lease member under which its handler started (a prefetched item has none)
  calls: string; // zset call id -> when what the finished call left behind expires (ms); see call-replies.ts
  wake: string; // list of wake-up tokens idle workers block on (see tb_wake in queue/lua/_prelude.lua)
}

export function batchKeys(ref: BatchRef, prefix = 'tb'): BatchKeys {
  const base = `${prefix}:{${ref.namespace}/${ref.name}}:`;
  return {
    meta: `${base}meta`,
    pending: `${base}pending`,
    delayed: `${base}delayed`,
    running: `${base}running`,
    items: `${base}items`,
    att: `${base}att`,
    seen: `${base}seen`,
    dead: `${base}dead`,
    errors: `${base}errors`,
    results: `${base}results`,
    resultsIdx: `${base}results-idx`,
    workers: `${base}workers`,
    drain: `${base}drain`,
    started: `${base}started`,
    calls: `${base}calls`,
    wake: `${base}wake`,
  };
}

/** One worker's own wake list: pushed to stop it at once while it is blocked (wake-worker.lua). */
export function workerWakeKey(keys: BatchKeys, workerId: string): string {
  return `${keys.wake}:${workerId}`;
}

export function allKeys(keys: BatchKeys): string[] {
  return Object.values(keys);
}
