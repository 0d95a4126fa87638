import { readFileSync, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Redis, Cluster, ChainableCommander } from 'ioredis';

export type RedisClient = Redis | Cluster;
type Runner = RedisClient | ChainableCommander;

/** The transitions; each is queue/lua/<name>.lua, run atomically as one EVALSHA. */
const SCRIPT_NAMES = [
  'create',
  'enqueue',
  'claim',
  'renew',
  'start',
  'release',
  'complete',
  'fail',
  'reclaim',
  'close',
  'counts',
  'replay',
  'purge',
  'presence-beat',
  'presence-list',
  'presence-prune',
  'presence-drain',
  'presence-leave',
  'wake-worker',
] as const;
export type ScriptName = (typeof SCRIPT_NAMES)[number];

/** Scripts with a variable number of keys pass their key count on each call. */
const VARIADIC_KEYS: ReadonlySet<ScriptName> = new Set(['purge']);

function luaDir(): string {
  // Compiled code runs from dist/queue/; the scripts stay in queue/lua/ at the package root.
  for (const rel of ['./lua/', '../../queue/lua/']) {
    const dir = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(`${dir}claim.lua`)) return dir;
  }
  throw new Error(`queue Lua scripts not found next to ${fileURLToPath(import.meta.url)}`);
}

let sources: Map<ScriptName, string> | undefined;

function scriptSources(): Map<ScriptName, string> {
  if (!sources) {
    const dir = luaDir();
    const prelude = readFileSync(`${dir}_prelude.lua`, 'utf8');
    sources = new Map(SCRIPT_NAMES.map((name) => [name, `${prelude}\n${readFileSync(`${dir}${name}.lua`, 'utf8')}`]));
  }
  return sources;
}

const DEFINED = Symbol.for('taskbatch.scriptsDefined');

/** Registers the scripts on a client (once); ioredis then runs them by SHA with EVAL fallback. */
export function defineScripts(client: RedisClient): void {
  const marked = client as RedisClient & { [DEFINED]?: boolean };
  if (marked[DEFINED]) return;
  for (const [name, lua] of scriptSources()) {
    client.defineCommand(`tb_${name}`, VARIADIC_KEYS.has(name) ? { lua } : { lua, numberOfKeys: scriptKeyCount(name) });
  }
  marked[DEFINED] = true;
}

function scriptKeyCount(name: ScriptName): number {
  switch (name) {
    case 'create':
      return 1;
    case 'renew':
      return 2;
    case 'close':
    case 'wake-worker':
    case 'start':
    case 'presence-beat':
    case 'presence-list':
    case 'presence-prune':
      return 3;
    case 'presence-drain':
    case 'presence-leave':
      return 4;
    case 'release':
    case 'replay':
      return 5;
    case 'enqueue':
    case 'counts':
      return 6;
    case 'reclaim':
    case 'claim':
      return 12;
    case 'complete':
      return 13;
    case 'fail':
      return 14;
    case 'purge':
      return 0;
  }
}

export type ScriptReply = string | number | null | ScriptReply[];

/** Runs a script on a client or a pipeline; the key count must match the script's header. */
export function runScript(runner: Runner, name: ScriptName, keys: readonly string[], args: readonly (string | number)[]): Promise<ScriptReply> {
  const fn = (runner as unknown as Record<string, (...a: (string | number)[]) => Promise<ScriptReply>>)[`tb_${name}`];
  if (typeof fn !== 'function') throw new Error(`script ${name} is not defined on this client: call defineScripts first`);
  if (!VARIADIC_KEYS.has(name) && keys.length !== scriptKeyCount(name)) {
    throw new Error(`script ${name} takes ${scriptKeyCount(name)} keys, got ${keys.length}`);
  }
  const lead: (string | number)[] = VARIADIC_KEYS.has(name) ? [keys.length] : [];
  return fn.call(runner, ...lead, ...keys, ...args);
}
