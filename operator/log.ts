/** Structured JSON logs, one object per line on stderr. */
export type Fields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
  child(fields: Fields): Logger;
}

const LEVELS = { debug: 10, info: 20, warn: 30, error: 40 } as const;
type Level = keyof typeof LEVELS;

export function createLogger(
  base: Fields = {},
  level: Level = (process.env.TASKBATCH_LOG_LEVEL as Level | undefined) ?? 'info',
  write: (line: string) => void = (l) => process.stderr.write(l),
): Logger {
  const min = LEVELS[level] ?? LEVELS.info;
  const emit = (lvl: Level, msg: string, fields?: Fields): void => {
    if (LEVELS[lvl] < min) return;
    write(`${JSON.stringify({ time: new Date().toISOString(), level: lvl, msg, ...base, ...fields })}\n`);
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (fields) => createLogger({ ...base, ...fields }, level, write),
  };
}
