import { SPEC_DEFAULTS } from '../../api/types.generated.js';

/** The autoscaler: pure functions of spec and observations, table-tested. */

export interface WorkersSpec {
  /** Backlog (default): from the backlog, between min and max; Replicas: exactly `replicas`. */
  scaling?: 'Backlog' | 'Replicas';
  min?: number;
  max?: number;
  itemsPerWorker?: number;
  replicas?: number;
  scaleDownDelaySeconds?: number;
}

export interface ScaleObservation {
  /** pending + due delayed + running items: the work that needs or holds a worker. */
  backlog: number;
  suspended: boolean;
  finished: boolean;
  /** Nothing is seeded yet (no point starting workers). */
  seeding: boolean;
}

/** Recent raw recommendations, newest last, for the scale-in stabilization window. */
export type Recommendations = { at: number; value: number }[];

function clamp(v: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, v));
}

/**
 * The worker count set through spec.workers.replicas (by the user, kubectl scale, an HPA or
 * KEDA via /scale) when spec.workers.scaling is Replicas; undefined when the operator scales
 * from the backlog. replicas is always present (CRD default 0, so GET /scale answers) and means
 * nothing under Backlog scaling. Capped by max, which admission enforces too (for objects
 * stored before that rule).
 */
function fixedReplicas(spec: WorkersSpec): number | undefined {
  if (spec.scaling !== 'Replicas') return undefined;
  return Math.min(spec.replicas ?? SPEC_DEFAULTS['workers.replicas'], spec.max ?? SPEC_DEFAULTS['workers.max']);
}

/** What the backlog asks for right now, before stabilization. */
export function rawDesiredWorkers(spec: WorkersSpec, obs: ScaleObservation): number {
  if (obs.finished || obs.suspended || obs.seeding) return 0;
  const fixed = fixedReplicas(spec);
  if (fixed !== undefined) return fixed;
  const min = spec.min ?? SPEC_DEFAULTS['workers.min'];
  const max = spec.max ?? SPEC_DEFAULTS['workers.max'];
  const per = Math.max(1, spec.itemsPerWorker ?? SPEC_DEFAULTS['workers.itemsPerWorker']);
  return clamp(Math.ceil(obs.backlog / per), min, max);
}

/**
 * Scale-out is immediate; scale-in follows the highest recommendation within the
 * stabilization window (as the HPA does), so a momentary dip does not drain workers that
 * would be needed again a second later. Suspend, finish and Replicas scaling apply at once.
 */
export function desiredWorkers(spec: WorkersSpec, obs: ScaleObservation, history: Recommendations, now: number): { desired: number; history: Recommendations } {
  const raw = rawDesiredWorkers(spec, obs);
  const windowMs = (spec.scaleDownDelaySeconds ?? SPEC_DEFAULTS['workers.scaleDownDelaySeconds']) * 1000;
  const kept = history.filter((r) => now - r.at < windowMs);
  kept.push({ at: now, value: raw });
  const immediate = obs.finished || obs.suspended || fixedReplicas(spec) !== undefined;
  const desired = immediate ? raw : Math.max(...kept.map((r) => r.value));
  return { desired, history: kept };
}

export interface WorkerPodView {
  name: string;
  /** Not yet running or not yet registered: counts as supply, never drained first. */
  starting: boolean;
  draining: boolean;
  /** Items in flight according to the worker's presence record. */
  inFlight: number;
  createdAt: number;
}

/**
 * Chooses which workers to ask to drain when there are more than desired: idle workers
 * first, then the least busy, newest first among equals. Draining never interrupts an
 * item: a drained worker stops claiming, finishes what it holds and exits.
 */
export function chooseWorkersToDrain(pods: WorkerPodView[], desired: number): string[] {
  const active = pods.filter((p) => !p.draining);
  const excess = active.length - desired;
  if (excess <= 0) return [];
  const ranked = [...active].sort((a, b) => {
    if (a.starting !== b.starting) return a.starting ? 1 : -1;
    if (a.inFlight !== b.inFlight) return a.inFlight - b.inFlight;
    return b.createdAt - a.createdAt;
  });
  return ranked.slice(0, excess).map((p) => p.name);
}
