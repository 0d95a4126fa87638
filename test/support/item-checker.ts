import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BatchQueue } from '../../queue/index.js';
import type { JournalLine } from '../fixtures/journaled-handler.js';

/**
 * The item checker: after a batch ran under faults, says what happened to every item, from
 * two sources that fail independently:
 *
 * - the execution journal (test/fixtures/journaled-handler.ts): every execution's start and
 *   end, written outside Redis by each worker process, so neither a SIGKILL nor a Redis
 *   rollback erases it;
 * - Redis's final state of the batch: the `succeeded` counter, the results hash (each result
 *   names the execution whose complete() Redis kept), the dead-letter hash, and what is still
 *   pending, delayed or running.
 *
 * "Committed" means: Redis accepted a complete() for the item, i.e. moved it out of `running`,
 * counted it in `succeeded` and stored its result. It is observed in the final state, so a
 * commit that a rollback erased is not a commit (the re-run it causes is classified with cause
 * 'rollback'). An item is committed more than once when the final state counts it twice:
 * `succeeded` exceeds the number of stored results (every result is non-empty, so each accepted
 * complete() writes one; the excess cannot be pinned on an item and is reported as a count), or
 * the item has a result and is also dead-lettered, or has a result and is still queued.
 *
 * Every execution other than the committed one needs a cause the checker can prove from the
 * fault log (what the injector did, and when) and the journal; see RerunCause.
 */

/** Why an execution was not the one that counted. */
export type RerunCause =
  /** It threw: a retry is the protocol working. */
  | 'handlerFailed'
  /** Its worker was SIGKILLed while it ran, or before its acknowledgement could be flushed. */
  | 'killed'
  /** Its worker was SIGSTOPped while it ran (past its lease). */
  | 'stopped'
  /** It overlapped a Redis restart (persistence on; only an unacknowledged reply is at stake). */
  | 'redisRestart'
  /** It was claimed before a rollback and ran or was acknowledged after the snapshot restored. */
  | 'rollback'
  /** Its worker logged that it lost the item's lease (e.g. a stalled event loop). */
  | 'leaseLost'
  /** Its worker exited with an error (not killed by the injector) while it ran. */
  | 'workerExited'
  /** None of the above: a bug (or a fault the injector did not log). */
  | 'unexplained';

export const RERUN_CAUSES: readonly RerunCause[] = ['handlerFailed', 'killed', 'stopped', 'redisRestart', 'rollback', 'leaseLost', 'workerExited', 'unexplained'];

/** What the fault injector did, with times in epoch ms (the same clock as the journal). */
export interface FaultLog {
  kills: { worker: string; pid: number; t: number }[];
  stops: { worker: string; pid: number; from: number; to: number }[];
  /** Redis killed (SIGKILL) and started again from its own persistence. */
  restarts: { from: number; to: number }[];
  /** SAVE sent at snapshotAt; Redis killed at down and started from that RDB at up. */
  rollbacks: { snapshotAt: number; down: number; up: number }[];
  /** Worker processes that ended without being SIGKILLed by the injector (code 0: saw the batch complete). */
  exits: { worker: string; pid: number; t: number; code: number | null; signal: string | null }[];
  /** Worker log lines saying an item's lease was lost ('Lost the lease…', 'Discarded results…'). */
  leaseLost: { worker: string; item: string; attempt?: number }[];
}

export function emptyFaultLog(): FaultLog {
  return { kills: [], stops: [], restarts: [], rollbacks: [], exits: [], leaseLost: [] };
}

export interface Execution {
  x: string;
  id: string;
  attempt: number;
  worker: string;
  pid: number;
  start: number;
  end?: number;
  outcome?: 'ok' | 'error' | 'aborted';
}

export interface ItemCheckReport {
  items: number;
  executions: number;
  /** Committed, exactly one execution. */
  succeededOnce: number;
  /** Committed, more than one execution. */
  ranMoreThanOnce: number;
  /** Items per cause (an item re-run for two causes counts under both). */
  rerunsByCause: Record<RerunCause, number>;
  /** Items with an execution no fault explains (first 20 as "id: execution"). */
  unexplained: string[];
  /** Commits counted twice: the total and what shows it. */
  committedTwice: number;
  committedTwiceDetail: string[];
  /** Committed by an execution the journal does not show ending 'ok' (first 20). */
  phantomCommits: string[];
  /**
   * Committed by an execution that was still running when another execution of the item had
   * started (so its lease had lapsed and been reclaimed: fencing should have rejected it), with
   * no rollback in between (first 20).
   */
  staleCommits: string[];
  /**
   * The same, across a rollback: informational. A rollback restores the lease of an item that was
   * running at the snapshot, and also the token counter, so a holder from before the rollback can
   * legitimately commit (or share a re-issued token with the new holder).
   */
  staleCommitsAcrossRollback: number;
  deadLettered: number;
  /** Neither committed, nor dead-lettered, nor queued (first 20 ids; `lostCount` is the total). */
  lost: string[];
  lostCount: number;
  /** Still pending, delayed or running at the end (the run did not finish). */
  unfinished: number;
  counters: { total: number; succeeded: number; failed: number; results: number };
  elapsedMs: number;
}

/** Slack for an acknowledgement in flight: batched for <= 5 ms, plus a loaded machine's delays. */
const ACK_WINDOW_MS = 2000;

/** Reads every *.jsonl file in the journal directory into executions (a torn last line is skipped). */
export function readJournal(dir: string): Map<string, Execution[]> {
  const byExec = new Map<string, Execution>();
  for (const file of readdirSync(dir)) {
    if (!file.endsWith('.jsonl')) continue;
    for (const text of readFileSync(join(dir, file), 'utf8').split('\n')) {
      if (!text) continue;
      let line: JournalLine;
      try {
        line = JSON.parse(text) as JournalLine;
      } catch {
        continue;
      }
      let e = byExec.get(line.x);
      if (!e) {
        e = { x: line.x, id: line.id, attempt: line.attempt, worker: line.worker, pid: line.pid, start: line.t };
        byExec.set(line.x, e);
      }
      if (line.ev === 'start') e.start = line.t;
      else {
        e.end = line.t;
        if (line.outcome) e.outcome = line.outcome;
      }
    }
  }
  const byItem = new Map<string, Execution[]>();
  for (const e of byExec.values()) {
    const list = byItem.get(e.id) ?? [];
    list.push(e);
    byItem.set(e.id, list);
  }
  for (const list of byItem.values()) list.sort((a, b) => a.start - b.start);
  return byItem;
}

/** When the execution stopped: its end line, else when its process was killed or exited, else never. */
function effectiveEnd(e: Execution, faults: FaultLog): number {
  if (e.end !== undefined) return e.end;
  const deaths = [...faults.kills, ...faults.exits].filter((d) => d.worker === e.worker && d.t >= e.start).map((d) => d.t);
  return deaths.length > 0 ? Math.min(...deaths) : Number.POSITIVE_INFINITY;
}

/** The proven causes why execution `e` was not the one that counted (['unexplained'] if none). */
export function causesOf(e: Execution, faults: FaultLog, next?: Execution): RerunCause[] {
  const causes: RerunCause[] = [];
  const end = effectiveEnd(e, faults);
  // Redis counted an attempt between this execution and the next although this one did not
  // throw: its lease expired and was reclaimed.
  const reclaimed = e.outcome !== 'error' && next !== undefined && next.attempt > e.attempt;
  if (e.outcome === 'error') causes.push('handlerFailed');
  // Killed while running, or after it returned but before its acknowledgement was surely flushed.
  if (faults.kills.some((k) => k.worker === e.worker && k.t >= e.start && (e.end === undefined || (e.outcome === 'ok' && k.t - e.end <= ACK_WINDOW_MS)))) causes.push('killed');
  // Ran across the stop; or, prefetched before it, started just after SIGCONT (before the
  // worker's next renewal could tell it the lease was gone) and its lease was reclaimed.
  if (faults.stops.some((s) => s.worker === e.worker && end + ACK_WINDOW_MS > s.from && (e.start < s.to || (reclaimed && e.start < s.to + ACK_WINDOW_MS)))) causes.push('stopped');
  if (faults.restarts.some((r) => end + ACK_WINDOW_MS > r.from && (e.start < r.to || (reclaimed && e.start < r.to + ACK_WINDOW_MS)))) causes.push('redisRestart');
  // Claimed before Redis went down (nothing can be claimed while it is down; a prefetched item
  // may start then), and running or unacknowledged after the snapshot was taken.
  if (faults.rollbacks.some((r) => e.start <= r.up && end + ACK_WINDOW_MS > r.snapshotAt)) causes.push('rollback');
  if (faults.leaseLost.some((l) => l.worker === e.worker && l.item === e.id && (l.attempt === undefined || l.attempt === e.attempt))) causes.push('leaseLost');
  if (faults.exits.some((x) => x.code !== 0 && x.worker === e.worker && x.t >= e.start && (e.end === undefined || x.t - e.end <= ACK_WINDOW_MS))) causes.push('workerExited');
  return causes.length > 0 ? causes : ['unexplained'];
}

/** Everything Redis holds about the batch's items at the end, read without any script. */
async function finalState(queue: BatchQueue): Promise<{
  results: Map<string, string>;
  dead: Set<string>;
  queued: Set<string>;
  counters: { total: number; succeeded: number; failed: number };
}> {
  const r = queue.redis;
  const k = queue.keys;
  const [resultsFlat, deadIds, pending, delayed, running, meta] = await Promise.all([
    r.hgetall(k.results),
    r.hkeys(k.dead),
    r.lrange(k.pending, 0, -1),
    r.zrange(k.delayed, 0, -1),
    r.zrange(k.running, 0, -1),
    r.hmget(k.meta, 'total', 'succeeded', 'failed'),
  ]);
  const results = new Map<string, string>();
  for (const [id, json] of Object.entries(resultsFlat)) {
    let x = '';
    try {
      x = String((JSON.parse(json) as { x?: unknown })?.x ?? '');
    } catch {
      /* not a journaled result: x stays '' and shows as a phantom commit */
    }
    results.set(id, x);
  }
  const queued = new Set<string>([...pending, ...delayed, ...running.map((m) => m.slice(m.indexOf(':') + 1))]);
  return { results, dead: new Set(deadIds), queued, counters: { total: Number(meta[0] ?? 0), succeeded: Number(meta[1] ?? 0), failed: Number(meta[2] ?? 0) } };
}

export interface CheckInput {
  queue: BatchQueue;
  /** Every item id the batch was given (the run's ids 0..N-1). */
  itemIds: readonly string[];
  journalDir: string;
  faults: FaultLog;
  elapsedMs: number;
}

/** Classifies every item; see the module comment for what each class means. */
export async function checkItems(input: CheckInput): Promise<ItemCheckReport> {
  const journal = readJournal(input.journalDir);
  const state = await finalState(input.queue);
  const report: ItemCheckReport = {
    items: input.itemIds.length,
    executions: 0,
    succeededOnce: 0,
    ranMoreThanOnce: 0,
    rerunsByCause: Object.fromEntries(RERUN_CAUSES.map((c) => [c, 0])) as Record<RerunCause, number>,
    unexplained: [],
    committedTwice: 0,
    committedTwiceDetail: [],
    phantomCommits: [],
    staleCommits: [],
    staleCommitsAcrossRollback: 0,
    deadLettered: 0,
    lost: [],
    lostCount: 0,
    unfinished: 0,
    counters: { ...state.counters, results: state.results.size },
    elapsedMs: input.elapsedMs,
  };
  const twice = (why: string): void => {
    report.committedTwice++;
    if (report.committedTwiceDetail.length < 20) report.committedTwiceDetail.push(why);
  };
  const excess = state.counters.succeeded - state.results.size;
  if (excess > 0) {
    report.committedTwice += excess - 1;
    twice(`succeeded counter is ${state.counters.succeeded} but only ${state.results.size} results are stored: ${excess} complete() calls were counted for items already committed`);
  }
  for (const id of input.itemIds) {
    const execs = journal.get(id) ?? [];
    report.executions += execs.length;
    const committedX = state.results.get(id);
    const committed = committedX !== undefined;
    const dead = state.dead.has(id);
    const queued = state.queued.has(id);
    if (committed && dead) twice(`${id} has a result (execution ${committedX}) and is also dead-lettered`);
    if (committed && queued) twice(`${id} has a result (execution ${committedX}) and is still queued to run again`);
    if (!committed && !dead && !queued) {
      report.lostCount++;
      if (report.lost.length < 20) report.lost.push(id);
      continue;
    }
    if (queued && !committed) {
      report.unfinished++;
      continue;
    }
    if (committed) {
      const c = execs.find((e) => e.x === committedX);
      if (c?.outcome === 'ok') {
        const cEnd = c.end as number;
        const overtaken = execs.find((e) => e !== c && e.start > c.start && e.start < cEnd);
        if (overtaken) {
          if (input.faults.rollbacks.some((r) => r.down > c.start && r.up < cEnd + ACK_WINDOW_MS)) report.staleCommitsAcrossRollback++;
          else if (report.staleCommits.length < 20) report.staleCommits.push(`${id}: committed execution ${c.x} (${c.start}..${cEnd}) ran on after ${overtaken.x} started at ${overtaken.start}`);
        }
      } else if (report.phantomCommits.length < 20) {
        report.phantomCommits.push(`${id}: result names execution ${JSON.stringify(committedX)}, ${c ? `which ended ${c.outcome ?? 'never'}` : 'which the journal does not hold'}`);
      }
    } else report.deadLettered++;
    // Every execution but the committed one needs a cause.
    const others = execs.filter((e) => e.x !== committedX);
    const causes = new Set<RerunCause>();
    for (const e of others) {
      for (const cause of causesOf(e, input.faults, execs[execs.indexOf(e) + 1])) {
        causes.add(cause);
        if (cause === 'unexplained' && report.unexplained.length < 20)
          report.unexplained.push(`${id}: execution ${e.x} (attempt ${e.attempt}, pid ${e.pid}, ${e.start}..${e.end ?? 'no end'} ${e.outcome ?? ''})`);
      }
    }
    if (committed) {
      if (execs.length > 1) report.ranMoreThanOnce++;
      else report.succeededOnce++;
    }
    for (const cause of causes) report.rerunsByCause[cause]++;
  }
  return report;
}

/** The report as a table (Markdown), for logs and bench/soak.md. */
export function formatReport(r: ItemCheckReport): string {
  const rows: [string, string | number][] = [
    ['items', r.items],
    ['executions', r.executions],
    ['ran once (committed)', r.succeededOnce],
    ['ran twice+ (committed)', r.ranMoreThanOnce],
    ...RERUN_CAUSES.filter((c) => r.rerunsByCause[c] > 0 || c === 'unexplained').map((c): [string, number] => [`  items with a re-run, cause ${c}`, r.rerunsByCause[c]]),
    ['committed twice', r.committedTwice],
    ['phantom commits', r.phantomCommits.length],
    ['stale commits (fencing failed)', r.staleCommits.length],
    ['stale commits across a rollback (allowed)', r.staleCommitsAcrossRollback],
    ['dead-lettered', r.deadLettered],
    ['lost', r.lostCount],
    ['unfinished', r.unfinished],
    ['Redis total / succeeded / failed / results', `${r.counters.total} / ${r.counters.succeeded} / ${r.counters.failed} / ${r.counters.results}`],
    ['elapsed', `${(r.elapsedMs / 1000).toFixed(1)} s`],
  ];
  const lines = ['| | |', '|---|---:|', ...rows.map(([k, v]) => `| ${k} | ${v} |`)];
  for (const [title, list] of [
    ['committed twice', r.committedTwiceDetail],
    ['unexplained re-runs', r.unexplained],
    ['phantom commits', r.phantomCommits],
    ['stale commits', r.staleCommits],
    ['lost', r.lost],
  ] as const) {
    if (list.length > 0) lines.push('', `${title}:`, ...list.map((l) => `- ${l}`));
  }
  return lines.join('\n');
}
