import { readFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { stringify as toYaml } from 'yaml';
import { connect, TaskBatchError, type ConnectOptions, type TaskBatchClient } from '../sdk/index.js';
import { hasDefaultKubeconfig } from '../sdk/kube.js';

/** Exit codes scripts can rely on (docs/cli.md). */
export const EXIT = {
  ok: 0,
  /** Unexpected error (a bug, or an error without a better code). */
  error: 1,
  /** Bad arguments or flags, or a bad manifest/config: nothing was done. */
  usage: 2,
  /** The batch (TaskBatch, or its state in Redis) or a file does not exist. */
  notFound: 3,
  /** Redis or the API server could not be reached, refused the credentials, or denied access. */
  unavailable: 4,
  /** The batch finished with failed items (beyond its failure policy) or Failed; a remote call threw. */
  failed: 5,
  /** --timeout passed (watch, call). */
  timeout: 6,
  /** Interrupted (Ctrl-C). */
  interrupted: 130,
} as const;

/** A usage problem: printed with the command's usage line, exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

export type FlagSpec = NonNullable<ParseArgsConfig['options']>;

/** Flags every command that talks to a batch takes. */
export const CONNECTION_FLAGS: FlagSpec = {
  namespace: { type: 'string', short: 'n' },
  context: { type: 'string' },
  kubeconfig: { type: 'string' },
  'redis-url': { type: 'string' },
  'redis-username': { type: 'string' },
  'redis-password-file': { type: 'string' },
  'redis-tls': { type: 'boolean' },
  'redis-ca-file': { type: 'string' },
  'redis-insecure': { type: 'boolean' },
  'redis-cluster': { type: 'boolean' },
  prefix: { type: 'string' },
  'port-forward': { type: 'string' },
};

export const CONNECTION_HELP = `Connection flags:
  -n, --namespace NS          Namespace of the batch (default: the kubeconfig context's, else "default")
      --context NAME          kubeconfig context to use
      --kubeconfig FILE       kubeconfig file (default: $KUBECONFIG, ~/.kube/config)
      --redis-url URL         Use this Redis (redis://host:port, rediss:// for TLS; env TASKBATCH_REDIS_URL).
                              Alone: no Kubernetes at all. With --context/--kubeconfig: overrides the
                              Redis the TaskBatch names.
      --redis-username USER   Redis ACL user
      --redis-password-file F File holding the Redis password (or env TASKBATCH_REDIS_PASSWORD)
      --redis-tls             Use TLS (implied by rediss://)
      --redis-ca-file FILE    CA bundle to verify Redis's certificate
      --redis-insecure        Do not verify Redis's certificate (testing only)
      --redis-cluster         The URL is a seed node of a Redis Cluster
      --prefix P              Key prefix of the installation (default "tb")
      --port-forward MODE     auto (default): port-forward through the API server when the batch's
                              Redis is not directly reachable; always; never`;

export interface Parsed {
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
}

/** Strict flag parsing; unknown flags and bad values are UsageErrors naming the flag. */
export function parse(argv: string[], flags: FlagSpec): Parsed {
  try {
    const r = parseArgs({ args: argv, options: { ...flags, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
    return { values: r.values as Parsed['values'], positionals: r.positionals };
  } catch (err) {
    const e = err as Error & { code?: string };
    if (e.code?.startsWith('ERR_PARSE_ARGS')) throw new UsageError(e.message.replace(/\. To specify a positional argument.*$/s, ''));
    throw err;
  }
}

export function str(p: Parsed, name: string): string | undefined {
  const v = p.values[name];
  return typeof v === 'string' ? v : undefined;
}

export function bool(p: Parsed, name: string): boolean {
  return p.values[name] === true;
}

/** Output formats a command accepts; the first is its default. */
export function outputFormat<T extends string>(p: Parsed, allowed: readonly T[]): T {
  const o = str(p, 'output') ?? allowed[0]!;
  if (!(allowed as readonly string[]).includes(o)) throw new UsageError(`--output ${JSON.stringify(o)} is not supported here; use one of: ${allowed.join(', ')}`);
  return o as T;
}

/** "30s", "5m", "1h", "1500ms", "2d", or plain seconds. */
export function parseDurationMs(text: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(text.trim());
  if (!m) throw new UsageError(`${flag} ${JSON.stringify(text)} is not a duration; use e.g. 500ms, 30s, 5m, 1h or 2d`);
  const n = Number(m[1]);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h' | 'd'];
  return Math.round(n * unit);
}

export function parsePositiveInt(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text) || Number(text) < 1) throw new UsageError(`${flag} must be a positive integer, got ${JSON.stringify(text)}`);
  return Number(text);
}

/** Builds an SDK client from the connection flags (and TASKBATCH_REDIS_URL / TASKBATCH_REDIS_PASSWORD). */
export async function clientFromFlags(p: Parsed, env: NodeJS.ProcessEnv = process.env): Promise<TaskBatchClient> {
  const redisUrl = str(p, 'redis-url') ?? (env.TASKBATCH_REDIS_URL || undefined);
  const kubeconfig = str(p, 'kubeconfig');
  const context = str(p, 'context');
  const wantKube = Boolean(kubeconfig || context) || !redisUrl;
  if (wantKube && !kubeconfig && !hasDefaultKubeconfig(env)) {
    throw new UsageError('no Kubernetes configuration found (KUBECONFIG, ~/.kube/config): pass --kubeconfig/--context, or --redis-url to use a Redis directly');
  }
  const pf = str(p, 'port-forward');
  if (pf !== undefined && !['auto', 'always', 'never'].includes(pf)) throw new UsageError(`--port-forward must be auto, always or never, got ${JSON.stringify(pf)}`);
  const passwordFile = str(p, 'redis-password-file');
  let password = env.TASKBATCH_REDIS_PASSWORD || undefined;
  if (passwordFile) {
    try {
      password = readFileSync(passwordFile, 'utf8').trim();
    } catch (err) {
      throw new UsageError(`--redis-password-file ${passwordFile}: ${(err as Error).message}`);
    }
  }
  const tls =
    bool(p, 'redis-tls') || str(p, 'redis-ca-file') || bool(p, 'redis-insecure')
      ? { ...(str(p, 'redis-ca-file') ? { caFile: str(p, 'redis-ca-file')! } : {}), ...(bool(p, 'redis-insecure') ? { insecureSkipVerify: true } : {}) }
      : undefined;
  const redis = {
    ...(redisUrl ? { url: redisUrl } : {}),
    ...(str(p, 'redis-username') ? { username: str(p, 'redis-username')! } : {}),
    ...(password ? { password } : {}),
    ...(tls ? { tls } : {}),
    ...(bool(p, 'redis-cluster') ? { cluster: true } : {}),
  };
  const options: ConnectOptions = {
    kube: wantKube ? { ...(kubeconfig ? { kubeconfig } : {}), ...(context ? { context } : {}) } : false,
    ...(Object.keys(redis).length > 0 ? { redis } : {}),
    ...(str(p, 'namespace') ? { namespace: str(p, 'namespace')! } : {}),
    ...(pf ? { portForward: pf as 'auto' | 'always' | 'never' } : {}),
    ...(str(p, 'prefix') ? { prefix: str(p, 'prefix')! } : {}),
    connectTimeoutMs: 10_000,
    onWarning: (m) => process.stderr.write(`taskbatch: warning: ${m}\n`),
  };
  if (!wantKube && !redisUrl) throw new TaskBatchError('Usage', 'pass --redis-url or a kubeconfig');
  return connect(options);
}

// ---------------------------------------------------------------- output

export function printJson(out: NodeJS.WritableStream, value: unknown): void {
  out.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function printYaml(out: NodeJS.WritableStream, value: unknown): void {
  out.write(toYaml(JSON.parse(JSON.stringify(value)) as unknown));
}

/** A kubectl-style table: upper-case headers, columns padded, three spaces apart. */
export function formatTable(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('   ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n') + '\n';
}

/** kubectl's AGE: 45s, 12m, 3h, 5d. */
export function age(from: string | Date | undefined, now = Date.now()): string {
  if (!from) return '<unknown>';
  const ms = now - new Date(from).getTime();
  if (!Number.isFinite(ms)) return '<unknown>';
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172_800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86_400)}d`;
}

export function truncate(s: string, n: number): string {
  const one = s.replace(/\s*\n\s*/g, ' ');
  return one.length > n ? `${one.slice(0, n - 1)}…` : one;
}

/** The one positional NAME a command takes. */
export function requireName(p: Parsed, usage: string): string {
  const name = p.positionals[0];
  if (!name) throw new UsageError(`missing the batch NAME\nusage: ${usage}`);
  return name;
}
