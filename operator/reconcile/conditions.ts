import type { Condition, ConditionType } from '../../api/taskbatch.js';

const MAX_MESSAGE = 1024;

export interface ConditionInput {
  type: ConditionType;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
}

/**
 * Sets a condition by the API conventions: lastTransitionTime moves only when the status
 * flips; reason is CamelCase and never empty; observedGeneration is recorded; messages are
 * truncated.
 */
export function setCondition(conditions: Condition[], input: ConditionInput, generation: number, now: Date): Condition[] {
  const existing = conditions.find((c) => c.type === input.type);
  const message = input.message.length > MAX_MESSAGE ? `${input.message.slice(0, MAX_MESSAGE - 1)}…` : input.message;
  const next: Condition = {
    type: input.type,
    status: input.status,
    reason: input.reason,
    message,
    observedGeneration: generation,
    lastTransitionTime: existing && existing.status === input.status ? existing.lastTransitionTime : now.toISOString().replace(/\.\d{3}Z$/, 'Z'),
  };
  return [...conditions.filter((c) => c.type !== input.type), next];
}

/** Conditions in a stable order, so equal sets compare equal. */
export function sortConditions(conditions: Condition[]): Condition[] {
  const order: ConditionType[] = ['Complete', 'Failed', 'Suspended', 'Progressing', 'Degraded', 'RedisUnavailable', 'RedisMisconfigured', 'QueueStateLost', 'QuotaExceeded', 'CleanupBlocked'];
  return [...conditions].sort((a, b) => order.indexOf(a.type as ConditionType) - order.indexOf(b.type as ConditionType));
}

/** Deep equality of JSON-like values, for "write status only when it changed". */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== 'object') return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a as object).filter((k) => (a as Record<string, unknown>)[k] !== undefined);
  const kb = Object.keys(b as object).filter((k) => (b as Record<string, unknown>)[k] !== undefined);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => jsonEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}
