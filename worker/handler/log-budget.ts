import { ERROR_MESSAGE_MAX } from './error-info.js';

/**
 * A token bucket over one item's handler log lines: `burst` lines at once, then
 * `linesPerSecond`. Lines over it are dropped and counted, so a handler that logs in a tight
 * loop costs neither the executor's channel to the worker nor the pod's log volume.
 */
export interface LogRate {
  /** Refill rate; 0 = no limit. */
  linesPerSecond: number;
  burst: number;
}

/** How often an item may log: no limit unless the worker configures one. */
export const UNLIMITED_LOGS: LogRate = { linesPerSecond: 0, burst: 1 };

export class LogBudget {
  private tokens: number;
  private last: number;
  /** Lines refused so far. */
  dropped = 0;

  constructor(
    private readonly rate: LogRate,
    private readonly now: () => number = performance.now.bind(performance),
  ) {
    this.tokens = rate.burst;
    this.last = now();
  }

  /** Whether one more line may be written now; counts it as dropped when not. */
  take(): boolean {
    if (this.rate.linesPerSecond <= 0) return true;
    const t = this.now();
    this.tokens = Math.min(this.rate.burst, this.tokens + ((t - this.last) * this.rate.linesPerSecond) / 1000);
    this.last = t;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return true;
    }
    this.dropped++;
    return false;
  }
}

/** Longest handler log message kept, in UTF-16 code units: the bound of an error message (error-info.ts). */
const LOG_MESSAGE_MAX = ERROR_MESSAGE_MAX;
/** Longest handler log fields kept, as JSON code units; larger fields are replaced by a note of their size. */
export const LOG_FIELDS_MAX = 16_384;
const TRUNCATED = '… [truncated]';

/** A log message of at most LOG_MESSAGE_MAX code units, cut without splitting a surrogate pair. */
export function boundLogMessage(message: string): string {
  if (message.length <= LOG_MESSAGE_MAX) return message;
  let cut = LOG_MESSAGE_MAX - TRUNCATED.length;
  const last = message.charCodeAt(cut - 1);
  if (last >= 0xd800 && last <= 0xdbff) cut--;
  return message.slice(0, cut) + TRUNCATED;
}

/**
 * Log fields of at most LOG_FIELDS_MAX code units of JSON. `copy`: return a JSON copy (what may
 * cross to another thread or process); else the fields themselves when within the bound.
 */
export function boundLogFields(fields: Record<string, unknown>, copy: boolean): Record<string, unknown> {
  let json: string | undefined;
  try {
    json = JSON.stringify(fields);
  } catch {
    return { fields: '[unserializable]' };
  }
  if (json === undefined) return { fields: '[unserializable]' };
  if (json.length > LOG_FIELDS_MAX) return { fieldsTruncated: `${json.length} characters of JSON, over the ${LOG_FIELDS_MAX} limit` };
  return copy ? (JSON.parse(json) as Record<string, unknown>) : fields;
}
