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
 *  - the batch sizes seen, exponentially weighted so old behaviour fades.
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
  readonly version: 1;
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
}

export function newForecast(options: Partial<ForecastOptions> = {}): ForecastState {
  const o: ForecastOptions = { ...DEFAULT_FORECAST_OPTIONS, ...options };
  if (!(o.binS > 0) || !Number.isInteger(86_400 / (o.slotsPerDay * o.binS)) || o.slotsPerDay < 1) {
    throw new RangeError('forecast: a day must hold a whole number of bins in each slot');
  }
  const n = 2 * o.slotsPerDay;
  return {
    version: 1,
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
  };
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
  const own = Math.max(MIN_FACTOR, state.factors[i]!);
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
    state.factors[i] = state.factors[i]! + gamma * (y / (base * o.binS) - state.factors[i]!);
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
  const perBin = state.predicted > 0 ? state.errSq / state.predicted : 1;
  const dispersion = Math.max(1, 1 + (perBin - 1) * (h / o.binS));
  const sizes = state.published;
  return { batchesPerS, requestsPerS: batchesPerS * meanBatchSize(sizes), model: { batches: batchesPerS * h, dispersion, sizes } };
}
