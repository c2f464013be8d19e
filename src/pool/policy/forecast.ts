/**
 * Demand forecast of one pool, learned from its own arrivals.
 *
 * The unit of demand is a batch: the requests of one tenant that arrive at the same instant.
 * Traces give batches whole; the live service sees one claim at a time and sets `coalesceS`
 * (e.g. 1 s) so that claims of one source that follow each other that closely count as one batch.
 * The forecaster keeps
 *  - a level: an exponentially weighted rate of batches per second with the seasonality taken
 *    out (multiplicative Holt–Winters without trend, updated once per closed bin). It reacts
 *    within the hour; the forecast is level × seasonal factor,
 *  - seasonal factors per time-of-day slot, separately for weekdays and weekends (UTC), learned
 *    against a slow baseline (a week-long average of the same deseasonalized rate): learned
 *    against the fast level they would be half absorbed by it. While a slot has little history
 *    its factor is shrunk toward its prior (1 for a weekday slot, the weekday factor for a
 *    weekend slot), so a young pool forecasts a flat rate,
 *  - a dispersion index: the exponentially weighted ratio of squared forecast errors of the
 *    batch count per bin to the forecast count. 1 means Poisson; bursts of batches push it up,
 *    and the demand model then counts batches as negative binomial instead of Poisson,
 *  - the batch sizes seen, exponentially weighted so old behaviour fades,
 *  - peaks: the most requests seen in a window, for a ladder of window lengths, fading slowly.
 *    They bound what the history can justify: a pool never needs more spares than the most
 *    requests that ever came within about one lead time (see `historyPeak`).
 *
 * Thin data is shrunk toward a prior everywhere a ratio is learned, so that one request after a
 * long silence cannot blow a number up: a seasonal factor moves toward batches / expected by a
 * step weighted by expected / (expected + 1), and the dispersion index is learned from squared
 * errors against forecasts with ten batches' worth of Poisson behaviour added to both.
 *
 * The state is one plain JSON-serializable object, changed in place by `observe` (one batch)
 * and `advance` (closes the bins that ended); `forecastDemand` only reads it.
 */
import { batchSizes, meanBatchSize, SINGLE_REQUESTS, type BatchSizes, type DemandModel } from './demand.js';

export interface ForecastOptions {
  /** Length of one bin, seconds: the level and factors are updated at the end of each. Default 300. */
  readonly binS: number;
  /** Time-of-day slots per day (for each of weekday and weekend). Default 48 (half-hours). */
  readonly slotsPerDay: number;
  /** Time constant of the level, seconds. Default 3600. */
  readonly levelTauS: number;
  /** Time constant of the baseline the seasonal factors are learned against, seconds. Default 7 days. */
  readonly baseTauS: number;
  /** Time constant of each seasonal factor, in days of that slot's history. Default 7. */
  readonly seasonTauDays: number;
  /** Days of history a slot needs before its own factor outweighs its prior. Default 1. */
  readonly seasonPriorDays: number;
  /** Time constant of the dispersion index, seconds. Default 3 days. */
  readonly dispersionTauS: number;
  /** Time constant of the batch-size weights, seconds. Default 7 days. */
  readonly sizesTauS: number;
  /** Arrivals at most this many seconds after the previous one join its batch. Default 0 (only what the caller groups). */
  readonly coalesceS: number;
}

export const DEFAULT_FORECAST_OPTIONS: ForecastOptions = Object.freeze({
  binS: 300,
  slotsPerDay: 48,
  levelTauS: 3600,
  baseTauS: 7 * 86_400,
  seasonTauDays: 7,
  seasonPriorDays: 1,
  dispersionTauS: 3 * 86_400,
  sizesTauS: 7 * 86_400,
  coalesceS: 0,
});

/** Everything the forecaster knows about one pool; plain data, safe to JSON.stringify and store. */
export interface ForecastState {
  readonly version: 2;
  readonly options: ForecastOptions;
  /** Start of the bin being filled (seconds since the epoch, a multiple of binS); null before the first arrival. */
  binStart: number | null;
  /** Batches and requests seen in the open bin. */
  binBatches: number;
  binRequests: number;
  /** Exponentially weighted batches per second, seasonality removed, before bias correction. */
  levelRaw: number;
  /** 1 − (1 − α)ⁿ after n bins: divides levelRaw into an unbiased level while history is short. */
  levelWeight: number;
  /** The slow baseline, kept the same way. */
  baseRaw: number;
  baseWeight: number;
  /** Seasonal factors, weekday slots then weekend slots, and how many bins each has seen. */
  factors: number[];
  factorCounts: number[];
  /** Exponentially weighted Σ (y − ŷ)² and Σ ŷ over closed bins. */
  errSq: number;
  predicted: number;
  /** Exponentially weighted batch counts by batch size (keys are sizes). */
  sizes: Record<string, number>;
  /** Bins closed so far; a forecast only changes when this does (planner caches key on it). */
  bins: number;
  /** Batches and requests seen in total. */
  batchesSeen: number;
  requestsSeen: number;
  /** The batch-size distribution as of the last closed bin. */
  published: BatchSizes;
  /** The last arrival and the size of the batch it is part of (for coalescing). */
  lastAt: number | null;
  lastSize: number;
  /** Per window of PEAK_WINDOWS_S: [start of the current aligned window, requests in it, in the one before, faded peak, time of the peak]. */
  peaks: [number, number, number, number, number][];
}

/**
 * Window lengths (seconds) the peaks are kept for. A pool with lead time L reads the shortest
 * window ≥ L; its peak counts requests in two consecutive aligned windows, so it covers every
 * window of length L (and overstates by at most one window's worth: a cap on the safe side).
 */
export const PEAK_WINDOWS_S: readonly number[] = Object.freeze([1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 12 * 3600, 86_400, 7 * 86_400]);
/** A peak fades with this time constant: a burst of last month justifies less than last week's. */
export const PEAK_TAU_S = 14 * 86_400;
/** Pseudo-counts of the thin-data priors (see the header). */
const FACTOR_PRIOR_BATCHES = 1;
const DISPERSION_PRIOR_BATCHES = 10;
/** The seasonal factors average 1 over a day's slots, so none can honestly exceed the slot count. */
const maxFactor = (o: ForecastOptions) => o.slotsPerDay;

export function newForecast(options: Partial<ForecastOptions> = {}): ForecastState {
  const o: ForecastOptions = { ...DEFAULT_FORECAST_OPTIONS, ...options };
  if (!(o.binS > 0) || !Number.isInteger(86_400 / (o.slotsPerDay * o.binS)) || o.slotsPerDay < 1) {
    throw new RangeError('forecast: a day must hold a whole number of bins in each slot');
  }
  const n = 2 * o.slotsPerDay;
  return {
    version: 2,
    options: o,
    binStart: null,
    binBatches: 0,
    binRequests: 0,
    levelRaw: 0,
    levelWeight: 0,
    baseRaw: 0,
    baseWeight: 0,
    factors: new Array<number>(n).fill(1),
    factorCounts: new Array<number>(n).fill(0),
    errSq: 0,
    predicted: 0,
    sizes: {},
    bins: 0,
    batchesSeen: 0,
    requestsSeen: 0,
    published: SINGLE_REQUESTS,
    lastAt: null,
    lastSize: 0,
    peaks: PEAK_WINDOWS_S.map(() => [0, 0, 0, 0, 0]),
  };
}

/**
 * A forecaster's state read back from storage: checked field by field (a damaged or foreign
 * record is refused with the reason, never half-used); version 1 records gain empty peaks.
 */
export function reviveForecast(raw: unknown): ForecastState {
  if (typeof raw !== 'object' || raw === null) throw new TypeError('not an object');
  const r = raw as Record<string, unknown>;
  if (r.version !== 1 && r.version !== 2) throw new TypeError(`unknown version ${String(r.version)}`);
  const fresh = newForecast(typeof r.options === 'object' && r.options !== null ? (r.options) : {});
  // Every number kept is a time, a count, a rate or a weight: finite, and all but times ≥ 0.
  const time = (k: string) => {
    const v = r[k];
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new TypeError(`${k} is not a finite number`);
    return v;
  };
  const num = (k: string) => {
    const v = time(k);
    if (v < 0) throw new TypeError(`${k} is negative`);
    return v;
  };
  const nums = (k: string, n: number) => {
    const v = r[k];
    if (!Array.isArray(v) || v.length !== n || !v.every((x) => typeof x === 'number' && Number.isFinite(x) && x >= 0)) throw new TypeError(`${k} is not ${n} finite numbers ≥ 0`);
    return v as number[];
  };
  const sizes = r.sizes;
  if (typeof sizes !== 'object' || sizes === null || Array.isArray(sizes) || !Object.entries(sizes).every(([k, w]) => Number.isSafeInteger(Number(k)) && Number(k) >= 1 && typeof w === 'number' && Number.isFinite(w) && w >= 0)) {
    throw new TypeError('sizes are not size → weight');
  }
  const peaks =
    r.version === 2 && Array.isArray(r.peaks) && r.peaks.length === PEAK_WINDOWS_S.length && r.peaks.every((p) => Array.isArray(p) && p.length === 5 && p.every((x) => typeof x === 'number' && Number.isFinite(x) && x >= 0))
      ? (r.peaks as [number, number, number, number, number][])
      : fresh.peaks;
  const binStart = r.binStart === null ? null : time('binStart');
  const lastAt = r.lastAt === null ? null : time('lastAt');
  const state: ForecastState = {
    ...fresh,
    binStart,
    binBatches: num('binBatches'),
    binRequests: num('binRequests'),
    levelRaw: num('levelRaw'),
    levelWeight: num('levelWeight'),
    baseRaw: num('baseRaw'),
    baseWeight: num('baseWeight'),
    factors: nums('factors', fresh.factors.length).map((f) => Math.min(maxFactor(fresh.options), Math.max(0, f))),
    factorCounts: nums('factorCounts', fresh.factorCounts.length),
    errSq: num('errSq'),
    predicted: num('predicted'),
    sizes: { ...(sizes as Record<string, number>) },
    bins: num('bins'),
    batchesSeen: num('batchesSeen'),
    requestsSeen: num('requestsSeen'),
    lastAt,
    lastSize: num('lastSize'),
    peaks,
  };
  for (const [raw, weight] of [['levelRaw', 'levelWeight'], ['baseRaw', 'baseWeight']] as const) {
    // A weight is 1 − (1 − α)ⁿ: at most 1, and the rate it divides must stay finite.
    if (state[weight] > 1 || (state[weight] === 0 ? state[raw] !== 0 : !Number.isFinite(state[raw] / state[weight]))) throw new TypeError(`${raw} / ${weight} is not a rate`);
  }
  state.published = batchSizes(Object.entries(state.sizes).map(([k, w]) => [Number(k), w] as const));
  return state;
}

const DAY_S = 86_400;

/** Weekday (Mon–Fri) slots come first, weekend (Sat, Sun) slots after. */
function slotIndex(o: ForecastOptions, t: number): number {
  const day = Math.floor(t / DAY_S);
  // 1970-01-01 was a Thursday: (day + 4) % 7 is 0 on Sundays.
  const dow = (((day + 4) % 7) + 7) % 7;
  const weekend = dow === 0 || dow === 6 ? 1 : 0;
  const slot = Math.floor((t - day * DAY_S) / (DAY_S / o.slotsPerDay));
  return weekend * o.slotsPerDay + Math.min(o.slotsPerDay - 1, slot);
}

/** A slot that has been silent keeps a little of the rate: its first request should not find the pool sized for zero. */
const MIN_FACTOR = 0.02;

/**
 * The seasonal factor of slot i, shrunk toward its prior while the slot has little history: a
 * weighted geometric mean (factors are ratios; an arithmetic mean would let a weekday prior of
 * 1.6 hold a quiet weekend slot's 0.2 far up for weeks).
 */
function factor(state: ForecastState, i: number): number {
  const o = state.options;
  const prior = i < o.slotsPerDay ? 1 : factor(state, i - o.slotsPerDay);
  const n = state.factorCounts[i]!;
  if (n === 0) return prior;
  const n0 = o.seasonPriorDays * (DAY_S / o.slotsPerDay / o.binS);
  const own = Math.min(maxFactor(o), Math.max(MIN_FACTOR, state.factors[i]!));
  return Math.exp((n * Math.log(own) + n0 * Math.log(Math.max(MIN_FACTOR, prior))) / (n + n0));
}


/** Batches per second with seasonality removed; 0 before any bin closed. */
function level(state: ForecastState): number {
  return state.levelWeight > 0 ? state.levelRaw / state.levelWeight : 0;
}

function closeBin(state: ForecastState): void {
  const o = state.options;
  const start = state.binStart!;
  const y = state.binBatches;
  const i = slotIndex(o, start + o.binS / 2);
  const f = factor(state, i);
  const lvl = level(state);
  const base = state.baseWeight > 0 ? state.baseRaw / state.baseWeight : 0;
  const expected = lvl * f * o.binS;

  // Dispersion: how far the count strayed from what was forecast for it, against Poisson's spread.
  if (state.levelWeight > 0 && expected > 0) {
    const d = Math.exp(-o.binS / o.dispersionTauS);
    state.errSq = d * state.errSq + (y - expected) ** 2;
    state.predicted = d * state.predicted + expected;
  }
  // Seasonal factor of this slot (running mean at first, then exponentially weighted).
  if (base > 0) {
    const n = state.factorCounts[i]! + 1;
    const gamma = Math.max(1 - Math.exp(-1 / (o.seasonTauDays * (DAY_S / o.slotsPerDay / o.binS))), 1 / n);
    // The step toward y / expected, weighted by expected / (expected + 1): unbiased where a bin
    // expects many batches, while a bin of a source that averages 0.001 batches per bin moves
    // the factor by at most one step of (y − f·expected), not by y / 0.001.
    const expectedBin = base * o.binS;
    const step = (gamma * (y - state.factors[i]! * expectedBin)) / (expectedBin + FACTOR_PRIOR_BATCHES);
    state.factors[i] = Math.min(maxFactor(o), Math.max(0, state.factors[i]! + step));
    state.factorCounts[i] = n;
  }
  // Level and baseline, on the deseasonalized rate.
  const alpha = 1 - Math.exp(-o.binS / o.levelTauS);
  state.levelRaw = (1 - alpha) * state.levelRaw + alpha * (y / o.binS / f);
  state.levelWeight = (1 - alpha) * state.levelWeight + alpha;
  const beta = 1 - Math.exp(-o.binS / o.baseTauS);
  state.baseRaw = (1 - beta) * state.baseRaw + beta * (y / o.binS / f);
  state.baseWeight = (1 - beta) * state.baseWeight + beta;
  // Batch sizes fade with time.
  const decay = Math.exp(-o.binS / o.sizesTauS);
  let total = 0;
  for (const k of Object.keys(state.sizes)) total += state.sizes[k]!;
  for (const k of Object.keys(state.sizes)) {
    const w = state.sizes[k]! * decay;
    if (w < total * 1e-9) delete state.sizes[k];
    else state.sizes[k] = w;
  }
  state.bins++;
  if (state.bins % (DAY_S / o.binS) === 0) normalizeFactors(state);
  state.published = batchSizes(Object.entries(state.sizes).map(([k, w]) => [Number(k), w] as const));
  state.binBatches = 0;
  state.binRequests = 0;
  state.binStart = start + o.binS;
}

/** Keeps the weekday factors averaging 1 so level and factors do not drift against each other. */
function normalizeFactors(state: ForecastState): void {
  const o = state.options;
  let sum = 0;
  for (let i = 0; i < o.slotsPerDay; i++) sum += factor(state, i);
  const mean = sum / o.slotsPerDay;
  if (!(mean > 0)) return;
  for (let i = 0; i < state.factors.length; i++) state.factors[i]! /= mean;
  state.levelRaw *= mean;
  state.baseRaw *= mean;
}

/** Closes every bin that ended at or before `now` (empty ones count as zero batches). */
export function advance(state: ForecastState, now: number): void {
  if (state.binStart === null) return;
  const o = state.options;
  // A long silence: close bins one by one up to a week, then jump (nothing more to learn from zeros).
  let guard = 7 * (DAY_S / o.binS);
  while (state.binStart + o.binS <= now && guard-- > 0) closeBin(state);
  if (state.binStart + o.binS <= now) state.binStart = Math.floor(now / o.binS) * o.binS;
}

/** Records one batch of `count` requests arriving at `t` (seconds since the epoch, non-decreasing). */
export function observe(state: ForecastState, t: number, count = 1): void {
  if (!(count >= 1)) return;
  const o = state.options;
  if (state.binStart === null) state.binStart = Math.floor(t / o.binS) * o.binS;
  advance(state, t);
  const n = Math.ceil(count);
  state.binRequests += n;
  state.requestsSeen += n;
  if (o.coalesceS > 0 && state.lastAt !== null && t - state.lastAt <= o.coalesceS && state.lastAt >= state.binStart) {
    // Part of the batch still open in this bin: it grows (its weight is still exactly 1, as decay happens at bin ends).
    const old = String(state.lastSize);
    const w = (state.sizes[old] ?? 0) - 1;
    if (w > 1e-12) state.sizes[old] = w;
    else delete state.sizes[old];
    state.lastSize += n;
  } else {
    state.binBatches++;
    state.batchesSeen++;
    state.lastSize = n;
  }
  state.lastAt = t;
  notePeaks(state, t, n);
  const key = String(state.lastSize);
  state.sizes[key] = (state.sizes[key] ?? 0) + 1;
}

export interface DemandForecast {
  /** Expected batches per second over the horizon. */
  readonly batchesPerS: number;
  /** Expected requests per second over the horizon. */
  readonly requestsPerS: number;
  /** Demand over the horizon. */
  readonly model: DemandModel;
}

/**
 * The demand expected over the next horizonS seconds. The seasonal factors are averaged over a
 * window that starts at the start of the current bin, so a forecast changes only when a bin
 * does (callers can cache on that; the window is off by less than one bin). The batch count's
 * dispersion is measured per bin; for another window it is scaled as a slowly wandering rate
 * would scale it (Var − mean grows with the square of the window, the mean with the window).
 */
export function forecastDemand(state: ForecastState, now: number, horizonS: number): DemandForecast {
  const o = state.options;
  const lvl = level(state);
  const h = Math.max(1e-9, horizonS);
  // Average the seasonal factor over the horizon, slot by slot.
  let weighted = 0;
  const slotS = DAY_S / o.slotsPerDay;
  const t0 = Math.floor(now / o.binS) * o.binS;
  for (let t = t0; t < t0 + h; ) {
    const end = Math.min(t0 + h, (Math.floor(t / slotS) + 1) * slotS);
    weighted += factor(state, slotIndex(o, t)) * (end - t);
    t = end;
  }
  const batchesPerS = (lvl * weighted) / h;
  // Ten batches of Poisson behaviour as a prior: one surprise after a silence is not a pattern of bursts.
  const perBin = (state.errSq + DISPERSION_PRIOR_BATCHES) / (state.predicted + DISPERSION_PRIOR_BATCHES);
  const dispersion = Math.max(1, 1 + (perBin - 1) * (h / o.binS));
  const sizes = state.published;
  return { batchesPerS, requestsPerS: batchesPerS * meanBatchSize(sizes), model: { batches: batchesPerS * h, dispersion, sizes } };
}

/** Counts `n` requests at `t` into every window of the ladder, and raises the faded peaks. */
function notePeaks(state: ForecastState, t: number, n: number): void {
  for (let w = 0; w < PEAK_WINDOWS_S.length; w++) {
    const len = PEAK_WINDOWS_S[w]!;
    const p = state.peaks[w]!;
    const start = Math.floor(t / len) * len;
    if (start !== p[0]) {
      // The window moved on: the one just closed becomes the previous one if it is adjacent.
      p[2] = start - p[0] === len ? p[1] : 0;
      p[1] = 0;
      p[0] = start;
    }
    p[1] += n;
    const faded = p[3] * Math.exp(-Math.max(0, t - p[4]) / PEAK_TAU_S);
    const now = p[1] + p[2];
    if (now >= faded) {
      p[3] = now;
      p[4] = t;
    }
  }
}

/**
 * The most requests seen within about one window of `windowS` seconds (two consecutive aligned
 * windows of the shortest ladder length ≥ windowS), faded with PEAK_TAU_S since it was seen;
 * 0 before any request. What the history can justify holding against one lead time of demand.
 */
export function historyPeak(state: ForecastState, now: number, windowS: number): number {
  let w = PEAK_WINDOWS_S.findIndex((len) => len >= windowS);
  if (w < 0) w = PEAK_WINDOWS_S.length - 1;
  const p = state.peaks[w];
  if (!p || p[3] <= 0) return 0;
  return p[3] * Math.exp(-Math.max(0, now - p[4]) / PEAK_TAU_S);
}
