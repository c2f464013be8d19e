/**
 * The one planning function: how many spares each pool should hold, which copies to start now,
 * and why. The live replenisher and the trace simulator both call it; it does no I/O and reads
 * no clock (`now` is an argument), so what the simulator shows is what the service would do.
 */
import { targetSpares, type PoolPolicy } from '../../domain/index.js';
import { allocateBudget, budgetCap, budgetUnits, type Budget } from './budget.js';
import { baseStockLevel, type BaseStock, type BatchSizes, type DemandModel } from './demand.js';
import { forecastDemand, historyPeak, type DemandForecast, type ForecastState } from './forecast.js';
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
  /** Provisions waiting for a copy; each of them takes one of the copies in flight. Default 0. */
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
  /** Work out the expected fill and the last spare's value of every pool (costs a demand distribution per pool). Default false. */
  readonly explain?: boolean;
  /**
   * The plan before this one. A target that drops falls from the previous one at a bounded rate
   * (see `trimRate`), so spares above it are trimmed a few at a time, not all at once and
   * re-made a moment later. Default none: targets start where the policy puts them.
   */
  readonly previous?: Plan | null;
  /** How fast a lowered target falls. Default TRIM_RATE. */
  readonly trimRate?: TrimRate;
  /** Pools that cannot start a copy now (e.g. short of space): their slots go to the others. Default none. */
  readonly blocked?: ReadonlySet<string>;
}

/** A lowered target falls by `share` of itself, at least `atLeast` spares, per `everyS` seconds. */
export interface TrimRate {
  readonly share: number;
  readonly atLeast: number;
  readonly everyS: number;
}

export const TRIM_RATE: TrimRate = Object.freeze({ share: 0.1, atLeast: 1, everyS: 300 });

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
  /** What it gets now (≤ wanted when the budget binds), before a lowered target is let down gently. */
  readonly granted: number;
  /** Most requests seen within about one lead time (faded), rounded; null for a static pool. */
  readonly historyCap: number | null;
  /**
   * The target the pool is held at: granted, or while a lowered target falls, the falling level
   * (never below the copies in flight for it). ready + in flight ≤ max(target, waiting) after
   * the trims of this plan, and refills start only below it.
   */
  readonly target: number;
  /** The falling level behind `target`, unrounded (the next plan's starting point). */
  readonly held: number;
  /** Ready spares to remove now, oldest first: ready + in flight above max(target, waiting). */
  readonly trim: number;
  /** Refills the pool lacks: target − ready − in flight, at least 0 (what may start, slots and budget permitting). */
  readonly lacking: number;
  /** Expected share of requests served warm at the target; null when not worked out. */
  readonly fill: number | null;
  /** Warm requests per hour the last spare of the target buys, and per GiB; null when not worked out (no budget, no explain). */
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
  /** Copies to start now, most urgent first, within the free slots and the budget's headroom. */
  readonly starts: readonly { readonly source: string; readonly copies: number }[];
  /** Ready spares to remove now, per pool (oldest first). */
  readonly trims: readonly { readonly source: string; readonly copies: number }[];
  /**
   * Budget units in use before this plan's starts and trims: spares ready and copies in flight
   * beyond those promised to waiting provisions (a copy a provision waits for is that host's,
   * not a spare). With the starts it stays within the budget's cap; null without a budget.
   */
  readonly budgetUsed: number | null;
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
  private sized = new WeakMap<ForecastState, { key: SizedKey; value: Sized }>();

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

  sizedFor(forecast: ForecastState, key: SizedKey): Sized | undefined {
    const hit = this.sized.get(forecast);
    return hit && sameKey(hit.key, key) ? hit.value : undefined;
  }

  keepSized(forecast: ForecastState, key: SizedKey, value: Sized): Sized {
    this.sized.set(forecast, { key, value });
    return value;
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
  readonly historyCap: number | null;
  readonly reason: string[];
}

/** What the policy alone asks of a pool: the part of its sizing that changes only with its forecast. */
interface Sized {
  readonly fc: DemandForecast;
  readonly base: number;
  readonly curve: Float64Array | null;
  readonly historyCap: number | null;
  readonly reason: readonly string[];
}

/**
 * A predictive pool keeps a spare only if it is expected to serve a request within 30 days
 * (its marginal warm requests per hour): a source that went quiet gives its spares back.
 */
export const MIN_SPARE_HITS_PER_HOUR = 1 / (30 * 24);

type SizedKey = readonly [PlanPolicy, number, number, number, number];
const sameKey = (a: SizedKey, b: SizedKey) => a[0] === b[0] && a[1] === b[1] && a[2] === b[2] && a[3] === b[3] && a[4] === b[4];

const requests = (n: number) => `${n} request${n === 1 ? '' : 's'}`;

/**
 * The policy's spares for one pool. A forecast changes only when one of its bins closes, and its
 * history peaks only with a request, so the answer is cached on (policy, bins, the bin of now,
 * lead time, requests seen): a simulator planning after every arrival mostly reuses it. The
 * policy is compared by identity (a caller that builds new policy objects just misses).
 */
function policySizing(now: number, input: PlanPoolInput, cache: PlanCache): Sized {
  const { policy, forecast } = input;
  const binStart = Math.floor(now / forecast.options.binS) * forecast.options.binS;
  const key: SizedKey = [policy, forecast.bins, binStart, input.leadTimeS, forecast.requestsSeen];
  const hit = cache.sizedFor(forecast, key);
  if (hit) return hit;
  const fc = forecastDemand(forecast, now, input.leadTimeS);
  const reason: string[] = [];
  let base: number;
  let curve: Float64Array | null = null;
  let historyCap: number | null = null;
  const max = policy.max;
  if (policy.kind === 'static') {
    base = targetSpares(policy);
    reason.push(`static ${base}`);
    return cache.keepSized(forecast, key, { fc, base, curve, historyCap, reason });
  }
  // Faded from the start of the bin, like the forecast, so one answer holds for the whole bin.
  historyCap = Math.round(historyPeak(forecast, binStart, input.leadTimeS));
  if (!(fc.model.batches > 0) || historyCap === 0) {
    base = policy.min;
    reason.push(
      fc.model.batches > 0
        ? `no request seen lately: min ${base}`
        : forecast.requestsSeen > 0
          ? `learning: ${requests(forecast.requestsSeen)} before the first ${forecast.options.binS / 60}-minute bin closed: min ${base}`
          : `no demand seen: min ${base}`,
    );
    return cache.keepSized(forecast, key, { fc, base, curve, historyCap, reason });
  }
  // The history bounds the curve: no pool needs more spares than the most requests it ever saw within a lead time.
  const upTo = Math.max(policy.min, Math.min(max, historyCap));
  const bound = `history ${upTo}: at most ${requests(upTo)} seen within one lead time`;
  switch (policy.kind) {
    case 'predictive': {
      const bs = cache.baseStock(fc.model, policy.fillRate, policy.min, upTo);
      base = bs.spares;
      curve = bs.curve;
      if (bs.capped && upTo < max) reason.push(`${bound} (fill ${pct(bs.fill)} < ${pct(policy.fillRate)})`);
      else if (bs.capped) reason.push(`max ${max} (fill ${pct(bs.fill)} < ${pct(policy.fillRate)})`);
      else if (base > 0 && bs.curve[base - 1]! >= policy.fillRate) reason.push(`min ${base}`);
      else reason.push(`fill ${pct(policy.fillRate)} needs ${base}`);
      // Fill is a share of the requests that come; when hardly any are expected, the spares it asks
      // for (a batch of 8 needs 8 to be all warm) would sit idle for months. Keep those that earn their place.
      const earns = (k: number) => 3600 * fc.requestsPerS * (bs.curve[k]! - bs.curve[k - 1]!) >= MIN_SPARE_HITS_PER_HOUR;
      const before = base;
      while (base > policy.min && !earns(base)) base--;
      if (base < before) reason.push(`idle: ${base} (more would each serve less than one request in ${Math.round(1 / MIN_SPARE_HITS_PER_HOUR / 24)} days)`);
      break;
    }
    case 'cost': {
      const c = cache.baseStock(fc.model, 1, 0, upTo).curve;
      curve = c;
      // Spare-hours saved per hour by s spares, less the spare-hours they cost: the best s.
      const worth = 3600 * fc.requestsPerS * policy.missCostSpareHours;
      const fillAt = (k: number) => c[Math.min(k, c.length - 1)]!;
      base = policy.min;
      let best = worth * fillAt(base) - base;
      for (let k = policy.min + 1; k <= upTo; k++) {
        const v = worth * fillAt(k) - k;
        if (v > best + 1e-12) {
          best = v;
          base = k;
        }
      }
      reason.push(`cost: a cold wait = ${policy.missCostSpareHours} spare-hours → ${base} (fill ${pct(fillAt(base))})`);
      if (base === upTo && upTo < max && upTo > policy.min) reason.push(bound);
      break;
    }
  }
  return cache.keepSized(forecast, key, { fc, base, curve, historyCap, reason });
}

function sizeFor(now: number, input: PlanPoolInput, options: PlanOptions, cache: PlanCache): Working {
  const { policy } = input;
  const sized = policySizing(now, input, cache);
  const { fc, base, historyCap } = sized;
  const reason = [...sized.reason];
  const curve = sized.curve;
  const max = policy.max;
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
  return { input, fc, base, wanted, floor, scheduled: boost.extra, curve, historyCap, reason };
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

/** Warm requests per second the pool's last wanted spare buys (works out its fill curve). */
function lastSpareValue(w: Working, cache: PlanCache): number {
  const c = (w.curve = curveUpTo(w, w.wanted, cache));
  const at = (s: number) => c[Math.max(0, s - w.scheduled)] ?? 0;
  return w.wanted > 0 ? Math.max(0, w.fc.requestsPerS * (at(w.wanted) - at(w.wanted - 1))) : 0;
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
  const work = pools.map((p) => sizeFor(now, p, options, cache));

  // Budget: when the wanted targets do not fit, spares go where each buys the most warm requests per unit.
  const targets = work.map((w) => w.wanted);
  const lastValue: (number | null)[] = work.map(() => null);
  const budget = options.budget ?? null;
  const cost = (w: Working) => budgetUnits(budget, w.input.sizeBytes);
  const cap = budgetCap(budget);
  if (budget) {
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
      work.forEach((w, i) => (lastValue[i] = lastSpareValue(w, cache)));
    }
  } else if (options.explain) {
    work.forEach((w, i) => (lastValue[i] = lastSpareValue(w, cache)));
  }

  const rate = options.trimRate ?? TRIM_RATE;
  const previous = options.previous ?? null;
  const elapsed = previous ? Math.max(0, now - previous.now) : 0;
  const before = new Map(previous?.pools.map((p) => [p.source, p.held]));

  const plans: PoolPlan[] = work.map((w, i): PoolPlan => {
    const { input, fc } = w;
    const granted = targets[i]!;
    const waiting = input.waiting ?? 0;
    // A lowered target falls gently from where it was; a raised one applies at once; max binds at once.
    // A pool the previous plan did not know (a restart, a new pool) starts from what it holds now,
    // so a restart never throws spares away in one go either.
    const known = before.get(input.source);
    const prevHeld = known ?? input.ready + Math.max(0, input.inFlight - waiting);
    let held = granted;
    if (prevHeld > granted) {
      const fall = known === undefined ? 0 : (elapsed * Math.max(rate.atLeast, rate.share * prevHeld)) / rate.everyS;
      held = Math.max(granted, prevHeld - fall);
    }
    held = Math.min(held, input.policy.max);
    let target = Math.max(0, Math.ceil(held - 1e-9));
    // Copies already on their way to become spares are never cut short: the target waits for them.
    if (input.inFlight > waiting && input.inFlight > target) held = target = input.inFlight;
    if (target > granted) w.reason.push(`held at ${target} while it falls to ${granted} (${rate.share * 100} % or ${rate.atLeast} per ${Math.round(rate.everyS / 60)} min)`);
    const trim = Math.max(0, Math.min(input.ready, input.ready + input.inFlight - Math.max(target, waiting)));
    const supply = input.ready + input.inFlight - waiting;
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
      granted,
      historyCap: w.historyCap,
      target,
      held,
      trim,
      lacking: Math.max(0, target - input.ready - input.inFlight),
      fill,
      lastSpareHitsPerHour: lv === null ? null : lv * 3600,
      lastSpareHitsPerHourPerGiB: lv === null || !(input.sizeBytes > 0) ? null : (lv * 3600) / (input.sizeBytes / GiB),
      supply,
      timeToDryS: timeToDry(supply, fc.requestsPerS),
      reason: w.reason.join('; '),
    };
  });

  // The budget caps spares: ready ones and copies in flight beyond those promised to waiting provisions.
  const unit = (i: number) => cost(work[i]!);
  const budgetUsed = budget === null ? null : work.reduce((sum, w) => sum + (w.input.ready + Math.max(0, w.input.inFlight - (w.input.waiting ?? 0))) * cost(w), 0);
  if (budgetUsed !== null && budgetUsed > cap) overBudget(plans, work, budgetUsed - cap, unit);
  const headroom = cap - (budgetUsed ?? 0);
  const blocked = options.blocked;
  const starts = orderStarts(
    plans.map((p) => (blocked?.has(p.source) ? { ...p, lacking: 0 } : p)),
    options.freeSlots ?? Infinity,
    headroom,
    unit,
  );
  return {
    now,
    targets: Object.fromEntries(plans.map((p) => [p.source, p.target])),
    starts,
    trims: plans.filter((p) => p.trim > 0).map((p) => ({ source: p.source, copies: p.trim })),
    budgetUsed,
    pools: plans,
  };
}

/**
 * The spares already held exceed the budget (it was lowered, e.g. at a restart): like a lowered
 * max, that applies at once. Ready spares go, beyond the trims planned, from the pools held
 * furthest above what the budget grants them first; their targets come down with them.
 */
function overBudget(plans: PoolPlan[], work: readonly Working[], over: number, unit: (i: number) => number): void {
  const order = plans.map((_, i) => i).sort((a, b) => plans[b]!.target - plans[b]!.granted - (plans[a]!.target - plans[a]!.granted));
  for (const i of order) {
    if (over <= 0) break;
    const p = plans[i]!;
    const { ready, inFlight } = work[i]!.input;
    const k = Math.min(ready - p.trim, Math.ceil(over / Math.max(1, unit(i))));
    if (k <= 0) continue;
    const target = Math.max(p.granted, Math.min(p.target, ready - p.trim - k + inFlight));
    plans[i] = { ...p, trim: p.trim + k, target, held: Math.min(p.held, target), reason: `${p.reason}; over the budget: ${k} more spare${k === 1 ? '' : 's'} removed now` };
    over -= k * unit(i);
  }
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

/**
 * Hands the free slots out one copy at a time to the pool that would run dry first. A pool gets
 * refills only below its target counting every copy in flight (ready + in flight never passes
 * max(target, waiting)), and only while the budget has room for one more of its copies.
 */
function orderStarts(plans: readonly PoolPlan[], freeSlots: number, headroom: number, unit: (i: number) => number): { source: string; copies: number }[] {
  const deficit = plans.map((p) => p.lacking);
  // Sooner dry is more urgent. Requests waiting without a copy on its way come first of all; pools
  // with no forecast demand come last, the emptiest relative to its target first among them.
  const urgency = (i: number, supply: number): [number, number] => {
    const p = plans[i]!;
    if (supply < 0) return [0, supply];
    if (p.requestsPerS > 0) return [1, timeToDry(supply, p.requestsPerS)];
    return [2, p.target > 0 ? supply / p.target : 0];
  };
  const before = (a: [number, number], b: [number, number]) => a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]);
  const supply = plans.map((p) => p.supply);
  const starts: { source: string; copies: number }[] = [];
  let room = headroom;
  let slots = freeSlots;
  const total = deficit.reduce((a, b) => a + b, 0);
  if (total <= slots && deficit.reduce((a, d, i) => a + d * unit(i), 0) <= room) {
    // Everything fits: one entry per pool, most urgent first.
    const order = plans.map((_, i) => i).filter((i) => deficit[i]! > 0);
    const keys = plans.map((p, i) => urgency(i, p.supply));
    order.sort((a, b) => (before(keys[a]!, keys[b]!) ? -1 : before(keys[b]!, keys[a]!) ? 1 : a - b));
    return order.map((i) => ({ source: plans[i]!.source, copies: deficit[i]! }));
  }
  while (slots > 0) {
    let best = -1;
    let bestKey: [number, number] = [Infinity, Infinity];
    for (let i = 0; i < plans.length; i++) {
      if (deficit[i]! <= 0 || unit(i) > room) continue;
      const key = urgency(i, supply[i]!);
      if (best < 0 || before(key, bestKey)) {
        best = i;
        bestKey = key;
      }
    }
    if (best < 0) break;
    deficit[best]!--;
    supply[best]!++;
    room -= unit(best);
    slots--;
    const last = starts[starts.length - 1];
    if (last?.source === plans[best]!.source) last.copies++;
    else starts.push({ source: plans[best]!.source, copies: 1 });
  }
  return starts;
}
