// Process groups of process-mode executors. Each executor child is forked detached, so it
// leads a process group of its own, and whatever a handler starts (a shell, a converter and
// its helpers) joins that group unless it detaches itself. Killing only the child left those
// grandchildren running, orphaned to the worker; here the group lives and dies with its
// executor: when the executor ends (crash, timeout, recycling, shutdown), its group gets
// SIGTERM, then SIGKILL once the grace has passed, and the worker SIGKILLs every group it
// still knows of when it exits.

const POLL_MS = 20;

/** Leaders (= group ids) of live executors and of groups still in their grace. */
const groups = new Set<number>();
let exitHook = false;

/** Sends `signal` to every process in the group `pgid`; false when the group is empty (ESRCH). */
export function signalGroup(pgid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch (err) {
    // EPERM: a member changed its user (setuid program); nothing we may do about it.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Tracks a new executor's group, so that the worker's exit kills it. */
export function trackGroup(pgid: number): void {
  groups.add(pgid);
  if (exitHook) return;
  exitHook = true;
  // 'exit' handlers run synchronously, even on process.exit(): timers scheduled below would
  // never fire, so anything left in a group is SIGKILLed here.
  process.on('exit', () => {
    for (const g of groups) signalGroup(g, 'SIGKILL');
    groups.clear();
  });
}

/**
 * Ends the group of an executor that has exited (or is being killed): SIGTERM now, SIGKILL
 * after `graceMs` if any member is left. Resolves once the group is empty or SIGKILLed.
 * While a member is alive the kernel does not reuse the group id, so signalling it cannot
 * hit an unrelated process; once it is empty we stop.
 */
export function endGroup(pgid: number, graceMs: number): Promise<void> {
  if (!signalGroup(pgid, 'SIGTERM')) {
    groups.delete(pgid);
    return Promise.resolve();
  }
  const until = Date.now() + graceMs;
  return new Promise((resolve) => {
    const check = (): void => {
      if (!groups.has(pgid)) return resolve(); // SIGKILLed by the exit hook meanwhile
      if (!signalGroup(pgid, 0)) {
        groups.delete(pgid);
        return resolve();
      }
      if (Date.now() >= until) {
        signalGroup(pgid, 'SIGKILL');
        groups.delete(pgid);
        return resolve();
      }
      setTimeout(check, POLL_MS).unref();
    };
    check();
  });
}
