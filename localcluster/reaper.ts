/**
 * Makes sure nothing the local cluster spawns outlives the process that spawned it.
 *
 * Every child runs in its own process group (spawn with `detached: true`), so a group kill
 * also reaches its descendants. Two safety nets cover the owner going away:
 * - in-process: on `exit`, SIGINT, SIGTERM and SIGHUP every tracked group gets SIGKILL (synchronously);
 * - out-of-process: a small "reaper" (a detached `node -e` in its own session) holds a pipe from
 *   us. When we die for any reason, SIGKILL included, the pipe closes; the reaper then sends
 *   SIGTERM and, 2 s later, SIGKILL to every group still registered, and removes registered dirs.
 *
 * The handlers and the reaper exist only while something is tracked, so test files that start and
 * stop clusters one after the other do not pile up listeners.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import type { Socket } from 'node:net';

type Message = { op: 'add' | 'remove'; pgid: number } | { op: 'add-dir' | 'remove-dir'; path: string } | { op: 'add-cleanup'; id: string; argv: string[] } | { op: 'remove-cleanup'; id: string };

const REAPER_SOURCE = `
const groups = new Set(); const dirs = new Set(); const cleanups = new Map(); let buf = '';
for (const s of ['SIGINT', 'SIGHUP', 'SIGTERM']) process.on(s, () => {});
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  buf += d; let i;
  while ((i = buf.indexOf('\\n')) >= 0) {
    const m = JSON.parse(buf.slice(0, i)); buf = buf.slice(i + 1);
    if (m.op === 'add') groups.add(m.pgid); else if (m.op === 'remove') groups.delete(m.pgid);
    else if (m.op === 'add-dir') dirs.add(m.path); else if (m.op === 'remove-dir') dirs.delete(m.path);
    else if (m.op === 'add-cleanup') cleanups.set(m.id, m.argv); else if (m.op === 'remove-cleanup') cleanups.delete(m.id);
  }
});
const killAll = (sig) => { for (const g of groups) { try { process.kill(-g, sig); } catch {} } };
process.stdin.on('end', () => {
  if (groups.size === 0 && dirs.size === 0 && cleanups.size === 0) process.exit(0);
  killAll('SIGTERM');
  setTimeout(() => {
    killAll('SIGKILL');
    // Cleanup commands run after the kill (newest first), before the dirs they may need go.
    const { spawnSync } = require('node:child_process');
    for (const argv of [...cleanups.values()].reverse()) {
      try { spawnSync(argv[0], argv.slice(1), { stdio: 'ignore', timeout: 30000 }); } catch {}
    }
    const fs = require('node:fs');
    for (const d of dirs) { try { fs.rmSync(d, { recursive: true, force: true }); } catch {} }
    process.exit(0);
  }, 2000);
});
`;

const groups = new Set<number>();
const dirs = new Set<string>();
const cleanups = new Map<string, string[]>();
let reaper: ChildProcess | undefined;
let handlersInstalled = false;

function send(msg: Message): void {
  if (!reaper?.stdin || reaper.stdin.destroyed) return;
  reaper.stdin.write(JSON.stringify(msg) + '\n');
}

function ensureReaper(): void {
  if (reaper && reaper.exitCode === null && reaper.signalCode === null) return;
  const child = spawn(process.execPath, ['-e', REAPER_SOURCE], { detached: true, stdio: ['pipe', 'ignore', 'ignore'] });
  child.unref();
  (child.stdin as unknown as Socket).unref();
  child.stdin?.on('error', () => undefined);
  child.on('exit', () => {
    if (reaper === child) reaper = undefined;
  });
  reaper = child;
  for (const pgid of groups) send({ op: 'add', pgid });
  for (const path of dirs) send({ op: 'add-dir', path });
  for (const [id, argv] of cleanups) send({ op: 'add-cleanup', id, argv });
}

function killAllNow(): void {
  for (const pgid of groups) {
    try {
      process.kill(-pgid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  for (const argv of [...cleanups.values()].reverse()) {
    try {
      spawnSync(argv[0] ?? 'true', argv.slice(1), { stdio: 'ignore', timeout: 30_000 });
    } catch {
      // best effort
    }
  }
  for (const d of dirs) {
    try {
      rmSync(d, { recursive: true, force: true });
    } catch {
      // best effort
    }
  }
}

const onExit = (): void => killAllNow();
const onSignal = (signal: NodeJS.Signals): void => {
  killAllNow();
  groups.clear();
  dirs.clear();
  cleanups.clear();
  uninstallIfIdle();
  // Re-raise when nobody else handles the signal, so the process still ends as it would have.
  if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
};

function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', onExit);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);
}

function uninstallIfIdle(): void {
  if (groups.size > 0 || dirs.size > 0 || cleanups.size > 0) return;
  if (handlersInstalled) {
    handlersInstalled = false;
    process.off('exit', onExit);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('SIGHUP', onSignal);
  }
  if (reaper) {
    reaper.stdin?.end();
    reaper = undefined;
  }
}

/** Tracks a process group (the pid of a child spawned with `detached: true`). */
export function trackGroup(pgid: number): void {
  groups.add(pgid);
  installHandlers();
  ensureReaper();
  send({ op: 'add', pgid });
}

export function untrackGroup(pgid: number): void {
  if (!groups.delete(pgid)) return;
  send({ op: 'remove', pgid });
  uninstallIfIdle();
}

/** Tracks a directory to remove if the owner dies without cleaning up. */
export function trackDir(path: string): void {
  dirs.add(path);
  installHandlers();
  ensureReaper();
  send({ op: 'add-dir', path });
}

export function untrackDir(path: string): void {
  if (!dirs.delete(path)) return;
  send({ op: 'remove-dir', path });
  uninstallIfIdle();
}

/**
 * Registers a command to run if the owner dies without cleaning up (after every tracked group is
 * killed), e.g. to undo host changes. Owners that stop normally run their own cleanup and call
 * untrackCleanup(id).
 */
export function trackCleanup(id: string, argv: string[]): void {
  cleanups.set(id, argv);
  installHandlers();
  ensureReaper();
  send({ op: 'add-cleanup', id, argv });
}

export function untrackCleanup(id: string): void {
  if (!cleanups.delete(id)) return;
  send({ op: 'remove-cleanup', id });
  uninstallIfIdle();
}

/** Sends a signal to a whole process group; false when it no longer exists. */
export function signalGroup(pgid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch {
    return false;
  }
}
