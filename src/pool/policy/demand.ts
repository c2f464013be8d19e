/**
 * Demand over one replenishment lead time, and what S spares buy against it.
 *
 * Model (compound counting process): requests come in batches (one tenant asking for k copies
 * at once). Over the lead time, the number of batches N is Poisson with mean `batches`, or —
 * when the history shows more spread than Poisson (bursts of batches) — negative binomial with
 * the same mean and Var[N] = dispersion · E[N]. Each batch's size is drawn from the pool's own
 * observed batch sizes. The demand D = Σ sizes is computed exactly by Panjer's recursion, so the
 * tail of D follows the real batch sizes instead of a fitted shape (a negative binomial fitted
 * to D's mean and variance alone puts mass far beyond the largest batch ever seen, and too
 * little just below it).
 *
 * Fill rate = the expected share of REQUESTS served warm. The pool holds its inventory position
 * (ready + in flight − waiting) at S and every claim starts a copy that lands one lead time
 * later, so a request arriving at t finds S − D(t−L, t) spares minus the requests ahead of it in
 * its own batch. The request in position j of its batch is warm iff D + j ≤ S. A request picked
 * at random sits in position j with probability P[K ≥ j] / E[K] (K = batch size), so
 *
 *     fill(S) = P[D + J ≤ S],   P[J = j] = P[K ≥ j] / E[K].
 *
 * Equivalently fill(S) = 1 − (E[(D + K − S)⁺] − E[(D − S)⁺]) / E[K]: a batch of k that finds
 * s < k spares gets s warm. (1 − E[(D − S)⁺]/E[D] is the fill of a pool restocked to S only once
 * per lead time; it overstates a continuously refilled pool's fill. For unit Poisson demand the
 * formula above reduces to the textbook P[D ≤ S − 1].)
 */

/** A distribution of batch sizes: `values` strictly ascending whole numbers ≥ 1, `probs` summing to 1. */
export interface BatchSizes {
  readonly values: readonly number[];
  readonly probs: readonly number[];
}

/** Demand over one lead time. */
export interface DemandModel {
  /** Expected number of batches, E[N]. */
  readonly batches: number;
  /** Var[N] / E[N]; 1 is Poisson, more is burstier (negative binomial). */
  readonly dispersion: number;
  readonly sizes: BatchSizes;
}

/** Every request alone: batch size 1. */
export const SINGLE_REQUESTS: BatchSizes = Object.freeze({ values: Object.freeze([1]), probs: Object.freeze([1]) });

export function meanBatchSize(sizes: BatchSizes): number {
  let m = 0;
  for (let i = 0; i < sizes.values.length; i++) m += sizes.values[i]! * sizes.probs[i]!;
  return m;
}

/** Turns observed (size → weight) pairs into a BatchSizes; sizes are rounded up to whole copies. */
export function batchSizes(weights: Iterable<readonly [number, number]>): BatchSizes {
  const merged = new Map<number, number>();
  for (const [size, w] of weights) {
    if (!(w > 0) || !(size > 0)) continue;
    const k = Math.ceil(size);
    merged.set(k, (merged.get(k) ?? 0) + w);
  }
  if (merged.size === 0) return SINGLE_REQUESTS;
  const values = [...merged.keys()].sort((a, b) => a - b);
  const total = values.reduce((s, k) => s + merged.get(k)!, 0);
  return { values, probs: values.map((k) => merged.get(k)! / total) };
}

/** Rescale stored Panjer terms when they grow past this, so a large E[N] never overflows or underflows. */
const RESCALE_ABOVE = 1e250;

/**
 * Incremental probability mass of D, by Panjer's recursion for the (a, b, 0) class:
 * f(s) = Σₖ (a + b·k/s) p(k) f(s − k). Poisson: a = 0, b = λ. Negative binomial with mean μ and
 * Var = φμ: β = φ − 1, r = μ/β, a = β/(1+β), b = (r − 1)β/(1+β). Every term is positive, so the
 * recursion is stable; terms are kept scaled and the scale is carried in log space.
 */
class CompoundPmf {
  private readonly a: number;
  private readonly b: number;
  private readonly values: readonly number[];
  private readonly probs: readonly number[];
  /** Scaled terms: true f(s) = scaled[s] · exp(logScale). */
  private scaled: number[] = [];
  private logScale: number;

  constructor(model: DemandModel) {
    const mu = Math.max(0, model.batches);
    const phi = Math.max(1, model.dispersion);
    this.values = model.sizes.values;
    this.probs = model.sizes.probs;
    if (phi > 1 + 1e-9 && mu > 0) {
      const beta = phi - 1;
      const r = mu / beta;
      this.a = beta / (1 + beta);
      this.b = ((r - 1) * beta) / (1 + beta);
      this.logScale = -r * Math.log1p(beta);
    } else {
      this.a = 0;
      this.b = mu;
      this.logScale = -mu;
    }
    this.scaled.push(1);
  }

  /** True f(s); call with s = 0, 1, 2, … in order. */
  next(s: number): number {
    if (s > 0) {
      let v = 0;
      for (let i = 0; i < this.values.length; i++) {
        const k = this.values[i]!;
        if (k > s) break;
        v += (this.a + (this.b * k) / s) * this.probs[i]! * this.scaled[s - k]!;
      }
      this.scaled.push(v);
      if (v > RESCALE_ABOVE) {
        for (let i = 0; i < this.scaled.length; i++) this.scaled[i]! /= RESCALE_ABOVE;
        this.logScale += Math.log(RESCALE_ABOVE);
      }
    }
    return this.scaled[s]! * Math.exp(this.logScale);
  }
}

/** P[D = s] for s = 0..upTo. */
export function demandPmf(model: DemandModel, upTo: number): Float64Array {
  const f = new CompoundPmf(model);
  const out = new Float64Array(upTo + 1);
  for (let s = 0; s <= upTo; s++) out[s] = f.next(s);
  return out;
}

/**
 * fill(S) for S = 0, 1, … until it reaches `target` or S = `limit`, whichever comes first:
 * element S of the result is fill(S). O(S · distinct batch sizes).
 *
 * P[J = j] is constant between consecutive batch sizes kᵢ₋₁ < j ≤ kᵢ, so with F the CDF of D and
 * C(x) = Σ_{y ≤ x} F(y), fill(S) = Σᵢ cᵢ · (C(S − kᵢ₋₁ − 1) − C(S − kᵢ − 1)), cᵢ = P[K ≥ kᵢ]/E[K].
 */
export function fillCurve(model: DemandModel, target: number, limit: number): Float64Array {
  const { values, probs } = model.sizes;
  const meanK = meanBatchSize(model.sizes);
  const c: number[] = [];
  let atLeast = 1;
  for (let i = 0; i < values.length; i++) {
    c.push(atLeast / meanK);
    atLeast -= probs[i]!;
  }
  const pmf = new CompoundPmf(model);
  const cumF: number[] = [];
  const out: number[] = [];
  let cdf = 0;
  let sumCdf = 0;
  const C = (x: number) => (x < 0 ? 0 : cumF[x]!);
  for (let s = 0; s <= limit; s++) {
    cdf = Math.min(1, cdf + pmf.next(s));
    sumCdf += cdf;
    cumF.push(sumCdf);
    let fill = 0;
    let prev = 0;
    for (let i = 0; i < values.length; i++) {
      const k = values[i]!;
      if (prev + 1 > s) break;
      fill += c[i]! * (C(s - prev - 1) - C(s - k - 1));
      prev = k;
    }
    out.push(Math.min(1, Math.max(0, fill)));
    if (fill >= target) break;
  }
  return Float64Array.from(out);
}

/** fill(S) for one S. */
export function fillRate(model: DemandModel, spares: number): number {
  const curve = fillCurve(model, Infinity, Math.max(0, Math.floor(spares)));
  return curve[curve.length - 1]!;
}

/** E[(D − S)⁺] from a pmf of D that covers its mass (the rest of the mass is taken to lie at the last point). */
export function expectedShortfall(pmf: ArrayLike<number>, spares: number): number {
  let e = 0;
  for (let d = Math.floor(spares) + 1; d < pmf.length; d++) e += (d - spares) * pmf[d]!;
  return e;
}

export interface BaseStock {
  /** The smallest S in [min, max] whose fill reaches the target; `max` when none does. */
  readonly spares: number;
  /** fill(S) at that S. */
  readonly fill: number;
  /** fill(s) for s = 0..spares (the budget allocator reads the value of each spare from it). */
  readonly curve: Float64Array;
  /** True when even `max` spares fall short of the target. */
  readonly capped: boolean;
}

/** The base-stock level: the fewest spares whose fill rate meets `target`, bounded by min and max. */
export function baseStockLevel(model: DemandModel, target: number, min: number, max: number): BaseStock {
  const curve = fillCurve(model, target, max);
  const reached = curve.length - 1;
  const met = curve[reached]! >= target;
  const spares = Math.min(max, Math.max(min, reached));
  const full = spares > reached ? extendCurve(model, curve, spares) : curve.subarray(0, spares + 1);
  return { spares, fill: full[spares]!, curve: full, capped: !met && spares >= max };
}

function extendCurve(model: DemandModel, curve: Float64Array, upTo: number): Float64Array {
  const full = fillCurve(model, Infinity, upTo);
  return full.length > curve.length ? full : curve;
}
