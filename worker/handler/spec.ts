import { existsSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';

/**
 * Which code runs an item. Parsed and validated once in the worker's main thread; the
 * (plain JSON) spec is then passed to every executor, which loads it (handler/load.ts).
 */
export type HandlerSpec = BuiltinSpec | ModuleSpec | StdioSpec;

export type BuiltinName = 'noop' | 'sleep' | 'primes' | 'shell';
export const BUILTIN_NAMES: readonly BuiltinName[] = ['noop', 'sleep', 'primes', 'shell'];

export type BuiltinSpec = { builtin: 'noop' } | { builtin: 'sleep' } | { builtin: 'primes' } | ShellSpec;

export interface ShellSpec {
  builtin: 'shell';
  /**
   * argv template: program and arguments, each element templated on its own from the item
   * ({{item}}, {{item.a.b}}, {{id}}, {{attempt}}) into exactly one argument. Never run through
   * a shell. The program (command[0]) takes no placeholder; item data may start an argument
   * with "-" only after a literal "--" element (docs/worker.md, the shell builtin).
   */
  command: string[];
  cwd?: string;
  /** Extra environment variables (values templated like arguments). */
  env?: Record<string, string>;
  /** 'json' writes the item's JSON to the command's stdin; default 'none'. */
  stdin?: 'json' | 'none';
  /** Largest stdout kept as the result (default 256 KiB); the rest is cut and marked. */
  maxOutputBytes?: number;
}

export interface ModuleSpec {
  /** Absolute path (after parsing), file URL, or package name. */
  module: string;
  /** Export to call (default 'default'; for CommonJS, module.exports itself). */
  export?: string;
  /**
   * 'fn': the item names the export to call: {fn: "name", args: [...]} calls
   * module[name](...args, ctx). Only own exported functions whose names do not start
   * with '_' can be called.
   */
  dispatch?: 'fn';
}

/**
 * A handler in any language: a long-lived process per executor slot speaking newline-delimited
 * JSON frames on stdin/stdout (docs/handler-protocol.md). Runs in process pool mode only.
 */
export interface StdioSpec {
  /** argv: program and arguments, run without a shell, once per executor slot. */
  command: string[];
  protocol: 'stdio';
  cwd?: string;
  /** Extra environment variables, added to the worker's own. */
  env?: Record<string, string>;
}

export function isStdioSpec(spec: HandlerSpec): spec is StdioSpec {
  return 'protocol' in spec && spec.protocol === 'stdio';
}

export class HandlerSpecError extends Error {
  override name = 'HandlerSpecError';
}

/**
 * Parses a handler spec from text: JSON ({"builtin":"shell","command":[...]},
 * {"module":"./h.js","export":"run"}) or a shorthand: a builtin name ("noop", "sleep",
 * "primes"), "builtin:<name>", a path ("./h.js", "/app/h.mjs#run"), "module:<pkg>#export".
 * Relative paths resolve against `cwd`.
 */
export function parseHandlerSpec(text: string, cwd = process.cwd()): HandlerSpec {
  const t = text.trim();
  if (t === '') throw new HandlerSpecError('handler is empty');
  if (t.startsWith('{')) {
    let raw: unknown;
    try {
      raw = JSON.parse(t);
    } catch (err) {
      throw new HandlerSpecError(`handler JSON is invalid: ${(err as Error).message}`);
    }
    return validateHandlerSpec(raw, cwd);
  }
  if (t.startsWith('builtin:')) return validateHandlerSpec({ builtin: t.slice(8) }, cwd);
  if ((BUILTIN_NAMES as readonly string[]).includes(t)) return validateHandlerSpec({ builtin: t }, cwd);
  const body = t.startsWith('module:') ? t.slice(7) : t;
  const hash = body.lastIndexOf('#');
  const module = hash >= 0 ? body.slice(0, hash) : body;
  const exp = hash >= 0 ? body.slice(hash + 1) : undefined;
  return validateHandlerSpec(exp === '*' ? { module, dispatch: 'fn' } : { module, ...(exp ? { export: exp } : {}) }, cwd);
}

/** Validates a spec object (from JSON or code); resolves relative module paths. */
export function validateHandlerSpec(raw: unknown, cwd = process.cwd()): HandlerSpec {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new HandlerSpecError('handler must be an object {builtin, ...}, {module, export?} or {command, protocol: "stdio"}');
  const o = raw as Record<string, unknown>;
  if ('builtin' in o) {
    const name = o.builtin;
    if (typeof name !== 'string' || !(BUILTIN_NAMES as readonly string[]).includes(name)) {
      throw new HandlerSpecError(`handler builtin ${JSON.stringify(name)} is unknown; expected one of ${BUILTIN_NAMES.join(', ')}`);
    }
    if (name !== 'shell') {
      rejectUnknown(o, ['builtin']);
      return { builtin: name as 'noop' | 'sleep' | 'primes' };
    }
    rejectUnknown(o, ['builtin', 'command', 'cwd', 'env', 'stdin', 'maxOutputBytes']);
    const command = o.command;
    if (!Array.isArray(command) || command.length === 0 || !command.every((c) => typeof c === 'string') || command[0] === '') {
      throw new HandlerSpecError('shell handler needs command: a non-empty array of strings (program, then arguments), e.g. ["convert", "{{item.in}}", "{{item.out}}"]');
    }
    if (/\{\{.*\}\}/.test(command[0] as string)) {
      throw new HandlerSpecError(
        `shell handler command[0] ${JSON.stringify(command[0])} is the program and must not contain a placeholder: an item must not choose what runs. Name the program and pass item data as arguments, e.g. ["convert", "{{item.in}}"]`,
      );
    }
    const spec: ShellSpec = { builtin: 'shell', command: [...(command as string[])] };
    if (o.cwd !== undefined) {
      if (typeof o.cwd !== 'string' || o.cwd === '') throw new HandlerSpecError('shell handler cwd must be a non-empty string');
      spec.cwd = resolve(cwd, o.cwd);
    }
    if (o.env !== undefined) {
      if (!o.env || typeof o.env !== 'object' || Array.isArray(o.env) || !Object.values(o.env).every((v) => typeof v === 'string')) {
        throw new HandlerSpecError('shell handler env must be an object of string values');
      }
      spec.env = { ...(o.env as Record<string, string>) };
    }
    if (o.stdin !== undefined) {
      if (o.stdin !== 'json' && o.stdin !== 'none') throw new HandlerSpecError('shell handler stdin must be "json" or "none"');
      spec.stdin = o.stdin;
    }
    if (o.maxOutputBytes !== undefined) {
      const n = o.maxOutputBytes;
      if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 16 * 1024 * 1024) throw new HandlerSpecError('shell handler maxOutputBytes must be an integer between 1 and 16777216');
      spec.maxOutputBytes = n;
    }
    return spec;
  }
  if ('module' in o) {
    rejectUnknown(o, ['module', 'export', 'dispatch']);
    if (typeof o.module !== 'string' || o.module.trim() === '') throw new HandlerSpecError('handler module must be a non-empty string (a path or a package name)');
    if (o.export !== undefined && (typeof o.export !== 'string' || !/^[A-Za-z_$][\w$]*$/.test(o.export))) {
      throw new HandlerSpecError(`handler export ${JSON.stringify(o.export)} must be a JavaScript identifier`);
    }
    if (o.dispatch !== undefined && o.dispatch !== 'fn') throw new HandlerSpecError('handler dispatch must be "fn" (the item says {fn, args}) or absent');
    if (o.dispatch === 'fn' && o.export !== undefined) throw new HandlerSpecError('handler dispatch "fn" calls the export named by each item: do not set export too');
    const module = resolveModule(o.module.trim(), cwd);
    return { module, ...(o.export !== undefined ? { export: o.export as string } : {}), ...(o.dispatch === 'fn' ? { dispatch: 'fn' as const } : {}) };
  }
  if ('protocol' in o || 'command' in o) return validateStdioSpec(o, cwd);
  throw new HandlerSpecError('handler must have "builtin", "module", or "command" with "protocol": "stdio"');
}

function validateStdioSpec(o: Record<string, unknown>, cwd: string): StdioSpec {
  rejectUnknown(o, ['command', 'protocol', 'cwd', 'env']);
  if (o.protocol !== 'stdio') {
    throw new HandlerSpecError(
      `handler protocol ${JSON.stringify(o.protocol)} is unknown: a handler given as a command needs "protocol": "stdio" (newline-delimited JSON on stdin/stdout, docs/handler-protocol.md)`,
    );
  }
  const command = o.command;
  if (!Array.isArray(command) || command.length === 0 || !command.every((c) => typeof c === 'string') || command[0] === '') {
    throw new HandlerSpecError('stdio handler needs command: a non-empty array of strings (program, then arguments; no shell), e.g. ["python3", "-u", "app.py"]');
  }
  const spec: StdioSpec = { command: [...(command as string[])], protocol: 'stdio' };
  if (o.cwd !== undefined) {
    if (typeof o.cwd !== 'string' || o.cwd === '') throw new HandlerSpecError('stdio handler cwd must be a non-empty string (the directory the command runs in)');
    spec.cwd = resolve(cwd, o.cwd);
    if (!existsSync(spec.cwd)) throw new HandlerSpecError(`stdio handler cwd ${spec.cwd} does not exist`);
  }
  if (o.env !== undefined) {
    if (!o.env || typeof o.env !== 'object' || Array.isArray(o.env) || !Object.values(o.env).every((v) => typeof v === 'string')) {
      throw new HandlerSpecError('stdio handler env must be an object of string values, e.g. {"PYTHONUNBUFFERED": "1"}');
    }
    spec.env = { ...(o.env as Record<string, string>) };
  }
  return spec;
}

/** Paths become absolute (and must exist); package names and URLs are kept as given. */
function resolveModule(module: string, cwd: string): string {
  if (module.startsWith('file:') || module.startsWith('node:')) return module;
  const looksLikePath = module.startsWith('.') || isAbsolute(module) || /\.(c|m)?js$/.test(module);
  if (!looksLikePath) return module;
  const abs = resolve(cwd, module);
  if (!existsSync(abs)) throw new HandlerSpecError(`handler module ${abs} does not exist`);
  return abs;
}

function rejectUnknown(o: Record<string, unknown>, allowed: string[]): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) throw new HandlerSpecError(`handler field ${JSON.stringify(k)} is not allowed here; allowed: ${allowed.join(', ')}`);
  }
}

/** A short human description, for logs. */
export function describeHandler(spec: HandlerSpec): string {
  if (isStdioSpec(spec)) return `stdio ${JSON.stringify(spec.command)}`;
  if ('builtin' in spec) return spec.builtin === 'shell' ? `builtin shell ${JSON.stringify(spec.command)}` : `builtin ${spec.builtin}`;
  return spec.dispatch === 'fn' ? `${spec.module} (dispatch by item.fn)` : `${spec.module}#${spec.export ?? 'default'}`;
}
