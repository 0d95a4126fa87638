import { parentPort, workerData } from 'node:worker_threads';
import type { ExecutorInit, FromExecutor, ToExecutor } from './protocol.js';
import { runExecutor } from './runner.js';

// One executor thread of a thread-mode pool (see remote.ts).
const port = parentPort;
if (!port) throw new Error('thread-entry.js must run in a worker thread');
void runExecutor(workerData as ExecutorInit, {
  send: (m: FromExecutor) => port.postMessage(m),
  onMessage: (listener) => port.on('message', (m: ToExecutor) => listener(m)),
  exit: (code) => process.exit(code),
});
