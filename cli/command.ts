import type { FlagSpec, Parsed } from './common.js';

export interface IO {
  stdout: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
  stdin: NodeJS.ReadableStream & { isTTY?: boolean };
  env: NodeJS.ProcessEnv;
  /** Aborted on SIGINT/SIGTERM. */
  signal: AbortSignal;
}

/** One `taskbatch <name>` command. */
export interface Command {
  name: string;
  /** One line for `taskbatch --help`. */
  summary: string;
  usage: string;
  /** What it does, its flags and examples (after the usage line in --help). */
  help: string;
  flags: FlagSpec;
  /** Takes the connection flags (namespace, context, Redis). */
  connection: boolean;
  run(p: Parsed, io: IO): Promise<number>;
}
