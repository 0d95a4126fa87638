import type { LogLevel } from './handler/api.js';

export type { LogLevel };
export const LOG_LEVELS: readonly LogLevel[] = ['debug', 'info', 'warn', 'error'];
const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  readonly level: LogLevel;
  enabled(level: LogLevel): boolean;
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

export interface LoggerOptions {
  level?: LogLevel;
  /** Fields on every line (worker id, batch, ...). */
  base?: Record<string, unknown>;
  /** Where lines go (default: stdout). */
  write?: (line: string) => void;
}

/**
 * Structured JSON lines: {"time","level","msg",...fields}. Messages are capitalised and
 * in the past tense, naming the object ("Claimed 10 items"). Errors become {name, message, stack}.
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  const level = options.level ?? 'info';
  const write = options.write ?? ((line: string) => void process.stdout.write(line));
  const make = (base: Record<string, unknown>): Logger => {
    const emit = (lvl: LogLevel, msg: string, fields?: Record<string, unknown>): void => {
      if (RANK[lvl] < RANK[level]) return;
      const record: Record<string, unknown> = { time: new Date().toISOString(), level: lvl, msg, ...base };
      if (fields) for (const [k, v] of Object.entries(fields)) record[k] = v instanceof Error ? errorFields(v) : v;
      let line: string;
      try {
        line = JSON.stringify(record);
      } catch {
        line = JSON.stringify({ time: record.time, level: lvl, msg, ...base, note: 'fields were not serializable' });
      }
      write(`${line}\n`);
    };
    return {
      level,
      enabled: (lvl) => RANK[lvl] >= RANK[level],
      debug: (m, f) => emit('debug', m, f),
      info: (m, f) => emit('info', m, f),
      warn: (m, f) => emit('warn', m, f),
      error: (m, f) => emit('error', m, f),
      child: (fields) => make({ ...base, ...fields }),
    };
  };
  return make(options.base ?? {});
}

export function errorFields(err: unknown): Record<string, unknown> {
  if (err instanceof Error) return { name: err.name, message: err.message, ...(err.stack ? { stack: err.stack } : {}) };
  return { message: String(err) };
}

/** A logger that drops everything (tests, benchmarks). */
export const silentLogger: Logger = createLogger({ level: 'error', write: () => undefined });
