import { ProgressTracker, formatProgress, formatDuration, type BatchStatus, type Progress } from '../../sdk/index.js';
import { sleep } from '../../sdk/batch.js';
import type { Command, IO } from '../command.js';
import { age, clientFromFlags, EXIT, formatTable, outputFormat, parseDurationMs, parsePositiveInt, printJson, printYaml, requireName, str, truncate, UsageError, type Parsed } from '../common.js';

function stateOf(s: BatchStatus): string {
  if (s.taskBatch?.state) return s.taskBatch.state;
  if (s.counts.complete) return s.counts.failed > 0 ? 'Drained (with failures)' : 'Drained';
  return s.counts.closed ? 'Closed' : 'Open';
}

function statusRow(s: BatchStatus): string[] {
  const c = s.counts;
  return [
    s.name,
    stateOf(s),
    `${c.succeeded + c.failed}/${c.total}`,
    String(c.succeeded),
    String(c.failed),
    String(c.pending),
    String(c.delayed),
    String(c.running),
    String(c.retries),
    s.taskBatch?.workers ?? '-',
    s.taskBatch ? age(s.taskBatch.createdAt) : '-',
  ];
}

function noExtraArgs(p: Parsed, usage: string): void {
  if (p.positionals.length > 1) throw new UsageError(`unexpected argument ${JSON.stringify(p.positionals[1])}\nusage: ${usage}`);
}

const STATUS_USAGE = 'taskbatch status NAME [-o table|json|yaml]';

export const status: Command = {
  name: 'status',
  summary: "Show a batch's state and item counts",
  usage: STATUS_USAGE,
  connection: true,
  flags: { output: { type: 'string', short: 'o' } },
  help: `Shows the batch's state (the TaskBatch's conditions in Kubernetes mode) and its item counts,
read from Redis in O(1). When the batch's Redis cannot be reached, the counts come from the
TaskBatch's status (updated every few seconds by the operator), and a note says so.

  -o, --output FORMAT   table (default), json or yaml (every field, conditions included)

Examples:
  taskbatch status thumbnails -n media
  taskbatch status thumbnails -o json | jq .counts.failed`,
  async run(p: Parsed, io: IO): Promise<number> {
    const name = requireName(p, STATUS_USAGE);
    noExtraArgs(p, STATUS_USAGE);
    const format = outputFormat(p, ['table', 'json', 'yaml'] as const);
    const client = await clientFromFlags(p, io.env);
    try {
      const s = await client.batch(name).status();
      if (format === 'json') printJson(io.stdout, s);
      else if (format === 'yaml') printYaml(io.stdout, s);
      else {
        io.stdout.write(formatTable(['NAME', 'STATUS', 'PROGRESS', 'SUCCEEDED', 'FAILED', 'PENDING', 'DELAYED', 'RUNNING', 'RETRIES', 'WORKERS', 'AGE'], [statusRow(s)]));
        const bad = (s.taskBatch?.conditions ?? []).filter(
          (c) => (c.type === 'Failed' || c.type === 'Degraded' || c.type === 'RedisUnavailable' || c.type === 'QueueStateLost') && c.status === 'True',
        );
        for (const c of bad) io.stdout.write(`${c.type}: ${c.reason}: ${c.message ?? ''}\n`);
        if (s.countsFrom === 'taskbatch') io.stderr.write(`note: counts are from the TaskBatch's status; Redis was not reachable: ${s.redisError}\n`);
      }
      return EXIT.ok;
    } finally {
      await client.close();
    }
  },
};

const WATCH_USAGE = 'taskbatch watch NAME [--interval DURATION] [--timeout DURATION]';

export const watch: Command = {
  name: 'watch',
  summary: 'Follow a batch with a live progress bar (rate, ETA) until it finishes',
  usage: WATCH_USAGE,
  connection: true,
  flags: { interval: { type: 'string' }, timeout: { type: 'string' }, output: { type: 'string', short: 'o' } },
  help: `Follows the batch until it finishes, with a progress bar, the rate over the last 10 s and an
ETA. On a terminal the line is redrawn in place; otherwise one line is printed per interval.

      --interval DURATION   How often to poll (default 1s on a terminal, 5s otherwise)
      --timeout DURATION    Give up after this long (exit code 6); the batch keeps running
  -o, --output FORMAT       text (default) or json: the final status as JSON on stdout

Exit code: 0 when the batch completed (Complete, or drained without failures), 5 when it failed
(Failed, or drained with failed items), 6 on --timeout, 130 on Ctrl-C.

Examples:
  taskbatch watch thumbnails
  taskbatch watch nightly-2030-01-01 --timeout 2h && echo done`,
  async run(p: Parsed, io: IO): Promise<number> {
    const name = requireName(p, WATCH_USAGE);
    noExtraArgs(p, WATCH_USAGE);
    const format = outputFormat(p, ['text', 'json'] as const);
    const tty = io.stdout.isTTY === true && format === 'text';
    const intervalMs = str(p, 'interval') !== undefined ? parseDurationMs(str(p, 'interval')!, '--interval') : tty ? 1000 : 5000;
    if (intervalMs < 50) throw new UsageError('--interval must be at least 50ms');
    const timeoutMs = str(p, 'timeout') !== undefined ? parseDurationMs(str(p, 'timeout')!, '--timeout') : undefined;
    const deadline = timeoutMs !== undefined ? Date.now() + timeoutMs : Infinity;
    const text = format === 'text' ? io.stdout : io.stderr;
    const client = await clientFromFlags(p, io.env);
    try {
      const batch = client.batch(name);
      const tracker = new ProgressTracker();
      let last = '';
      let progress: Progress | undefined;
      let finalStatus: BatchStatus | undefined;
      let outcome: 'ok' | 'failed' | undefined;
      let drainedSince: number | undefined;
      for (;;) {
        const s = await batch.status();
        progress = tracker.update(s.counts);
        const line = formatProgress(progress);
        if (tty) text.write(`\r${line}\u001b[K`);
        else if (line !== last) text.write(`${line}\n`);
        last = line;
        const conds = s.taskBatch?.conditions ?? [];
        const failed = conds.find((c) => c.type === 'Failed' && c.status === 'True');
        const complete = conds.find((c) => c.type === 'Complete' && c.status === 'True');
        if (failed || complete) {
          finalStatus = s;
          outcome = complete ? 'ok' : 'failed';
          break;
        }
        if (s.counts.complete) {
          // Redis mode decides here; in Kubernetes mode the operator's condition follows within
          // a few seconds (it applies the failure policy), unless no operator runs.
          drainedSince ??= Date.now();
          if (!s.taskBatch || Date.now() - drainedSince > 30_000) {
            finalStatus = s;
            outcome = s.counts.failed > 0 ? 'failed' : 'ok';
            break;
          }
        }
        if (Date.now() >= deadline) {
          if (tty) text.write('\n');
          io.stderr.write(`taskbatch: batch ${batch.namespace}/${name} did not finish within ${str(p, 'timeout')} (${progress.done}/${progress.total} done); it keeps running\n`);
          return EXIT.timeout;
        }
        await sleep(Math.min(intervalMs, Math.max(1, deadline - Date.now())), io.signal);
      }
      if (tty) text.write('\n');
      const c = finalStatus.counts;
      const cond = (finalStatus.taskBatch?.conditions ?? []).find((x) => (x.type === 'Complete' || x.type === 'Failed') && x.status === 'True');
      const verdict = cond ? cond.type : outcome === 'ok' ? 'Drained' : 'Drained with failures';
      text.write(
        `Batch ${batch.namespace}/${name} ${verdict}: ${c.succeeded} succeeded, ${c.failed} failed of ${c.total}${cond?.reason ? ` (${cond.reason})` : ''}; watched ${formatDuration(progress.elapsedMs / 1000)}\n`,
      );
      if (outcome === 'failed' && c.failed > 0) text.write(`See the failures: taskbatch failures ${name} -n ${batch.namespace}\n`);
      if (format === 'json') printJson(io.stdout, finalStatus);
      return outcome === 'ok' ? EXIT.ok : EXIT.failed;
    } finally {
      await client.close();
    }
  },
};

const RESULTS_USAGE = 'taskbatch results NAME [-o jsonl|json|yaml|table] [--limit N]';

export const results: Command = {
  name: 'results',
  summary: "Print a batch's stored results (JSON Lines)",
  usage: RESULTS_USAGE,
  connection: true,
  flags: { output: { type: 'string', short: 'o' }, limit: { type: 'string' } },
  help: `Prints the results of succeeded items in completion order, one JSON object per line:
{"id": …, "completedAt": "…", "result": …}. Results are kept for the batch's result TTL (24 h).

  -o, --output FORMAT   jsonl (default), json (one array), yaml, or table
      --limit N         At most N results

Examples:
  taskbatch results thumbnails > results.jsonl
  taskbatch results thumbnails | jq -r 'select(.result.bytes > 1e6) | .id'`,
  async run(p: Parsed, io: IO): Promise<number> {
    const name = requireName(p, RESULTS_USAGE);
    noExtraArgs(p, RESULTS_USAGE);
    const format = outputFormat(p, ['jsonl', 'json', 'yaml', 'table'] as const);
    const limit = parsePositiveInt(str(p, 'limit'), '--limit') ?? Infinity;
    const client = await clientFromFlags(p, io.env);
    try {
      const rows: { id: string; completedAt: string; result: unknown }[] = [];
      let n = 0;
      for await (const r of client.batch(name).results()) {
        if (n++ >= limit) break;
        const row = { id: r.id, completedAt: r.completedAt.toISOString(), result: r.result };
        if (format === 'jsonl') io.stdout.write(`${JSON.stringify(row)}\n`);
        else rows.push(row);
      }
      if (format === 'json') printJson(io.stdout, rows);
      else if (format === 'yaml') printYaml(io.stdout, rows);
      else if (format === 'table')
        io.stdout.write(
          formatTable(
            ['ID', 'COMPLETED', 'RESULT'],
            rows.map((r) => [r.id, age(r.completedAt), truncate(JSON.stringify(r.result) ?? '', 80)]),
          ),
        );
      return EXIT.ok;
    } finally {
      await client.close();
    }
  },
};

const FAILURES_USAGE = 'taskbatch failures NAME [-o jsonl|json|yaml|table] [--limit N]';

export const failures: Command = {
  name: 'failures',
  summary: "Print a batch's dead-lettered items with their last error",
  usage: FAILURES_USAGE,
  connection: true,
  flags: { output: { type: 'string', short: 'o' }, limit: { type: 'string' } },
  help: `Prints the permanently failed (dead-lettered) items, one JSON object per line:
{"id": …, "attempts": n, "failedAt": "…", "error": {"name", "message", "stack"?}, "payload": …}.
Replay them with \`taskbatch replay NAME --all\` once the cause is fixed.

  -o, --output FORMAT   jsonl (default), json, yaml, or table
      --limit N         At most N items

Example:
  taskbatch failures thumbnails -o table`,
  async run(p: Parsed, io: IO): Promise<number> {
    const name = requireName(p, FAILURES_USAGE);
    noExtraArgs(p, FAILURES_USAGE);
    const format = outputFormat(p, ['jsonl', 'json', 'yaml', 'table'] as const);
    const limit = parsePositiveInt(str(p, 'limit'), '--limit') ?? Infinity;
    const client = await clientFromFlags(p, io.env);
    try {
      const rows: { id: string; attempts: number; failedAt: string; error: unknown; payload: unknown }[] = [];
      let n = 0;
      for await (const d of client.batch(name).failures()) {
        if (n++ >= limit) break;
        const row = { id: d.id, attempts: d.attempts, failedAt: d.failedAt.toISOString(), error: d.error, payload: d.payload };
        if (format === 'jsonl') io.stdout.write(`${JSON.stringify(row)}\n`);
        else rows.push(row);
      }
      if (format === 'json') printJson(io.stdout, rows);
      else if (format === 'yaml') printYaml(io.stdout, rows);
      else if (format === 'table') {
        io.stdout.write(
          formatTable(
            ['ID', 'ATTEMPTS', 'FAILED', 'ERROR'],
            rows.map((r) => {
              const e = r.error as { name?: string; message?: string };
              return [r.id, String(r.attempts), age(r.failedAt), truncate(`${e.name ?? 'Error'}: ${e.message ?? ''}`, 100)];
            }),
          ),
        );
      }
      return EXIT.ok;
    } finally {
      await client.close();
    }
  },
};
