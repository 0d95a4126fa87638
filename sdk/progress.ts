import type { Counts } from '../queue/index.js';

/** A batch's counts at one moment, with derived progress: what wait() callbacks and `taskbatch watch` show. */
export interface Progress extends Counts {
  /** succeeded + failed. */
  done: number;
  /** Since the tracker started. */
  elapsedMs: number;
  /** Items finished per second over the last ~10 s (0 until two samples exist). */
  ratePerSec: number;
  /** Seconds until total is done at the current rate; undefined when unknown (no rate yet). */
  etaSeconds: number | undefined;
  /** The batch is closed and drained. */
  complete: boolean;
  closed: boolean;
}

/** Rate over a sliding window of samples, and ETA: remaining items / rate. */
export class ProgressTracker {
  private readonly samples: { at: number; done: number }[] = [];
  private readonly started: number;

  constructor(
    private readonly windowMs = 10_000,
    private readonly now: () => number = Date.now,
  ) {
    this.started = now();
  }

  update(counts: Counts & { closed?: boolean; complete?: boolean }): Progress {
    const at = this.now();
    const done = counts.succeeded + counts.failed;
    this.samples.push({ at, done });
    while (this.samples.length > 2 && at - this.samples[0]!.at > this.windowMs) this.samples.shift();
    const first = this.samples[0]!;
    const windowRate = at > first.at ? ((done - first.done) * 1000) / (at - first.at) : 0;
    // Once complete, the rate shown is the average over the whole run.
    const rate = counts.complete && at > this.started ? (done * 1000) / (at - this.started) : windowRate;
    const remaining = Math.max(0, counts.total - done);
    const etaSeconds = remaining === 0 ? 0 : rate > 0 ? remaining / rate : undefined;
    return {
      total: counts.total,
      pending: counts.pending,
      delayed: counts.delayed,
      running: counts.running,
      succeeded: counts.succeeded,
      failed: counts.failed,
      retries: counts.retries,
      done,
      elapsedMs: at - this.started,
      ratePerSec: Math.max(0, rate),
      etaSeconds,
      complete: counts.complete ?? false,
      closed: counts.closed ?? false,
    };
  }
}

/** 75 → "1:15", 3725 → "1:02:05". */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${String(sec).padStart(2, '0')}` : `${m}:${String(sec).padStart(2, '0')}`;
}

function formatRate(r: number): string {
  if (r >= 100) return `${Math.round(r)}/s`;
  if (r >= 1) return `${r.toFixed(1)}/s`;
  if (r > 0) return `${(r * 60).toFixed(1)}/min`;
  return '0/s';
}

/**
 * One progress line:
 * `[#########---------------]  532/1000  53%  ok 530  failed 2  running 4  pending 464  812/s  ETA 0:35`
 */
export function formatProgress(p: Progress, width = 24): string {
  const frac = p.total > 0 ? Math.min(1, p.done / p.total) : p.complete ? 1 : 0;
  const filled = Math.round(frac * width);
  const bar = `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}]`;
  const pct = `${Math.floor(frac * 100)}%`;
  const parts = [bar, `${p.done}/${p.total}`, pct, `ok ${p.succeeded}`, `failed ${p.failed}`, `running ${p.running}`, `pending ${p.pending + p.delayed}`];
  if (p.retries > 0) parts.push(`retries ${p.retries}`);
  parts.push(formatRate(p.ratePerSec));
  if (p.complete) parts.push(`done in ${formatDuration(p.elapsedMs / 1000)}`);
  else parts.push(`ETA ${p.etaSeconds === undefined ? '?' : formatDuration(p.etaSeconds)}`);
  return parts.join('  ');
}
