/**
 * The one planning function: how many spares each pool should hold, which copies to start now,
 * and why. The live replenisher and the trace simulator both call it; it does no I/O and reads
 * no clock (`now` is an argument), so what the simulator shows is what the service would do.
 */
import { targetSpares, type PoolPolicy } from '../../domain/index.js';
import { allocateBudget, type Budget } from './budget.js';
import { baseStockLevel, type BaseStock, type BatchSizes, type DemandModel } from './demand.js';
import { forecastDemand, type DemandForecast, type ForecastState } from './forecast.js';
import { scheduledBoost, type PrewarmEvent } from './schedule.js';

/** What the planner sizes pools by: the domain's policies (static, predictive). */
export type PlanPolicy = PoolPolicy;
export type { PredictivePolicy } from '../../domain/index.js';
export { predictivePolicy } from '../../domain/index.js';

export interface PlanPoolInput {
  readonly source: string;
  readonly policy: PlanPolicy;
  /** Spares ready now. */
  readonly ready: number;
  /** Copies being made (or asked for) for this pool: refills and on-demand copies alike. */
  readonly inFlight: number;
  /** Requests waiting for a copy; each of them takes one of the copies in flight. Default 0. */
  readonly waiting?: number;
  /** Bytes one copy takes (for a budget in bytes). */
  readonly sizeBytes: number;
  /** The pool's demand history (see forecast.ts); the owner keeps it current with observe/advance. */
  readonly forecast: ForecastState;
  /** Seconds one copy of this source takes to make, as measured. */
  readonly leadTimeS: number;
}

export interface PlanOptions {
  /** Cap on the targets of all pools together. Default none. */
  readonly budget?: Budget | null;
  /** Declared events that raise targets ahead of time. Default none. */
  readonly schedule?: readonly PrewarmEvent[];
  /** Copies that may start now: the concurrency limit minus copies in flight everywhere. Default unlimited. */
  readonly freeSlots?: number;
  /** Copies that may be in flight at once, for pre-warm head starts. Default unlimited. */
  readonly concurrency?: number;
  /** Reuse of costly results between calls; keep one per caller. Default none. */
  readonly cache?: PlanCache;
  /** Work out the expected fill of static pools too (costs a demand distribution per pool). Default false. */
  readonly explain?: boolean;
}

export interface PoolPlan {
  readonly source: string;
  readonly policy: PlanPolicy['kind'];
  /** The forecast over one lead time from now. */
  readonly requestsPerS: number;
  readonly batchesPerS: number;
  readonly meanBatch: number;
  readonly dispersion: number;
  readonly leadTimeS: number;
  /** Requests expected during one lead time. */
  readonly leadTimeDemand: number;
  /** Spares the policy asks for before events and budget. */
  readonly base: number;
  /** Extra spares for declared events starting soon. */
  readonly scheduled: number;
  /** base + scheduled, within max: what the pool wants. */
  readonly wanted: number;
  /** What it gets (≤ wanted when the budget binds): the target. */
  readonly target: number;
  /** Expected share of requests served warm at the target; null when not worked out. */
  readonly fill: number | null;
  /** Warm requests per hour the last spare granted buys, and per GiB; null without a budget. */
  readonly lastSpareHitsPerHour: number | null;
  readonly lastSpareHitsPerHourPerGiB: number | null;
  /** ready + inFlight − waiting. */
  readonly supply: number;
  /** Seconds until the supply runs out at the forecast rate (Infinity with no demand). */
  readonly timeToDryS: number;
  readonly reason: string;
}

export interface Plan {
  readonly now: number;
  readonly targets: Readonly<Record<string, number>>;
  /** Copies to start now, most urgent first, within the free slots. */
  readonly starts: readonly { readonly source: string; readonly copies: number }[];
  readonly pools: readonly PoolPlan[];
}

/**
 * Remembers base-stock levels and budget allocations between calls. A forecast changes only when
 * a bin closes, so most calls reuse the last answer. Keyed on the exact inputs: a hit returns
 * what a fresh computation would.
 */
export class PlanCache {
  private levels = new WeakMap<BatchSizes, Map<string, BaseStock>>();
  private allocations = new Map<string, ReturnType<typeof allocateBudget>>();

  baseStock(model: DemandModel, fillRate: number, min: number, max: number): BaseStock {
    const key = `${model.batches}|${model.dispersion}|${fillRate}|${min}|${max}`;
    let byKey = this.levels.get(model.sizes);
    if (!byKey) this.levels.set(model.sizes, (byKey = new Map<string, BaseStock>()));
    let hit = byKey.get(key);
    if (!hit) {
      if (byKey.size > 64) byKey.clear();
      byKey.set(key, (hit = baseStockLevel(model, fillRate, min, max)));
    }
    return hit;
  }

  allocation(key: string, compute: () => ReturnType<typeof allocateBudget>): ReturnType<typeof allocateBudget> {
    let hit = this.allocations.get(key);
    if (!hit) {
      if (this.allocations.size > 256) this.allocations.clear();
      this.allocations.set(key, (hit = compute()));
    }
    return hit;
  }
}

const GiB = 2 ** 30;

function pct(x: number): string {
  return `${(Math.floor(x * 10_000) / 100).toString()} %`;
}

interface Working {
  readonly input: PlanPoolInput;
  readonly fc: DemandForecast;
  readonly base: number;
  readonly wanted: number;
  readonly floor: number;
  readonly scheduled: number;
  /** fill(s) for s = 0..(at least) wanted, when worked out. */
  curve: Float64Array | null;
  readonly reason: string[];
}

function sizeFor(now: number, input: PlanPoolInput, fc: DemandForecast, options: PlanOptions, cache: PlanCache): Working {
  const { policy } = input;
  const reason: string[] = [];
  let base: number;
  let curve: Float64Array | null = null;
  const max = policy.max;
  switch (policy.kind) {
    case 'static':
      base = targetSpares(policy);
      reason.push(`static ${base}`);
      break;
    case 'predictive': {
      if (!(fc.model.batches > 0)) {
        base = policy.min;
        reason.push(`no demand seen: min ${base}`);
        break;
      }
      const bs = cache.baseStock(fc.model, policy.fillRate, policy.min, policy.max);
      base = bs.spares;
      curve = bs.curve;
      if (bs.capped) reason.push(`max ${max} (fill ${pct(bs.fill)} < ${pct(policy.fillRate)})`);
      else if (base > 0 && bs.curve[base - 1]! >= policy.fillRate) reason.push(`min ${base}`);
      else reason.push(`fill ${pct(policy.fillRate)} needs ${base}`);
      break;
    }
  }
  const boost = scheduledBoost(options.schedule ?? [], input.source, now, input.leadTimeS, options.concurrency ?? Infinity);
  let wanted = base + boost.extra;
  if (boost.extra > 0) {
    const at = boost.events.map((e) => new Date(e.at * 1000).toISOString().slice(11, 16)).join(', ');
    reason.push(`+${boost.extra} pre-warm for ${at} UTC`);
  }
  if (wanted > max) {
    wanted = max;
    if (boost.extra > 0) reason.push(`max ${max}`);
  }
  const floor = Math.min(wanted, Math.max(policy.min, boost.extra));
  return { input, fc, base, wanted, floor, scheduled: boost.extra, curve, reason };
}

/** fill(s) for s = 0..upTo (at least), extending what was computed; all zeros with no demand. */
function curveUpTo(w: Working, upTo: number, cache: PlanCache): Float64Array {
  if (w.curve && w.curve.length > upTo) return w.curve;
  if (!(w.fc.model.batches > 0)) return new Float64Array(upTo + 1);
  // A target of 1 runs the curve to upTo, unless rounding reaches 1 first: the rest is 1 then.
  const c = cache.baseStock(w.fc.model, 1, 0, upTo).curve;
  if (c.length > upTo) return c;
  const full = new Float64Array(upTo + 1).fill(c[c.length - 1] ?? 1);
  full.set(c);
  return full;
}

/** Seconds until the pool's supply runs out at its forecast request rate. */
function timeToDry(supply: number, requestsPerS: number): number {
  if (supply <= 0) return 0;
  return requestsPerS > 0 ? supply / requestsPerS : Infinity;
}

/**
 * Plans all pools at `now` (seconds since the epoch, UTC): targets (policy, then pre-warm
 * events, then the budget), and the copies to start in order of urgency — the pool that would
 * run dry soonest at its forecast rate gets the next free slot, one copy at a time.
 */
export function planPools(now: number, pools: readonly PlanPoolInput[], options: PlanOptions = {}): Plan {
  const cache = options.cache ?? new PlanCache();
  const work = pools.map((p) => sizeFor(now, p, forecastDemand(p.forecast, now, p.leadTimeS), options, cache));

  // Budget: when the wanted targets do not fit, spares go where each buys the most warm requests per unit.
  const targets = work.map((w) => w.wanted);
  const lastValue: (number | null)[] = work.map(() => null);
  const budget = options.budget ?? null;
  if (budget) {
    const cost = (w: Working) => (budget.kind === 'copies' ? 1 : w.input.sizeBytes);
    const cap = budget.kind === 'copies' ? budget.copies : budget.bytes;
    const requested = work.reduce((s, w) => s + w.wanted * cost(w), 0);
    if (requested > cap) {
      for (const w of work) w.curve = curveUpTo(w, w.wanted, cache);
      // The value of spares beyond the event's copies follows the steady-state fill curve, shifted.
      const value = (w: Working) => {
        const v = new Float64Array(w.wanted + 1);
        for (let s = 0; s <= w.wanted; s++) v[s] = w.fc.requestsPerS * (w.curve![Math.max(0, s - w.scheduled)] ?? 0);
        return v;
      };
      const key = `${budget.kind}:${cap}|` + work.map((w) => `${w.input.source}:${w.wanted}:${w.floor}:${cost(w)}:${w.fc.model.batches}:${w.fc.model.dispersion}:${w.fc.requestsPerS}`).join('|');
      const sizesKey = work.map((w) => w.fc.model.sizes);
      const alloc = cache.allocation(key + `|${sizesIdentity(sizesKey)}`, () =>
        allocateBudget(
          work.map((w) => ({ source: w.input.source, wanted: w.wanted, floor: w.floor, cost: cost(w), value: value(w) })),
          cap,
        ),
      );
      alloc.forEach((a, i) => {
        targets[i] = a.granted;
        lastValue[i] = a.lastSpareValue;
        if (a.reason !== 'within budget') work[i]!.reason.push(`${a.reason}: ${a.granted} of ${a.wanted}`);
      });
    } else {
      work.forEach((w, i) => {
        const c = curveUpTo(w, w.wanted, cache);
        w.curve = c;
        lastValue[i] = w.wanted > 0 ? Math.max(0, w.fc.requestsPerS * ((c[Math.max(0, w.wanted - w.scheduled)] ?? 0) - (c[Math.max(0, w.wanted - w.scheduled - 1)] ?? 0))) : 0;
      });
    }
  } else if (options.explain) {
    for (const w of work) w.curve = curveUpTo(w, w.wanted, cache);
  }

  const plans: PoolPlan[] = work.map((w, i) => {
    const { input, fc } = w;
    const target = targets[i]!;
    const supply = input.ready + input.inFlight - (input.waiting ?? 0);
    const meanBatch = fc.batchesPerS > 0 ? fc.requestsPerS / fc.batchesPerS : 0;
    const fill = w.curve && fc.model.batches > 0 ? (w.curve[Math.max(0, Math.min(w.curve.length - 1, target - w.scheduled))] ?? null) : null;
    const lv = lastValue[i] ?? null;
    return {
      source: input.source,
      policy: input.policy.kind,
      requestsPerS: fc.requestsPerS,
      batchesPerS: fc.batchesPerS,
      meanBatch,
      dispersion: fc.model.dispersion,
      leadTimeS: input.leadTimeS,
      leadTimeDemand: fc.requestsPerS * input.leadTimeS,
      base: w.base,
      scheduled: w.scheduled,
      wanted: w.wanted,
      target,
      fill,
      lastSpareHitsPerHour: lv === null ? null : lv * 3600,
      lastSpareHitsPerHourPerGiB: lv === null || !(input.sizeBytes > 0) ? null : (lv * 3600) / (input.sizeBytes / GiB),
      supply,
      timeToDryS: timeToDry(supply, fc.requestsPerS),
      reason: w.reason.join('; '),
    };
  });

  return { now, targets: Object.fromEntries(plans.map((p) => [p.source, p.target])), starts: orderStarts(plans, options.freeSlots ?? Infinity), pools: plans };
}

const sizesIds = new WeakMap<BatchSizes, number>();
let nextSizesId = 1;
/** A stable number per BatchSizes object, so allocation keys change when any pool's sizes do. */
function sizesIdentity(all: readonly BatchSizes[]): string {
  return all
    .map((s) => {
      let id = sizesIds.get(s);
      if (id === undefined) sizesIds.set(s, (id = nextSizesId++));
      return id;
    })
    .join(',');
}

/** Hands the free slots out one copy at a time to the pool that would run dry first. */
function orderStarts(plans: readonly PoolPlan[], freeSlots: number): { source: string; copies: number }[] {
  const deficit = plans.map((p) => Math.max(0, p.target - p.supply));
  const totalDeficit = deficit.reduce((a, b) => a + b, 0);
  // Sooner dry is more urgent. Requests waiting without a copy on its way come first of all; pools
  // with no forecast demand come last, the emptiest relative to its target first among them.
  const urgency = (i: number, supply: number): [number, number] => {
    const p = plans[i]!;
    if (supply < 0) return [0, supply];
    if (p.requestsPerS > 0) return [1, timeToDry(supply, p.requestsPerS)];
    return [2, p.target > 0 ? supply / p.target : 0];
  };
  const before = (a: [number, number], b: [number, number]) => a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]);
  if (totalDeficit <= freeSlots) {
    const order = plans.map((_, i) => i).filter((i) => deficit[i]! > 0);
    const keys = plans.map((p, i) => urgency(i, p.supply));
    order.sort((a, b) => (before(keys[a]!, keys[b]!) ? -1 : before(keys[b]!, keys[a]!) ? 1 : a - b));
    return order.map((i) => ({ source: plans[i]!.source, copies: deficit[i]! }));
  }
  const supply = plans.map((p) => p.supply);
  const starts: { source: string; copies: number }[] = [];
  for (let n = 0; n < freeSlots; n++) {
    let best = -1;
    let bestKey: [number, number] = [Infinity, Infinity];
    for (let i = 0; i < plans.length; i++) {
      if (deficit[i]! <= 0) continue;
      const key = urgency(i, supply[i]!);
      if (best < 0 || before(key, bestKey)) {
        best = i;
        bestKey = key;
      }
    }
    if (best < 0) break;
    deficit[best]!--;
    supply[best]!++;
    const last = starts[starts.length - 1];
    if (last?.source === plans[best]!.source) last.copies++;
    else starts.push({ source: plans[best]!.source, copies: 1 });
  }
  return starts;
}
