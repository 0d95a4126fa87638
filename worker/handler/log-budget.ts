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
