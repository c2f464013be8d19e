// Property-based tests of the whole sizing path (forecast → planner → simulated pools) over
// generated demand of every shape: steady, diurnal, bursty, sparse, new, vanishing, and random
// mixes of them, with random lead times, concurrency limits, budgets and policies.
// PRESTAGE_PROPERTY_RUNS sets the number of traces (npm test runs a short sample;
// `npm run test:properties` runs 10 000).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { costPolicy, predictivePolicy, staticPolicy, type PoolPolicy } from '../../src/domain/index.js';
import { PEAK_WINDOWS_S, type Budget } from '../../src/pool/policy/index.js';
import {
  demandBySource,
  generateTrace,
  mixedShapes,
  policiesFor,
  parsePolicySpec,
  simulate,
  sliceTrace,
  trainForecasts,
  type SimulationResult,
  type SourceShape,
  type Trace,
} from '../../src/pool/simulator/index.js';

const RUNS = Number(process.env.PRESTAGE_PROPERTY_RUNS ?? 40);
const DAY_S = 86_400;

/** One source of any shape; rates are kept to at most one batch every 30 s so a run stays quick. */
const shapeArb = (name: string): fc.Arbitrary<SourceShape> =>
  fc
    .record({
      kind: fc.constantFrom('steady', 'diurnal', 'bursty', 'sparse', 'silent'),
      logRate: fc.double({ min: Math.log(1 / (7 * DAY_S)), max: Math.log(1 / 30), noNaN: true }),
      diurnal: fc.double({ min: 0, max: 0.95, noNaN: true }),
      burstsPerDay: fc.double({ min: 0.05, max: 6, noNaN: true }),
      burstLo: fc.integer({ min: 1, max: 20 }),
      burstExtra: fc.integer({ min: 0, max: 60 }),
      burstS: fc.integer({ min: 1, max: 3600 }),
      batched: fc.boolean(),
      from: fc.oneof(fc.constant(0), fc.double({ min: 0, max: 0.95, noNaN: true })),
      until: fc.oneof(fc.constant(1), fc.double({ min: 0.05, max: 1, noNaN: true })),
    })
    .map((r) => {
      const rate = Math.exp(r.logRate);
      const steady = r.kind === 'steady' || r.kind === 'diurnal' || r.kind === 'bursty';
      return {
        name,
        batchesPerS: r.kind === 'silent' ? 0 : r.kind === 'sparse' ? Math.min(rate, 3 / DAY_S) : steady ? rate : 0,
        diurnal: r.kind === 'diurnal' ? r.diurnal : 0,
        burstsPerDay: r.kind === 'bursty' || r.kind === 'sparse' ? r.burstsPerDay : 0,
        burstRequests: [r.burstLo, r.burstLo + r.burstExtra] as const,
        burstS: r.burstS,
        sizes: r.batched ? [[1, 5], [2, 2], [8, 1]] : [[1, 1]],
        from: Math.min(r.from, r.until),
        until: Math.max(r.from, r.until),
      } satisfies SourceShape;
    });

const policyArb: fc.Arbitrary<PoolPolicy> = fc.oneof(
  fc.record({ min: fc.integer({ min: 0, max: 5 }), extra: fc.integer({ min: 0, max: 20 }) }).map(({ min, extra }) => staticPolicy(min, min + extra)),
  fc.record({ fill: fc.double({ min: 0.5, max: 0.9999, noNaN: true }), min: fc.integer({ min: 0, max: 3 }), max: fc.integer({ min: 3, max: 10_000 }) }).map(({ fill, min, max }) => predictivePolicy(fill, min, max)),
  fc.record({ hours: fc.double({ min: 0.01, max: 200, noNaN: true }), min: fc.integer({ min: 0, max: 3 }), max: fc.integer({ min: 3, max: 10_000 }) }).map(({ hours, min, max }) => costPolicy(hours, min, max)),
);

const budgetArb: fc.Arbitrary<Budget | null> = fc.oneof(
  fc.constant(null),
  fc.integer({ min: 0, max: 60 }).map((copies) => ({ kind: 'copies', copies }) as const),
  fc.integer({ min: 0, max: 40 }).map((gib) => ({ kind: 'bytes', bytes: gib * 2 ** 30 }) as const),
);

/** mixedShapes' fleet, its busiest sources slowed to one batch every 20 s so a test run stays quick. */
function mixedFleet(seed: number, n: number): SourceShape[] {
  return mixedShapes(seed, n).map((s) => ({ ...s, batchesPerS: Math.min(s.batchesPerS, 1 / 20) }));
}

/**
 * How many mean spares predictive may hold above the static split (see the README's bounds):
 * one per pool, because a fill target per pool keeps one spare on a source seen lately however
 * rarely it is requested, so its next request is warm, where a split made with hindsight gives
 * nothing to the sources it knows stay silent in the scored day; and 10 % of the split's, because
 * after a burst of a sparse source the forecast stays raised for about an hour and predictive
 * makes spares that land after the burst has ended (the first 1,000-trace run found one fleet
 * 5.5 spares over the per-pool margin of 4, for a static split of 41.6).
 */
const MARGIN_SPARES_PER_POOL = 1;
const MARGIN_SHARE = 0.1;

interface Scenario {
  readonly shapes: readonly SourceShape[];
  readonly seed: number;
  readonly days: number;
  readonly train: boolean;
  readonly policies: readonly PoolPolicy[];
  readonly leadTimeS: number;
  readonly concurrency: number;
  readonly tickS: number;
  readonly budget: Budget | null;
  readonly sizes: readonly number[];
}

const scenarioArb: fc.Arbitrary<Scenario> = fc.integer({ min: 1, max: 6 }).chain((n) =>
  fc.record({
    shapes: fc.tuple(...Array.from({ length: n }, (_, i) => shapeArb(`p${i}`))),
    seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
    days: fc.integer({ min: 1, max: 3 }),
    train: fc.boolean(),
    policies: fc.array(policyArb, { minLength: n, maxLength: n }),
    leadTimeS: fc.oneof(fc.integer({ min: 1, max: 60 }), fc.integer({ min: 60, max: 1800 })),
    concurrency: fc.oneof(fc.constant(Infinity), fc.integer({ min: 1, max: 8 })),
    tickS: fc.constantFrom(5, 10, 60),
    budget: budgetArb,
    sizes: fc.array(fc.integer({ min: 1, max: 8 }).map((g) => g * 2 ** 29), { minLength: n, maxLength: n }),
  }),
);

interface Played {
  readonly trace: Trace;
  readonly train: Trace | null;
  readonly result: SimulationResult;
}

function play(s: Scenario): Played {
  const full = generateTrace(s.shapes, { seed: s.seed, days: s.days * (s.train ? 2 : 1) });
  const split = full.start + s.days * DAY_S;
  const train = s.train ? sliceTrace(full, full.start, split) : null;
  const trace = s.train ? sliceTrace(full, split, full.end) : full;
  const sources = full.sources;
  const policy = new Map(sources.map((src, i) => [src, s.policies[i]!]));
  const result = simulate({
    trace,
    sources,
    policyFor: (src) => policy.get(src)!,
    leadTimeS: s.leadTimeS,
    concurrency: s.concurrency,
    tickS: s.tickS,
    budget: s.budget,
    sizeBytes: Object.fromEntries(sources.map((src, i) => [src, s.sizes[i]!])),
    ...(train && { forecasts: trainForecasts(train, sources) }),
  });
  return { trace, train, result };
}

/** The most requests of one source within any window of `windowS` seconds, over the given traces. */
function mostWithin(traces: readonly (Trace | null)[], source: string, windowS: number): number {
  const times: number[] = [];
  const counts: number[] = [];
  for (const t of traces) {
    if (!t) continue;
    const id = t.sources.indexOf(source);
    for (let i = 0; i < t.times.length; i++) {
      if (t.source[i] !== id) continue;
      times.push(t.times[i]!);
      counts.push(t.counts[i]!);
    }
  }
  let best = 0;
  let sum = 0;
  for (let a = 0, b = 0; b < times.length; b++) {
    sum += counts[b]!;
    while (times[b]! - times[a]! >= windowS) sum -= counts[a++]!;
    best = Math.max(best, sum);
  }
  return best;
}

describe(`pool sizing properties over ${RUNS} generated traces`, () => {
  it('keeps every bound at every step, accounts for every copy, and never holds more than the history justifies', () => {
    fc.assert(
      fc.property(scenarioArb, (s) => {
        const { trace, train, result } = play(s);
        assert.equal(result.budgetViolations, 0, 'spares of all pools within the budget at every step');
        result.pools.forEach((p, i) => {
          const policy = s.policies[i]!;
          assert.equal(p.boundViolations, 0, `${p.source}: ready + in flight ≤ max(target, waiting) at every step`);
          // Every copy made is a request served, a spare left at the end, or a discard.
          assert.equal(p.initialSpares + p.copies, p.requests + p.finalSpares + p.discards, `${p.source}: copies accounted for`);
          // Discards only follow a fall of the target, which can never exceed what it rose.
          assert.ok(p.discards <= p.raised, `${p.source}: ${p.discards} discards > ${p.raised} raised`);
          // No run-away: a pool never holds more than its min or, sized from demand, the most
          // requests its history showed within two ladder windows of its lead time.
          const window = PEAK_WINDOWS_S.find((w) => w >= s.leadTimeS) ?? PEAK_WINDOWS_S[PEAK_WINDOWS_S.length - 1]!;
          const justified = policy.kind === 'static' ? policy.min : Math.max(policy.min, mostWithin([train, trace], p.source, 2 * window));
          assert.ok(p.peakSpares <= justified, `${p.source}: peak ${p.peakSpares} spares > ${justified} justified (${policy.kind})`);
        });
      }),
      { numRuns: RUNS, seed: Number(process.env.PRESTAGE_PROPERTY_SEED ?? 20261201) },
    );
  });

  it('predictive at its fill target holds no more spares than a static split reaching the same warm share', () => {
    const runs = Math.max(3, Math.ceil(RUNS / 10));
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.constantFrom(0.95, 0.99, 0.999), fc.integer({ min: 4, max: 8 }), (seed, fill, n) => {
        // A fleet's mix (busy, moderate and sparse-bursty sources), learned on two days, scored on one.
        const shapes = mixedFleet(seed, n);
        const full = generateTrace(shapes, { seed, days: 3 });
        const split = full.start + 2 * DAY_S;
        const train = sliceTrace(full, full.start, split);
        const trace = sliceTrace(full, split, full.end);
        const sources = full.sources;
        const forecasts = trainForecasts(train, sources);
        const demand = new Map(demandBySource(trace).map((d) => [d.source, d.requests]));
        const run = (spec: string) => simulate({ trace, sources, policyFor: policiesFor(parsePolicySpec(spec), sources, demand), leadTimeS: 120, forecasts });
        const predictive = run(`predictive:${fill}`);
        // The claim is about what reaching the target costs. Where bursts far larger than any pool
        // (or sources new in the scored day) keep predictive below its target, a static split chosen
        // with hindsight can put its few spares on exactly the sources that will burst: no contest.
        fc.pre(predictive.hitRate >= fill - 0.01);
        // The smallest static split (by the scored trace's own shares: hindsight) reaching the same warm share.
        let lo = 0;
        let hi = 16;
        while (run(`static-share:${hi}`).hitRate < predictive.hitRate && hi < 20_000) hi *= 2;
        while (lo < hi) {
          const mid = (lo + hi) >> 1;
          if (run(`static-share:${mid}`).hitRate >= predictive.hitRate) hi = mid;
          else lo = mid + 1;
        }
        const fixed = run(`static-share:${lo}`);
        const margin = MARGIN_SPARES_PER_POOL * n + MARGIN_SHARE * fixed.meanSpares;
        if (process.env.PRESTAGE_PROPERTY_LOG) console.log(`fill ${fill} n ${n}: predictive ${predictive.hitRate.toFixed(4)} ${predictive.meanSpares.toFixed(2)}; static-share:${lo} ${fixed.hitRate.toFixed(4)} ${fixed.meanSpares.toFixed(2)}`);
        assert.ok(
          predictive.meanSpares <= fixed.meanSpares + margin,
          `predictive:${fill} warm ${predictive.hitRate.toFixed(4)} with ${predictive.meanSpares.toFixed(1)} mean spares; static-share:${lo} ${fixed.hitRate.toFixed(4)} with ${fixed.meanSpares.toFixed(1)} (+${margin.toFixed(1)} margin)`,
        );
      }),
      { numRuns: runs, seed: Number(process.env.PRESTAGE_PROPERTY_SEED ?? 20261201) },
    );
  });
});
