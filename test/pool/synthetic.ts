/** Seeded synthetic demand for the pool tests: diurnal batch arrivals with bursts, and steady forecasts. */
import { advance, newForecast, observe, type ForecastState } from '../../src/pool/policy/index.js';
import { trainForecasts } from '../../src/pool/simulator/index.js';
import { mulberry32, type Trace } from '../../src/pool/simulator/index.js';

export interface SyntheticOptions {
  readonly seed: number;
  /** Seconds since the epoch; default 2024-01-01T00:00Z (a Monday). */
  readonly start?: number;
  readonly days: number;
  /** Mean batches per second over a day. */
  readonly batchesPerS: number;
  /** Relative swing of the rate over the day (0.6: from 0.4× at 03:00 to 1.6× at 15:00 UTC). */
  readonly diurnal?: number;
  /** Chance per hour that a burst starts, its rate multiplier and length. */
  readonly burstsPerHour?: number;
  readonly burstFactor?: number;
  readonly burstS?: number;
  /** Batch sizes and their weights; default all 1. */
  readonly sizes?: readonly (readonly [number, number])[];
  readonly source?: string;
}

export const MONDAY = Date.UTC(2024, 0, 1) / 1000;

export function syntheticTrace(o: SyntheticOptions): Trace {
  const rand = mulberry32(o.seed);
  const start = o.start ?? MONDAY;
  const end = start + o.days * 86_400;
  const amp = o.diurnal ?? 0;
  const burstFactor = o.burstFactor ?? 1;
  const burstS = o.burstS ?? 600;
  const sizes = o.sizes ?? [[1, 1]];
  const totalW = sizes.reduce((s, [, w]) => s + w, 0);
  const drawSize = () => {
    let u = rand() * totalW;
    for (const [k, w] of sizes) if ((u -= w) < 0) return k;
    return sizes[sizes.length - 1]![0];
  };
  // Bursts: one draw per hour.
  const bursts: [number, number][] = [];
  for (let h = start; h < end; h += 3600) if (rand() < (o.burstsPerHour ?? 0)) {
    const b = h + rand() * 3600;
    bursts.push([b, b + burstS]);
  }
  const rate = (t: number) => {
    const tod = ((t % 86_400) + 86_400) % 86_400 / 86_400;
    let r = o.batchesPerS * (1 + amp * Math.sin(2 * Math.PI * (tod - 0.375)));
    for (const [a, b] of bursts) if (t >= a && t < b) r *= burstFactor;
    return r;
  };
  const maxRate = o.batchesPerS * (1 + amp) * burstFactor;
  const times: number[] = [];
  const counts: number[] = [];
  // Poisson process by thinning.
  for (let t = start; ; ) {
    t += -Math.log(1 - rand()) / maxRate;
    if (t >= end) break;
    if (rand() * maxRate < rate(t)) {
      times.push(t);
      counts.push(drawSize());
    }
  }
  return {
    name: `synthetic-${o.seed}`,
    format: 'csv',
    sources: [o.source ?? 'lab'],
    times: Float64Array.from(times),
    source: new Uint16Array(times.length),
    counts: Uint32Array.from(counts),
    start,
    end,
  };
}

/** A forecaster fed one batch of `size` every `everyS` seconds for `days`, from Monday 00:00 UTC. */
export function steadyForecast(everyS: number, days: number, size = 1): ForecastState {
  const f = newForecast();
  const end = MONDAY + days * 86_400;
  for (let t = MONDAY; t < end; t += everyS) observe(f, t, size);
  advance(f, end);
  return f;
}

/** A forecaster fed Poisson arrivals of one request, one per `everyS` seconds on average, for `days` from Monday 00:00 UTC. */
export function poissonForecast(everyS: number, days: number, seed = 7): ForecastState {
  const trace = syntheticTrace({ seed, days, batchesPerS: 1 / everyS });
  return trainForecasts(trace, trace.sources).get(trace.sources[0]!)!;
}
