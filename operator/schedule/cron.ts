/**
 * A small cron: 5 fields (minute hour day-of-month month day-of-week) as CronJob takes them, or
 * 6 with a leading seconds field (for short intervals), and the macros @yearly/@annually,
 * @monthly, @weekly, @daily/@midnight, @hourly. Fields take `*`, `?` (= `*`, day fields), numbers,
 * ranges `a-b`, steps `*\/n`, `a-b/n`, `a/n`, lists `a,b`, month names (jan-dec) and day names
 * (sun-sat; 0 and 7 are Sunday). Day-of-month and day-of-week combine as in Vixie cron: when both
 * are restricted a day matching either runs; when one is `*` the other decides.
 *
 * Next times are computed in an IANA time zone with Intl (no time zone data of our own), on wall
 * clock fields, with Vixie cron's rules for daylight-saving changes:
 * - a schedule with a fixed time (neither the minute nor the hour field starts with `*`, e.g.
 *   `30 2 * * *`) runs once on a day whose clocks go back (at the first 02:30), and on a day
 *   whose clocks go forward over its time it runs at the moment of the change (03:00);
 * - a schedule with a wildcard minute or hour (`*\/15 * * * *`, `0 * * * *`) follows elapsed
 *   time: its ticks in a repeated hour run twice, ticks in a skipped hour do not exist.
 */

export class CronError extends Error {
  override name = 'CronError';
}

export interface CronSchedule {
  readonly source: string;
  /** 6 fields: the schedule has a seconds field (second resolution). */
  readonly withSeconds: boolean;
  readonly seconds: readonly number[];
  readonly minutes: readonly number[];
  readonly hours: readonly number[];
  readonly daysOfMonth: readonly number[];
  readonly months: readonly number[];
  /** 0 = Sunday … 6 = Saturday. */
  readonly daysOfWeek: readonly number[];
  readonly domStar: boolean;
  readonly dowStar: boolean;
  /** Neither minute nor hour starts with '*': a fixed time of day (see the DST rules). */
  readonly fixedTime: boolean;
}

const MACROS: Record<string, string> = {
  '@yearly': '0 0 1 1 *',
  '@annually': '0 0 1 1 *',
  '@monthly': '0 0 1 * *',
  '@weekly': '0 0 * * 0',
  '@daily': '0 0 * * *',
  '@midnight': '0 0 * * *',
  '@hourly': '0 * * * *',
};

const MONTH_NAMES = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];
const DAY_NAMES = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];

interface FieldDef {
  name: string;
  min: number;
  max: number;
  names?: string[];
  namesBase?: number;
}

const FIELDS = {
  second: { name: 'second', min: 0, max: 59 },
  minute: { name: 'minute', min: 0, max: 59 },
  hour: { name: 'hour', min: 0, max: 23 },
  dom: { name: 'day-of-month', min: 1, max: 31 },
  month: { name: 'month', min: 1, max: 12, names: MONTH_NAMES, namesBase: 1 },
  dow: { name: 'day-of-week', min: 0, max: 7, names: DAY_NAMES, namesBase: 0 },
} satisfies Record<string, FieldDef>;

function parseValue(text: string, f: FieldDef): number {
  const lower = text.toLowerCase();
  if (f.names) {
    const i = f.names.indexOf(lower);
    if (i >= 0) return i + (f.namesBase ?? 0);
  }
  if (!/^\d+$/.test(text)) throw new CronError(`${f.name} field: ${JSON.stringify(text)} is not a number${f.names ? ` or a name (${f.names.join(', ')})` : ''}`);
  const n = Number(text);
  if (n < f.min || n > f.max) throw new CronError(`${f.name} field: ${n} is out of range ${f.min}-${f.max}`);
  return n;
}

function parseField(text: string, f: FieldDef): { values: number[]; star: boolean } {
  const set = new Set<number>();
  let star = false;
  for (const part of text.split(',')) {
    if (part === '') throw new CronError(`${f.name} field ${JSON.stringify(text)} has an empty list element`);
    const [range, stepText, extra] = part.split('/');
    if (extra !== undefined) throw new CronError(`${f.name} field: ${JSON.stringify(part)} has more than one '/'`);
    let step = 1;
    if (stepText !== undefined) {
      if (!/^\d+$/.test(stepText) || Number(stepText) < 1) throw new CronError(`${f.name} field: step ${JSON.stringify(stepText)} must be a positive integer`);
      step = Number(stepText);
    }
    let lo: number;
    let hi: number;
    if (range === '*' || range === '?') {
      if (range === '?' && f !== FIELDS.dom && f !== FIELDS.dow) throw new CronError(`${f.name} field: '?' is only allowed in the day fields`);
      lo = f.min;
      hi = f === FIELDS.dow ? 6 : f.max;
      if (stepText === undefined && text === range) star = true;
    } else if (range!.includes('-')) {
      const [a, b, more] = range!.split('-');
      if (more !== undefined || a === '' || b === '') throw new CronError(`${f.name} field: ${JSON.stringify(range)} is not a range a-b`);
      lo = parseValue(a!, f);
      hi = parseValue(b!, f);
      if (hi < lo) throw new CronError(`${f.name} field: range ${JSON.stringify(range)} ends before it starts`);
    } else {
      lo = parseValue(range!, f);
      hi = stepText !== undefined ? (f === FIELDS.dow ? 6 : f.max) : lo;
    }
    for (let v = lo; v <= hi; v += step) set.add(f === FIELDS.dow && v === 7 ? 0 : v);
  }
  return { values: [...set].sort((a, b) => a - b), star };
}

/** Parses a cron expression; throws CronError naming the field and the problem. */
export function parseCron(expression: string): CronSchedule {
  if (typeof expression !== 'string') throw new CronError('schedule must be a string');
  const trimmed = expression.trim();
  let text = trimmed;
  if (text.startsWith('@')) {
    const m = MACROS[text.toLowerCase()];
    if (!m) throw new CronError(`unknown macro ${JSON.stringify(text)}; use one of ${Object.keys(MACROS).join(', ')}`);
    text = m;
  }
  const fields = text.split(/\s+/).filter((x) => x !== '');
  if (fields.length !== 5 && fields.length !== 6) {
    throw new CronError(`${JSON.stringify(trimmed)} has ${fields.length} fields; use 5 (minute hour day-of-month month day-of-week), 6 with a leading seconds field, or a macro such as @hourly`);
  }
  const withSeconds = fields.length === 6;
  const [sec, min, hour, dom, month, dow] = withSeconds ? fields : ['0', ...fields];
  const d = parseField(dom!, FIELDS.dom);
  const w = parseField(dow!, FIELDS.dow);
  return {
    source: trimmed,
    withSeconds,
    seconds: parseField(sec!, FIELDS.second).values,
    minutes: parseField(min!, FIELDS.minute).values,
    hours: parseField(hour!, FIELDS.hour).values,
    daysOfMonth: d.values,
    months: parseField(month!, FIELDS.month).values,
    daysOfWeek: w.values,
    domStar: d.star,
    dowStar: w.star,
    fixedTime: !min!.startsWith('*') && !hour!.startsWith('*'),
  };
}

// ---------------------------------------------------------------- time zones

/** Throws CronError unless `tz` is an IANA time zone this runtime knows. */
export function validateTimeZone(tz: string): void {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
  } catch {
    throw new CronError(`time zone ${JSON.stringify(tz)} is not a known IANA time zone (e.g. UTC, Europe/Berlin, America/New_York)`);
  }
}

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(tz: string): Intl.DateTimeFormat {
  let f = formatters.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', { timeZone: tz, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric' });
    formatters.set(tz, f);
  }
  return f;
}

const isUtc = (tz: string): boolean => tz === 'UTC' || tz === 'Etc/UTC' || tz === 'Etc/GMT' || tz === 'GMT';

/** The wall clock in `tz` at instant `t`, as a UTC-based number of ms (seconds resolution). */
function wallMs(tz: string, t: number): number {
  const s = Math.floor(t / 1000) * 1000;
  if (isUtc(tz)) return s;
  const p: Record<string, number> = {};
  for (const part of formatter(tz).formatToParts(new Date(s))) if (part.type !== 'literal') p[part.type] = Number(part.value);
  return Date.UTC(p.year!, p.month! - 1, p.day!, p.hour!, p.minute!, p.second!);
}

/** UTC offset of `tz` at instant `t`, in ms (positive east of Greenwich). */
export function offsetMs(tz: string, t: number): number {
  return wallMs(tz, t) - Math.floor(t / 1000) * 1000;
}

/**
 * The zone's offsets over a window of a few days around an instant, from two Intl probes and —
 * when they differ — a bisection to the second (real zones change at most once in such a window),
 * so the next tick near that instant is found with arithmetic on wall clocks.
 */
interface ZoneWindow {
  from: number;
  to: number;
  /** Offset before the change (or throughout). */
  before: number;
  /** Offset after the change (= before when there is none). */
  after: number;
  /** Instant of the change, if one falls in the window. */
  change: number | undefined;
}

function zoneWindow(tz: string, around: number): ZoneWindow {
  const from = Math.floor((around - 2 * 86_400_000) / 1000) * 1000;
  const to = from + 4 * 86_400_000;
  const before = offsetMs(tz, from);
  const after = offsetMs(tz, to);
  let change: number | undefined;
  if (before !== after) {
    let lo = from;
    let hi = to;
    while (hi - lo > 1000) {
      const mid = Math.floor((lo + hi) / 2000) * 1000;
      if (offsetMs(tz, mid) === before) lo = mid;
      else hi = mid;
    }
    change = hi;
  }
  return { from, to, before, after, change };
}

/** The instants whose wall clock in `tz` reads `wall`: none (skipped), one, or two (repeated), ascending. */
function instantsViaIntl(tz: string, wall: number): number[] {
  if (isUtc(tz)) return [wall];
  const offsets = new Set([offsetMs(tz, wall - 86_400_000), offsetMs(tz, wall), offsetMs(tz, wall + 86_400_000)]);
  const out: number[] = [];
  for (const o of offsets) {
    const t = wall - o;
    if (wallMs(tz, t) === wall && !out.includes(t)) out.push(t);
  }
  return out.sort((a, b) => a - b);
}

/** For a skipped wall time: the first instant after the clocks jumped over it. */
function jumpInstant(tz: string, wall: number): number {
  let lo = wall - 86_400_000;
  let hi = wall + 86_400_000;
  while (hi - lo > 1000) {
    const mid = Math.floor((lo + hi) / 2000) * 1000;
    if (wallMs(tz, mid) < wall) lo = mid;
    else hi = mid;
  }
  return hi;
}

// ---------------------------------------------------------------- matching

function daysInMonth(y: number, m: number): number {
  return new Date(Date.UTC(y, m, 0)).getUTCDate();
}

function firstAtLeast(values: readonly number[], v: number): number | undefined {
  for (const x of values) if (x >= v) return x;
  return undefined;
}

function dayMatches(s: CronSchedule, y: number, m: number, d: number): boolean {
  const domOk = s.daysOfMonth.includes(d);
  const dowOk = s.daysOfWeek.includes(new Date(Date.UTC(y, m - 1, d)).getUTCDay());
  return s.domStar || s.dowStar ? domOk && dowOk : domOk || dowOk;
}

/** The first matching wall time at or after `from` (UTC-based ms), or undefined within ~30 years. */
function nextWall(s: CronSchedule, from: number): number | undefined {
  const start = new Date(from);
  let y = start.getUTCFullYear();
  let mo = start.getUTCMonth() + 1;
  let d = start.getUTCDate();
  let h = start.getUTCHours();
  let mi = start.getUTCMinutes();
  let se = start.getUTCSeconds();
  const limit = y + 30;
  while (y <= limit) {
    const m2 = firstAtLeast(s.months, mo);
    if (m2 === undefined) {
      y++;
      mo = 1;
      d = 1;
      h = mi = se = 0;
      continue;
    }
    if (m2 !== mo) {
      mo = m2;
      d = 1;
      h = mi = se = 0;
    }
    if (d > daysInMonth(y, mo)) {
      mo++;
      d = 1;
      h = mi = se = 0;
      if (mo > 12) {
        y++;
        mo = 1;
      }
      continue;
    }
    if (!dayMatches(s, y, mo, d)) {
      d++;
      h = mi = se = 0;
      continue;
    }
    const h2 = firstAtLeast(s.hours, h);
    if (h2 === undefined) {
      d++;
      h = mi = se = 0;
      continue;
    }
    if (h2 !== h) {
      h = h2;
      mi = se = 0;
    }
    const mi2 = firstAtLeast(s.minutes, mi);
    if (mi2 === undefined) {
      h++;
      mi = se = 0;
      if (h > 23) {
        d++;
        h = 0;
      }
      continue;
    }
    if (mi2 !== mi) {
      mi = mi2;
      se = 0;
    }
    const se2 = firstAtLeast(s.seconds, se);
    if (se2 === undefined) {
      mi++;
      se = 0;
      if (mi > 59) {
        h++;
        mi = 0;
        if (h > 23) {
          d++;
          h = 0;
        }
      }
      continue;
    }
    return Date.UTC(y, mo - 1, d, h, mi, se2);
  }
  return undefined;
}

/**
 * The first tick strictly after instant `after` (ms) in time zone `tz` (default UTC), or
 * undefined when the schedule never fires again (e.g. `0 0 30 2 *`).
 */
export function nextTick(s: CronSchedule, after: number, tz = 'UTC'): number | undefined {
  if (isUtc(tz)) {
    const unit = s.withSeconds ? 1000 : 60_000;
    return nextWall(s, Math.floor(after / unit) * unit + unit);
  }
  return nextTickNear(s, after, zoneWindow(tz, after)) ?? nextTickFar(s, after, tz);
}

/** The next tick when it falls inside the zone window around `after` (the common case), else undefined. */
function nextTickNear(s: CronSchedule, after: number, z: ZoneWindow): number | undefined {
  const unit = s.withSeconds ? 1000 : 60_000;
  const firstWallAbove = (x: number): number => Math.floor(x / unit) * unit + unit; // smallest aligned wall > x
  const firstWallFrom = (x: number): number => Math.ceil(x / unit) * unit; // smallest aligned wall >= x
  const found: number[] = [];
  if (z.change === undefined) {
    const w = nextWall(s, firstWallAbove(after + z.before));
    return w !== undefined && w - z.before < z.to ? w - z.before : undefined;
  }
  const change = z.change;
  // Before the change, at the old offset.
  if (after < change) {
    const w = nextWall(s, firstWallAbove(after + z.before));
    if (w !== undefined && w - z.before < change) found.push(w - z.before);
  }
  // After it, at the new offset. Clocks went back (after < before): the walls between repeat;
  // a fixed-time schedule ran them already, before the change.
  let from = Math.max(firstWallAbove(after + z.after), firstWallFrom(change + z.after));
  if (s.fixedTime && z.after < z.before) from = Math.max(from, firstWallFrom(change + z.before));
  const w = nextWall(s, from);
  if (w !== undefined && w - z.after < z.to) found.push(w - z.after);
  // Clocks went forward: walls in [change + before, change + after) do not exist; a fixed-time
  // schedule with a tick there runs at the change.
  if (s.fixedTime && z.after > z.before && change > after) {
    const g = nextWall(s, firstWallFrom(change + z.before));
    if (g !== undefined && g < change + z.after) found.push(change);
  }
  return found.length ? Math.min(...found) : undefined;
}

/** The next tick far from `after` (beyond the window): walk matching walls, asking Intl (few iterations). */
function nextTickFar(s: CronSchedule, after: number, tz: string): number | undefined {
  const unit = s.withSeconds ? 1000 : 60_000;
  const oAfter = offsetMs(tz, after);
  const oMin = Math.min(oAfter, offsetMs(tz, after - 86_400_000), offsetMs(tz, after + 86_400_000));
  let w: number | undefined = Math.floor((after + oMin) / unit) * unit;
  let best: number | undefined;
  let bestOffset = oAfter;
  for (let guard = 0; guard < 100_000; guard++) {
    w = nextWall(s, w);
    if (w === undefined) return best;
    if (best !== undefined && w - Math.max(oAfter, bestOffset) > best) return best;
    const instants = instantsViaIntl(tz, w);
    let candidates: number[];
    if (instants.length === 0) candidates = s.fixedTime ? [jumpInstant(tz, w)] : [];
    else candidates = s.fixedTime ? [instants[0]!] : instants;
    for (const c of candidates) {
      if (c > after && (best === undefined || c < best)) {
        best = c;
        bestOffset = offsetMs(tz, c);
        // The offsets in between may exceed both ends (a summer between two winters).
        for (let t = after; t < best; t += 86_400_000) bestOffset = Math.max(bestOffset, offsetMs(tz, t));
      }
    }
    w += unit;
  }
  return best;
}

/** The latest tick in (notBefore, now], or undefined when there is none. */
export function mostRecentTick(s: CronSchedule, notBefore: number, now: number, tz = 'UTC'): number | undefined {
  if (now <= notBefore) return undefined;
  for (let window = s.withSeconds ? 1000 : 60_000; ; window *= 4) {
    const start = Math.max(notBefore, now - window);
    let t = nextTick(s, start, tz);
    if (t !== undefined && t <= now) {
      for (let guard = 0; guard < 100_000; guard++) {
        const n = nextTick(s, t, tz);
        if (n === undefined || n > now) return t;
        t = n;
      }
      return t;
    }
    if (start === notBefore) return undefined;
  }
}
