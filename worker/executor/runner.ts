import { getHeapStatistics } from 'node:v8';
import type { Handler, LogLevel } from '../handler/api.js';
import { invoke, ItemContext, toErrorInfo, type InvokeResult } from '../handler/invoke.js';
import { loadHandler } from '../handler/load.js';
import { boundLogFields, boundLogMessage, LogBudget } from '../handler/log-budget.js';
import { limitResult } from '../handler/result-limit.js';
import type { ExecutorInit, FromExecutor, ToExecutor, WireTask } from './protocol.js';

/** How a thread or child process talks to its pool. */
export interface ExecutorChannel {
  send(message: FromExecutor): void;
  onMessage(listener: (message: ToExecutor) => void): void;
  /** Ends this executor after pending messages are flushed. */
  exit(code: number): void;
}

const MEMORY_CHECK_MS = 100;
const PROGRESS_MIN_INTERVAL_MS = 50;

/**
 * The loop inside one thread or child process: loads the handler, then runs items from a
 * local FIFO one at a time, replying with one message per item (so the pool always knows
 * which item is running, for timeouts and crash attribution).
 */
export async function runExecutor(init: ExecutorInit, channel: ExecutorChannel): Promise<void> {
  let handler: Handler;
  try {
    handler = await loadHandler(init.handler);
  } catch (err) {
    channel.send({ t: 'startFailed', error: toErrorInfo(err) });
    channel.exit(1);
    return;
  }

  const queue: WireTask[] = [];
  let current: { seq: number; ctx: ItemContext; logs: LogBudget } | undefined;
  let stopping = false;
  let lastMemCheck = 0;
  let progressAt = 0;
  let progressPending: { seq: number; value: number } | undefined;

  const memory = (): number | undefined => {
    if (init.memory === 'none') return undefined;
    const now = Date.now();
    if (now - lastMemCheck < MEMORY_CHECK_MS) return undefined;
    lastMemCheck = now;
    const bytes = init.memory === 'rss' ? process.memoryUsage.rss() : getHeapStatistics().used_heap_size;
    return bytes / 1048576;
  };

  const finish = (task: WireTask, logs: LogBudget, outcome: InvokeResult): void => {
    current = undefined;
    if (progressPending?.seq === task.seq) channel.send({ t: 'progress', seq: task.seq, value: progressPending.value });
    progressPending = undefined;
    // Here, not in the pool: an oversized result must not be copied to the main thread at all.
    const result = limitResult(outcome, task.id, init.maxResultBytes, `${init.kind} executor`);
    const memMiB = memory();
    channel.send({
      t: 'done',
      seq: task.seq,
      result,
      ...(memMiB === undefined ? {} : { memMiB }),
      ...(logs.dropped > 0 ? { logsDropped: logs.dropped } : {}),
    });
  };

  const pump = (): void => {
    while (!current && queue.length > 0) {
      const task = queue.shift() as WireTask;
      const seq = task.seq;
      const logs = new LogBudget(init.logRate);
      const ctx = new ItemContext(task.id, task.attempt, {
        progress: (value) => {
          const now = Date.now();
          if (now - progressAt >= PROGRESS_MIN_INTERVAL_MS) {
            progressAt = now;
            progressPending = undefined;
            channel.send({ t: 'progress', seq, value });
          } else progressPending = { seq, value };
        },
        log: (level: LogLevel, message, fields) => {
          if (!logs.take()) return;
          const text = boundLogMessage(String(message));
          channel.send(fields === undefined ? { t: 'log', seq, level, message: text } : { t: 'log', seq, level, message: text, fields: boundLogFields(fields, true) });
        },
      });
      current = { seq, ctx, logs };
      const r = invoke(handler, task, ctx);
      if (r instanceof Promise) {
        void r.then((result) => {
          finish(task, logs, result);
          pump();
        });
        return;
      }
      finish(task, logs, r);
    }
    if (!current && stopping) channel.exit(0);
  };

  channel.onMessage((m) => {
    switch (m.t) {
      case 'run':
        for (const task of m.tasks) queue.push(task);
        pump();
        break;
      case 'abort': {
        if (current?.seq === m.seq) {
          const e = new Error(m.reason.message);
          e.name = m.reason.name;
          current.ctx.abort(e);
        } else {
          const i = queue.findIndex((t) => t.seq === m.seq);
          if (i >= 0) {
            queue.splice(i, 1);
            channel.send({ t: 'cancelled', seqs: [m.seq] });
          }
        }
        break;
      }
      case 'cancel': {
        const removed: number[] = [];
        for (const seq of m.seqs) {
          const i = queue.findIndex((t) => t.seq === seq);
          if (i >= 0) {
            queue.splice(i, 1);
            removed.push(seq);
          }
        }
        channel.send({ t: 'cancelled', seqs: removed });
        break;
      }
      case 'stop':
        stopping = true;
        if (!current && queue.length === 0) channel.exit(0);
        break;
    }
  });
  channel.send({ t: 'ready' });
}
