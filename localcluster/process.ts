/**
 * A child process in its own process group, with output appended to a log file, tracked by the
 * reaper until it exits. Used for etcd, kube-apiserver, kube-controller-manager and pod containers.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { signalGroup, trackGroup, untrackGroup } from './reaper.js';

export interface ExitStatus {
  /** Exit code, or null when ended by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ManagedProcess {
  readonly pid: number;
  readonly name: string;
  readonly logFile: string;
  /** Resolves once the process has exited (never rejects). */
  readonly exited: Promise<ExitStatus>;
  exitStatus(): ExitStatus | undefined;
  /** Sends a signal to the main process only (as a container runtime does to PID 1). */
  signal(signal: NodeJS.Signals): void;
  /** SIGTERM to the main process, SIGKILL to the whole group after graceMs; resolves when it has exited. */
  stop(graceMs: number): Promise<ExitStatus>;
}

export interface SpawnOptions {
  name: string;
  command: string;
  args: string[];
  logFile: string;
  env: NodeJS.ProcessEnv;
  cwd?: string;
}

/** Spawns a process; throws (with the command and reason) when it cannot be started. */
export async function spawnManaged(opts: SpawnOptions): Promise<ManagedProcess> {
  const fd = openSync(opts.logFile, 'a');
  let child;
  try {
    child = spawn(opts.command, opts.args, {
      cwd: opts.cwd,
      env: opts.env,
      detached: true,
      stdio: ['ignore', fd, fd],
    });
  } finally {
    closeSync(fd);
  }
  const spawned = await new Promise<number>((resolve, reject) => {
    child.once('spawn', () => resolve(child.pid ?? -1));
    child.once('error', (err) => reject(new Error(`cannot start ${opts.name} (${opts.command}): ${err.message}`)));
  });
  const pid = spawned;
  trackGroup(pid);
  let status: ExitStatus | undefined;
  const exited = new Promise<ExitStatus>((resolve) => {
    child.once('exit', (code, signal) => {
      status = { code, signal };
      // When the main process ends, the rest of its group goes too (as a container's would).
      signalGroup(pid, 'SIGKILL');
      untrackGroup(pid);
      resolve(status);
    });
  });
  return {
    pid,
    name: opts.name,
    logFile: opts.logFile,
    exited,
    exitStatus: () => status,
    signal: (sig) => {
      if (status) return;
      try {
        process.kill(pid, sig);
      } catch {
        // exited meanwhile
      }
    },
    stop: async (graceMs) => {
      if (status) return status;
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        // exited meanwhile
      }
      const timer = setTimeout(() => signalGroup(pid, 'SIGKILL'), graceMs);
      const result = await exited;
      clearTimeout(timer);
      return result;
    },
  };
}

/** The last lines of a log file, for error messages. */
export function tailFile(path: string, lines = 30): string {
  try {
    const text = readFileSync(path, 'utf8');
    return text
      .split('\n')
      .slice(-lines - 1)
      .join('\n');
  } catch {
    return '(no log)';
  }
}
