import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { InputError, staticPolicy } from '../../src/domain/index.js';
import {
  PlanCache,
  allocateBudget,
  baseStockLevel,
  batchSizes,
  fillCurve,
  forecastDemand,
  newForecast,
  parseBudget,
  parsePrewarmEvent,
  planPools,
  poissonQuantile,
  predictivePolicy,
  prewarmLeadS,
  scheduledBoost,
  type PlanPoolInput,
} from '../../src/pool/policy/index.js';
import { MONDAY, poissonForecast, steadyForecast } from './synthetic.js';

const GiB = 2 ** 30;
/** Two days of one request every `everyS` seconds; "now" is the moment after. */
const NOW = MONDAY + 2 * 86_400;

function pool(source: string, over: Partial<PlanPoolInput> & { everyS?: number } = {}): PlanPoolInput {
  const { everyS = 12, ...rest } = over;
  return {
    source,
    policy: predictivePolicy(0.999),
    ready: 0,
    inFlight: 0,
    sizeBytes: GiB,
    forecast: steadyForecast(everyS, 2),
    leadTimeS: 120,
    ...rest,
  };
}

describe('planPools: targets', () => {
  it('sizes a predictive pool to the base-stock level of its forecast', () => {
    // One request per 12 s on average over a 120 s lead time: unit Poisson(10); fill(S) = P[D ≤ S − 1].
    // (Poisson arrivals: their history holds lead times with far more than 22 requests, so it does not bind.)
    const forecast = poissonForecast(12, 2);
    const plan = planPools(NOW, [pool('web', { forecast })]);
    const p = plan.pools[0]!;
    // The level follows the last hour of a random trace: near 10 per lead time, not exactly.
    assert.ok(Math.abs(p.leadTimeDemand - 10) < 2, String(p.leadTimeDemand));
    assert.equal(plan.targets.web, poissonQuantile(0.999, forecastDemand(forecast, NOW, 120).model.batches) + 1);
    assert.ok(p.fill !== null && p.fill >= 0.999);
    assert.match(p.reason, /fill 99\.9 % needs/);
    assert.ok(p.historyCap !== null && p.historyCap > p.target, `history ${p.historyCap} does not bind`);
  });

  it('keeps static pools at min through the same planner, and bounds predictive ones by min and max', () => {
    const plan = planPools(NOW, [
      pool('fixed', { policy: staticPolicy(7, 9) }),
      pool('low', { policy: predictivePolicy(0.999, 0, 5) }),
      pool('high', { policy: predictivePolicy(0.999, 50, 100) }),
    ]);
    assert.deepEqual(plan.targets, { fixed: 7, low: 5, high: 50 });
    assert.match(plan.pools[1]!.reason, /max 5/);
    assert.match(plan.pools[2]!.reason, /min 50/);
  });

  it('asks for min when the pool has seen no demand', () => {
    const plan = planPools(NOW, [pool('new', { forecast: newForecast(), policy: predictivePolicy(0.99, 2, 10) })]);
    assert.equal(plan.targets.new, 2);
    assert.match(plan.pools[0]!.reason, /no demand seen/);
  });

  it('orders the refills the targets call for, counting every copy in flight (those of waiting requests too)', () => {
    const plan = planPools(NOW, [pool('a', { policy: staticPolicy(10, 10), ready: 3, inFlight: 2 }), pool('b', { policy: staticPolicy(4, 4), ready: 0, inFlight: 3, waiting: 3 })]);
    // a: 10 − (3 + 2) = 5; b: ready + in flight stays within max(target, waiting) = 4, so 4 − (0 + 3) = 1.
    assert.deepEqual(
      [...plan.starts].sort((x, y) => x.source.localeCompare(y.source)),
      [
        { source: 'a', copies: 5 },
        { source: 'b', copies: 1 },
      ],
    );
  });

  it('gives the same plan with or without a cache', () => {
    const pools = [pool('a'), pool('b', { everyS: 3, policy: predictivePolicy(0.99) })];
    const cache = new PlanCache();
    const first = planPools(NOW, pools, { cache });
    assert.deepEqual(planPools(NOW, pools, { cache }), first);
    assert.deepEqual(planPools(NOW, pools), first);
  });
});

describe('planPools: urgency', () => {
  it('hands scarce slots to the pool that would run dry first, one copy at a time', () => {
    // a: 0.5 request/s, 49 spares → dry in 98 s. b: 1/11 request/s, 9 spares → dry in 99 s.
    const a = pool('a', { everyS: 2, policy: staticPolicy(200, 200), ready: 49 });
    const b = pool('b', { everyS: 11, policy: staticPolicy(200, 200), ready: 9 });
    const plan = planPools(NOW, [b, a], { freeSlots: 4 });
    assert.ok(Math.abs(plan.pools[1]!.timeToDryS - 98) < 0.5);
    assert.ok(Math.abs(plan.pools[0]!.timeToDryS - 99) < 0.5);
    // a 98 → 100 s; b 99 → 110 s; a 100 → 102 → 104 s.
    assert.deepEqual(plan.starts, [
      { source: 'a', copies: 1 },
      { source: 'b', copies: 1 },
      { source: 'a', copies: 2 },
    ]);
  });

  it('puts a pool with requests waiting ahead of everything', () => {
    const plan = planPools(NOW, [pool('calm', { policy: staticPolicy(5, 5), ready: 0, everyS: 1 }), pool('waiting', { policy: staticPolicy(5, 5), ready: 0, waiting: 2, inFlight: 0, everyS: 60 })], {
      freeSlots: 1,
    });
    assert.deepEqual(plan.starts, [{ source: 'waiting', copies: 1 }]);
  });

  it('starts nothing without free slots, and every deficit with unlimited ones', () => {
    assert.deepEqual(planPools(NOW, [pool('a', { policy: staticPolicy(3, 3) })], { freeSlots: 0 }).starts, []);
    assert.deepEqual(planPools(NOW, [pool('a', { policy: staticPolicy(3, 3) })]).starts, [{ source: 'a', copies: 3 }]);
  });
});

describe('budget', () => {
  it('reads copies and sizes', () => {
    assert.deepEqual(parseBudget('800'), { kind: 'copies', copies: 800 });
    assert.deepEqual(parseBudget('500GiB'), { kind: 'bytes', bytes: 500 * GiB });
    assert.throws(() => parseBudget('lots'), InputError);
  });

  it('grants everything when the targets fit', () => {
    const a = allocateBudget([{ source: 'x', wanted: 3, floor: 0, cost: 1, value: [0, 1, 1.5, 1.7] }], 10);
    assert.deepEqual(
      a.map((x) => [x.granted, x.reason]),
      [[3, 'within budget']],
    );
  });

  /** Brute force: the split of `cap` copies between two pools with the most expected warm requests. */
  function bestSplit(va: ArrayLike<number>, vb: ArrayLike<number>, cap: number): number {
    let best = -1;
    for (let x = 0; x <= Math.min(cap, va.length - 1); x++) {
      const y = Math.min(cap - x, vb.length - 1);
      best = Math.max(best, va[x]! + vb[y]!);
    }
    return best;
  }

  it('splits a copy budget between two pools of known demand as well as the best split', () => {
    // Unit Poisson demand over the lead time: 10 (a) and 40 (b) requests, the same request rates' ratio.
    const curve = (lambda: number) => fillCurve({ batches: lambda, dispersion: 1, sizes: batchSizes([[1, 1]]) }, 0.999, 10_000);
    const ca = curve(10);
    const cb = curve(40);
    const va = Array.from(ca, (f) => (10 / 120) * f);
    const vb = Array.from(cb, (f) => (40 / 120) * f);
    for (const cap of [10, 30, 45, 60]) {
      const alloc = allocateBudget(
        [
          { source: 'a', wanted: ca.length - 1, floor: 0, cost: 1, value: va },
          { source: 'b', wanted: cb.length - 1, floor: 0, cost: 1, value: vb },
        ],
        cap,
      );
      const [a, b] = alloc;
      assert.ok(a!.granted + b!.granted <= cap);
      const got = va[a!.granted]! + vb[b!.granted]!;
      assert.ok(got >= bestSplit(va, vb, cap) * 0.995, `cap ${cap}: ${a!.granted}+${b!.granted} gives ${got}, best ${bestSplit(va, vb, cap)}`);
      for (const x of alloc) assert.equal(x.reason, x.granted < x.wanted ? 'cut by budget' : 'within budget');
    }
  });

  it('does not starve a busy pool whose first spares are worth little (S-shaped value)', () => {
    // b's lead-time demand is 40: its first ~25 spares are nearly always gone, but 50 serve it well.
    const va = Array.from({ length: 21 }, (_, s) => 0.01 * Math.min(s, 20));
    const cb = fillCurve({ batches: 40, dispersion: 1, sizes: batchSizes([[1, 1]]) }, 0.9999, 10_000);
    const vb = Array.from(cb, (f) => f);
    const [a, b] = allocateBudget(
      [
        { source: 'a', wanted: 20, floor: 0, cost: 1, value: va },
        { source: 'b', wanted: cb.length - 1, floor: 0, cost: 1, value: vb },
      ],
      60,
    );
    assert.ok(b!.granted >= 45, `b got ${b!.granted}`);
    assert.equal(a!.granted + b!.granted, 60);
  });

  it('keeps floors first, and shares floors by value when even they do not fit', () => {
    const flat = (n: number, per: number) => Array.from({ length: n + 1 }, (_, s) => s * per);
    const [a, b] = allocateBudget(
      [
        { source: 'a', wanted: 10, floor: 8, cost: 1, value: flat(10, 0.001) },
        { source: 'b', wanted: 10, floor: 0, cost: 1, value: flat(10, 1) },
      ],
      12,
    );
    assert.deepEqual([a!.granted, b!.granted], [8, 4]);
    const cut = allocateBudget(
      [
        { source: 'a', wanted: 10, floor: 8, cost: 1, value: flat(10, 0.001) },
        { source: 'b', wanted: 10, floor: 8, cost: 1, value: flat(10, 1) },
      ],
      10,
    );
    assert.deepEqual(
      cut.map((x) => [x.granted, x.reason]),
      [
        [2, 'floor cut by budget'],
        [8, 'cut by budget'],
      ],
    );
  });

  it('counts bytes when the budget is in bytes: a small image buys more spares', () => {
    const v = Array.from({ length: 11 }, (_, s) => s);
    const [big, small] = allocateBudget(
      [
        { source: 'big', wanted: 10, floor: 0, cost: 10 * GiB, value: v },
        { source: 'small', wanted: 10, floor: 0, cost: GiB, value: v },
      ],
      20 * GiB,
    );
    assert.deepEqual([big!.granted, small!.granted], [1, 10]);
  });

  it('is applied by the planner, which explains it per pool', () => {
    const plan = planPools(NOW, [pool('a', { everyS: 12 }), pool('b', { everyS: 3 })], { budget: { kind: 'copies', copies: 40 }, explain: true });
    const [a, b] = plan.pools;
    assert.ok(a!.target + b!.target <= 40);
    assert.ok(a!.wanted > a!.target || b!.wanted > b!.target);
    for (const p of plan.pools) {
      assert.ok(p.lastSpareHitsPerHour !== null && p.lastSpareHitsPerHour >= 0);
      assert.ok(p.lastSpareHitsPerHourPerGiB !== null);
      if (p.target < p.wanted) assert.match(p.reason, /cut by budget: \d+ of \d+/);
    }
    // Within budget the planner changes nothing.
    const roomy = planPools(NOW, [pool('a'), pool('b', { everyS: 3 })], { budget: { kind: 'bytes', bytes: 10_000 * GiB } });
    assert.deepEqual(roomy.targets, planPools(NOW, [pool('a'), pool('b', { everyS: 3 })]).targets);
  });
});

describe('pre-warm schedule', () => {
  const event = parsePrewarmEvent('lab-desktop:300@09:00/mon-fri');
  const at = (day: number, hh: number, mm: number) => MONDAY + day * 86_400 + hh * 3600 + mm * 60;

  it('reads POOL:COUNT@HH:MM[/DAYS]', () => {
    assert.deepEqual({ ...event, days: [...event.days] }, { pool: 'lab-desktop', count: 300, minuteOfDay: 540, days: [1, 2, 3, 4, 5], holdS: 0, marginS: 300 });
    assert.deepEqual([...parsePrewarmEvent('x:1@23:59/sat,sun').days], [0, 6]);
    assert.deepEqual([...parsePrewarmEvent('x:1@00:00').days], [0, 1, 2, 3, 4, 5, 6]);
    assert.deepEqual([...parsePrewarmEvent('x:1@00:00/fri-mon').days], [0, 1, 5, 6]);
    for (const bad of ['x:1@25:00', 'x@09:00', 'x:0@09:00', 'x:1@09:00/someday', ':1@09:00']) assert.throws(() => parsePrewarmEvent(bad), InputError, bad);
  });

  it('raises the target early enough for the copies to be made, on its days only', () => {
    // 300 copies, 10 at a time, 120 s each: 30 rounds = 3600 s, plus a 300 s margin → from 07:55.
    assert.equal(prewarmLeadS(event, 120, 10), 3900);
    assert.equal(prewarmLeadS(event, 120, Infinity), 420);
    assert.equal(scheduledBoost([event], 'lab-desktop', at(0, 7, 54), 120, 10).extra, 0);
    assert.equal(scheduledBoost([event], 'lab-desktop', at(0, 7, 55), 120, 10).extra, 300);
    assert.equal(scheduledBoost([event], 'lab-desktop', at(0, 8, 59), 120, 10).extra, 300);
    assert.equal(scheduledBoost([event], 'lab-desktop', at(0, 9, 0), 120, 10).extra, 0);
    assert.equal(scheduledBoost([event], 'other', at(0, 8, 30), 120, 10).extra, 0);
    assert.equal(scheduledBoost([event], 'lab-desktop', at(5, 8, 30), 120, 10).extra, 0, 'Saturday');
    const held = parsePrewarmEvent('lab-desktop:300@09:00/mon-fri', { holdS: 900 });
    assert.equal(scheduledBoost([held], 'lab-desktop', at(0, 9, 14), 120, 10).extra, 300);
    assert.equal(scheduledBoost([held], 'lab-desktop', at(0, 9, 15), 120, 10).extra, 0);
  });

  it('reaches across midnight', () => {
    const early = parsePrewarmEvent('x:100@00:10/tue');
    // One round of 120 s plus the 300 s margin: from Tuesday 00:03.
    assert.equal(scheduledBoost([early], 'x', at(1, 0, 2), 120, Infinity).extra, 0);
    assert.equal(scheduledBoost([early], 'x', at(1, 0, 3), 120, Infinity).extra, 100);
    // 4 at a time: 25 rounds, 3000 s + 300 s: from Monday 23:15.
    assert.equal(scheduledBoost([early], 'x', at(0, 23, 14), 120, 4).extra, 0);
    assert.equal(scheduledBoost([early], 'x', at(0, 23, 15), 120, 4).extra, 100);
  });

  it('lifts the planner target above the forecast, within max', () => {
    const now = at(2, 8, 30);
    const plain = planPools(now, [pool('lab-desktop', { forecast: steadyForecast(12, 2) })]);
    const base = plain.targets['lab-desktop']!;
    const plan = planPools(now, [pool('lab-desktop', { forecast: steadyForecast(12, 2) })], { schedule: [event], concurrency: 10 });
    assert.equal(plan.targets['lab-desktop'], base + 300);
    assert.match(plan.pools[0]!.reason, /\+300 pre-warm for 09:00 UTC/);
    const capped = planPools(now, [pool('lab-desktop', { policy: predictivePolicy(0.999, 0, 100) })], { schedule: [event], concurrency: 10 });
    assert.equal(capped.targets['lab-desktop'], 100);
  });
});

describe('forecast feeds the base stock', () => {
  it('planner target equals baseStockLevel on the forecast model', () => {
    const f = steadyForecast(5, 2, 4);
    const model = forecastDemand(f, NOW, 120).model;
    const plan = planPools(NOW, [pool('p', { forecast: f, policy: predictivePolicy(0.99) })]);
    assert.equal(plan.targets.p, baseStockLevel(model, 0.99, 0, 10_000).spares);
  });
});

describe('bounds: falling targets, trims, copies in flight, budget room', () => {
  const fixed = (n: number) => staticPolicy(n, 50);

  it('lets a lowered target fall by 10 % or 1 spare per 5 minutes, and trims down to it', () => {
    const before = planPools(NOW, [pool('a', { policy: fixed(20), ready: 20 })]);
    assert.equal(before.targets.a, 20);
    // The min drops to 2: five minutes later the target is 20 − max(1, 2) = 18, and 2 spares go.
    const after = planPools(NOW + 300, [pool('a', { policy: fixed(2), ready: 20 })], { previous: before });
    const p = after.pools[0]!;
    assert.deepEqual([p.granted, p.target, p.trim], [2, 18, 2]);
    assert.deepEqual(after.trims, [{ source: 'a', copies: 2 }]);
    assert.match(p.reason, /held at 18 while it falls to 2/);
    // Planned every second it falls the same way (continuously: 10 % of what is left), not faster.
    let plan = before;
    for (let t = 1; t <= 300; t++) plan = planPools(NOW + t, [pool('a', { policy: fixed(2), ready: plan.pools[0]!.target })], { previous: plan });
    assert.ok(plan.targets.a! >= 18 && plan.targets.a! <= 19, `planned every second: ${plan.targets.a} (20 · e^−0.1 = 18.1)`);
  });

  it('applies a lowered max at once', () => {
    const before = planPools(NOW, [pool('a', { policy: fixed(20), ready: 20 })]);
    const after = planPools(NOW + 1, [pool('a', { policy: staticPolicy(2, 5), ready: 20 })], { previous: before });
    assert.deepEqual([after.targets.a, after.pools[0]!.trim], [5, 15]);
  });

  it('starts from what a pool holds when it has no previous plan (a restart throws nothing away at once)', () => {
    const plan = planPools(NOW, [pool('a', { policy: fixed(2), ready: 12 })]);
    assert.deepEqual([plan.pools[0]!.granted, plan.targets.a, plan.pools[0]!.trim], [2, 12, 0]);
  });

  it('never cuts copies in flight short, and keeps ready + in flight within max(target, waiting)', () => {
    const before = planPools(NOW, [pool('a', { policy: fixed(10), ready: 0, inFlight: 10 })]);
    const after = planPools(NOW + 3600, [pool('a', { policy: fixed(0), ready: 2, inFlight: 6 })], { previous: before });
    const p = after.pools[0]!;
    assert.equal(p.target, 6, 'held up by the six copies on their way');
    assert.equal(p.trim, 2);
    assert.deepEqual(after.starts, []);
    // Waiting provisions: their copies count too, so refills stop at the target.
    const waiting = planPools(NOW, [pool('b', { policy: fixed(4), ready: 0, inFlight: 5, waiting: 5 })]);
    assert.deepEqual([waiting.pools[0]!.lacking, waiting.starts.length], [0, 0]);
  });

  it('starts refills only where the budget has room, counting spares and copies in flight for no one', () => {
    const budget = { kind: 'copies', copies: 12 } as const;
    const first = planPools(NOW, [pool('a', { policy: fixed(10), ready: 10 }), pool('b', { policy: fixed(0) })], { budget });
    // a's min drops to 7 and b's rises to 5: both fit the budget, but a's spares fall gently and hold it meanwhile.
    const b = pool('b', { policy: fixed(5), ready: 0, inFlight: 2, waiting: 2 });
    const second = planPools(NOW + 1, [pool('a', { policy: fixed(7), ready: 10 }), b], { budget, previous: first });
    assert.deepEqual(
      second.pools.map((p) => [p.granted, p.target, p.lacking]),
      [
        [7, 10, 0],
        [5, 5, 3],
      ],
    );
    // Used: a's 10; b's copies in flight go to waiting provisions and do not count. Room for 2 of b's 3.
    assert.equal(second.budgetUsed, 10);
    assert.deepEqual(second.starts, [{ source: 'b', copies: 2 }]);
    // Ten minutes on a has fallen to 8 (2 trimmed) and b's 2 are ready spares: 10 used, b lacks 3, room for 2.
    const third = planPools(NOW + 601, [pool('a', { policy: fixed(7), ready: 8 }), pool('b', { policy: fixed(5), ready: 2, inFlight: 0 })], { budget, previous: second });
    assert.equal(third.targets.a, 8);
    assert.deepEqual(third.starts, [{ source: 'b', copies: 2 }]);
  });

  it('applies a lowered budget at once, taking spares from the pools held furthest above their grant', () => {
    const plan = planPools(NOW, [pool('a', { policy: fixed(2), ready: 6 }), pool('b', { policy: fixed(2), ready: 2 })], { budget: { kind: 'copies', copies: 5 } });
    assert.equal(plan.budgetUsed, 8);
    assert.deepEqual(plan.trims, [{ source: 'a', copies: 3 }]);
    assert.equal(plan.targets.a, 3);
    assert.match(plan.pools[0]!.reason, /over the budget: 3 more spares removed now/);
    assert.deepEqual(plan.starts, []);
  });

  it('gives a blocked pool no slot and its slots to the others', () => {
    const plan = planPools(NOW, [pool('a', { policy: fixed(3) }), pool('b', { policy: fixed(3) })], { freeSlots: 2, blocked: new Set(['a']) });
    assert.deepEqual(plan.starts, [{ source: 'b', copies: 2 }]);
    assert.equal(plan.pools[0]!.lacking, 3, 'a still lacks its copies');
  });
});
