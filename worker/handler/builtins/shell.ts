import { spawn } from 'node:child_process';
import { NonRetryableError, type Handler, type HandlerContext } from '../api.js';
import type { ShellSpec } from '../spec.js';

const DEFAULT_MAX_OUTPUT = 256 * 1024;
const STDERR_TAIL = 2048;
const KILL_AFTER_MS = 500;

/**
 * Runs one command per item. Every argv element of the template is expanded on its own
 * and passed to the program directly (no shell), so item data is never parsed as shell
 * syntax: `; rm -rf /` or `$(...)` in an item arrive as literal argument text.
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
    // Its own process group, so an abort can stop whatever the command started too.
    const child = spawn(program, args, { cwd: o.cwd, env: o.env, shell: false, detached: true, stdio: [o.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
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
const WHOLE = /^\{\{\s*([A-Za-z_$][\w$]*(?:\.[\w$]+)*)\s*\}\}$/;

/**
 * Expands an argv template. An element that is exactly one placeholder resolving to an
 * array becomes one argument per array element; anything else stays one argument.
 */
export function expandArgv(template: readonly string[], vars: TemplateVars): string[] {
  const argv: string[] = [];
  for (const element of template) {
    const whole = WHOLE.exec(element);
    if (whole) {
      const value = lookup(whole[1] as string, vars);
      if (Array.isArray(value)) {
        for (const v of value) argv.push(scalar(v, whole[1] as string));
        continue;
      }
    }
    argv.push(expandString(element, vars));
  }
  return argv;
}

function expandString(template: string, vars: TemplateVars): string {
  return template.replace(PLACEHOLDER, (_m, path: string) => {
    const value = lookup(path, vars);
    return value !== null && typeof value === 'object' ? JSON.stringify(value) : scalar(value, path);
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
