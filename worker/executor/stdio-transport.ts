import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { LogLevel } from '../handler/api.js';
import { toErrorInfo, type ErrorInfo, type InvokeResult } from '../handler/invoke.js';
import { boundLogFields, boundLogMessage, LogBudget } from '../handler/log-budget.js';
import { limitResult } from '../handler/result-limit.js';
import type { StdioSpec } from '../handler/spec.js';
import { endGroup, signalGroup, trackGroup } from './process-group.js';
import type { ExecutorInit, FromExecutor, ToExecutor, WireTask } from './protocol.js';
import { STDERR_TAIL, type SpawnOptions, type Transport } from './transport.js';

// A handler in any language (docs/handler-protocol.md): one long-lived process per pool slot,
// newline-delimited JSON frames on its stdin/stdout. This transport plays the part that
// runner.ts plays inside a Node executor: it keeps the slot's FIFO, hands the process one item
// at a time, and turns its frames into the pool's messages, so RemotePool's timeouts, crash
// isolation, recycling and draining apply unchanged.

/** Version of the frames this worker speaks (the "protocol" field of item and ready frames). */
const STDIO_PROTOCOL_VERSION = 1;
/** Longest frame accepted from a handler; anything longer is a protocol error. */
const MAX_LINE_BYTES = 64 * 1024 * 1024;
/** Longest stderr line kept whole; longer ones are logged in pieces. */
const MAX_STDERR_LINE = 16 * 1024;
/** How much of an offending frame a ProtocolError quotes. */
const QUOTE_BYTES = 200;
const PROGRESS_MIN_INTERVAL_MS = 50;
const LOG_LEVELS: readonly LogLevel[] = ['debug', 'info', 'warn', 'error'];

interface Running {
  task: WireTask;
  logs: LogBudget;
  t0: number;
}

export function spawnStdio(spec: StdioSpec, init: ExecutorInit, options: SpawnOptions): Transport {
  const [program, ...args] = spec.command as [string, ...string[]];
  const child = spawn(program, args, {
    ...(spec.cwd ? { cwd: spec.cwd } : {}),
    env: { ...process.env, ...spec.env },
    stdio: ['pipe', 'pipe', 'pipe'],
    // Its own process group, as in process mode, so a kill takes what the handler started.
    detached: true,
  });
  const pid = child.pid;
  if (pid !== undefined) trackGroup(pid);
  const graceMs = options.killGraceMs ?? 1000;

  const fifo: WireTask[] = [];
  let current: Running | undefined;
  let ready = false;
  let stopping = false;
  let inputEnded = false;
  let broken = false;
  let fatal: ErrorInfo | undefined;
  let tail = '';
  let progressAt = 0;
  let progressPending: { seq: number; value: number } | undefined;

  const emit = (m: FromExecutor): void => t.onMessage(m);

  const endInput = (): void => {
    if (inputEnded) return;
    inputEnded = true;
    child.stdin.end();
  };

  const memory = (): number | undefined => {
    // After every item (one read of /proc, some 20 µs): cheap next to a round trip over the pipes.
    if (init.memory !== 'rss' || pid === undefined) return undefined;
    try {
      const kb = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
      return kb === undefined ? undefined : Number(kb) / 1024;
    } catch {
      return undefined; // no /proc (not Linux) or the process is gone
    }
  };

  const pump = (): void => {
    if (!ready || current || broken) return;
    const task = fifo.shift();
    if (!task) {
      if (stopping) endInput();
      return;
    }
    current = { task, logs: new LogBudget(init.logRate), t0: performance.now() };
    // The payload is already JSON: spliced in as is unless it spans lines (a frame is one line).
    let payload = task.payload;
    if (/[\r\n]/.test(payload)) {
      try {
        payload = JSON.stringify(JSON.parse(payload));
      } catch (err) {
        finish({ ok: false, error: { name: 'InvalidPayload', message: `item ${JSON.stringify(task.id)}: its payload is not JSON (${(err as Error).message})` }, retryable: false, ms: 0 });
        return;
      }
    }
    const timeout = task.timeoutMs === undefined ? '' : `,"timeoutMs":${task.timeoutMs}`;
    child.stdin.write(`{"type":"item","protocol":${STDIO_PROTOCOL_VERSION},"id":${JSON.stringify(task.id)},"attempt":${task.attempt}${timeout},"payload":${payload}}\n`);
  };

  const finish = (outcome: InvokeResult): void => {
    const run = current as Running;
    current = undefined;
    const seq = run.task.seq;
    if (progressPending?.seq === seq) emit({ t: 'progress', seq, value: progressPending.value });
    progressPending = undefined;
    const result = limitResult(outcome, run.task.id, init.maxResultBytes, 'stdio executor');
    const memMiB = memory();
    // The next item first: the handler works on it while the pool handles this result.
    pump();
    emit({ t: 'done', seq, result, ...(memMiB === undefined ? {} : { memMiB }), ...(run.logs.dropped > 0 ? { logsDropped: run.logs.dropped } : {}) });
  };

  /** The handler broke the protocol: fail the running item (or the start), then kill the process. */
  const protocolError = (what: string, line: string): void => {
    if (broken) return;
    broken = true;
    const quote = Buffer.from(line).subarray(0, QUOTE_BYTES).toString();
    const error: ErrorInfo = {
      name: 'ProtocolError',
      message: `stdio handler ${JSON.stringify(spec.command)} ${what}: ${JSON.stringify(quote)}${Buffer.byteLength(line) > QUOTE_BYTES ? ' (cut)' : ''}. Its stdout may carry only protocol frames, one JSON object per line (docs/handler-protocol.md); write anything else to stderr`,
    };
    fatal = error;
    // 'fatal' first: the pool sends this slot nothing more. Items pipelined behind the running
    // one never started: they go back to the pool's queue, not down with this process.
    emit({ t: 'fatal', error });
    if (!ready) emit({ t: 'startFailed', error });
    if (fifo.length > 0) emit({ t: 'cancelled', seqs: fifo.splice(0).map((x) => x.seq) });
    if (current) {
      const run = current;
      current = undefined;
      emit({ t: 'done', seq: run.task.seq, result: { ok: false, error, retryable: true, ms: performance.now() - run.t0 } });
    }
    t.kill();
  };

  const onFrame = (line: string): void => {
    if (broken) return;
    let frame: unknown;
    try {
      frame = JSON.parse(line);
    } catch {
      return protocolError('wrote a line that is not JSON', line);
    }
    if (!frame || typeof frame !== 'object' || Array.isArray(frame)) return protocolError('wrote a frame that is not a JSON object', line);
    const f = frame as Record<string, unknown>;
    if (f.type === 'heartbeat') return;
    if (f.type === 'ready') {
      if (ready) return protocolError('sent "ready" twice', line);
      if (f.protocol !== STDIO_PROTOCOL_VERSION) return protocolError(`speaks protocol ${JSON.stringify(f.protocol)}; this worker speaks ${STDIO_PROTOCOL_VERSION}`, line);
      ready = true;
      emit({ t: 'ready' });
      pump();
      return;
    }
    if (f.type !== 'result' && f.type !== 'error' && f.type !== 'log' && f.type !== 'progress') return protocolError(`wrote a frame of unknown type ${JSON.stringify(f.type)}`, line);
    if (!current || f.id !== current.task.id)
      return protocolError(`wrote a "${f.type}" frame for item ${JSON.stringify(f.id)}, which is not running${current ? ` (${JSON.stringify(current.task.id)} is)` : ''}`, line);
    const run = current;
    const seq = run.task.seq;
    switch (f.type) {
      case 'result': {
        const ms = performance.now() - run.t0;
        finish({ ok: true, json: f.result === undefined ? undefined : JSON.stringify(f.result), ms });
        return;
      }
      case 'error': {
        const e = f.error;
        if (!e || typeof e !== 'object' || typeof (e as ErrorInfo).name !== 'string' || typeof (e as ErrorInfo).message !== 'string') {
          return protocolError('wrote an "error" frame without error.name and error.message strings', line);
        }
        const retryable = (e as { retryable?: unknown }).retryable !== false;
        finish({ ok: false, error: toErrorInfo(e), retryable, ms: performance.now() - run.t0 });
        return;
      }
      case 'log': {
        if (!LOG_LEVELS.includes(f.level as LogLevel)) return protocolError(`wrote a "log" frame with level ${JSON.stringify(f.level)}; expected one of ${LOG_LEVELS.join(', ')}`, line);
        if (!run.logs.take()) return;
        const message = boundLogMessage(typeof f.message === 'string' ? f.message : String(f.message));
        const fields = f.fields && typeof f.fields === 'object' && !Array.isArray(f.fields) ? boundLogFields(f.fields as Record<string, unknown>, false) : undefined;
        emit(fields === undefined ? { t: 'log', seq, level: f.level as LogLevel, message } : { t: 'log', seq, level: f.level as LogLevel, message, fields });
        return;
      }
      case 'progress': {
        if (typeof f.value !== 'number' || !Number.isFinite(f.value)) return protocolError('wrote a "progress" frame whose value is not a number', line);
        const now = Date.now();
        if (now - progressAt >= PROGRESS_MIN_INTERVAL_MS) {
          progressAt = now;
          progressPending = undefined;
          emit({ t: 'progress', seq, value: f.value });
        } else progressPending = { seq, value: f.value };
        return;
      }
    }
  };

  // stdout: frames, split on "\n" as bytes (a chunk may end inside a UTF-8 sequence).
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  child.stdout.on('data', (chunk: Buffer) => {
    if (broken) return;
    let start = 0;
    for (let nl = chunk.indexOf(10); nl >= 0; nl = chunk.indexOf(10, start)) {
      const piece = chunk.subarray(start, nl);
      const line = pendingBytes > 0 ? Buffer.concat([...pending, piece]).toString() : piece.toString();
      pending = [];
      pendingBytes = 0;
      start = nl + 1;
      if (line.trim() !== '') onFrame(line);
      if (broken) return;
    }
    if (start < chunk.length) {
      pending.push(chunk.subarray(start));
      pendingBytes += chunk.length - start;
      if (pendingBytes > MAX_LINE_BYTES) protocolError(`wrote a line longer than ${MAX_LINE_BYTES} bytes`, Buffer.concat(pending).subarray(0, QUOTE_BYTES).toString());
    }
  });

  // stderr: free text, one handler log line (warn) per line for the running item.
  let errLine = '';
  const stderrLine = (text: string): void => {
    if (current && !broken) {
      if (current.logs.take()) emit({ t: 'log', seq: current.task.seq, level: 'warn', message: boundLogMessage(text) });
    } else process.stderr.write(`${text}\n`);
  };
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (text: string) => {
    tail = (tail + text).slice(-STDERR_TAIL);
    const lines = (errLine + text).split('\n');
    errLine = lines.pop() ?? '';
    for (const l of lines) stderrLine(l);
    if (errLine.length > MAX_STDERR_LINE) {
      stderrLine(errLine);
      errLine = '';
    }
  });

  child.stdin.on('error', () => undefined); // EPIPE once the handler has exited: reported by 'exit'

  const t: Transport = {
    kind: 'stdio',
    label: `stdio process ${pid ?? '?'}`,
    send: (m: ToExecutor) => {
      switch (m.t) {
        case 'run':
          for (const task of m.tasks) fifo.push(task);
          pump();
          return;
        case 'abort': {
          if (current?.task.seq === m.seq) {
            if (!inputEnded) child.stdin.write(`${JSON.stringify({ type: 'cancel', id: current.task.id, reason: { name: m.reason.name, message: m.reason.message } })}\n`);
            return;
          }
          const i = fifo.findIndex((x) => x.seq === m.seq);
          if (i >= 0) {
            fifo.splice(i, 1);
            emit({ t: 'cancelled', seqs: [m.seq] });
          }
          return;
        }
        case 'cancel': {
          const removed: number[] = [];
          for (const seq of m.seqs) {
            const i = fifo.findIndex((x) => x.seq === seq);
            if (i >= 0) {
              fifo.splice(i, 1);
              removed.push(seq);
            }
          }
          emit({ t: 'cancelled', seqs: removed });
          return;
        }
        case 'stop':
          stopping = true;
          if (!current && fifo.length === 0) endInput();
          return;
      }
    },
    kill: () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      if (pid !== undefined) signalGroup(pid, 'SIGTERM');
    },
    onMessage: () => undefined,
    onExit: () => undefined,
  };

  // 'exit' may come before the last frames on stdout: report once stdout and stderr have
  // closed ('close'), or 500 ms after 'exit' should a process the handler started hold them.
  let exited: { code: number | null; signal: string | null } | undefined;
  let reported = false;
  let timer: NodeJS.Timeout | undefined;
  const report = (): void => {
    if (reported || !exited) return;
    reported = true;
    clearTimeout(timer);
    if (errLine) stderrLine(errLine);
    t.onExit({ code: exited.code, signal: exited.signal, oom: false, ...(fatal ? { error: fatal } : {}), ...(tail ? { stderrTail: tail } : {}) });
  };
  child.on('error', (err) => {
    // The command could not be started (ENOENT, EACCES): no 'exit' follows.
    if (pid !== undefined || exited) return;
    const error: ErrorInfo = {
      name: 'HandlerStartFailed',
      message: `cannot run ${JSON.stringify(program)}: ${err.message}. Check that command[0] is installed and on PATH, or give its absolute path`,
    };
    fatal = error;
    emit({ t: 'startFailed', error });
    exited = { code: null, signal: null };
    setImmediate(report);
  });
  child.on('exit', (code, signal) => {
    exited = { code, signal };
    if (pid !== undefined) void endGroup(pid, graceMs);
    timer = setTimeout(report, 500);
  });
  child.on('close', () => {
    if (exited) report();
  });
  return t;
}
