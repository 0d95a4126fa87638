import { InvalidArgumentError } from './errors.js';

export interface BackoffOptions {
  /** Delay before the first retry. */
  initialMs: number;
  /** Growth per further attempt. */
  factor: number;
  /** Ceiling of the delay. */
  maxMs: number;
  /** Fraction of the delay that is randomized (0 = none, 1 = full jitter). */
  jitter: number;
}

export interface BatchOptions {
  /** Attempts per item, the first included, before it is dead-lettered. */
  maxAttempts: number;
  backoff: BackoffOptions;
  /** How long results are kept after an item succeeds. */
  resultTtlSeconds: number;
}

export interface QueueLimits {
  /** Largest accepted item payload (serialized JSON), bytes. */
  maxPayloadBytes: number;
  /** Largest accepted result (serialized JSON), bytes. */
  maxResultBytes: number;
  /** Largest accepted error record (serialized JSON); longer messages are truncated. */
  maxErrorBytes: number;
}

/** What callers pass: any subset, with defaults filled in by resolveBatchOptions. */
export type BatchOptionsInput = Omit<Partial<BatchOptions>, 'backoff'> & { backoff?: Partial<BackoffOptions> };

export const DEFAULT_BATCH_OPTIONS: BatchOptions = {
  maxAttempts: 3,
  backoff: { initialMs: 1000, factor: 2, maxMs: 60_000, jitter: 0.2 },
  resultTtlSeconds: 86_400,
};

export const DEFAULT_LIMITS: QueueLimits = {
  maxPayloadBytes: 1024 * 1024,
  maxResultBytes: 1024 * 1024,
  maxErrorBytes: 16 * 1024,
};

export function requireNumber(name: string, value: unknown, min: number, max: number, integer = true): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || (integer && !Number.isInteger(value)) || value < min || value > max) {
    throw new InvalidArgumentError(`${name} must be ${integer ? 'an integer' : 'a number'} between ${min} and ${max}, got ${JSON.stringify(value)}`);
  }
  return value;
}

export function resolveBatchOptions(input: BatchOptionsInput = {}): BatchOptions {
  const backoff = { ...DEFAULT_BATCH_OPTIONS.backoff, ...input.backoff };
  const options: BatchOptions = {
    maxAttempts: requireNumber('maxAttempts', input.maxAttempts ?? DEFAULT_BATCH_OPTIONS.maxAttempts, 1, 1000),
    backoff: {
      initialMs: requireNumber('backoff.initialMs', backoff.initialMs, 0, 86_400_000),
      factor: requireNumber('backoff.factor', backoff.factor, 1, 100, false),
      maxMs: requireNumber('backoff.maxMs', backoff.maxMs, 0, 7 * 86_400_000),
      jitter: requireNumber('backoff.jitter', backoff.jitter, 0, 1, false),
    },
    resultTtlSeconds: requireNumber('resultTtlSeconds', input.resultTtlSeconds ?? DEFAULT_BATCH_OPTIONS.resultTtlSeconds, 1, 90 * 86_400),
  };
  if (options.backoff.maxMs < options.backoff.initialMs) {
    throw new InvalidArgumentError(`backoff.maxMs (${options.backoff.maxMs}) must be >= backoff.initialMs (${options.backoff.initialMs})`);
  }
  return options;
}

export function resolveLimits(input: Partial<QueueLimits> = {}): QueueLimits {
  return {
    maxPayloadBytes: requireNumber('limits.maxPayloadBytes', input.maxPayloadBytes ?? DEFAULT_LIMITS.maxPayloadBytes, 16, 64 * 1024 * 1024),
    maxResultBytes: requireNumber('limits.maxResultBytes', input.maxResultBytes ?? DEFAULT_LIMITS.maxResultBytes, 16, 64 * 1024 * 1024),
    maxErrorBytes: requireNumber('limits.maxErrorBytes', input.maxErrorBytes ?? DEFAULT_LIMITS.maxErrorBytes, 256, 1024 * 1024),
  };
}
