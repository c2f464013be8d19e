/**
 * Discrete-event replay of a demand trace on a simulated clock, through the same planner the
 * live replenisher runs (`planPools`). What happens mirrors the service:
 *  - a request takes a ready spare (warm); with none, it waits. Each waiting request has one copy
 *    in flight for it: it joins a refill already under way, or an on-demand copy starts (ahead of
 *    refills when the concurrency limit binds). Copies that come ready go to waiters first come,
 *    first served, and only then become spares;
 *  - the planner runs after every arrival, every `tickS` of simulated time, and whenever a slot
 *    frees up under a concurrency limit; it sets each pool's target and starts the refills it
 *    orders, most urgent pool first;
 *  - every copy takes `leadTimeS`;
 *  - spares above a lowered target are discarded at the planner's bounded rate (`trims`).
 * The forecasters see every arrival, as the live service's would. After every event the
 * simulator checks the sizing bounds (per pool: ready + in flight ≤ max(target, waiting); over
 * all pools: spares within the budget) and counts every breach: a correct planner has none.
 */
import {
  PlanCache,
  advance,
  budgetCap,
  budgetUnits,
  type Plan,
  newForecast,
  observe,
  planPools,
  type Budget,
  type ForecastOptions,
  type ForecastState,
  type PlanPolicy,
  type PlanPoolInput,
  type PrewarmEvent,
} from '../policy/index.js';
import type { Trace } from './trace.js';

export interface SimulationOptions {
  /** The trace scored. */
  readonly trace: Trace;
  /** Sources simulated (one pool each); arrivals for other sources are ignored. */
  readonly sources: readonly string[];
  readonly policyFor: (source: string) => PlanPolicy;
  /** Seconds to make one copy. */
  readonly leadTimeS: number;
  /** Copies in flight at once, over all pools. Default unlimited. */
  readonly concurrency?: number;
  /** Simulated seconds between planner runs when nothing else happens. Default 10. */
  readonly tickS?: number;
  readonly budget?: Budget | null;
  readonly schedule?: readonly PrewarmEvent[];
  /** Bytes per copy, for a budget in bytes: one size for all, or per source. Default 1 GiB. */
  readonly sizeBytes?: number | Readonly<Record<string, number>>;
  /** Forecasters learned beforehand (see trainForecasts); copied, never changed. Default: fresh ones. */
  readonly forecasts?: ReadonlyMap<string, ForecastState>;
  readonly forecastOptions?: Partial<ForecastOptions>;
  /** Record demand, target and spares per pool in buckets of this many seconds. Default: not recorded. */
  readonly seriesBucketS?: number;
}

/** What a replay scores, for one pool or summed over all of them. */
export interface ReplayScore {
  readonly requests: number;
  readonly warm: number;
  /** Share of requests served warm (a batch of 10 is 10 requests). */
  readonly hitRate: number;
  /** Wait of a request until its copy was ready (warm ones wait 0). */
  readonly waitP50S: number;
  readonly waitP99S: number;
  /** Time-average of ready spares. */
  readonly meanSpares: number;
  /** Most ready spares held at once. */
  readonly peakSpares: number;
  /** Copies completed, refills and on-demand. */
  readonly copies: number;
  /** Spares discarded because the target fell below what the pool held. */
  readonly discards: number;
  /** Copies made per request served (0 with no request). */
  readonly copiesPerRequest: number;
  /** Instants at which ready + in flight exceeded max(target, waiting): must be 0. */
  readonly boundViolations: number;
}

export interface PoolResult extends ReplayScore {
  readonly source: string;
  readonly meanTarget: number;
  /** Spares added to the target over the run, the first target included: discards never exceed it. */
  readonly raised: number;
  /** Ready spares at the start (the pool starts at its first target) and at the end. */
  readonly initialSpares: number;
  readonly finalSpares: number;
}

export interface Series {
  readonly start: number;
  readonly bucketS: number;
  readonly sources: readonly string[];
  /** Per source, per bucket: requests that arrived. */
  readonly demand: readonly Float64Array[];
  /** Per source, per bucket: time-averaged target and ready spares. */
  readonly target: readonly Float64Array[];
  readonly spares: readonly Float64Array[];
}

/** The totals are summed over the pools (spares at the same instants for the peak). */
export interface SimulationResult extends ReplayScore {
  /** Instants at which the spares of all pools together exceeded the budget: must be 0. */
  readonly budgetViolations: number;
  readonly spanS: number;
  readonly pools: readonly PoolResult[];
  readonly series: Series | null;
}

/** Feeds a trace's arrivals to fresh forecasters, one per source, without simulating pools. */
export function trainForecasts(trace: Trace, sources: readonly string[], options: Partial<ForecastOptions> = {}): Map<string, ForecastState> {
  const out = new Map<string, ForecastState>();
  const bySourceId = trace.sources.map((s) => (sources.includes(s) ? s : null));
  for (const s of sources) out.set(s, newForecast(options));
  for (let i = 0; i < trace.times.length; i++) {
    const s = bySourceId[trace.source[i]!];
    if (s) observe(out.get(s)!, trace.times[i]!, trace.counts[i]);
  }
  for (const f of out.values()) advance(f, trace.end);
  return out;
}

/** Min-heap of copy completion times (ties: the copy started first). */
class Completions {
  private t: number[] = [];
  private pool: number[] = [];
  private seq: number[] = [];
  private n = 0;

  get size(): number {
    return this.t.length;
  }
  peekTime(): number {
    return this.t.length > 0 ? this.t[0]! : Infinity;
  }
  push(t: number, pool: number): void {
    this.t.push(t);
    this.pool.push(pool);
    this.seq.push(this.n++);
    let i = this.t.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }
  pop(): number {
    const pool = this.pool[0]!;
    const last = this.t.length - 1;
    this.swap(0, last);
    this.t.pop();
    this.pool.pop();
    this.seq.pop();
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < this.t.length && this.less(l, m)) m = l;
      if (r < this.t.length && this.less(r, m)) m = r;
      if (m === i) break;
      this.swap(i, m);
      i = m;
    }
    return pool;
  }
  private less(a: number, b: number): boolean {
    return this.t[a]! < this.t[b]! || (this.t[a] === this.t[b] && this.seq[a]! < this.seq[b]!);
  }
  private swap(a: number, b: number): void {
    [this.t[a], this.t[b]] = [this.t[b]!, this.t[a]!];
    [this.pool[a], this.pool[b]] = [this.pool[b]!, this.pool[a]!];
    [this.seq[a], this.seq[b]] = [this.seq[b]!, this.seq[a]!];
  }
}

/** A growable array of numbers. */
class Samples {
  data = new Float64Array(1024);
  length = 0;
  push(x: number): void {
    if (this.length === this.data.length) {
      const next = new Float64Array(this.data.length * 2);
      next.set(this.data);
      this.data = next;
    }
    this.data[this.length++] = x;
  }
  values(): Float64Array {
    return this.data.subarray(0, this.length);
  }
}

interface PoolSim {
  readonly source: string;
  readonly policy: PlanPolicy;
  readonly sizeBytes: number;
  readonly forecast: ForecastState;
  ready: number;
  /** Copies started for this pool and not done. */
  inFlight: number;
  /** On-demand copies asked for but waiting for a free slot. */
  queued: number;
  /** Waiting requests as runs of (arrival time, how many); `head` is the first run not done. */
  waitT: number[];
  waitN: number[];
  head: number;
  waiting: number;
  target: number;
  requests: number;
  warm: number;
  copies: number;
  discards: number;
  raised: number;
  violations: number;
  readySeconds: number;
  targetSeconds: number;
  peak: number;
  initial: number;
  waits: Samples;
}

/** The q-quantile of a distribution of `zeros` zeros plus the (unsorted) `rest` (nearest rank). */
function quantile(zeros: number, rest: Float64Array, q: number): number {
  const n = zeros + rest.length;
  if (n === 0) return 0;
  const rank = Math.max(1, Math.ceil(q * n));
  if (rank <= zeros) return 0;
  const sorted = Float64Array.from(rest).sort();
  return sorted[rank - zeros - 1]!;
}

export function simulate(o: SimulationOptions): SimulationResult {
  const { trace, leadTimeS } = o;
  if (!(leadTimeS > 0)) throw new RangeError('lead time must be > 0');
  const concurrency = o.concurrency ?? Infinity;
  const tickS = o.tickS ?? 10;
  const limited = Number.isFinite(concurrency);
  const sizeOf = (s: string) => (typeof o.sizeBytes === 'number' ? o.sizeBytes : (o.sizeBytes?.[s] ?? 2 ** 30));
  const pools: PoolSim[] = o.sources.map((source) => ({
    source,
    policy: o.policyFor(source),
    sizeBytes: sizeOf(source),
    forecast: o.forecasts?.get(source) ? structuredClone(o.forecasts.get(source)!) : newForecast(o.forecastOptions),
    ready: 0,
    inFlight: 0,
    queued: 0,
    waitT: [],
    waitN: [],
    head: 0,
    waiting: 0,
    target: 0,
    requests: 0,
    warm: 0,
    copies: 0,
    discards: 0,
    raised: 0,
    violations: 0,
    readySeconds: 0,
    targetSeconds: 0,
    peak: 0,
    initial: 0,
    waits: new Samples(),
  }));
  const poolOfSourceId = trace.sources.map((s) => pools.findIndex((p) => p.source === s));
  const cache = new PlanCache();
  const completions = new Completions();
  const urgent: number[] = [];
  let urgentHead = 0;
  let inFlightTotal = 0;
  let totalReady = 0;
  let peakTotal = 0;
  let lastPlan: Plan | null = null;
  let budgetViolations = 0;
  const budget = o.budget ?? null;
  const cap = budgetCap(budget);
  /** The sizing bounds, checked after every event. */
  const check = () => {
    let used = 0;
    for (const p of pools) {
      const inFlight = p.inFlight + p.queued;
      if (p.ready + inFlight > Math.max(p.target, p.waiting)) p.violations++;
      used += (p.ready + Math.max(0, inFlight - p.waiting)) * budgetUnits(budget, p.sizeBytes);
    }
    if (used > cap) budgetViolations++;
  };

  const start = trace.start;
  const end = trace.end;
  let clock = start;

  const bucketS = o.seriesBucketS;
  const nBuckets = bucketS ? Math.max(1, Math.ceil((end - start) / bucketS)) : 0;
  const series: Series | null = bucketS
    ? {
        start,
        bucketS,
        sources: pools.map((p) => p.source),
        demand: pools.map(() => new Float64Array(nBuckets)),
        target: pools.map(() => new Float64Array(nBuckets)),
        spares: pools.map(() => new Float64Array(nBuckets)),
      }
    : null;

  /** Moves the clock to t, integrating ready spares and targets over the time passed. */
  const moveTo = (t: number) => {
    const to = Math.min(t, end);
    if (to <= clock) {
      clock = Math.max(clock, t);
      return;
    }
    for (let i = 0; i < pools.length; i++) {
      const p = pools[i]!;
      p.readySeconds += p.ready * (to - clock);
      p.targetSeconds += p.target * (to - clock);
      if (series && bucketS) {
        // Spread the interval over the buckets it covers.
        let a = clock;
        let b = Math.min(nBuckets - 1, Math.floor((a - start) / bucketS));
        while (a < to) {
          let bEnd = start + (b + 1) * bucketS;
          if (bEnd <= a && b < nBuckets - 1) {
            b++;
            bEnd += bucketS;
          }
          const upTo = b === nBuckets - 1 ? to : Math.min(to, bEnd);
          series.spares[i]![b]! += (p.ready * (upTo - a)) / bucketS;
          series.target[i]![b]! += (p.target * (upTo - a)) / bucketS;
          a = upTo;
          b = Math.min(nBuckets - 1, b + 1);
        }
      }
    }
    clock = t;
  };

  const startCopy = (i: number) => {
    pools[i]!.inFlight++;
    inFlightTotal++;
    completions.push(clock + leadTimeS, i);
  };

  const plan = (startCopies = true) => {
    for (const p of pools) advance(p.forecast, clock);
    const inputs: PlanPoolInput[] = pools.map((p) => ({
      source: p.source,
      policy: p.policy,
      ready: p.ready,
      inFlight: p.inFlight + p.queued,
      waiting: p.waiting,
      sizeBytes: p.sizeBytes,
      forecast: p.forecast,
      leadTimeS,
    }));
    const result = planPools(clock, inputs, {
      budget,
      schedule: o.schedule ?? [],
      freeSlots: Math.max(0, concurrency - inFlightTotal - (urgent.length - urgentHead)),
      concurrency,
      cache,
      previous: lastPlan,
    });
    lastPlan = result;
    pools.forEach((p, i) => {
      const target = result.pools[i]!.target;
      if (target > p.target) p.raised += target - p.target;
      p.target = target;
    });
    if (!startCopies) return;
    result.pools.forEach((pp, i) => {
      if (pp.trim <= 0) return;
      const p = pools[i]!;
      p.ready -= pp.trim;
      totalReady -= pp.trim;
      p.discards += pp.trim;
    });
    for (const s of result.starts) {
      const i = pools.findIndex((p) => p.source === s.source);
      for (let n = 0; n < s.copies; n++) startCopy(i);
    }
  };

  const arrive = (i: number, t: number, count: number) => {
    const p = pools[i]!;
    observe(p.forecast, t, count);
    p.requests += count;
    if (series && bucketS) series.demand[i]![Math.min(nBuckets - 1, Math.max(0, Math.floor((t - start) / bucketS)))]! += count;
    const warm = Math.min(count, p.ready);
    p.ready -= warm;
    totalReady -= warm;
    p.warm += warm;
    const cold = count - warm;
    if (cold === 0) return;
    p.waitT.push(t);
    p.waitN.push(cold);
    p.waiting += cold;
    // Every waiting request needs a copy on its way: join those in flight, ask for the rest.
    const missing = p.waiting - p.inFlight - p.queued;
    for (let n = 0; n < missing; n++) {
      if (inFlightTotal < concurrency) startCopy(i);
      else {
        p.queued++;
        urgent.push(i);
      }
    }
  };

  const complete = (i: number) => {
    const p = pools[i]!;
    p.inFlight--;
    inFlightTotal--;
    p.copies++;
    if (p.waiting > 0) {
      p.waits.push(clock - p.waitT[p.head]!);
      p.waiting--;
      if (--p.waitN[p.head]! === 0) p.head++;
      if (p.head > 1024 && p.head * 2 > p.waitT.length) {
        p.waitT.splice(0, p.head);
        p.waitN.splice(0, p.head);
        p.head = 0;
      }
    } else {
      p.ready++;
      totalReady++;
      if (p.ready > p.peak) p.peak = p.ready;
      if (totalReady > peakTotal) peakTotal = totalReady;
    }
    // A freed slot goes to on-demand copies first.
    while (urgentHead < urgent.length && inFlightTotal < concurrency) {
      const j = urgent[urgentHead++]!;
      pools[j]!.queued--;
      startCopy(j);
    }
    if (urgentHead > 1024 && urgentHead * 2 > urgent.length) {
      urgent.splice(0, urgentHead);
      urgentHead = 0;
    }
  };

  // Pools start full: as if the policy had been running before the trace began.
  plan(false);
  for (const p of pools) {
    p.ready = p.target;
    p.initial = p.ready;
    p.peak = p.ready;
    totalReady += p.ready;
  }
  peakTotal = totalReady;

  let next = 0;
  const n = trace.times.length;
  let nextTick = start + tickS;
  for (;;) {
    const tA = next < n ? trace.times[next]! : Infinity;
    const tC = completions.peekTime();
    const tT = nextTick <= end ? nextTick : Infinity;
    const t = Math.min(tA, tC, tT);
    if (t === Infinity) break;
    if (t > end && tC > end) break;
    moveTo(t);
    if (tC === t) {
      complete(completions.pop());
      if (limited) plan();
      check();
      continue;
    }
    if (tA === t) {
      // All arrivals at this instant, then one planning pass.
      let any = false;
      while (next < n && trace.times[next] === t) {
        const i = poolOfSourceId[trace.source[next]!]!;
        if (i >= 0) {
          arrive(i, t, trace.counts[next]!);
          any = true;
        }
        next++;
      }
      if (any) plan();
      check();
      continue;
    }
    nextTick += tickS;
    plan();
    check();
  }
  moveTo(end);
  if (series && bucketS) {
    // The last bucket may be cut short by the end of the trace: average over what it covers.
    const covered = end - (start + (nBuckets - 1) * bucketS);
    if (covered > 0 && covered < bucketS) {
      for (let i = 0; i < pools.length; i++) {
        series.spares[i]![nBuckets - 1]! *= bucketS / covered;
        series.target[i]![nBuckets - 1]! *= bucketS / covered;
      }
    }
  }
  // Requests still waiting at the end get the copies already on their way.
  while (completions.size > 0 && pools.some((p) => p.waiting > 0)) {
    clock = completions.peekTime();
    complete(completions.pop());
  }

  const span = Math.max(1e-9, end - start);
  const perRequest = (copies: number, requests: number) => (requests > 0 ? copies / requests : 0);
  const poolResults: PoolResult[] = pools.map((p) => ({
    source: p.source,
    requests: p.requests,
    warm: p.warm,
    hitRate: p.requests > 0 ? p.warm / p.requests : 1,
    waitP50S: quantile(p.warm, p.waits.values(), 0.5),
    waitP99S: quantile(p.warm, p.waits.values(), 0.99),
    meanSpares: p.readySeconds / span,
    peakSpares: p.peak,
    meanTarget: p.targetSeconds / span,
    raised: p.raised,
    copies: p.copies,
    discards: p.discards,
    copiesPerRequest: perRequest(p.copies, p.requests),
    boundViolations: p.violations,
    initialSpares: p.initial,
    finalSpares: p.ready,
  }));
  const requests = pools.reduce((s, p) => s + p.requests, 0);
  const warm = pools.reduce((s, p) => s + p.warm, 0);
  const allWaits = new Float64Array(pools.reduce((s, p) => s + p.waits.length, 0));
  let off = 0;
  for (const p of pools) {
    allWaits.set(p.waits.values(), off);
    off += p.waits.length;
  }
  return {
    requests,
    warm,
    hitRate: requests > 0 ? warm / requests : 1,
    waitP50S: quantile(warm, allWaits, 0.5),
    waitP99S: quantile(warm, allWaits, 0.99),
    meanSpares: poolResults.reduce((s, p) => s + p.meanSpares, 0),
    peakSpares: peakTotal,
    copies: pools.reduce((s, p) => s + p.copies, 0),
    discards: pools.reduce((s, p) => s + p.discards, 0),
    copiesPerRequest: perRequest(
      pools.reduce((s, p) => s + p.copies, 0),
      requests,
    ),
    boundViolations: pools.reduce((s, p) => s + p.violations, 0),
    budgetViolations,
    spanS: span,
    pools: poolResults,
    series,
  };
}
