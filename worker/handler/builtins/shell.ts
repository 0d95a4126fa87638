import { spawn } from 'node:child_process';
import { NonRetryableError, type Handler, type HandlerContext } from '../api.js';
import type { ShellSpec } from '../spec.js';

const DEFAULT_MAX_OUTPUT = 256 * 1024;
const STDERR_TAIL = 2048;
const KILL_AFTER_MS = 500;

/**
 * Runs one command per item. Every argv element of the template is expanded on its own
 * and passed to the program directly (no shell), so item data is never parsed as shell
 * syntax: `; rm -rf /` or `$(...)` in an item arrive as literal argument text, and it never
 * becomes an option either (see expandArgv).
 * stdout becomes the result; a non-zero exit fails the item with the tail of stderr.
 */
export function createShellHandler(spec: ShellSpec): Handler {
  const maxOutput = spec.maxOutputBytes ?? DEFAULT_MAX_OUTPUT;
  return (item, ctx) => {
    const vars = { item, id: ctx.id, attempt: ctx.attempt };
    const argv = expandArgv(spec.command, vars);
    const env = { ...process.env };
    for (const [k, v] of Object.entries(spec.env ?? {})) env[k] = expandString(v, vars);
    return runCommand(argv, { cwd: spec.cwd, env, stdin: spec.stdin === 'json' ? `${JSON.stringify(item)}\n` : undefined, maxOutput }, ctx);
  };
}

interface RunOptions {
  cwd: string | undefined;
  env: NodeJS.ProcessEnv;
  stdin: string | undefined;
  maxOutput: number;
}

function runCommand(argv: string[], o: RunOptions, ctx: HandlerContext): Promise<string> {
  const [program, ...args] = argv as [string, ...string[]];
  return new Promise<string>((resolve, reject) => {
    if (ctx.signal.aborted) return reject(ctx.signal.reason);
    let child: ReturnType<typeof spawn>;
    try {
      // Its own process group, so an abort can stop whatever the command started too.
      child = spawn(program, args, { cwd: o.cwd, env: o.env, shell: false, detached: true, stdio: [o.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    } catch (err) {
      // E2BIG is thrown here, not emitted: the same item would be too long on every attempt.
      if ((err as NodeJS.ErrnoException).code !== 'E2BIG') return reject(err);
      return reject(
        new NonRetryableError(`could not run ${JSON.stringify(program)}: its arguments and environment are too long for the system (E2BIG); pass large item data on stdin ("stdin": "json")`),
      );
    }
    const out: Buffer[] = [];
    let outBytes = 0;
    let truncated = false;
    let errTail = '';
    let killTimer: NodeJS.Timeout | undefined;
    let spawnError: NodeJS.ErrnoException | undefined;

    const killGroup = (signal: NodeJS.Signals): void => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, signal);
      } catch {
        child.kill(signal);
      }
    };
    const onAbort = (): void => {
      killGroup('SIGTERM');
      killTimer = setTimeout(() => killGroup('SIGKILL'), KILL_AFTER_MS);
      killTimer.unref?.();
    };
    ctx.signal.addEventListener('abort', onAbort, { once: true });

    child.stdout?.on('data', (b: Buffer) => {
      if (outBytes >= o.maxOutput) {
        truncated = true;
        return;
      }
      const room = o.maxOutput - outBytes;
      if (b.length > room) truncated = true;
      const part = b.length > room ? b.subarray(0, room) : b;
      out.push(part);
      outBytes += part.length;
    });
    child.stderr?.on('data', (b: Buffer) => {
      errTail = (errTail + b.toString()).slice(-STDERR_TAIL);
    });
    if (o.stdin !== undefined && child.stdin) {
      child.stdin.on('error', () => undefined); // the command may not read stdin (EPIPE)
      child.stdin.end(o.stdin);
    }
    child.on('error', (err: NodeJS.ErrnoException) => {
      spawnError = err;
    });
    child.on('close', (code, signal) => {
      ctx.signal.removeEventListener('abort', onAbort);
      if (killTimer) clearTimeout(killTimer);
      if (spawnError) {
        const msg = `could not run ${JSON.stringify(program)}: ${spawnError.code === 'ENOENT' ? 'command not found' : spawnError.message}`;
        return reject(spawnError.code === 'ENOENT' || spawnError.code === 'EACCES' ? new NonRetryableError(msg) : new Error(msg));
      }
      if (ctx.signal.aborted) return reject(ctx.signal.reason);
      if (code === 0) {
        const text = Buffer.concat(out).toString();
        return resolve(truncated ? `${text}\n… [output truncated at ${o.maxOutput} bytes]` : text);
      }
      const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
      const err = new Error(`command ${JSON.stringify(program)} ${how}${errTail ? `: ${errTail.trimEnd()}` : ''}`);
      err.name = 'CommandFailed';
      reject(err);
    });
  });
}

export interface TemplateVars {
  item: unknown;
  id: string;
  attempt: number;
}

const PLACEHOLDER = /\{\{\s*([A-Za-z_$][\w$]*(?:\.[\w$]+)*)\s*\}\}/g;
const END_OF_OPTIONS = '--';
const PREVIEW_CHARS = 60;

/**
 * Expands an argv template: each element becomes exactly one argument, whatever the item
 * holds (arrays and objects are inserted as JSON, never spread into several arguments).
 * An argument that item data makes start with "-" is refused (NonRetryableError naming the
 * element and the fix), because most programs would read it as an option (`--help`,
 * `--checkpoint-action=exec=...`), unless it comes after a literal "--" element of the
 * template: from there on, programs that follow the convention read operands only. An
 * element the template itself starts with "-" (`--out={{item.out}}`) is the author's option.
 */
export function expandArgv(template: readonly string[], vars: TemplateVars): string[] {
  // Only a "--" written in the template counts: one that item data produces starts with "-" and is refused.
  const marker = template.indexOf(END_OF_OPTIONS, 1);
  return template.map((element, i) => {
    const arg = expandString(element, vars);
    const operand = marker > 0 && i > marker;
    if (arg.startsWith('-') && !element.startsWith('-') && !operand) throw optionLike(template, i, arg);
    return arg;
  });
}

function optionLike(template: readonly string[], i: number, arg: string): NonRetryableError {
  const element = template[i] as string;
  const program = JSON.stringify(template[0]);
  const fields = [...element.matchAll(PLACEHOLDER)].map((m) => m[1]).join(', ');
  const preview = JSON.stringify(arg.length > PREVIEW_CHARS ? `${arg.slice(0, PREVIEW_CHARS)}…` : arg);
  return new NonRetryableError(
    `shell command argument ${i} ${JSON.stringify(element)} would start with "-" (${preview}, from ${fields}) and ${program} could read it as an option; ` +
      `item data may not start an argument with "-". Fix the command: put a literal "--" element before it if ${program} supports end of options ` +
      `(e.g. [${program}, …, "--", ${JSON.stringify(element)}]), or start the argument in the template ("./${element}" for a path, "--name=${element}" for an option's value), ` +
      `or pass the item on stdin ("stdin": "json")`,
  );
}

/** Replaces each placeholder with text: strings as they are, numbers and booleans printed, arrays and objects as JSON. */
function expandString(template: string, vars: TemplateVars): string {
  return template.replace(PLACEHOLDER, (_m, path: string) => {
    const value = lookup(path, vars);
    const text = value !== null && typeof value === 'object' ? JSON.stringify(value) : scalar(value, path);
    // spawn() throws a retryable TypeError on a NUL; the same item would fail every attempt.
    if (text.includes('\0')) {
      throw new NonRetryableError(
        `template {{${path}}}: the value contains a NUL byte, which no command argument or environment variable can hold; pass the item on stdin ("stdin": "json"), where it arrives as JSON`,
      );
    }
    return text;
  });
}

function lookup(path: string, vars: TemplateVars): unknown {
  const [root, ...rest] = path.split('.');
  if (root !== 'item' && root !== 'id' && root !== 'attempt') {
    throw new NonRetryableError(`template {{${path}}}: unknown name ${JSON.stringify(root)}; use item, item.<field>, id or attempt`);
  }
  let value: unknown = vars[root];
  for (const key of rest) {
    if (value === null || typeof value !== 'object' || !Object.hasOwn(value, key)) {
      throw new NonRetryableError(`template {{${path}}}: the item has no ${JSON.stringify(key)} here`);
    }
    value = (value as Record<string, unknown>)[key];
  }
  return value;
}

function scalar(value: unknown, path: string): string {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (value === null || value === undefined) throw new NonRetryableError(`template {{${path}}} resolved to ${value}`);
  return JSON.stringify(value);
}
