import { InvalidArgumentError, PayloadTooLargeError } from './errors.js';

/** Serializes to JSON or says exactly why it cannot (BigInt, cycles, undefined, functions). */
export function toJson(what: string, value: unknown, maxBytes: number, batch: string): string {
  let json: string | undefined;
  try {
    json = JSON.stringify(value);
  } catch (err) {
    throw new InvalidArgumentError(`${what} is not JSON-serializable: ${(err as Error).message}`, batch);
  }
  if (json === undefined) {
    throw new InvalidArgumentError(`${what} is not JSON-serializable (${typeof value}); use null, a number, string, array or object`, batch);
  }
  const bytes = Buffer.byteLength(json);
  if (bytes > maxBytes) {
    throw new PayloadTooLargeError(`${what} is ${bytes} bytes of JSON, over the limit of ${maxBytes} bytes; store large data elsewhere (e.g. object storage) and pass a reference`, batch);
  }
  return json;
}

/** An error as stored with a failed item: name and message, bounded in size. */
export interface ItemError {
  name: string;
  message: string;
  stack?: string;
}

export function errorJson(error: ItemError, maxBytes: number): string {
  const record: ItemError = { name: String(error.name || 'Error'), message: String(error.message ?? '') };
  if (error.stack) record.stack = String(error.stack);
  let json = JSON.stringify(record);
  if (Buffer.byteLength(json) <= maxBytes) return json;
  delete record.stack;
  const budget = Math.max(64, maxBytes - 128);
  if (Buffer.byteLength(record.message) > budget) record.message = `${Buffer.from(record.message).subarray(0, budget).toString()}… [truncated]`;
  json = JSON.stringify(record);
  return json;
}
