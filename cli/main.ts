#!/usr/bin/env node
// The `taskbatch` command: feed, watch, inspect and run batches (docs/cli.md).
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { QueueError } from '../queue/errors.js';
import { TaskBatchError } from '../sdk/errors.js';
import { WORKER_VERSION } from '../worker/version.js';
import type { Command, IO } from './command.js';
import { CONNECTION_FLAGS, CONNECTION_HELP, EXIT, parse, UsageError } from './common.js';
import { failures, results, status, watch } from './commands/inspect.js';
import { call, cancel, close, replay } from './commands/manage.js';
import { run } from './commands/run.js';
import { submit } from './commands/submit.js';

export const COMMANDS: readonly Command[] = [submit, close, status, watch, results, failures, replay, cancel, call, run];

function topHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return `taskbatch: feed, watch and inspect TaskBatches; run one locally.

Usage: taskbatch COMMAND [NAME] [flags]

Commands:
${COMMANDS.map((c) => `  ${c.name.padEnd(width)}   ${c.summary}`).join('\n')}

Batches are found through the Kubernetes API (your kubeconfig; -n, --context), or — with
--redis-url — directly in a Redis. \`taskbatch COMMAND --help\` shows a command's flags.

Exit codes: 0 ok, 1 unexpected error, 2 bad arguments or manifest, 3 batch or file not found,
4 Redis/API server unreachable or access denied, 5 the batch (or a call) failed, 6 timeout,
130 interrupted.
`;
}

function commandHelp(c: Command): string {
  return `Usage: ${c.usage}\n\n${c.summary}.\n\n${c.help}\n${c.connection ? `\n${CONNECTION_HELP}\n` : ''}\nFlags:\n  -h, --help   This help\n`;
}

/** Maps an error to the exit code scripts rely on (docs/cli.md). */
export function exitCodeFor(err: unknown): number {
  if (err instanceof UsageError) return EXIT.usage;
  const explicit = (err as { exitCode?: unknown })?.exitCode;
  if (typeof explicit === 'number') return explicit;
  if (err instanceof TaskBatchError) {
    switch (err.code) {
      case 'Usage':
      case 'NotOpen':
        return EXIT.usage;
      case 'BatchNotFound':
        return EXIT.notFound;
      case 'Connection':
      case 'Forbidden':
      case 'PortForward':
        return EXIT.unavailable;
      case 'CallTimeout':
      case 'WaitTimeout':
        return EXIT.timeout;
      case 'ClientClosed':
        return EXIT.interrupted;
    }
  }
  if (err instanceof QueueError) {
    if (err.code === 'InvalidArgument' || err.code === 'PayloadTooLarge' || err.code === 'BatchClosed') return EXIT.usage;
    if (err.code === 'BatchStateLost') return EXIT.notFound;
    return EXIT.error;
  }
  const name = (err as Error)?.name;
  if (name === 'AbortError') return EXIT.interrupted;
  return EXIT.error;
}

export async function main(argv: string[], io: IO): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '-h' || name === '--help' || name === 'help') {
    const target = name === 'help' ? COMMANDS.find((c) => c.name === rest[0]) : undefined;
    io.stdout.write(target ? commandHelp(target) : topHelp());
    return EXIT.ok;
  }
  if (name === '--version' || name === 'version') {
    io.stdout.write(`taskbatch ${WORKER_VERSION}\n`);
    return EXIT.ok;
  }
  const command = COMMANDS.find((c) => c.name === name);
  if (!command) {
    io.stderr.write(`taskbatch: unknown command ${JSON.stringify(name)}; commands: ${COMMANDS.map((c) => c.name).join(', ')} (taskbatch --help)\n`);
    return EXIT.usage;
  }
  try {
    const parsed = parse(rest, { ...(command.connection ? CONNECTION_FLAGS : {}), ...command.flags });
    if (parsed.values.help) {
      io.stdout.write(commandHelp(command));
      return EXIT.ok;
    }
    return await command.run(parsed, io);
  } catch (err) {
    const code = exitCodeFor(err);
    const message = err instanceof Error ? err.message : String(err);
    if (code === EXIT.interrupted) io.stderr.write('\ntaskbatch: interrupted\n');
    else if (err instanceof UsageError) io.stderr.write(`taskbatch ${command.name}: ${message}\n(see taskbatch ${command.name} --help)\n`);
    else io.stderr.write(`taskbatch ${command.name}: ${message}\n`);
    if (code === EXIT.error && io.env.TASKBATCH_DEBUG && err instanceof Error && err.stack) io.stderr.write(`${err.stack}\n`);
    return code;
  }
}

function isEntryPoint(): boolean {
  if (!process.argv[1]) return false;
  try {
    return realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  const ac = new AbortController();
  let interrupted = 0;
  const onSignal = (sig: NodeJS.Signals): void => {
    interrupted++;
    if (interrupted > 1) process.exit(sig === 'SIGINT' ? 130 : 143);
    ac.abort(Object.assign(new Error('interrupted'), { name: 'AbortError' }));
  };
  // `taskbatch run` hands signals to the worker it runs (graceful stop); other commands abort.
  if (process.argv[2] !== 'run') {
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }
  main(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin, env: process.env, signal: ac.signal }).then(
    (code) => {
      process.exitCode = code;
      // Streams flush, then exit even if a handle (a socket being closed) lingers.
      setTimeout(() => process.exit(code), 50).unref();
    },
    (err: unknown) => {
      process.stderr.write(`taskbatch: ${(err as Error)?.stack ?? String(err)}\n`);
      process.exit(EXIT.error);
    },
  );
}
