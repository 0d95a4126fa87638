// The handler module bench/sdk-calls.ts serves (handler {module, dispatch: fn}): square() for the
// call rows, startedAtNs() for the start-latency row.
export { square } from '../examples/handlers/math.js';

/** When the handler started, on CLOCK_MONOTONIC (the same clock in every process on the machine), in ns. */
export function startedAtNs(): string {
  return process.hrtime.bigint().toString();
}
