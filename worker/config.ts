import { existsSync, readFileSync } from 'node:fs';
import { availableParallelism, hostname } from 'node:os';
import { parseArgs } from 'node:util';
import {
  DEFAULT_CLAIM_MAX_BYTES,
  DEFAULT_LIMITS,
  DEFAULT_REPLICA_TIMEOUT_MS,
  DURABILITY_LEVELS,
  MAX_CLAIM_MAX_BYTES,
  parseRedisUrl,
  parseSentinelAddress,
  validateBatchRef,
  type Durability,
  type SentinelOptions,
} from '../queue/index.js';
import { validateWorkerId } from '../queue/presence.js';
import { POOL_MODES, type PoolMode } from './executor/types.js';
import { isStdioSpec, parseHandlerSpec, type HandlerSpec } from './handler/spec.js';
import { LOG_LEVELS, type LogLevel } from './log.js';

/**
 * The worker's configuration: environment variables (what the operator sets on the pod),
 * each overridable by a command-line flag. Read once, validated (every problem reported,
 * naming the variable and the expected form), then frozen. docs/worker.md has the table.
 */
export interface WorkerConfig {
  redis: {
    url: string;
    username?: string;
    password?: string;
    /** Where the password came from; re-read on reconnection (rotation). */
    passwordFile?: string;
    tls?: { caFile?: string; serverName?: string; insecureSkipVerify?: boolean };
    cluster: boolean;
    /** The primary is found through these sentinels (url is then redis://<masterName>/<db>, not dialled). */
    sentinel?: SentinelOptions;
    /** 'replicated': every state change waits for a replica (queue.ts QueueOptions.durability). */
    durability: Durability;
    replicaTimeoutMs: number;
    prefix: string;
    commandTimeoutMs: number;
    /** Run on a Redis whose maxmemory-policy evicts keys (queue/eviction-policy.ts); refused by default. */
    allowEviction: boolean;
  };
  batch: { namespace: string; name: string; expectedEpoch?: string };
  handler: HandlerSpec;
  pool: { mode: PoolMode; size: number; maxItemsPerExecutor: number; maxMemoryMiB: number };
  /** Accepted but questionable settings, logged at start. */
  warnings: string[];
  itemTimeoutMs: number;
  leaseMs: number;
  shutdownGraceMs: number;
  abortGraceMs: number;
  prefetchMax: number;
  ackMaxItems: number;
  ackMaxDelayMs: number;
  idlePollMs: number;
  /** Byte budget of one claim reply (payloads + tokens); one larger item is still claimed alone. */
  claimMaxBytes: number;
  /** Mark prefetched items started just before they run (only those are charged if the worker dies). */
  chargeOnlyStarted: boolean;
  /** Largest result (JSON bytes) an item may return; checked in the executor before it is sent. */
  maxResultBytes: number;
  /** Handler log lines per item: refill rate (0 = no limit) and burst. */
  handlerLog: { linesPerSecond: number; burst: number };
  heartbeatMs: number;
  presenceStaleMs: number;
  stateLostExitMs: number;
  /** 0 = no watchdog. */
  watchdogMs: number;
  /** undefined = no HTTP server. */
  http?: { host: string; port: number };
  workerId: string;
  podIp?: string;
  logLevel: LogLevel;
}

export interface SettingDef {
  env: string;
  flag: string;
  help: string;
  /** Shown in help and docs. */
  default: string;
  boolean?: boolean;
  /** Removed from process.env after reading, so handlers and their commands do not inherit it. */
  secret?: boolean;
}

export const SETTINGS: readonly SettingDef[] = [
  {
    env: 'TASKBATCH_REDIS_URL',
    flag: 'redis-url',
    default: '(required, or TASKBATCH_REDIS_HOST or TASKBATCH_REDIS_SENTINELS)',
    help: 'Redis address: redis://host:port[/db], rediss:// for TLS. No credentials in the URL.',
  },
  { env: 'TASKBATCH_REDIS_HOST', flag: 'redis-host', default: '', help: 'Redis host, instead of a URL.' },
  { env: 'TASKBATCH_REDIS_PORT', flag: 'redis-port', default: '6379', help: 'Redis port (with TASKBATCH_REDIS_HOST).' },
  { env: 'TASKBATCH_REDIS_DB', flag: 'redis-db', default: '0', help: 'Redis database number (with TASKBATCH_REDIS_HOST or TASKBATCH_REDIS_SENTINELS).' },
  { env: 'TASKBATCH_REDIS_USERNAME', flag: 'redis-username', default: '', help: 'Redis ACL user name.' },
  { env: 'TASKBATCH_REDIS_PASSWORD', flag: 'redis-password', default: '', help: 'Redis password (prefer TASKBATCH_REDIS_PASSWORD_FILE).', secret: true },
  {
    env: 'TASKBATCH_REDIS_PASSWORD_FILE',
    flag: 'redis-password-file',
    default: '',
    help: 'File holding the Redis password (a mounted Secret; what the operator sets). Read again on each reconnection, so a rotated password is picked up.',
  },
  {
    env: 'TASKBATCH_REDIS_PASSWORD_OPTIONAL',
    flag: 'redis-password-optional',
    default: 'false',
    boolean: true,
    help: 'A missing TASKBATCH_REDIS_PASSWORD_FILE means no password (an optional Secret key).',
  },
  { env: 'TASKBATCH_REDIS_TLS', flag: 'redis-tls', default: 'false', boolean: true, help: 'Use TLS (implied by rediss://).' },
  { env: 'TASKBATCH_REDIS_TLS_CA_FILE', flag: 'redis-tls-ca-file', default: '', help: 'CA bundle (PEM) to verify the Redis server.' },
  { env: 'TASKBATCH_REDIS_TLS_SERVER_NAME', flag: 'redis-tls-server-name', default: '', help: 'TLS server name (SNI) to verify.' },
  { env: 'TASKBATCH_REDIS_TLS_INSECURE', flag: 'redis-tls-insecure', default: 'false', boolean: true, help: 'Skip TLS certificate verification (testing only).' },
  { env: 'TASKBATCH_REDIS_CLUSTER', flag: 'redis-cluster', default: 'false', boolean: true, help: 'Connect to a Redis Cluster (the address is a seed node).' },
  {
    env: 'TASKBATCH_REDIS_SENTINELS',
    flag: 'redis-sentinels',
    default: '',
    help: 'Find the primary through these Redis Sentinels: host:port,host:port (IPv6 as [addr]:port), instead of TASKBATCH_REDIS_URL/HOST; after a failover the worker reconnects to the new primary.',
  },
  { env: 'TASKBATCH_REDIS_SENTINEL_MASTER', flag: 'redis-sentinel-master', default: '(required with sentinels)', help: "The primary's name as the sentinels know it (sentinel monitor <name> ...)." },
  { env: 'TASKBATCH_REDIS_SENTINEL_PASSWORD', flag: 'redis-sentinel-password', default: '', help: 'Password of the sentinels themselves, when they require AUTH.', secret: true },
  {
    env: 'TASKBATCH_REDIS_SENTINEL_PASSWORD_FILE',
    flag: 'redis-sentinel-password-file',
    default: '',
    help: "File holding the sentinels' password (a mounted Secret; what the operator sets for spec.redis.sentinel.passwordKey).",
  },
  {
    env: 'TASKBATCH_REDIS_DURABILITY',
    flag: 'redis-durability',
    default: 'local',
    help: 'local: a state change counts once the primary has it. replicated: each one also waits (WAIT) for one replica, so a failover loses no acknowledged change; see "Durability and failover".',
  },
  {
    env: 'TASKBATCH_REDIS_REPLICA_TIMEOUT_MS',
    flag: 'redis-replica-timeout-ms',
    default: `${DEFAULT_REPLICA_TIMEOUT_MS}, at most half the command timeout`,
    help: 'With replicated durability: how long a call waits for the replica; unacknowledged, it fails and is retried. Must be below TASKBATCH_REDIS_COMMAND_TIMEOUT_MS.',
  },
  { env: 'TASKBATCH_REDIS_PREFIX', flag: 'redis-prefix', default: 'tb', help: 'Key prefix of the installation.' },
  {
    env: 'TASKBATCH_REDIS_ALLOW_EVICTION',
    flag: 'redis-allow-eviction',
    default: 'false',
    boolean: true,
    help: 'Run on a Redis whose maxmemory-policy evicts keys (it can lose items); refused by default.',
  },
  {
    env: 'TASKBATCH_REDIS_COMMAND_TIMEOUT_MS',
    flag: 'redis-command-timeout-ms',
    default: 'a third of the lease, at most 10000',
    help: 'A Redis call that takes longer fails and is retried; a connection that sends nothing back this long is dropped and reopened. Must be below two thirds of the lease.',
  },
  { env: 'TASKBATCH_NAMESPACE', flag: 'namespace', default: 'default', help: "The TaskBatch's namespace." },
  { env: 'TASKBATCH_BATCH', flag: 'batch', default: '(required)', help: "The TaskBatch's name." },
  { env: 'TASKBATCH_QUEUE_EPOCH', flag: 'queue-epoch', default: '(pinned at start)', help: "The batch's epoch from its status; work stops if Redis holds another (lost state)." },
  {
    env: 'TASKBATCH_HANDLER',
    flag: 'handler',
    default: '(required)',
    help: 'Handler: noop | sleep | primes | ./path.js[#export] | pkg#export | JSON {"module":..,"export":..} / {"builtin":"shell","command":[..]} / {"command":[..],"protocol":"stdio"} (any language, docs/handler-protocol.md); "#*" dispatches by item.fn.',
  },
  { env: 'TASKBATCH_POOL_MODE', flag: 'pool-mode', default: 'thread (process for a stdio handler)', help: 'thread | process | async; a stdio handler runs in process mode only.' },
  { env: 'TASKBATCH_POOL_SIZE', flag: 'pool-size', default: 'CPUs (thread, process); 16 (async)', help: 'Threads, child processes, or concurrent async calls.' },
  { env: 'TASKBATCH_MAX_ITEMS_PER_EXECUTOR', flag: 'max-items-per-executor', default: '0 (never)', help: 'Replace a thread/process after this many items.' },
  {
    env: 'TASKBATCH_MAX_MEMORY_MIB',
    flag: 'max-memory-mib',
    default: '0 (no limit)',
    help: 'Replace a thread/process after an item once it uses more (process RSS / thread heap); V8 heap capped at twice this.',
  },
  { env: 'TASKBATCH_ITEM_TIMEOUT_SECONDS', flag: 'item-timeout-seconds', default: '600', help: 'Per-item timeout (hard in thread/process mode, cooperative + watchdog in async mode).' },
  { env: 'TASKBATCH_LEASE_SECONDS', flag: 'lease-seconds', default: '30', help: 'Lease per claimed item, renewed every third of it.' },
  {
    env: 'TASKBATCH_SHUTDOWN_GRACE_SECONDS',
    flag: 'shutdown-grace-seconds',
    default: '20',
    help: 'On SIGTERM: how long running items may finish before they are released. A drain (scale-in) lets them finish, up to the item timeout.',
  },
  { env: 'TASKBATCH_ABORT_GRACE_SECONDS', flag: 'abort-grace-seconds', default: '1', help: 'After a timeout or abort, how long user code may take to stop before its thread/process is killed.' },
  { env: 'TASKBATCH_PREFETCH_MAX', flag: 'prefetch-max', default: '256', help: 'Most claimed items waiting for an executor (the adaptive prefetch stays below).' },
  { env: 'TASKBATCH_ACK_MAX_ITEMS', flag: 'ack-max-items', default: '100', help: 'Flush acknowledgements once this many wait.' },
  { env: 'TASKBATCH_ACK_MAX_DELAY_MS', flag: 'ack-max-delay-ms', default: '0', help: 'Flush acknowledgements at most this late (0: as soon as no flush is in flight).' },
  { env: 'TASKBATCH_IDLE_POLL_MS', flag: 'idle-poll-ms', default: '5000', help: 'Longest an idle worker waits for a wake-up before it claims anyway (a safety net).' },
  {
    env: 'TASKBATCH_CHARGE_ONLY_STARTED',
    flag: 'charge-only-started',
    default: 'true in thread and process mode, false in async mode',
    boolean: true,
    help: 'If the worker dies, charge an attempt only to items that had started or were pipelined to an executor (prefetched ones go back free). Costs a Redis round trip before each wave of prefetched items: on no-op items, 0.7-1.0x the throughput in thread/process mode, 0.2-0.4x in async mode.',
  },
  {
    env: 'TASKBATCH_CLAIM_MAX_BYTES',
    flag: 'claim-max-bytes',
    default: String(DEFAULT_CLAIM_MAX_BYTES),
    help: 'Byte budget of one claim reply (payloads + tokens): a claim stops adding items before crossing it, but always takes one, so a larger item is claimed alone.',
  },
  {
    env: 'TASKBATCH_MAX_RESULT_BYTES',
    flag: 'max-result-bytes',
    default: String(DEFAULT_LIMITS.maxResultBytes),
    help: 'Largest result (JSON bytes) an item may return; a larger one fails the item (ResultTooLarge, not retried), checked in the executor before the result leaves it.',
  },
  {
    env: 'TASKBATCH_HANDLER_LOG_LINES_PER_SECOND',
    flag: 'handler-log-lines-per-second',
    default: '100',
    help: 'Handler log lines (ctx.log) per item and second, after the burst; lines over it are dropped and counted (0 = no limit).',
  },
  { env: 'TASKBATCH_HANDLER_LOG_BURST', flag: 'handler-log-burst', default: '1000', help: 'Handler log lines an item may write at once before the per-second rate applies.' },
  { env: 'TASKBATCH_HEARTBEAT_SECONDS', flag: 'heartbeat-seconds', default: '5', help: 'Presence heartbeat (and drain-request check) interval.' },
  { env: 'TASKBATCH_PRESENCE_STALE_SECONDS', flag: 'presence-stale-seconds', default: '30', help: 'Registry entries older than this are removed.' },
  { env: 'TASKBATCH_STATE_LOST_EXIT_SECONDS', flag: 'state-lost-exit-seconds', default: '60', help: "Exit with code 4 once the batch's state has been missing from Redis this long." },
  {
    env: 'TASKBATCH_WATCHDOG_SECONDS',
    flag: 'watchdog-seconds',
    default: 'async: min(timeout, lease) + 1; else lease + 1',
    help: 'Kill the process when its event loop is blocked this long (0 = off).',
  },
  { env: 'TASKBATCH_METRICS_ADDR', flag: 'metrics-addr', default: '(all interfaces)', help: 'Address of the /metrics, /healthz, /readyz server.' },
  { env: 'TASKBATCH_METRICS_PORT', flag: 'metrics-port', default: '9464', help: 'Port of that server; 0 = any free port; "off" = no server.' },
  { env: 'TASKBATCH_WORKER_ID', flag: 'worker-id', default: '(host name = pod name)', help: "The worker's id in the presence registry." },
  { env: 'POD_IP', flag: 'pod-ip', default: '', help: "The pod's IP, reported in presence (from the downward API)." },
  { env: 'TASKBATCH_LOG_LEVEL', flag: 'log-level', default: 'info', help: 'debug | info | warn | error.' },
];

export class ConfigError extends Error {
  override name = 'ConfigError';
  constructor(readonly problems: string[]) {
    super(`invalid worker configuration:\n  - ${problems.join('\n  - ')}`);
  }
}

export interface ParsedArgs {
  /** Flag values by flag name (without --). */
  flags: Record<string, string | boolean | undefined>;
  help: boolean;
}

/** Parses flags: every setting's flag plus `extra` ones (e.g. the local run's). */
export function parseFlags(argv: readonly string[], extra: Record<string, { type: 'string' | 'boolean' }> = {}): ParsedArgs {
  const options: Record<string, { type: 'string' | 'boolean' }> = { help: { type: 'boolean' }, ...extra };
  for (const s of SETTINGS) options[s.flag] = { type: s.boolean ? 'boolean' : 'string' };
  try {
    const { values } = parseArgs({ args: [...argv], options, strict: true, allowPositionals: false });
    return { flags: values as Record<string, string | boolean | undefined>, help: values.help === true };
  } catch (err) {
    throw new ConfigError([`${(err as Error).message}; run with --help for the list of flags`]);
  }
}

export function helpText(extra = ''): string {
  const lines = ['Usage: taskbatch-worker [flags]   (each flag overrides its environment variable)', ''];
  for (const s of SETTINGS) {
    lines.push(`  --${s.flag}${s.boolean ? '' : ' <value>'}`.padEnd(42) + `${s.env}`);
    lines.push(`      ${s.help}${s.default ? ` Default: ${s.default}.` : ''}`);
  }
  return `${lines.join('\n')}\n${extra}`;
}

/** Reads, validates and freezes the configuration. Throws ConfigError listing every problem. */
export function loadConfig(env: Record<string, string | undefined>, flags: Record<string, string | boolean | undefined> = {}, cwd = process.cwd()): WorkerConfig {
  const problems: string[] = [];
  const defs = new Map(SETTINGS.map((s) => [s.env, s]));
  const name = (envName: string): string => {
    const d = defs.get(envName);
    return d ? `${d.env} (--${d.flag})` : envName;
  };
  const raw = (envName: string): string | undefined => {
    const d = defs.get(envName);
    const f = d ? flags[d.flag] : undefined;
    if (typeof f === 'boolean') return f ? 'true' : 'false';
    const v = f ?? env[envName];
    return v === undefined || v.trim() === '' ? undefined : v.trim();
  };
  const bad = (envName: string, expected: string, got: string | undefined): undefined => {
    problems.push(`${name(envName)} ${expected}${got === undefined ? '' : `, got ${JSON.stringify(got)}`}`);
    return undefined;
  };
  const int = (envName: string, min: number, max: number, dflt: number): number => {
    const v = raw(envName);
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!/^-?\d+$/.test(v) || n < min || n > max) return bad(envName, `must be an integer from ${min} to ${max}`, v) ?? dflt;
    return n;
  };
  const seconds = (envName: string, min: number, max: number, dflt: number): number => {
    const v = raw(envName);
    if (v === undefined) return Math.round(dflt * 1000);
    const n = Number(v);
    if (!/^\d+(\.\d+)?$/.test(v) || n < min || n > max) return bad(envName, `must be a number of seconds from ${min} to ${max} (decimals allowed)`, v) ?? Math.round(dflt * 1000);
    return Math.round(n * 1000);
  };
  const bool = (envName: string): boolean => {
    const v = raw(envName);
    if (v === undefined) return false;
    if (/^(true|1|yes|on)$/i.test(v)) return true;
    if (/^(false|0|no|off)$/i.test(v)) return false;
    return bad(envName, 'must be true or false', v) ?? false;
  };
  /** A secret given as ENV or as a file named by ENV_FILE (a Secret volume), not both; a missing optional file is no secret. */
  const secret = (envName: string, missingFileOk: boolean): string | undefined => {
    const value = raw(envName);
    const file = raw(`${envName}_FILE`);
    if (value && file) problems.push(`set either ${name(envName)} or ${name(`${envName}_FILE`)}, not both`);
    if (value || !file) return value;
    try {
      return readPasswordFile(file);
    } catch (err) {
      const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
      if (!(missing && missingFileOk)) problems.push(`${name(`${envName}_FILE`)} could not be read: ${(err as Error).message}`);
      return undefined;
    }
  };
  const oneOf = <T extends string>(envName: string, values: readonly T[], dflt: T): T => {
    const v = raw(envName);
    if (v === undefined) return dflt;
    if (!(values as readonly string[]).includes(v)) return bad(envName, `must be one of ${values.join(', ')}`, v) ?? dflt;
    return v as T;
  };

  // Redis
  let url = raw('TASKBATCH_REDIS_URL');
  const host = raw('TASKBATCH_REDIS_HOST');
  const tlsFlag = bool('TASKBATCH_REDIS_TLS');
  const sentinelList = raw('TASKBATCH_REDIS_SENTINELS');
  const sentinelMaster = raw('TASKBATCH_REDIS_SENTINEL_MASTER');
  const sentinelPassword = secret('TASKBATCH_REDIS_SENTINEL_PASSWORD', false);
  let sentinel: SentinelOptions | undefined;
  if (url && host) problems.push(`set either ${name('TASKBATCH_REDIS_URL')} or ${name('TASKBATCH_REDIS_HOST')}, not both`);
  if (sentinelList) {
    if (url || host)
      problems.push(`set either ${name('TASKBATCH_REDIS_SENTINELS')} or ${name(url ? 'TASKBATCH_REDIS_URL' : 'TASKBATCH_REDIS_HOST')}, not both: with sentinels the primary's address comes from them`);
    if (bool('TASKBATCH_REDIS_CLUSTER')) problems.push(`${name('TASKBATCH_REDIS_SENTINELS')} and ${name('TASKBATCH_REDIS_CLUSTER')} exclude each other: a Redis Cluster fails over by itself`);
    if (tlsFlag)
      problems.push(
        `${name('TASKBATCH_REDIS_SENTINELS')} and ${name('TASKBATCH_REDIS_TLS')}: TLS through Redis Sentinel is not supported yet (the primary would be dialled in plain text); unset one of them`,
      );
    const addresses = parseSentinelAddresses(sentinelList);
    if (typeof addresses === 'string') bad('TASKBATCH_REDIS_SENTINELS', `must be host:port[,host:port...] (IPv6 as [addr]:port): ${addresses}`, sentinelList);
    if (!sentinelMaster)
      problems.push(`${name('TASKBATCH_REDIS_SENTINEL_MASTER')} is required with ${name('TASKBATCH_REDIS_SENTINELS')}: the primary's name in the sentinels' 'sentinel monitor <name> ...'`);
    else if (!/^[A-Za-z0-9_.-]{1,128}$/.test(sentinelMaster)) bad('TASKBATCH_REDIS_SENTINEL_MASTER', "must be 1-128 letters, digits, '_', '.' or '-'", sentinelMaster);
    else if (typeof addresses !== 'string') {
      sentinel = { addresses, masterName: sentinelMaster, ...(sentinelPassword ? { password: sentinelPassword } : {}) };
      // Not dialled (the sentinels give the address); it carries the database and the TLS choice, and names the primary in logs.
      url = `${tlsFlag ? 'rediss' : 'redis'}://${sentinelMaster}/${int('TASKBATCH_REDIS_DB', 0, 1_000_000, 0)}`;
    }
  } else if (sentinelMaster) problems.push(`${name('TASKBATCH_REDIS_SENTINEL_MASTER')} is set but ${name('TASKBATCH_REDIS_SENTINELS')} is not: list the sentinels (host:port,host:port)`);
  if (!url && host) {
    const port = int('TASKBATCH_REDIS_PORT', 1, 65535, 6379);
    const db = int('TASKBATCH_REDIS_DB', 0, 1_000_000, 0);
    url = `${tlsFlag ? 'rediss' : 'redis'}://${host.includes(':') ? `[${host}]` : host}:${port}/${db}`;
  }
  if (!url) {
    if (!sentinelList)
      problems.push(`${name('TASKBATCH_REDIS_URL')} is required (redis://host:port or rediss://host:port), or set ${name('TASKBATCH_REDIS_HOST')} or ${name('TASKBATCH_REDIS_SENTINELS')}`);
  } else {
    try {
      parseRedisUrl(url);
    } catch (err) {
      problems.push(`${name(host ? 'TASKBATCH_REDIS_HOST' : 'TASKBATCH_REDIS_URL')}: ${(err as Error).message}`);
    }
  }
  const password = secret('TASKBATCH_REDIS_PASSWORD', bool('TASKBATCH_REDIS_PASSWORD_OPTIONAL'));
  // Kept so the worker can read the file again after a rotation.
  const passwordFile = raw('TASKBATCH_REDIS_PASSWORD_FILE');
  const caFile = raw('TASKBATCH_REDIS_TLS_CA_FILE');
  if (caFile && !existsSync(caFile)) problems.push(`${name('TASKBATCH_REDIS_TLS_CA_FILE')} does not exist: ${caFile}`);
  const serverName = raw('TASKBATCH_REDIS_TLS_SERVER_NAME');
  const insecure = bool('TASKBATCH_REDIS_TLS_INSECURE');
  const prefix = raw('TASKBATCH_REDIS_PREFIX') ?? 'tb';
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(prefix)) bad('TASKBATCH_REDIS_PREFIX', "must be 1-64 letters, digits, '_', '.' or '-'", prefix);
  const username = raw('TASKBATCH_REDIS_USERNAME');
  const wantTls = tlsFlag || caFile !== undefined || serverName !== undefined || insecure;

  // Batch
  const namespace = raw('TASKBATCH_NAMESPACE') ?? 'default';
  const batchName = raw('TASKBATCH_BATCH');
  if (!batchName) problems.push(`${name('TASKBATCH_BATCH')} is required: the TaskBatch's name`);
  else {
    try {
      validateBatchRef({ namespace, name: batchName });
    } catch (err) {
      const msg = (err as Error).message;
      problems.push(`${name(msg.startsWith('namespace') ? 'TASKBATCH_NAMESPACE' : 'TASKBATCH_BATCH')}: ${msg}`);
    }
  }
  const epoch = raw('TASKBATCH_QUEUE_EPOCH');

  // Handler
  let handler: HandlerSpec | undefined;
  const handlerText = raw('TASKBATCH_HANDLER');
  if (!handlerText) problems.push(`${name('TASKBATCH_HANDLER')} is required: a builtin (noop, sleep, primes), a module path[#export], or JSON {"module": ..., "export": ...}`);
  else {
    try {
      handler = parseHandlerSpec(handlerText, cwd);
    } catch (err) {
      problems.push(`${name('TASKBATCH_HANDLER')}: ${(err as Error).message}`);
    }
  }

  // Pool
  // A stdio handler is a process of its own per slot: process mode is its only mode, and its default.
  const stdio = handler !== undefined && isStdioSpec(handler);
  const mode = oneOf('TASKBATCH_POOL_MODE', POOL_MODES, stdio ? 'process' : 'thread');
  if (stdio && mode !== 'process') {
    problems.push(
      `${name('TASKBATCH_POOL_MODE')} is ${JSON.stringify(mode)}, but the handler is a stdio command, which runs only in process pool mode (one handler process per slot): set TASKBATCH_POOL_MODE=process or leave it unset`,
    );
  }
  const size = int('TASKBATCH_POOL_SIZE', 1, 1024, mode === 'async' ? 16 : Math.max(1, availableParallelism()));
  const maxItemsPerExecutor = int('TASKBATCH_MAX_ITEMS_PER_EXECUTOR', 0, 1_000_000_000, 0);
  const maxMemoryMiB = int('TASKBATCH_MAX_MEMORY_MIB', 0, 1_048_576, 0);
  // Accepted as the CRD allows them (pods must not crash-loop on a valid TaskBatch), with warnings.
  const warnings: string[] = [];
  if (maxMemoryMiB > 0 && maxMemoryMiB < 16) bad('TASKBATCH_MAX_MEMORY_MIB', 'must be 0 (no limit) or at least 16', String(maxMemoryMiB));
  else if (maxMemoryMiB > 0 && maxMemoryMiB < 64 && mode === 'process' && !stdio) {
    warnings.push(`${name('TASKBATCH_MAX_MEMORY_MIB')} is ${maxMemoryMiB}: a Node.js child process alone uses about 45 MiB RSS, so executors will be replaced after nearly every item`);
  }
  if (mode === 'async' && (maxItemsPerExecutor > 0 || maxMemoryMiB > 0)) {
    warnings.push(`${name('TASKBATCH_MAX_ITEMS_PER_EXECUTOR')} and ${name('TASKBATCH_MAX_MEMORY_MIB')} apply to thread and process mode only; ignored in async mode`);
  }

  // Timing
  // 600 s, as the CRD's spec.itemTimeoutSeconds default (a local run gets the same as a pod).
  const itemTimeoutMs = seconds('TASKBATCH_ITEM_TIMEOUT_SECONDS', 0.01, 7 * 86_400, 600);
  const leaseMs = seconds('TASKBATCH_LEASE_SECONDS', 0.5, 86_400, 30);
  const shutdownGraceMs = seconds('TASKBATCH_SHUTDOWN_GRACE_SECONDS', 0, 86_400, 20);
  const abortGraceMs = seconds('TASKBATCH_ABORT_GRACE_SECONDS', 0, 600, 1);
  const prefetchMax = int('TASKBATCH_PREFETCH_MAX', 1, 10_000, 256);
  const ackMaxItems = int('TASKBATCH_ACK_MAX_ITEMS', 1, 10_000, 100);
  const ackMaxDelayMs = int('TASKBATCH_ACK_MAX_DELAY_MS', 0, 10_000, 0);
  const idlePollMs = int('TASKBATCH_IDLE_POLL_MS', 10, 600_000, 5000);
  // Bytes, so that the error names the exact bounds (1 KiB to Redis' 512 MiB bulk-string limit).
  const claimMaxBytes = int('TASKBATCH_CLAIM_MAX_BYTES', 1024, MAX_CLAIM_MAX_BYTES, DEFAULT_CLAIM_MAX_BYTES);
  // The queue's own bounds on limits.maxResultBytes (queue/options.ts).
  const maxResultBytes = int('TASKBATCH_MAX_RESULT_BYTES', 16, 64 * 1024 * 1024, DEFAULT_LIMITS.maxResultBytes);
  const handlerLog = { linesPerSecond: int('TASKBATCH_HANDLER_LOG_LINES_PER_SECOND', 0, 1_000_000, 100), burst: int('TASKBATCH_HANDLER_LOG_BURST', 1, 1_000_000, 1000) };
  const heartbeatMs = seconds('TASKBATCH_HEARTBEAT_SECONDS', 0.05, 3600, 5);
  const presenceStaleMs = seconds('TASKBATCH_PRESENCE_STALE_SECONDS', 0.1, 86_400, 30);
  if (presenceStaleMs < 2 * heartbeatMs) problems.push(`${name('TASKBATCH_PRESENCE_STALE_SECONDS')} must be at least twice ${name('TASKBATCH_HEARTBEAT_SECONDS')}, or live workers would be pruned`);
  const stateLostExitMs = seconds('TASKBATCH_STATE_LOST_EXIT_SECONDS', 0, 7 * 86_400, 60);
  const commandTimeoutMs = int('TASKBATCH_REDIS_COMMAND_TIMEOUT_MS', 100, 600_000, defaultCommandTimeoutMs(leaseMs));
  const durability = oneOf('TASKBATCH_REDIS_DURABILITY', DURABILITY_LEVELS, 'local');
  // WAIT blocks its call for up to this long: it must end (and report the missing replica) before the command timeout cuts the call off.
  const replicaTimeoutMs = int('TASKBATCH_REDIS_REPLICA_TIMEOUT_MS', 1, 600_000, Math.max(1, Math.min(DEFAULT_REPLICA_TIMEOUT_MS, Math.floor(commandTimeoutMs / 2))));
  if (replicaTimeoutMs >= commandTimeoutMs) {
    problems.push(
      `${name('TASKBATCH_REDIS_REPLICA_TIMEOUT_MS')} must be below ${name('TASKBATCH_REDIS_COMMAND_TIMEOUT_MS')} (${commandTimeoutMs}), got ${replicaTimeoutMs}: the wait for a replica would be cut off as a hung call`,
    );
  }
  // A renewal sent just after the last good one has the rest of the lease (two thirds) to land:
  // a hung call must fail, and its connection be dropped and reopened, well before that.
  const leaseMarginMs = Math.floor((2 * leaseMs) / 3);
  if (commandTimeoutMs >= leaseMarginMs) {
    problems.push(
      `${name('TASKBATCH_REDIS_COMMAND_TIMEOUT_MS')} must be below two thirds of the lease (${name('TASKBATCH_LEASE_SECONDS')} = ${leaseMs / 1000} s, so below ${leaseMarginMs}), got ${commandTimeoutMs}: a hung Redis call would outlive the leases it should renew. Unset it (the default is a third of the lease, at most 10000) or raise the lease`,
    );
  }
  const defaultWatchdog = (mode === 'async' ? Math.min(itemTimeoutMs, leaseMs) : leaseMs) + 1000;
  const watchdogMs = raw('TASKBATCH_WATCHDOG_SECONDS') === undefined ? defaultWatchdog : seconds('TASKBATCH_WATCHDOG_SECONDS', 0, 86_400, 0);
  if (watchdogMs > 0 && watchdogMs < 200) bad('TASKBATCH_WATCHDOG_SECONDS', 'must be 0 (off) or at least 0.2', raw('TASKBATCH_WATCHDOG_SECONDS'));

  // HTTP, identity, logs
  const metricsPortRaw = raw('TASKBATCH_METRICS_PORT');
  let http: WorkerConfig['http'];
  if (metricsPortRaw === undefined || !/^(off|none|disabled)$/i.test(metricsPortRaw)) {
    http = { host: raw('TASKBATCH_METRICS_ADDR') ?? '', port: int('TASKBATCH_METRICS_PORT', 0, 65535, 9464) };
  }
  const workerId = raw('TASKBATCH_WORKER_ID') ?? hostname();
  try {
    validateWorkerId(workerId);
  } catch (err) {
    problems.push(`${name('TASKBATCH_WORKER_ID')}: ${(err as Error).message}`);
  }
  const podIp = raw('POD_IP');
  const logLevel = oneOf('TASKBATCH_LOG_LEVEL', LOG_LEVELS, 'info');

  if (problems.length > 0) throw new ConfigError(problems);
  const config: WorkerConfig = {
    redis: {
      url: url as string,
      ...(username ? { username } : {}),
      ...(password ? { password } : {}),
      ...(passwordFile ? { passwordFile } : {}),
      ...(wantTls ? { tls: { ...(caFile ? { caFile } : {}), ...(serverName ? { serverName } : {}), ...(insecure ? { insecureSkipVerify: true } : {}) } } : {}),
      cluster: bool('TASKBATCH_REDIS_CLUSTER'),
      ...(sentinel ? { sentinel } : {}),
      durability,
      replicaTimeoutMs,
      prefix,
      commandTimeoutMs,
      allowEviction: bool('TASKBATCH_REDIS_ALLOW_EVICTION'),
    },
    batch: { namespace, name: batchName as string, ...(epoch ? { expectedEpoch: epoch } : {}) },
    handler: handler as HandlerSpec,
    pool: mode === 'async' ? { mode, size, maxItemsPerExecutor: 0, maxMemoryMiB: 0 } : { mode, size, maxItemsPerExecutor, maxMemoryMiB },
    warnings,
    itemTimeoutMs,
    leaseMs,
    shutdownGraceMs,
    abortGraceMs,
    prefetchMax,
    ackMaxItems,
    ackMaxDelayMs,
    idlePollMs,
    claimMaxBytes,
    // An async pool has no pipeline to mark ahead into: each wave waits a round trip (docs/worker.md).
    chargeOnlyStarted: raw('TASKBATCH_CHARGE_ONLY_STARTED') === undefined ? mode !== 'async' : bool('TASKBATCH_CHARGE_ONLY_STARTED'),
    maxResultBytes,
    handlerLog,
    heartbeatMs,
    presenceStaleMs,
    stateLostExitMs,
    watchdogMs,
    ...(http ? { http } : {}),
    workerId,
    ...(podIp ? { podIp } : {}),
    logLevel,
  };
  return deepFreeze(config);
}

/** "host:port,host:port" ([addr]:port for IPv6) as addresses, or what is wrong with it. */
function parseSentinelAddresses(list: string): { host: string; port: number }[] | string {
  const addresses: { host: string; port: number }[] = [];
  for (const part of list.split(',').map((p) => p.trim())) {
    const address = parseSentinelAddress(part);
    if (!address) return `${JSON.stringify(part)} is not host:port with a port from 1 to 65535`;
    addresses.push(address);
  }
  return addresses;
}

/** A third of the lease (the renewal interval), at most 10 s: a hung call fails before the next renewal is due. */
function defaultCommandTimeoutMs(leaseMs: number): number {
  return Math.max(100, Math.min(10_000, Math.floor(leaseMs / 3)));
}

/** A password file's content without its final newline (what `kubectl create secret --from-file` may leave). */
export function readPasswordFile(path: string): string {
  return readFileSync(path, 'utf8').replace(/\r?\n$/, '');
}

/** Environment variables holding secrets, removed from process.env once read. */
export const SECRET_ENV = SETTINGS.filter((s) => s.secret).map((s) => s.env);

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value as Record<string, unknown>)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
