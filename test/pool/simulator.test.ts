import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { InputError, costPolicy, staticPolicy } from '../../src/domain/index.js';
import { advance, batchSizes, fillRate, newForecast, observe, planPools, predictivePolicy, type PlanPolicy } from '../../src/pool/policy/index.js';
import {
  busiestSources,
  demandBySource,
  parseAzureTrace,
  parseCsvTrace,
  parsePolicySpec,
  policiesFor,
  seriesCsv,
  seriesSvg,
  simulate,
  splitByShare,
  trainForecasts,
  type SimulationOptions,
  type SimulationResult,
  type Trace,
} from '../../src/pool/simulator/index.js';
import { MONDAY, syntheticTrace } from './synthetic.js';
import { azureTraceDir } from '../../bench/lib/traces.js';


function run(trace: Trace, policy: PlanPolicy, over: Partial<SimulationOptions> = {}): SimulationResult {
  return simulate({ trace, sources: trace.sources, policyFor: () => policy, leadTimeS: 120, ...over });
}

/** Every request is served once, from a spare or a copy; copies only come from the pools' work. */
function assertAccounts(r: SimulationResult): void {
  for (const p of r.pools) {
    assert.equal(p.initialSpares + p.copies, p.finalSpares + p.requests + p.discards, `${p.source}: spares in = spares out`);
    assert.equal(p.boundViolations, 0, `${p.source}: ready + in flight within max(target, waiting)`);
    assert.ok(p.warm <= p.requests);
    assert.ok(p.waitP50S <= p.waitP99S);
  }
  assert.equal(
    r.requests,
    r.pools.reduce((s, p) => s + p.requests, 0),
  );
  assert.ok(r.hitRate >= 0 && r.hitRate <= 1);
  assert.equal(r.budgetViolations, 0);
}

describe('simulator mechanics', () => {
  const csv = (rows: string) => parseCsvTrace(`time_s,source,count\n${rows}`, 'mech.csv');

  it('serves warm from spares, and a request that finds none waits one lead time for its own copy', () => {
    // Pool of 2; three requests at once: 2 warm, 1 waits for an on-demand copy; 2 refills follow.
    // The trace ends with the last request, whose refill is still on its way.
    const r = run(csv('1000,a,3\n5000,a,1'), staticPolicy(2, 2));
    const p = r.pools[0]!;
    assert.equal(p.requests, 4);
    assert.equal(p.warm, 3);
    assert.equal(p.initialSpares, 2);
    assert.equal(p.copies, 3);
    assert.equal(p.finalSpares, 1);
    assert.equal(r.waitP99S, 120);
    assertAccounts(r);
  });

  it('joins a copy already in flight instead of starting another', () => {
    // Pool of 1: the first request takes the spare and starts a refill; the second, 30 s later, joins it.
    const r = run(csv('1000,a,1\n1030,a,1'), staticPolicy(1, 1));
    assert.equal(r.pools[0]!.warm, 1);
    assert.equal(r.waitP99S, 90);
    assertAccounts(r);
  });

  it('queues copies beyond the concurrency limit, on-demand ones first', () => {
    const r = run(csv('1000,a,3'), staticPolicy(0, 0), { concurrency: 1 });
    assert.equal(r.pools[0]!.warm, 0);
    // One copy at a time: the three requests get theirs after 120, 240 and 360 s.
    assert.equal(r.waitP50S, 240);
    assert.equal(r.waitP99S, 360);
    assert.equal(r.copies, 3);
  });

  it('holds mean spares as the time average of ready copies', () => {
    // 10 spares for 1000 s, one claimed at 500 s and back 120 s later: 10 − 120/1000.
    const trace: Trace = { ...csv('500,a,1'), start: 0, end: 1000 };
    const r = run(trace, staticPolicy(10, 10));
    assert.ok(Math.abs(r.meanSpares - (10 - 120 / 1000)) < 1e-9, String(r.meanSpares));
    assert.equal(r.peakSpares, 10);
  });

  it('matches the fill-rate formula for a static pool under steady compound Poisson demand where requests seldom wait', () => {
    // 0.05 batches/s of 1, 3 or 10 requests; over a 120 s lead time, 6 batches on average.
    const sizes = [
      [1, 6],
      [3, 3],
      [10, 1],
    ] as const;
    const trace = syntheticTrace({ seed: 11, days: 10, batchesPerS: 0.05, sizes });
    const model = { batches: 6, dispersion: 1, sizes: batchSizes(sizes) };
    for (const s of [15, 30, 45]) {
      const r = run(trace, staticPolicy(s, s));
      const f = fillRate(model, s);
      // Three standard errors, counting one independent sample per lead time of the trace.
      const tolerance = 3 * Math.sqrt((f * (1 - f)) / ((10 * 86_400) / 120));
      // The formula holds the inventory position (ready + in flight − waiting) at S; the simulator
      // keeps ready + in flight within max(S, waiting), which is the same while requests seldom
      // wait (S = 45: fill 99 %) and serves fewer warm the more often they do.
      if (s === 45) assert.ok(Math.abs(r.hitRate - f) < tolerance, `S=${s}: simulated ${r.hitRate}, formula ${f} ± ${tolerance}`);
      else assert.ok(r.hitRate < f + tolerance, `S=${s}: simulated ${r.hitRate} above the formula's ${f}`);
      assertAccounts(r);
    }
  });

  it('is deterministic', () => {
    const trace = syntheticTrace({ seed: 5, days: 1, batchesPerS: 0.05, sizes: [[1, 1], [4, 1]] });
    assert.deepEqual(run(trace, predictivePolicy(0.99)), run(trace, predictivePolicy(0.99)));
  });
});

describe('sparse sources do not run away', () => {
  // The four-line trace of issue 9: one request for `rare` after two in its training made 585 copies.
  const train = parseCsvTrace('time_s,source\n100,busy\n5000,rare\n5040,rare\n200000,busy\n', 'train.csv');
  const test = parseCsvTrace('time_s,source\n100,busy\n300000,rare\n400000,busy\n', 'test.csv');

  it('makes a few copies for one request of a source seen twice', () => {
    const sources = ['busy', 'rare'];
    for (const policy of [predictivePolicy(0.99), predictivePolicy(0.9999), costPolicy(100)]) {
      const r = simulate({ trace: test, sources, policyFor: () => policy, leadTimeS: 120, forecasts: trainForecasts(train, sources) });
      const rare = r.pools.find((p) => p.source === 'rare')!;
      assert.equal(rare.requests, 1);
      // Two requests in its history within one lead time: it never holds more than two.
      assert.ok(rare.peakSpares <= 2, `${policy.kind}: peak ${rare.peakSpares}`);
      assert.ok(rare.copies <= 3, `${policy.kind}: ${rare.copies} copies for one request`);
      assertAccounts(r);
    }
  });

  it('bounds thin histories: a new source, one burst, and a sudden bigger burst', () => {
    const plan = (f: ReturnType<typeof newForecast>, t: number) =>
      planPools(t, [{ source: 's', policy: predictivePolicy(0.999), ready: 0, inFlight: 0, sizeBytes: 1, forecast: f, leadTimeS: 120 }]).pools[0]!;
    // Never seen: its min.
    const fresh = newForecast();
    assert.deepEqual([plan(fresh, MONDAY).target, plan(fresh, MONDAY).reason], [0, 'no demand seen: min 0']);
    // One burst of 12 requests within a minute, a day ago: never more than 12, however bursty it looks.
    const f = newForecast();
    for (let i = 0; i < 12; i++) observe(f, MONDAY + i * 5, 1);
    for (const later of [600, 3600, 86_400]) {
      advance(f, MONDAY + later);
      const p = plan(f, MONDAY + later);
      assert.ok(p.target <= 12, `${later} s after the burst: ${p.target} (${p.reason})`);
      // The peak fades with a 14-day time constant: 12 · e^(−1/14) ≈ 11.2 a day later.
      assert.equal(p.historyCap, Math.round(12 * Math.exp(-later / (14 * 86_400))));
    }
    // A bigger burst now: the cap follows the requests as they come.
    for (let i = 0; i < 40; i++) observe(f, MONDAY + 86_400 + i, 1);
    advance(f, MONDAY + 86_400 + 300);
    const p = plan(f, MONDAY + 86_400 + 300);
    assert.equal(p.historyCap, 40);
    assert.ok(p.target > 12 && p.target <= 40, `${p.target} (${p.reason})`);
  });

  it('holds no spare for a source silent for weeks, and its target names the rule that bound it', () => {
    const quiet = parseCsvTrace(`time_s,source\n${60 * 86_400},busy\n`, 'quiet.csv');
    const sources = ['rare'];
    const r = simulate({ trace: { ...quiet, sources: ['busy', 'rare'] }, sources, policyFor: () => predictivePolicy(0.999), leadTimeS: 120, forecasts: trainForecasts(train, sources), seriesBucketS: 3600 });
    assert.equal(r.pools[0]!.peakSpares, 0);
    const f = trainForecasts(train, sources).get('rare')!;
    const plan = planPools(60 * 86_400, [{ source: 'rare', policy: predictivePolicy(0.999), ready: 0, inFlight: 0, sizeBytes: 1, forecast: f, leadTimeS: 120 }]);
    assert.equal(plan.targets.rare, 0);
    assert.match(plan.pools[0]!.reason, /idle: 0|no request seen lately/);
  });
});

describe('predictive policy on a synthetic diurnal trace with bursts', () => {
  // Two weeks to learn from, four days scored: the rate swings ×0.4..×1.6 over the day, one hour
  // in twenty has a 15-minute burst at 4× the rate, and batches of up to 50 requests.
  const shape = {
    batchesPerS: 0.02,
    diurnal: 0.6,
    burstsPerHour: 0.05,
    burstFactor: 4,
    burstS: 900,
    sizes: [
      [1, 60],
      [2, 15],
      [4, 10],
      [8, 8],
      [20, 5],
      [50, 2],
    ],
  } as const;
  const train = syntheticTrace({ ...shape, seed: 2, days: 14 });
  const test = syntheticTrace({ ...shape, seed: 102, days: 4, start: train.end });
  const forecasts = trainForecasts(train, ['lab']);

  it('reaches its fill-rate target within a tolerance', () => {
    for (const [target, tolerance] of [
      [0.95, 0.015],
      [0.99, 0.005],
    ] as const) {
      const r = run(test, predictivePolicy(target), { forecasts });
      assert.ok(Math.abs(r.hitRate - target) <= tolerance, `target ${target}: hit ${r.hitRate}`);
      assertAccounts(r);
    }
  });

  it('serves more requests warm than a static pool holding as many spares', () => {
    const predictive = run(test, predictivePolicy(0.99), { forecasts });
    // The smallest static pool whose mean spares reach the predictive policy's.
    let n = Math.floor(predictive.meanSpares);
    let fixed = run(test, staticPolicy(n, n));
    while (fixed.meanSpares < predictive.meanSpares) fixed = run(test, staticPolicy(++n, n));
    assert.ok(predictive.hitRate > fixed.hitRate, `predictive ${predictive.hitRate} (${predictive.meanSpares} spares), static ${n} ${fixed.hitRate} (${fixed.meanSpares})`);
  });

  it('learns from the train part: without it the first hours run short', () => {
    const learned = run(test, predictivePolicy(0.99), { forecasts });
    const cold = run(test, predictivePolicy(0.99));
    assert.ok(cold.hitRate < learned.hitRate, `cold ${cold.hitRate}, learned ${learned.hitRate}`);
  });
});

describe('simulator on the Azure trace (a slice)', () => {
  const trainLines = readFileSync(join(azureTraceDir(), 'v1.train.txt'), 'utf8').split('\n').slice(-289, -1).join('\n');
  const devLines = readFileSync(join(azureTraceDir(), 'v1.dev.txt'), 'utf8').split('\n').slice(0, 72).join('\n');
  const train = parseAzureTrace(trainLines, 'v1.train.txt', { seed: 2 });
  const dev = parseAzureTrace(devLines, 'v1.dev.txt', { seed: 1 });

  it('replays a day of learning and six scored hours for the three busiest flavors', () => {
    const sources = busiestSources(train, 3);
    assert.deepEqual(sources, ['b', 'g', 'k']);
    const forecasts = trainForecasts(train, sources);
    const demand = new Map(demandBySource(dev).map((d) => [d.source, d.requests]));
    const results = ['static-share:300', 'predictive:0.999'].map((spec) =>
      simulate({ trace: dev, sources, policyFor: policiesFor(parsePolicySpec(spec), sources, demand), leadTimeS: 120, forecasts, seriesBucketS: 300 }),
    );
    for (const r of results) {
      assertAccounts(r);
      assert.equal(r.spanS, 72 * 300);
      assert.ok(r.requests > 10_000);
    }
    const [fixed, predictive] = results as [SimulationResult, SimulationResult];
    assert.equal(fixed.requests, predictive.requests);
    assert.ok(predictive.hitRate > 0.97, `predictive ${predictive.hitRate}`);

    const csv = seriesCsv(predictive.series!).trimEnd().split('\n');
    assert.equal(csv[0], 'time_s,b_demand,b_target,b_spares,g_demand,g_target,g_spares,k_demand,k_target,k_spares');
    assert.equal(csv.length, 1 + 72);
    const demandInCsv = csv.slice(1).reduce((s, row) => s + Number(row.split(',')[1]), 0);
    assert.equal(demandInCsv, predictive.pools[0]!.requests);

    const svg = seriesSvg(predictive.series!, { title: 'predictive:0.999 on v1.dev.txt', footer: 'data: Azure Public Dataset V1, CC-BY-4.0' });
    assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    assert.match(svg, /predictive:0\.999 on v1\.dev\.txt/);
    assert.match(svg, /Azure Public Dataset V1, CC-BY-4.0/);
    assert.match(svg, /ready spares/);
    assert.equal(svg.match(/<polyline /g)?.length, 9);
  });
});

describe('trace readers', () => {
  it('reads CSV with a header, comments, counts, and out-of-order lines', () => {
    const t = parseCsvTrace('# demand\ntime_s,source,count\n20,web,2\n10,db\n\n15.5,web,1\n', 'x.csv');
    assert.deepEqual([...t.times], [10, 15.5, 20]);
    assert.deepEqual(
      [...t.source].map((i) => t.sources[i]),
      ['db', 'web', 'web'],
    );
    assert.deepEqual([...t.counts], [1, 1, 2]);
    assert.equal(t.start, 10);
    assert.equal(t.end, 20);
  });

  it('names the file and line of a bad CSV line', () => {
    const cases: [string, RegExp][] = [
      ['time_s,source\n10,web\nabc,web\n', /^x\.csv:3: time 'abc'/],
      ['10,web\n11,we b\n', /^x\.csv:2: source 'we b'/],
      ['10,web,0\n', /^x\.csv:1: count '0'/],
      ['10,web,1.5\n', /^x\.csv:1: count '1\.5'/],
      ['10,web,1,extra\n', /^x\.csv:1: expected time_s,source\[,count\]/],
      ['10\n', /^x\.csv:1: expected time_s,source\[,count\]/],
      ['-5,web\n', /^x\.csv:1: time '-5'/],
    ];
    for (const [text, message] of cases) assert.throws(() => parseCsvTrace(text, 'x.csv'), (e: unknown) => e instanceof InputError && message.test(e.message), text);
  });

  it('reads the Azure format: a batch at one instant inside its bin, one arrival per flavor', () => {
    const t = parseAzureTrace('300 b,b,|,g,b,|,k\n600 \n900 b,|\n', 'a.txt', { seed: 9 });
    assert.equal(t.start, 0);
    assert.equal(t.end, 900);
    const rows = [...t.times].map((time, i) => ({ time, source: t.sources[t.source[i]!], count: t.counts[i] }));
    assert.equal(rows.length, 5);
    // First bin: batch 1 (b×2), batch 2 (g, b at one instant), and k closing the line without '|'.
    const firstBin = rows.filter((r) => r.time < 300);
    assert.equal(firstBin.length, 4);
    assert.equal(firstBin.reduce((s, r) => s + r.count!, 0), 5);
    const g = firstBin.find((r) => r.source === 'g')!;
    assert.ok(firstBin.some((r) => r.source === 'b' && r.count === 1 && r.time === g.time), 'g and b of one batch arrive together');
    assert.ok(rows[4]!.time >= 600 && rows[4]!.time < 900);
    // The same seed spreads the same way; another seed does not.
    assert.deepEqual(parseAzureTrace('300 b,b,|,g,b,|,k\n', 'a.txt', { seed: 9 }).times, parseAzureTrace('300 b,b,|,g,b,|,k\n', 'a.txt', { seed: 9 }).times);
    assert.notDeepEqual(parseAzureTrace('300 b,|,g,|\n', 'a.txt', { seed: 9 }).times, parseAzureTrace('300 b,|,g,|\n', 'a.txt', { seed: 10 }).times);
  });

  it('names the file and line of a bad Azure line', () => {
    const cases: [string, RegExp][] = [
      ['300 b,|\n600 b,x,|\n', /^a\.txt:2: token 'x'/],
      ['300 b,|\nhello\n', /^a\.txt:2: expected '<t_seconds> <tokens>'/],
      ['600 b,|\n300 b,|\n', /^a\.txt:2: bin end 300 does not come after 600/],
      ['100 b,|\n', /^a\.txt:1: bin end 100 is before the end of the first bin/],
    ];
    for (const [text, message] of cases) assert.throws(() => parseAzureTrace(text, 'a.txt'), (e: unknown) => e instanceof InputError && message.test(e.message), text);
  });
});

describe('policy specs', () => {
  it('reads static, static per pool, static-share, predictive and cost', () => {
    assert.deepEqual(parsePolicySpec('static:400'), { kind: 'static', label: 'static:400', each: 400 });
    assert.deepEqual(parsePolicySpec('static:b=4,g=2'), { kind: 'static-per-pool', label: 'static:b=4,g=2', sizes: { b: 4, g: 2 } });
    assert.deepEqual(parsePolicySpec('static-share:10'), { kind: 'static-share', label: 'static-share:10', total: 10 });
    assert.deepEqual(parsePolicySpec('predictive:0.999,max=500'), { kind: 'predictive', label: 'predictive:0.999,max=500', fillRate: 0.999, min: 0, max: 500 });
    assert.deepEqual(parsePolicySpec('cost:2'), { kind: 'cost', label: 'cost:2', missCostSpareHours: 2, min: 0, max: 10_000 });
    assert.deepEqual(parsePolicySpec(' cost:0.5,min=1,max=40 '), { kind: 'cost', label: 'cost:0.5,min=1,max=40', missCostSpareHours: 0.5, min: 1, max: 40 });
    assert.deepEqual(parsePolicySpec('cost:24h'), { kind: 'cost', label: 'cost:24h', missCostSpareHours: 24, min: 0, max: 10_000 });
    assert.deepEqual(policiesFor(parsePolicySpec('cost:.25,max=8'), ['b'], new Map())('b'), costPolicy(0.25, 0, 8));
    const bads = [
      'static',
      'static:x',
      'static:20000',
      'predictive:1',
      'predictive:0.9,foo=1',
      'predictive:0.9,min=5,max=2',
      'random:3',
      'cost:0',
      'cost:-1',
      'cost:abc',
      'cost:8761',
      'cost:2x',
      'cost:',
      'cost:2,foo=1',
      'cost:2,min=5,max=2',
      'cost:2,max=20000',
    ];
    for (const bad of bads) assert.throws(() => parsePolicySpec(bad), InputError, bad);
    assert.throws(() => parsePolicySpec('cost:0'), /policy 'cost:0': miss cost '0' must be the hours of holding one spare that a cold wait costs, more than 0 and at most 8760, e.g\. 2/);
    assert.throws(() => parsePolicySpec('cost:2,every=1'), /policy 'cost:2,every=1': unknown option 'every=1' \(min=N, max=N\)/);
    assert.throws(() => parsePolicySpec('costly:2'), /unknown kind 'costly' \(static, static-share, predictive, cost\)/);
  });

  it('splits a static total by demand share, adding up exactly', () => {
    const split = splitByShare(
      10,
      new Map([
        ['b', 61],
        ['g', 19],
        ['k', 10],
        ['m', 9],
        ['o', 1],
      ]),
    );
    assert.deepEqual(Object.fromEntries(split), { b: 6, g: 2, k: 1, m: 1, o: 0 });
    const policy = policiesFor(parsePolicySpec('static-share:10'), ['b', 'g'], new Map([['b', 3], ['g', 1]]));
    assert.deepEqual([policy('b'), policy('g')], [staticPolicy(8, 8), staticPolicy(2, 2)]);
  });
});

describe('synthetic traces', () => {
  it('start on a Monday at 00:00 UTC', () => {
    assert.equal(new Date(MONDAY * 1000).toISOString(), '2024-01-01T00:00:00.000Z');
    assert.equal(new Date(MONDAY * 1000).getUTCDay(), 1);
  });
});
