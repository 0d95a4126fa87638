/**
 * Structured JSON logs for the local cluster, quiet by default.
 * TASKBATCH_LOCALCLUSTER_LOG=debug|info|warn|error|silent picks the level (default: warn).
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(component: string): Logger;
}

const RANK: Record<LogLevel | 'silent', number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

function configuredRank(): number {
  const v = (process.env.TASKBATCH_LOCALCLUSTER_LOG ?? 'warn').toLowerCase();
  return v in RANK ? RANK[v as LogLevel] : RANK.warn;
}

export function createLogger(component: string, sink: (line: string) => void = (l) => process.stderr.write(l + '\n')): Logger {
  const min = configuredRank();
  const emit = (level: LogLevel, msg: string, fields?: LogFields): void => {
    if (RANK[level] < min) return;
    sink(JSON.stringify({ time: new Date().toISOString(), level, component, msg, ...fields }, errorReplacer));
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (c) => createLogger(`${component}.${c}`, sink),
  };
}

function errorReplacer(_key: string, value: unknown): unknown {
  if (value instanceof Error) return { name: value.name, message: value.message };
  return value;
}

/** A short description of any thrown value, for logs and error messages. */
export function describeError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    const body = (err as { body?: unknown }).body;
    let detail = '';
    if (typeof body === 'string' && body.length > 0) {
      try {
        const parsed = JSON.parse(body) as { message?: string };
        detail = parsed.message ? `: ${parsed.message}` : '';
      } catch {
        detail = `: ${body.slice(0, 300)}`;
      }
    }
    return `${err.message}${code !== undefined && !err.message.includes(String(code)) ? ` (code ${String(code)})` : ''}${detail && !err.message.includes(detail.slice(2)) ? detail : ''}`;
  }
  return String(err);
}
