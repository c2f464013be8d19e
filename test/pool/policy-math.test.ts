import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  baseStockLevel,
  batchSizes,
  demandPmf,
  expectedShortfall,
  fillCurve,
  fillRate,
  logGamma,
  meanBatchSize,
  poissonCdf,
  poissonPmf,
  poissonQuantile,
  poissonSf,
  type DemandModel,
} from '../../src/pool/policy/index.js';

const close = (actual: number, expected: number, tol: number, what = '') =>
  assert.ok(Math.abs(actual - expected) <= tol, `${what} ${actual} is not within ${tol} of ${expected}`);

/** Brute force: P[X ≤ k] by summing the pmf from 0 with logGamma. */
function bruteCdf(k: number, lambda: number): number {
  let s = 0;
  for (let i = 0; i <= k; i++) s += Math.exp(i * Math.log(lambda) - lambda - logGamma(i + 1));
  return s;
}

describe('Poisson', () => {
  it('matches known values', () => {
    close(poissonCdf(15, 10), 0.9513, 5e-5, 'P[Poisson(10) ≤ 15]');
    close(poissonCdf(2, 1), 0.9197, 5e-5, 'P[Poisson(1) ≤ 2]');
    close(poissonPmf(0, 3), Math.exp(-3), 1e-15);
    assert.equal(poissonQuantile(0.999, 100), 132);
    assert.ok(poissonCdf(131, 100) < 0.999 && poissonCdf(132, 100) >= 0.999);
    assert.equal(poissonQuantile(0.5, 10), 10);
    assert.equal(poissonQuantile(0.95, 10), 15);
    close(logGamma(10), Math.log(362_880), 1e-12);
    close(logGamma(0.5), Math.log(Math.sqrt(Math.PI)), 1e-12);
  });

  it('agrees with a brute-force sum for moderate rates', () => {
    fc.assert(
      fc.property(fc.double({ min: 0.01, max: 300, noNaN: true }), fc.integer({ min: 0, max: 500 }), (lambda, k) => {
        close(poissonCdf(k, lambda), Math.min(1, bruteCdf(k, lambda)), 1e-9);
        close(poissonCdf(k, lambda) + poissonSf(k, lambda), 1, 1e-12);
      }),
      { numRuns: 200 },
    );
  });

  it('stays exact for large rates, where e^-λ underflows', () => {
    // Poisson(λ) is close to Normal(λ, λ): the 99.9 % quantile sits near λ + 3.09 √λ.
    for (const lambda of [1e3, 1e5, 1e7]) {
      const q = poissonQuantile(0.999, lambda);
      close(q, lambda + 3.0902 * Math.sqrt(lambda), 0.02 * Math.sqrt(lambda) + 2, `q(λ=${lambda})`);
      assert.ok(poissonCdf(q, lambda) >= 0.999 && poissonCdf(q - 1, lambda) < 0.999);
      close(poissonCdf(lambda, lambda), 0.5, 0.5 / Math.sqrt(lambda) + 1e-3);
    }
    assert.equal(poissonCdf(0, 1e4), 0);
    close(poissonSf(2e4, 1e4), 0, 1e-300);
  });

  it('quantile is the smallest k reaching the level', () => {
    fc.assert(
      fc.property(fc.double({ min: 0.05, max: 2000, noNaN: true }), fc.double({ min: 0.001, max: 0.9999, noNaN: true }), (lambda, q) => {
        const k = poissonQuantile(q, lambda);
        assert.ok(poissonCdf(k, lambda) >= q - 1e-12);
        if (k > 0) assert.ok(poissonCdf(k - 1, lambda) < q + 1e-12);
      }),
      { numRuns: 200 },
    );
  });

  it('refuses a negative or infinite rate', () => {
    assert.throws(() => poissonCdf(1, -1), RangeError);
    assert.throws(() => poissonQuantile(0.5, Infinity), RangeError);
  });
});

const SIZES = batchSizes([
  [1, 0.5],
  [3, 0.3],
  [10, 0.2],
]);

describe('compound demand', () => {
  it('has the mean and variance of a compound Poisson / negative binomial', () => {
    const ek = meanBatchSize(SIZES);
    const ek2 = 0.5 * 1 + 0.3 * 9 + 0.2 * 100;
    for (const dispersion of [1, 3]) {
      const model: DemandModel = { batches: 6, dispersion, sizes: SIZES };
      const pmf = demandPmf(model, 2000);
      let mass = 0;
      let mean = 0;
      let sq = 0;
      pmf.forEach((p, d) => {
        mass += p;
        mean += d * p;
        sq += d * d * p;
      });
      close(mass, 1, 1e-12, 'mass');
      close(mean, 6 * ek, 1e-9, 'mean');
      // Var[D] = E[N] Var[K] + Var[N] E[K]²
      close(sq - mean * mean, 6 * (ek2 - ek * ek) + dispersion * 6 * ek * ek, 1e-6, 'variance');
    }
  });

  it('is unit Poisson when every batch is one request', () => {
    const pmf = demandPmf({ batches: 10, dispersion: 1, sizes: batchSizes([[1, 1]]) }, 40);
    for (let k = 0; k <= 40; k++) close(pmf[k]!, poissonPmf(k, 10), 1e-15);
  });

  it('does not underflow for a large expected count', () => {
    const pmf = demandPmf({ batches: 5000, dispersion: 1, sizes: batchSizes([[1, 1]]) }, 6000);
    close(
      pmf.reduce((a, b) => a + b, 0),
      1,
      1e-9,
    );
    close(pmf[5000]!, poissonPmf(5000, 5000), 1e-12);
  });
});

describe('fill rate (share of requests served warm)', () => {
  it('is P[D ≤ S − 1] for unit Poisson demand', () => {
    const model: DemandModel = { batches: 10, dispersion: 1, sizes: batchSizes([[1, 1]]) };
    for (const s of [0, 5, 10, 15, 25]) close(fillRate(model, s), s === 0 ? 0 : poissonCdf(s - 1, 10), 1e-12, `S=${s}`);
  });

  it('counts the warm part of a batch: 1 − (E[(D+K−S)⁺] − E[(D−S)⁺]) / E[K]', () => {
    for (const dispersion of [1, 2.5]) {
      const model: DemandModel = { batches: 4, dispersion, sizes: SIZES };
      const pmf = demandPmf(model, 600);
      const ek = meanBatchSize(SIZES);
      for (const s of [0, 1, 5, 12, 30, 60]) {
        let withBatch = 0;
        SIZES.values.forEach((k, i) => {
          for (let d = 0; d < pmf.length; d++) withBatch += SIZES.probs[i]! * pmf[d]! * Math.max(0, d + k - s);
        });
        const expected = 1 - (withBatch - expectedShortfall(pmf, s)) / ek;
        close(fillRate(model, s), expected, 1e-9, `φ=${dispersion} S=${s}`);
      }
    }
  });

  it('is below the once-per-lead-time formula 1 − E[(D−S)⁺]/E[D], which overstates a refilled pool', () => {
    const model: DemandModel = { batches: 10, dispersion: 1, sizes: batchSizes([[1, 1]]) };
    const pmf = demandPmf(model, 200);
    const periodic = 1 - expectedShortfall(pmf, 15) / 10;
    close(fillRate(model, 15), 0.9165, 1e-4);
    close(periodic, 0.9897, 1e-4, "periodic");
  });

  it('grows with S, from 0 at S = 0 toward 1', () => {
    const curve = fillCurve({ batches: 3, dispersion: 1.5, sizes: SIZES }, Infinity, 200);
    assert.equal(curve[0], 0);
    for (let s = 1; s < curve.length; s++) assert.ok(curve[s]! >= curve[s - 1]! - 1e-12, `S=${s}`);
    assert.ok(curve[200]! > 0.9999);
  });
});

describe('base-stock level', () => {
  const model: DemandModel = { batches: 100, dispersion: 1, sizes: batchSizes([[1, 1]]) };

  it('is the smallest S meeting the fill target', () => {
    // Unit Poisson(100): fill(S) = P[D ≤ S − 1] ≥ 0.999 ⇔ S − 1 ≥ 132.
    const b = baseStockLevel(model, 0.999, 0, 10_000);
    assert.equal(b.spares, 133);
    assert.ok(b.fill >= 0.999 && b.curve[132]! < 0.999);
    assert.equal(b.capped, false);
  });

  it('is bounded by min and max', () => {
    assert.equal(baseStockLevel(model, 0.999, 200, 10_000).spares, 200);
    const capped = baseStockLevel(model, 0.999, 0, 120);
    assert.equal(capped.spares, 120);
    assert.equal(capped.capped, true);
    assert.ok(capped.fill < 0.999);
  });

  it('needs more spares for batchy demand of the same mean', () => {
    const batchy: DemandModel = { batches: 10, dispersion: 1, sizes: batchSizes([[10, 1]]) };
    assert.ok(baseStockLevel(batchy, 0.999, 0, 10_000).spares > baseStockLevel(model, 0.999, 0, 10_000).spares + 50);
  });
});
