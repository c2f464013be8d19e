/**
 * Generated demand, for the property tests and the policy benchmark: sources of every shape a
 * fleet shows — steady, diurnal, bursty, sparse, new (starting part-way) and vanishing
 * (stopping part-way) — mixed in one trace. Seeded: the same seed gives the same trace.
 */
import { mulberry32, type Trace } from './trace.js';

/** How one source asks for copies. */
export interface SourceShape {
  readonly name: string;
  /** Mean batches per second of the steady part (0 for a source that only bursts). */
  readonly batchesPerS: number;
  /** Relative swing of the steady rate over the day, 0..1 (peak at 15:00 UTC). */
  readonly diurnal: number;
  /** Bursts per day on average: a burst is `burstRequests` single requests spread over `burstS`. */
  readonly burstsPerDay: number;
  readonly burstRequests: readonly [number, number];
  readonly burstS: number;
  /** Batch sizes of the steady part and their weights. */
  readonly sizes: readonly (readonly [number, number])[];
  /** Share of the span (0..1) at which the source starts asking, and stops. */
  readonly from: number;
  readonly until: number;
}

const DAY_S = 86_400;

/** 2024-01-01T00:00Z, a Monday. */
export const SYNTHETIC_START = Date.UTC(2024, 0, 1) / 1000;

/** Arrivals of the given sources over `days` from `start`, sorted by time. */
export function generateTrace(shapes: readonly SourceShape[], o: { readonly seed: number; readonly days: number; readonly start?: number; readonly name?: string }): Trace {
  const rand = mulberry32(o.seed);
  const start = o.start ?? SYNTHETIC_START;
  const span = o.days * DAY_S;
  const rows: [number, number, number][] = [];
  shapes.forEach((s, id) => {
    const from = start + Math.max(0, Math.min(1, s.from)) * span;
    const until = start + Math.max(0, Math.min(1, s.until)) * span;
    if (!(until > from)) return;
    const totalW = s.sizes.reduce((a, [, w]) => a + w, 0);
    const drawSize = () => {
      let u = rand() * totalW;
      for (const [k, w] of s.sizes) if ((u -= w) < 0) return k;
      return s.sizes[s.sizes.length - 1]?.[0] ?? 1;
    };
    const maxRate = s.batchesPerS * (1 + s.diurnal);
    if (maxRate > 0) {
      // A Poisson process with a daily swing, by thinning.
      for (let t = from; ; ) {
        t += -Math.log(1 - rand()) / maxRate;
        if (t >= until) break;
        const tod = (((t % DAY_S) + DAY_S) % DAY_S) / DAY_S;
        if (rand() * maxRate < s.batchesPerS * (1 + s.diurnal * Math.sin(2 * Math.PI * (tod - 0.375)))) rows.push([t, id, drawSize()]);
      }
    }
    if (s.burstsPerDay > 0) {
      for (let t = from; ; ) {
        t += (-Math.log(1 - rand()) / s.burstsPerDay) * DAY_S;
        if (t >= until) break;
        const [lo, hi] = s.burstRequests;
        const n = lo + Math.floor(rand() * (hi - lo + 1));
        for (let k = 0; k < n; k++) {
          const at = t + rand() * s.burstS;
          if (at < until) rows.push([at, id, 1]);
        }
      }
    }
  });
  rows.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  return {
    name: o.name ?? `generated-${o.seed}`,
    format: 'csv',
    sources: shapes.map((s) => s.name),
    times: Float64Array.from(rows, (r) => r[0]),
    source: Uint16Array.from(rows, (r) => r[1]),
    counts: Uint32Array.from(rows, (r) => r[2]),
    start,
    end: start + span,
  };
}

/** The part of a trace in [from, to) (seconds since the epoch), with the same sources. */
export function sliceTrace(trace: Trace, from: number, to: number): Trace {
  let a = 0;
  while (a < trace.times.length && trace.times[a]! < from) a++;
  let b = a;
  while (b < trace.times.length && trace.times[b]! < to) b++;
  return { ...trace, times: trace.times.slice(a, b), source: trace.source.slice(a, b), counts: trace.counts.slice(a, b), start: from, end: to };
}

/**
 * A fleet's mix of `n` sources drawn with `seed`: a few busy ones (one request every few seconds
 * to minutes, some diurnal, some in batches), and mostly sparse ones (a few requests a day or a
 * week, often in bursts of 2–30), some of them new or vanishing part-way.
 */
export function mixedShapes(seed: number, n: number): SourceShape[] {
  const rand = mulberry32(seed ^ 0x5eed);
  const between = (lo: number, hi: number) => lo * (hi / lo) ** rand();
  const out: SourceShape[] = [];
  for (let i = 0; i < n; i++) {
    const u = rand();
    const lifetime = rand();
    const from = lifetime < 0.1 ? 0.2 + 0.6 * rand() : 0;
    const until = lifetime > 0.9 ? 0.2 + 0.6 * rand() : 1;
    const name = `s${String(i).padStart(3, '0')}`;
    if (u < 0.1) {
      out.push({
        name,
        batchesPerS: between(1 / 60, 1 / 3),
        diurnal: rand() < 0.5 ? 0.3 + 0.6 * rand() : 0,
        burstsPerDay: rand() < 0.3 ? between(0.2, 2) : 0,
        burstRequests: [10, 60],
        burstS: 120,
        sizes: rand() < 0.3 ? [[1, 6], [3, 3], [10, 1]] : [[1, 1]],
        from,
        until,
      });
    } else if (u < 0.25) {
      out.push({ name, batchesPerS: between(1 / 3600, 1 / 300), diurnal: 0.5 * rand(), burstsPerDay: rand() < 0.5 ? between(0.1, 1) : 0, burstRequests: [3, 20], burstS: 300, sizes: [[1, 1]], from, until });
    } else {
      out.push({ name, batchesPerS: rand() < 0.5 ? between(1 / (7 * DAY_S), 3 / DAY_S) : 0, diurnal: 0, burstsPerDay: between(1 / 14, 1), burstRequests: [2, 30], burstS: between(30, 1800), sizes: [[1, 1]], from, until });
    }
  }
  return out;
}
