import { CronError, mostRecentTick, nextTick, offsetMs, parseCron, validateTimeZone } from '../../operator/schedule/cron.js';

const T = (s: string): number => Date.parse(s);
const I = (ms: number | undefined): string | undefined => (ms === undefined ? undefined : new Date(ms).toISOString().replace('.000Z', 'Z'));

/** The next n ticks after `from`, as ISO strings. */
function ticks(expr: string, from: string, n: number, tz = 'UTC'): (string | undefined)[] {
  const s = parseCron(expr);
  const out: (string | undefined)[] = [];
  let t: number | undefined = T(from);
  for (let i = 0; i < n && t !== undefined; i++) {
    t = nextTick(s, t, tz);
    out.push(I(t));
  }
  return out;
}

describe('parseCron', () => {
  test('fields, ranges, steps, lists, names', () => {
    const s = parseCron('*/15 9-17 1,15 jan-mar,DEC mon-fri');
    expect(s.withSeconds).toBe(false);
    expect(s.seconds).toEqual([0]);
    expect(s.minutes).toEqual([0, 15, 30, 45]);
    expect(s.hours).toEqual([9, 10, 11, 12, 13, 14, 15, 16, 17]);
    expect(s.daysOfMonth).toEqual([1, 15]);
    expect(s.months).toEqual([1, 2, 3, 12]);
    expect(s.daysOfWeek).toEqual([1, 2, 3, 4, 5]);
    expect(s).toMatchObject({ domStar: false, dowStar: false, fixedTime: false });
    expect(parseCron('5/20 0-10/5 * * 7').minutes).toEqual([5, 25, 45]);
    expect(parseCron('5/20 0-10/5 * * 7').hours).toEqual([0, 5, 10]);
    expect(parseCron('0 0 * * 7').daysOfWeek).toEqual([0]); // 7 = Sunday
    expect(parseCron('0 0 * * 5-7').daysOfWeek).toEqual([0, 5, 6]);
    expect(parseCron('0 0 ? * *')).toMatchObject({ domStar: true, dowStar: true });
    expect(parseCron('30 2 * * *').fixedTime).toBe(true);
    expect(parseCron('*/2 * * * * *')).toMatchObject({ withSeconds: true, seconds: Array.from({ length: 30 }, (_, i) => i * 2), minutes: Array.from({ length: 60 }, (_, i) => i) });
  });

  test('macros', () => {
    expect(parseCron('@hourly')).toMatchObject({ minutes: [0], hours: Array.from({ length: 24 }, (_, i) => i) });
    expect(parseCron('@daily')).toMatchObject({ minutes: [0], hours: [0] });
    expect(parseCron('@midnight')).toMatchObject({ minutes: [0], hours: [0] });
    expect(parseCron('@weekly')).toMatchObject({ daysOfWeek: [0] });
    expect(parseCron('@monthly')).toMatchObject({ daysOfMonth: [1] });
    expect(parseCron('@YEARLY')).toMatchObject({ daysOfMonth: [1], months: [1] });
    expect(parseCron('@annually')).toMatchObject({ months: [1] });
  });

  test.each([
    ['* * * *', /has 4 fields; use 5/],
    ['* * * * * * *', /has 7 fields/],
    ['60 * * * *', /minute field: 60 is out of range 0-59/],
    ['* 24 * * *', /hour field: 24 is out of range 0-23/],
    ['* * 0 * *', /day-of-month field: 0 is out of range 1-31/],
    ['* * * 13 *', /month field: 13 is out of range 1-12/],
    ['* * * * 8', /day-of-week field: 8 is out of range 0-7/],
    ['*/0 * * * *', /step "0" must be a positive integer/],
    ['5-1 * * * *', /ends before it starts/],
    ['a * * * *', /minute field: "a" is not a number/],
    ['* * * foo *', /"foo" is not a number or a name \(jan, feb/],
    ['1,,2 * * * *', /empty list element/],
    ['? * * * *', /'\?' is only allowed in the day fields/],
    ['@every 5m', /unknown macro "@every 5m"/],
    ['1/2/3 * * * *', /more than one '\/'/],
  ])('%j is refused: %s', (expr, message) => {
    expect(() => parseCron(expr)).toThrow(CronError);
    expect(() => parseCron(expr)).toThrow(message);
  });

  test('time zones are validated with Intl', () => {
    expect(() => validateTimeZone('Europe/Berlin')).not.toThrow();
    expect(() => validateTimeZone('Mars/Olympus_Mons')).toThrow(/"Mars\/Olympus_Mons" is not a known IANA time zone/);
  });
});

describe('nextTick in UTC', () => {
  test('minute, hour and day steps', () => {
    expect(ticks('*/15 * * * *', '2025-06-01T10:07:00Z', 3)).toEqual(['2025-06-01T10:15:00Z', '2025-06-01T10:30:00Z', '2025-06-01T10:45:00Z']);
    expect(ticks('*/15 * * * *', '2025-06-01T10:15:00Z', 1)).toEqual(['2025-06-01T10:30:00Z']); // strictly after
    expect(ticks('*/15 * * * *', '2025-06-01T10:14:59.999Z', 1)).toEqual(['2025-06-01T10:15:00Z']);
    expect(ticks('0 0 * * *', '2025-12-31T23:59:00Z', 2)).toEqual(['2026-01-01T00:00:00Z', '2026-01-02T00:00:00Z']);
    expect(ticks('@hourly', '2025-06-01T23:30:00Z', 1)).toEqual(['2025-06-02T00:00:00Z']);
    expect(ticks('59 23 31 12 *', '2025-01-01T00:00:00Z', 2)).toEqual(['2025-12-31T23:59:00Z', '2026-12-31T23:59:00Z']);
  });

  test('months of different lengths, leap days, impossible dates', () => {
    expect(ticks('0 0 31 * *', '2025-01-31T12:00:00Z', 3)).toEqual(['2025-03-31T00:00:00Z', '2025-05-31T00:00:00Z', '2025-07-31T00:00:00Z']);
    expect(ticks('0 0 29 2 *', '2025-01-01T00:00:00Z', 2)).toEqual(['2028-02-29T00:00:00Z', '2032-02-29T00:00:00Z']);
    expect(nextTick(parseCron('0 0 30 2 *'), T('2025-01-01T00:00:00Z'))).toBeUndefined();
  });

  test('day-of-month and day-of-week: OR when both are restricted, AND when one is *', () => {
    // The 13th, or any Friday (June 2025: Fri 6, 13, 20, 27; the 13th is a Friday too).
    expect(ticks('0 0 13 * 5', '2025-06-01T00:00:00Z', 4)).toEqual(['2025-06-06T00:00:00Z', '2025-06-13T00:00:00Z', '2025-06-20T00:00:00Z', '2025-06-27T00:00:00Z']);
    expect(ticks('0 0 1 * 1', '2025-06-01T00:00:00Z', 2)).toEqual(['2025-06-02T00:00:00Z', '2025-06-09T00:00:00Z']); // Mondays (and the 1st)
    expect(ticks('0 0 * * 1', '2025-06-01T00:00:00Z', 2)).toEqual(['2025-06-02T00:00:00Z', '2025-06-09T00:00:00Z']);
    expect(ticks('0 0 1 * *', '2025-06-01T00:00:00Z', 1)).toEqual(['2025-07-01T00:00:00Z']);
    expect(ticks('0 0 1 * ?', '2025-06-01T00:00:00Z', 1)).toEqual(['2025-07-01T00:00:00Z']);
  });

  test('a seconds field', () => {
    expect(ticks('*/20 * * * * *', '2025-06-01T10:00:05Z', 4)).toEqual(['2025-06-01T10:00:20Z', '2025-06-01T10:00:40Z', '2025-06-01T10:01:00Z', '2025-06-01T10:01:20Z']);
    expect(ticks('30 0 12 * * *', '2025-06-01T12:00:30Z', 1)).toEqual(['2025-06-02T12:00:30Z']);
  });
});

describe('nextTick in time zones (Intl), with daylight-saving changes', () => {
  test('fixed offsets and ordinary days', () => {
    expect(ticks('0 9 * * *', '2025-06-01T00:00:00Z', 1, 'Asia/Kolkata')).toEqual(['2025-06-01T03:30:00Z']);
    expect(ticks('30 2 * * *', '2025-01-15T00:00:00Z', 1, 'Europe/Berlin')).toEqual(['2025-01-15T01:30:00Z']); // CET
    expect(ticks('30 2 * * *', '2025-07-15T00:00:00Z', 1, 'Europe/Berlin')).toEqual(['2025-07-15T00:30:00Z']); // CEST
    expect(ticks('0 0 * * *', '2025-07-15T05:00:00Z', 1, 'America/New_York')).toEqual(['2025-07-16T04:00:00Z']);
    expect(offsetMs('Europe/Berlin', T('2025-07-15T00:00:00Z'))).toBe(2 * 3_600_000);
  });

  test('clocks forward (Berlin, 2025-03-30 02:00 → 03:00): a fixed 02:30 runs at the change; wildcard ticks in the gap do not exist', () => {
    expect(ticks('30 2 * * *', '2025-03-29T12:00:00Z', 2, 'Europe/Berlin')).toEqual(['2025-03-30T01:00:00Z', '2025-03-31T00:30:00Z']);
    expect(ticks('*/30 * * * *', '2025-03-30T00:15:00Z', 3, 'Europe/Berlin')).toEqual(['2025-03-30T00:30:00Z', '2025-03-30T01:00:00Z', '2025-03-30T01:30:00Z']);
    expect(ticks('0 * * * *', '2025-03-30T00:30:00Z', 2, 'Europe/Berlin')).toEqual(['2025-03-30T01:00:00Z', '2025-03-30T02:00:00Z']);
  });

  test('clocks back (Berlin, 2025-10-26 03:00 → 02:00): a fixed 02:30 runs once; wildcard ticks run in both hours', () => {
    expect(ticks('30 2 * * *', '2025-10-25T12:00:00Z', 2, 'Europe/Berlin')).toEqual(['2025-10-26T00:30:00Z', '2025-10-27T01:30:00Z']);
    // Evaluated from inside the repeated hour, the fixed job does not run again.
    expect(ticks('30 2 * * *', '2025-10-26T01:10:00Z', 1, 'Europe/Berlin')).toEqual(['2025-10-27T01:30:00Z']);
    expect(ticks('*/30 * * * *', '2025-10-26T00:15:00Z', 5, 'Europe/Berlin')).toEqual([
      '2025-10-26T00:30:00Z', // 02:30 CEST
      '2025-10-26T01:00:00Z', // 02:00 CET
      '2025-10-26T01:30:00Z', // 02:30 CET
      '2025-10-26T02:00:00Z', // 03:00 CET
      '2025-10-26T02:30:00Z',
    ]);
    expect(ticks('0 * * * *', '2025-10-25T23:30:00Z', 4, 'Europe/Berlin')).toEqual(['2025-10-26T00:00:00Z', '2025-10-26T01:00:00Z', '2025-10-26T02:00:00Z', '2025-10-26T03:00:00Z']);
  });

  test('New York (changes at 02:00 local) and Lord Howe (30-minute change)', () => {
    expect(ticks('30 2 * * *', '2025-03-08T12:00:00Z', 2, 'America/New_York')).toEqual(['2025-03-09T07:00:00Z', '2025-03-10T06:30:00Z']);
    expect(ticks('30 1 * * *', '2025-11-01T12:00:00Z', 2, 'America/New_York')).toEqual(['2025-11-02T05:30:00Z', '2025-11-03T06:30:00Z']);
    // Lord Howe: 2025-04-06 02:00 +11 → 01:30 +10:30; 01:45 happens twice, a fixed job runs once.
    expect(ticks('45 1 * * *', '2025-04-05T00:00:00Z', 2, 'Australia/Lord_Howe')).toEqual(['2025-04-05T14:45:00Z', '2025-04-06T15:15:00Z']);
  });
});

describe('mostRecentTick', () => {
  test('the latest tick in (notBefore, now]', () => {
    const s = parseCron('*/5 * * * *');
    expect(I(mostRecentTick(s, T('2025-06-01T09:00:00Z'), T('2025-06-01T10:12:30Z')))).toBe('2025-06-01T10:10:00Z');
    expect(I(mostRecentTick(s, T('2025-06-01T10:10:00Z'), T('2025-06-01T10:12:30Z')))).toBeUndefined(); // 10:10 is not after notBefore
    expect(I(mostRecentTick(s, T('2025-06-01T10:09:00Z'), T('2025-06-01T10:10:00Z')))).toBe('2025-06-01T10:10:00Z'); // now is included
    expect(I(mostRecentTick(parseCron('0 0 1 1 *'), T('2023-03-01T00:00:00Z'), T('2025-06-01T00:00:00Z')))).toBe('2025-01-01T00:00:00Z');
    expect(I(mostRecentTick(parseCron('* 3 * * *'), T('2025-05-01T00:00:00Z'), T('2025-06-01T12:00:00Z')))).toBe('2025-06-01T03:59:00Z');
    expect(mostRecentTick(parseCron('0 0 30 2 *'), T('2020-01-01T00:00:00Z'), T('2025-06-01T00:00:00Z'))).toBeUndefined();
  });

  test('stays fast for dense schedules and long outages', () => {
    const t0 = performance.now();
    const s = parseCron('* * * * * *');
    expect(I(mostRecentTick(s, T('2024-06-01T00:00:00Z'), T('2025-06-01T12:34:56.789Z'), 'Europe/Berlin'))).toBe('2025-06-01T12:34:56Z');
    let t = T('2025-10-26T00:00:00Z');
    for (let i = 0; i < 2000; i++) t = nextTick(s, t, 'Europe/Berlin')!;
    expect(I(t)).toBe('2025-10-26T00:33:20Z');
    expect(performance.now() - t0).toBeLessThan(3000);
  });
});
