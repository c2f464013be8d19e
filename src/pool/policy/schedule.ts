/**
 * Pre-warm schedule: demand an operator knows ahead ("300 of lab-desktop at 09:00 on
 * weekdays"). The pool's target rises by the event's count early enough for the copies to be
 * made before it: one lead time per round of copies the concurrency allows, plus a margin.
 */
import { InputError } from '../../domain/index.js';

export interface PrewarmEvent {
  readonly pool: string;
  /** Requests expected at the event. */
  readonly count: number;
  /** Minute of the day the event starts, UTC (09:00 → 540). */
  readonly minuteOfDay: number;
  /** Days it happens on, 0 = Sunday … 6 = Saturday. */
  readonly days: readonly number[];
  /** Seconds the raised target holds after the event starts (refills during a spread-out event). Default 0. */
  readonly holdS: number;
  /** Extra seconds of head start on top of the copy time. Default 300. */
  readonly marginS: number;
}

const DAY_NAMES = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const;
const DAY_S = 86_400;

function parseDays(raw: string, field: string): number[] {
  const lower = raw.trim().toLowerCase();
  if (lower === '' || lower === 'daily' || lower === 'all') return [0, 1, 2, 3, 4, 5, 6];
  if (lower === 'weekdays') return [1, 2, 3, 4, 5];
  if (lower === 'weekends') return [0, 6];
  const days = new Set<number>();
  for (const part of lower.split(',')) {
    const m = /^([a-z]{3})(?:-([a-z]{3}))?$/.exec(part.trim());
    const from = m ? DAY_NAMES.indexOf(m[1] as (typeof DAY_NAMES)[number]) : -1;
    const to = m?.[2] !== undefined ? DAY_NAMES.indexOf(m[2] as (typeof DAY_NAMES)[number]) : from;
    if (from < 0 || to < 0) throw new InputError(`${field}: cannot read '${part}' as days (mon, mon-fri, weekdays, weekends, daily)`, { field });
    for (let d = from; ; d = (d + 1) % 7) {
      days.add(d);
      if (d === to) break;
    }
  }
  return [...days].sort((a, b) => a - b);
}

/**
 * Reads `POOL:COUNT@HH:MM[/DAYS]`, e.g. `lab-desktop:300@09:00/mon-fri` (times UTC; DAYS as
 * `mon,wed`, `mon-fri`, `weekdays`, `weekends` or `daily`, the default).
 */
export function parsePrewarmEvent(raw: string, options: { holdS?: number; marginS?: number } = {}, field = 'event'): PrewarmEvent {
  const m = /^\s*([^:@/\s]+):([0-9]+)@([0-9]{1,2}):([0-9]{2})(?:\/(.+))?\s*$/.exec(raw);
  if (!m) throw new InputError(`${field}: cannot read '${raw}' (expected POOL:COUNT@HH:MM[/DAYS], e.g. lab-desktop:300@09:00/mon-fri)`, { field });
  const hh = Number(m[3]);
  const mm = Number(m[4]);
  if (hh > 23 || mm > 59) throw new InputError(`${field}: ${m[3]}:${m[4]} is not a time of day`, { field });
  return prewarmEvent({ pool: m[1]!, count: Number(m[2]), minuteOfDay: hh * 60 + mm, days: parseDays(m[5] ?? '', field), ...options });
}

/** Checks and freezes an event given as data. */
export function prewarmEvent(e: { pool: string; count: number; minuteOfDay: number; days?: readonly number[]; holdS?: number; marginS?: number }): PrewarmEvent {
  if (!Number.isSafeInteger(e.count) || e.count < 1) throw new InputError('event: count must be a whole number ≥ 1', { field: 'count' });
  if (!Number.isInteger(e.minuteOfDay) || e.minuteOfDay < 0 || e.minuteOfDay >= 1440) throw new InputError('event: minuteOfDay must be 0..1439', { field: 'minuteOfDay' });
  const days = [...new Set(e.days ?? [0, 1, 2, 3, 4, 5, 6])].sort((a, b) => a - b);
  if (days.length === 0 || days.some((d) => !Number.isInteger(d) || d < 0 || d > 6)) throw new InputError('event: days must be 0 (Sunday) .. 6', { field: 'days' });
  const holdS = e.holdS ?? 0;
  const marginS = e.marginS ?? 300;
  if (!(holdS >= 0) || !(marginS >= 0)) throw new InputError('event: holdS and marginS must be ≥ 0', { field: 'holdS' });
  return Object.freeze({ pool: e.pool, count: e.count, minuteOfDay: e.minuteOfDay, days: Object.freeze(days), holdS, marginS });
}

/** Seconds before an event its target must rise: rounds of copies at the concurrency each take a lead time. */
export function prewarmLeadS(event: PrewarmEvent, leadTimeS: number, concurrency: number): number {
  const rounds = Number.isFinite(concurrency) && concurrency > 0 ? Math.ceil(event.count / concurrency) : 1;
  return rounds * leadTimeS + event.marginS;
}

export interface ScheduledBoost {
  /** Extra spares the pool should hold now. */
  readonly extra: number;
  /** The events behind it, each with its start time (seconds since the epoch). */
  readonly events: readonly { readonly event: PrewarmEvent; readonly at: number }[];
}

/** The extra spares `pool` needs at `now` for the events it has coming (or holding). */
export function scheduledBoost(events: readonly PrewarmEvent[], pool: string, now: number, leadTimeS: number, concurrency: number): ScheduledBoost {
  let extra = 0;
  const active: { event: PrewarmEvent; at: number }[] = [];
  for (const e of events) {
    if (e.pool !== pool) continue;
    const ramp = prewarmLeadS(e, leadTimeS, concurrency);
    const today = Math.floor(now / DAY_S);
    // Occurrences from yesterday (still holding) to as far ahead as the ramp reaches.
    for (let day = today - 1 - Math.ceil(e.holdS / DAY_S); day <= today + Math.ceil(ramp / DAY_S); day++) {
      const dow = (((day + 4) % 7) + 7) % 7;
      if (!e.days.includes(dow)) continue;
      const at = day * DAY_S + e.minuteOfDay * 60;
      if (now >= at - ramp && now < at + e.holdS) {
        extra += e.count;
        active.push({ event: e, at });
      }
    }
  }
  return { extra, events: active };
}
