import { chooseWorkersToDrain, desiredWorkers, rawDesiredWorkers, type WorkerPodView } from '../../operator/reconcile/scaling.js';

const obs = (backlog: number, extra: Partial<{ suspended: boolean; finished: boolean; seeding: boolean }> = {}) => ({ backlog, suspended: false, finished: false, seeding: false, ...extra });

describe('rawDesiredWorkers', () => {
  test.each([
    ['empty backlog, min 0', { min: 0, max: 10, itemsPerWorker: 100 }, obs(0), 0],
    ['empty backlog keeps min', { min: 2, max: 10, itemsPerWorker: 100 }, obs(0), 2],
    ['rounds up', { min: 0, max: 10, itemsPerWorker: 100 }, obs(101), 2],
    ['clamped to max', { min: 0, max: 3, itemsPerWorker: 100 }, obs(10_000), 3],
    ['defaults: max 10, 100 per worker', {}, obs(550), 6],
    ['Replicas scaling ignores the backlog', { scaling: 'Replicas' as const, replicas: 4, max: 5 }, obs(0), 4],
    ['Replicas scaling: 0 is honoured', { scaling: 'Replicas' as const, replicas: 0, min: 3 }, obs(500), 0],
    ['Replicas scaling is capped by max (a batch stored before the admission rule)', { scaling: 'Replicas' as const, replicas: 5, max: 4 }, obs(0), 4],
    ['Replicas scaling with the default max', { scaling: 'Replicas' as const, replicas: 12 }, obs(0), 10],
    ['Backlog scaling ignores replicas', { scaling: 'Backlog' as const, replicas: 4, max: 10, itemsPerWorker: 100 }, obs(101), 2],
    ['replicas without scaling: Replicas is ignored', { replicas: 4, max: 10, itemsPerWorker: 100 }, obs(0), 0],
    ['suspended means none', { min: 3 }, obs(500, { suspended: true }), 0],
    ['finished means none', { min: 3 }, obs(500, { finished: true }), 0],
    ['not seeded yet means none', { min: 3 }, obs(500, { seeding: true }), 0],
  ])('%s', (_name, spec, o, want) => {
    expect(rawDesiredWorkers(spec, o)).toBe(want);
  });
});

describe('desiredWorkers stabilization', () => {
  const spec = { min: 0, max: 10, itemsPerWorker: 10, scaleDownDelaySeconds: 30 };

  test('scales out at once and in only after the window', () => {
    let h = desiredWorkers(spec, obs(100), [], 0);
    expect(h.desired).toBe(10);
    h = desiredWorkers(spec, obs(20), h.history, 10_000);
    expect(h.desired).toBe(10); // the recommendation of 10 is still within 30s
    h = desiredWorkers(spec, obs(20), h.history, 29_999);
    expect(h.desired).toBe(10);
    h = desiredWorkers(spec, obs(20), h.history, 30_001);
    expect(h.desired).toBe(2);
    h = desiredWorkers(spec, obs(50), h.history, 31_000);
    expect(h.desired).toBe(5);
  });

  test('a momentary dip does not drain workers', () => {
    let h = desiredWorkers(spec, obs(80), [], 0);
    h = desiredWorkers(spec, obs(0), h.history, 1000);
    h = desiredWorkers(spec, obs(80), h.history, 2000);
    expect(h.desired).toBe(8);
  });

  test('suspend and Replicas scaling apply at once', () => {
    let h = desiredWorkers(spec, obs(100), [], 0);
    expect(desiredWorkers(spec, obs(100, { suspended: true }), h.history, 1000).desired).toBe(0);
    h = desiredWorkers({ ...spec, scaling: 'Replicas', replicas: 1 }, obs(100), h.history, 1000);
    expect(h.desired).toBe(1);
  });

  test('history is bounded by the window', () => {
    let h = { desired: 0, history: [] as { at: number; value: number }[] };
    for (let t = 0; t < 1000; t++) h = desiredWorkers(spec, obs(t % 50), h.history, t * 1000);
    expect(h.history.length).toBeLessThanOrEqual(31);
  });
});

describe('chooseWorkersToDrain', () => {
  const pod = (name: string, inFlight: number, extra: Partial<WorkerPodView> = {}): WorkerPodView => ({ name, inFlight, starting: false, draining: false, createdAt: 0, ...extra });

  test('idle workers first, then the least busy; never more than the excess', () => {
    const pods = [pod('busy', 8), pod('idle', 0), pod('light', 1), pod('idle-new', 0, { createdAt: 5 })];
    expect(chooseWorkersToDrain(pods, 2)).toEqual(['idle-new', 'idle']);
    expect(chooseWorkersToDrain(pods, 1)).toEqual(['idle-new', 'idle', 'light']);
    expect(chooseWorkersToDrain(pods, 4)).toEqual([]);
  });

  test('workers already draining count as gone; starting ones are drained last', () => {
    const pods = [pod('a', 0, { draining: true }), pod('b', 3), pod('c', 0, { starting: true })];
    expect(chooseWorkersToDrain(pods, 1)).toEqual(['b']);
    expect(chooseWorkersToDrain(pods, 0)).toEqual(['b', 'c']);
  });
});
