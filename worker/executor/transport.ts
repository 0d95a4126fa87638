import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { toErrorInfo, type ErrorInfo } from '../handler/invoke.js';
import { endGroup, signalGroup, trackGroup } from './process-group.js';
import type { ExecutorInit, FromExecutor, ToExecutor } from './protocol.js';

/** How one executor ended. */
export interface ExitInfo {
  code: number | null;
  signal: string | null;
  /** The thread's error event, or the child's last 'fatal' message (stdio: the protocol error). */
  error?: ErrorInfo;
  /** The executor ran out of memory (V8 heap limit). */
  oom: boolean;
  /** Last lines of a child's stderr. */
  stderrTail?: string;
}

/** One thread or child process, as the pool sees it. */
export interface Transport {
  readonly kind: 'thread' | 'process' | 'stdio';
  /** "thread 7" / "process 12345", for logs. */
  readonly label: string;
  send(message: ToExecutor): void;
  /** Hard stop: terminate the thread / SIGKILL the process (and SIGTERM, then SIGKILL, its process group). */
  kill(): void;
  onMessage: (message: FromExecutor) => void;
  /** Called once, after every message the executor sent has been delivered. */
  onExit: (info: ExitInfo) => void;
}

export interface SpawnOptions {
  /** V8 heap cap (0 = Node's default). */
  heapLimitMiB: number;
  /** Process mode: how long the processes a handler left behind get between SIGTERM and SIGKILL. */
  killGraceMs?: number;
}

export const STDERR_TAIL = 4096;

export function spawnThread(init: ExecutorInit, options: SpawnOptions): Transport {
  const worker = new Worker(new URL('./thread-entry.js', import.meta.url), {
    workerData: init,
    ...(options.heapLimitMiB > 0 ? { resourceLimits: { maxOldGenerationSizeMb: options.heapLimitMiB } } : {}),
  });
  let lastError: (Error & { code?: string }) | undefined;
  const t: Transport = {
    kind: 'thread',
    label: `thread ${worker.threadId}`,
    send: (m) => worker.postMessage(m),
    kill: () => void worker.terminate(),
    onMessage: () => undefined,
    onExit: () => undefined,
  };
  worker.on('message', (m: FromExecutor) => t.onMessage(m));
  worker.on('error', (err: Error & { code?: string }) => {
    lastError = err;
  });
  worker.on('exit', (code) => {
    t.onExit({
      code,
      signal: null,
      oom: lastError?.code === 'ERR_WORKER_OUT_OF_MEMORY',
      ...(lastError ? { error: toErrorInfo(lastError) } : {}),
    });
  });
  return t;
}

export function spawnProcess(init: ExecutorInit, options: SpawnOptions): Transport {
  const child = fork(fileURLToPath(new URL('./process-entry.js', import.meta.url)), [], {
    serialization: 'advanced',
    // The parent's flags (loaders such as --import tsx, --enable-source-maps) minus the
    // inspector and the heap size, which is set per executor.
    execArgv: [...process.execArgv.filter((a) => !/^--(inspect|debug|max-old-space-size)/.test(a)), ...(options.heapLimitMiB > 0 ? [`--max-old-space-size=${options.heapLimitMiB}`] : [])],
    env: { ...process.env, TASKBATCH_EXECUTOR_INIT: JSON.stringify(init) },
    stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
    // Its own process group (process-group.ts), so that what a handler starts can be killed
    // with it. The IPC channel still ends it when the worker dies (process-entry.ts).
    detached: true,
  });
  const pid = child.pid;
  if (pid !== undefined) trackGroup(pid);
  const graceMs = options.killGraceMs ?? 1000;
  let tail = '';
  let fatal: ErrorInfo | undefined;
  const t: Transport = {
    kind: 'process',
    label: `process ${child.pid ?? '?'}`,
    send: (m) => {
      if (child.connected) child.send(m, undefined, undefined, () => undefined);
    },
    kill: () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      // The handler's processes get SIGTERM now and SIGKILL after the grace (on exit, below).
      if (pid !== undefined) signalGroup(pid, 'SIGTERM');
    },
    onMessage: () => undefined,
    onExit: () => undefined,
  };
  child.on('message', (m: FromExecutor) => {
    if (m.t === 'fatal') fatal = m.error;
    t.onMessage(m);
  });
  child.stderr?.on('data', (b: Buffer) => {
    process.stderr.write(b);
    tail = (tail + b.toString()).slice(-STDERR_TAIL);
  });
  child.on('error', () => undefined); // spawn failures surface as 'exit'
  // 'exit' can arrive before the last IPC messages and stderr: wait for the channel to
  // close and stderr to end (bounded), so results sent just before death are not lost.
  let exited: { code: number | null; signal: string | null } | undefined;
  let channelClosed = !child.connected;
  let stderrEnded = !child.stderr;
  let reported = false;
  const report = (): void => {
    if (reported || !exited) return;
    reported = true;
    clearTimeout(timer);
    t.onExit({
      code: exited.code,
      signal: exited.signal,
      oom: /heap out of memory|Allocation failed|Reached heap limit/i.test(tail),
      ...(fatal ? { error: fatal } : {}),
      ...(tail ? { stderrTail: tail } : {}),
    });
  };
  let timer: NodeJS.Timeout | undefined;
  const maybeReport = (): void => {
    if (exited && channelClosed && stderrEnded) report();
  };
  child.on('disconnect', () => {
    channelClosed = true;
    maybeReport();
  });
  child.stderr?.on('end', () => {
    stderrEnded = true;
    maybeReport();
  });
  child.on('exit', (code, signal) => {
    exited = { code, signal };
    // However it ended, nothing may outlive the executor in its group.
    if (pid !== undefined) void endGroup(pid, graceMs);
    timer = setTimeout(report, 500);
    maybeReport();
  });
  return t;
}
