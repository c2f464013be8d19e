import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { PEAK_WINDOWS_S, advance, forecastDemand, meanBatchSize, newForecast, observe, reviveForecast, type ForecastState } from '../../src/pool/policy/index.js';
import { trainForecasts } from '../../src/pool/simulator/index.js';
import { MONDAY, steadyForecast, syntheticTrace } from './synthetic.js';

const close = (actual: number, expected: number, rel: number, what = '') =>
  assert.ok(Math.abs(actual - expected) <= rel * Math.abs(expected), `${what} ${actual} is not within ${rel * 100} % of ${expected}`);

describe('forecast', () => {
  it('learns a steady rate, its batch sizes, and no burstiness', () => {
    const f = steadyForecast(12, 2, 3);
    const d = forecastDemand(f, MONDAY + 2 * 86_400, 120);
    close(d.batchesPerS, 1 / 12, 0.01, 'batches/s');
    close(d.requestsPerS, 3 / 12, 0.01, 'requests/s');
    close(d.model.batches, 10, 0.01, 'batches per lead time');
    assert.equal(d.model.dispersion, 1);
    assert.deepEqual(d.model.sizes.values, [3]);
    assert.equal(meanBatchSize(d.model.sizes), 3);
  });

  it('forecasts nothing before any arrival', () => {
    const f = newForecast();
    advance(f, MONDAY + 86_400);
    const d = forecastDemand(f, MONDAY + 86_400, 120);
    assert.equal(d.batchesPerS, 0);
    assert.equal(d.model.batches, 0);
  });

  it('learns time-of-day factors, and a weekend apart from weekdays', () => {
    // Weekdays: twice the rate from 12:00 to 18:00 UTC. Weekends: a quarter of the base rate all day.
    const f = newForecast();
    const end = MONDAY + 42 * 86_400;
    for (let t = MONDAY; t < end; ) {
      const day = Math.floor((t - MONDAY) / 86_400) % 7;
      const hour = ((t - MONDAY) % 86_400) / 3600;
      const weekend = day >= 5;
      const every = weekend ? 40 : hour >= 12 && hour < 18 ? 5 : 10;
      observe(f, t, 1);
      t += every;
    }
    advance(f, end);
    const at = (day: number, hour: number) => forecastDemand(f, end + day * 86_400 + hour * 3600, 120).batchesPerS;
    close(at(0, 15) / at(0, 3), 2, 0.1, 'afternoon / night on a Monday');
    close(at(5, 15) / at(0, 3), 0.25, 0.2, 'Saturday / weekday night');
  });

  it('shrinks a young slot toward its prior', () => {
    // One day of history, busy afternoon: the afternoon factor is pulled halfway toward 1.
    const f = newForecast();
    const end = MONDAY + 86_400;
    for (let t = MONDAY; t < end; t += ((t - MONDAY) % 86_400) / 3600 >= 12 && ((t - MONDAY) % 86_400) / 3600 < 18 ? 5 : 10) observe(f, t, 1);
    advance(f, end);
    const ratio = forecastDemand(f, end + 15 * 3600, 120).batchesPerS / forecastDemand(f, end + 3 * 3600, 120).batchesPerS;
    assert.ok(ratio > 1.1 && ratio < 1.9, `ratio ${ratio}`);
  });

  it('sees bursts as dispersion above 1, and Poisson arrivals as about 1', () => {
    const poisson = trainForecasts(syntheticTrace({ seed: 7, days: 7, batchesPerS: 0.05 }), ['lab']).get('lab')!;
    const bursty = trainForecasts(syntheticTrace({ seed: 7, days: 7, batchesPerS: 0.05, burstsPerHour: 0.1, burstFactor: 5, burstS: 900 }), ['lab']).get('lab')!;
    const at = MONDAY + 7 * 86_400;
    const perBin = (f: ForecastState) => forecastDemand(f, at, f.options.binS).model.dispersion;
    assert.ok(perBin(poisson) < 1.3, `poisson ${perBin(poisson)}`);
    assert.ok(perBin(bursty) > 2, `bursty ${perBin(bursty)}`);
    // Over a shorter window the extra spread shrinks with the window.
    assert.ok(forecastDemand(bursty, at, 120).model.dispersion < perBin(bursty));
  });

  it('survives a JSON round trip with the same forecast', () => {
    const f = trainForecasts(syntheticTrace({ seed: 3, days: 3, batchesPerS: 0.02, diurnal: 0.5, sizes: [[1, 3], [5, 1]] }), ['lab']).get('lab')!;
    const g = JSON.parse(JSON.stringify(f)) as ForecastState;
    const now = MONDAY + 3 * 86_400 + 4000;
    assert.deepEqual(forecastDemand(g, now, 120), forecastDemand(f, now, 120));
    // And both keep learning alike.
    observe(f, now, 2);
    observe(g, now, 2);
    advance(f, now + 900);
    advance(g, now + 900);
    assert.deepEqual(g, JSON.parse(JSON.stringify(f)));
  });

  it('coalesces claims that follow each other closely into one batch when asked to', () => {
    const live = newForecast({ coalesceS: 1 });
    const plain = newForecast();
    for (const f of [live, plain]) {
      for (let day = 0; day < 2; day++) {
        // Every 100 s a tenant asks for 30 copies, one claim every 0.1 s.
        for (let t = MONDAY + day * 86_400; t < MONDAY + (day + 1) * 86_400; t += 100) for (let i = 0; i < 30; i++) observe(f, t + i * 0.1, 1);
      }
      advance(f, MONDAY + 2 * 86_400);
    }
    const d = forecastDemand(live, MONDAY + 2 * 86_400, 120);
    assert.deepEqual(d.model.sizes.values, [30]);
    close(d.batchesPerS, 1 / 100, 0.01, 'batches/s');
    close(d.requestsPerS, 30 / 100, 0.01, 'requests/s');
    assert.equal(live.batchesSeen, 2 * 864);
    assert.equal(live.requestsSeen, 2 * 864 * 30);
    // Without coalescing the same claims look like single requests.
    assert.deepEqual(forecastDemand(plain, MONDAY + 2 * 86_400, 120).model.sizes.values, [1]);
  });

  it('changes its forecast only when a bin closes', () => {
    const f = steadyForecast(30, 1);
    const bin = MONDAY + 86_400 + 600;
    assert.deepEqual(forecastDemand(f, bin + 1, 120), forecastDemand(f, bin + 299, 120));
  });
});

describe('forecast state read back from storage', () => {
  it('round-trips through JSON, upgrades a version 1 record, and refuses damaged ones', () => {
    const f = steadyForecast(30, 2);
    const back = reviveForecast(JSON.parse(JSON.stringify(f)));
    assert.deepEqual(back, f);
    const { peaks: _peaks, ...v1 } = { ...(JSON.parse(JSON.stringify(f)) as ForecastState), version: 1 };
    const upgraded = reviveForecast(v1);
    assert.equal(upgraded.version, 2);
    assert.equal(upgraded.peaks.length, PEAK_WINDOWS_S.length);
    assert.deepEqual(forecastDemand(upgraded, MONDAY + 2 * 86_400, 120), forecastDemand(f, MONDAY + 2 * 86_400, 120));
    for (const bad of [null, 3, 'x', { ...f, version: 9 }, { ...f, levelRaw: 'a' }, { ...f, factors: [1, 2] }, { ...f, sizes: { '-1': 1 } }, { ...f, errSq: Infinity }]) {
      assert.throws(() => reviveForecast(JSON.parse(JSON.stringify(bad)) as unknown), /./, JSON.stringify(bad)?.slice(0, 60));
    }
  });

  it('never accepts a record it cannot use: any JSON either throws or gives a state that forecasts finite numbers', () => {
    const f = JSON.parse(JSON.stringify(steadyForecast(30, 1))) as Record<string, unknown>;
    fc.assert(
      fc.property(fc.constantFrom(...Object.keys(f)), fc.jsonValue(), (key, value) => {
        let state: ForecastState;
        try {
          state = reviveForecast({ ...f, [key]: value });
        } catch (e) {
          assert.ok(e instanceof TypeError || e instanceof RangeError, String(e));
          return;
        }
        const d = forecastDemand(state, MONDAY + 86_400, 120);
        assert.ok(Number.isFinite(d.requestsPerS) && d.requestsPerS >= 0 && Number.isFinite(d.model.dispersion));
      }),
      { numRuns: Number(process.env.PRESTAGE_PROPERTY_RUNS ?? 500) },
    );
  });
});
