import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { NonRetryableError, type Handler } from './api.js';
import { isStdioSpec, type HandlerSpec, type ModuleSpec } from './spec.js';
import { noop } from './builtins/noop.js';
import { sleep } from './builtins/sleep.js';
import { primes } from './builtins/primes.js';
import { createShellHandler } from './builtins/shell.js';

/** Loads a handler spec into a callable; runs in every executor (thread, child, or main). */
export async function loadHandler(spec: HandlerSpec): Promise<Handler> {
  if ('builtin' in spec) {
    switch (spec.builtin) {
      case 'noop':
        return noop;
      case 'sleep':
        return sleep;
      case 'primes':
        return primes;
      case 'shell':
        return createShellHandler(spec);
    }
  }
  // The stdio transport runs these as processes of their own; nothing to load in JavaScript.
  if (isStdioSpec(spec)) throw new Error(`a stdio handler (${JSON.stringify(spec.command)}) runs only in process pool mode: set TASKBATCH_POOL_MODE=process`);
  return loadModuleHandler(spec);
}

async function loadModuleHandler(spec: ModuleSpec): Promise<Handler> {
  const ns = (await importModule(spec.module)) as Record<string, unknown>;
  // CommonJS: module.exports (Node exposes it as 'module.exports' and as `default`); its
  // properties are exports too, also when module.exports is itself a function.
  const exportsObject = 'module.exports' in ns ? ns['module.exports'] : ns.default !== null && typeof ns.default === 'object' ? ns.default : undefined;
  const cjs = exportsObject !== null && (typeof exportsObject === 'object' || typeof exportsObject === 'function') ? (exportsObject as Record<string, unknown>) : undefined;
  const pick = (name: string): unknown => (typeof ns[name] === 'function' ? ns[name] : cjs && typeof cjs[name] === 'function' ? cjs[name] : ns[name]);
  if (spec.dispatch === 'fn') {
    const table = new Map<string, (...args: unknown[]) => unknown>();
    for (const source of [cjs ?? {}, ns]) {
      for (const [name, value] of Object.entries(source)) {
        if (typeof value === 'function' && !name.startsWith('_') && name !== 'default' && name !== 'module.exports') table.set(name, value as (...args: unknown[]) => unknown);
      }
    }
    if (table.size === 0) throw new Error(`handler module ${spec.module} exports no functions to dispatch to`);
    return (item, ctx) => {
      const call = item as { fn?: unknown; args?: unknown } | null;
      if (!call || typeof call !== 'object' || typeof call.fn !== 'string') {
        throw new NonRetryableError(`dispatch handler expects items {"fn": "<export>", "args": [...]}, got ${JSON.stringify(item)?.slice(0, 200)}`);
      }
      const fn = table.get(call.fn);
      if (!fn) throw new NonRetryableError(`handler module has no callable export ${JSON.stringify(call.fn)}; callable: ${[...table.keys()].join(', ')}`);
      if (call.args !== undefined && !Array.isArray(call.args)) throw new NonRetryableError('dispatch item "args" must be an array');
      return fn(...((call.args as unknown[] | undefined) ?? []), ctx);
    };
  }
  const name = spec.export ?? 'default';
  const fn = pick(name);
  if (typeof fn !== 'function') {
    const names = [...new Set([...Object.keys(ns), ...Object.keys(cjs ?? {})])].filter((k) => k !== 'module.exports' && typeof pick(k) === 'function');
    throw new Error(`handler module ${spec.module} has no function export ${JSON.stringify(name)}${names.length ? `; its function exports: ${names.join(', ')}` : ''}`);
  }
  return fn as Handler;
}

/** Paths and URLs import directly; package names resolve from the working directory first. */
async function importModule(module: string): Promise<unknown> {
  if (module.startsWith('file:') || module.startsWith('node:')) return import(module);
  if (module.startsWith('/')) return import(pathToFileURL(module).href);
  let resolved: string | undefined;
  try {
    resolved = createRequire(join(process.cwd(), 'noop.js')).resolve(module);
  } catch {
    resolved = undefined; // ESM-only packages (exports without "require"), or not under cwd
  }
  return import(resolved ? pathToFileURL(resolved).href : module);
}
