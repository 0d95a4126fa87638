import type { ExecutorInit, FromExecutor, ToExecutor } from './protocol.js';
import { runExecutor } from './runner.js';
import { toErrorInfo } from '../handler/invoke.js';

// One executor child process of a process-mode pool (see remote.ts). Started with fork();
// its init arrives in an environment variable (not argv, which other users can read).
const send = process.send?.bind(process);
if (!send) throw new Error('process-entry.js must be started with an IPC channel (fork)');
const init = JSON.parse(process.env.TASKBATCH_EXECUTOR_INIT ?? 'null') as ExecutorInit | null;
delete process.env.TASKBATCH_EXECUTOR_INIT;
if (!init) throw new Error('TASKBATCH_EXECUTOR_INIT is not set');

const post = (m: FromExecutor): void => {
  send(m, undefined, undefined, () => undefined);
};
// Errors thrown outside the handler's own promise (a stray callback, an unhandled
// rejection) end this executor; the pool reports them as the reason.
process.on('uncaughtException', (err) => {
  setTimeout(() => process.exit(70), 1000).unref();
  try {
    send({ t: 'fatal', error: toErrorInfo(err) } satisfies FromExecutor, undefined, undefined, () => process.exit(70));
  } catch {
    process.exit(70);
  }
});
// The pool is gone (the worker died): nothing can use our results. This process leads its
// own process group (forked detached): take whatever the handler started down with it, since
// the worker that would have killed them is gone.
process.on('disconnect', () => {
  try {
    process.kill(-process.pid, 'SIGKILL');
  } catch {
    /* not a group leader, or the group is already empty */
  }
  process.exit(0);
});
void runExecutor(init, {
  send: post,
  onMessage: (listener) => process.on('message', (m: ToExecutor) => listener(m)),
  exit: (code) => {
    // The callback runs once this (and every earlier) message is written.
    send({ t: 'bye' } satisfies FromExecutor, undefined, undefined, () => process.exit(code));
  },
});
