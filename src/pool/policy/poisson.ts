/**
 * Poisson distribution, exact for any rate a pool can see. Each sum starts at the term nearest
 * the mode (computed in log space, so it never underflows there) and walks outward with the
 * ratio of neighbouring terms, stopping once a term no longer changes the sum. There is no
 * normal approximation: a sum costs O(√λ) terms, which stays cheap up to λ ≈ 1e8.
 */

const LANCZOS_G = 7;
const LANCZOS = [
  0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905, -0.13857109526572012,
  9.9843695780195716e-6, 1.5056327351493116e-7,
] as const;

/** ln Γ(x) for x > 0 (Lanczos, relative error ≈ 1e-15). */
export function logGamma(x: number): number {
  if (x < 0.5) return Math.log(Math.PI / Math.abs(Math.sin(Math.PI * x))) - logGamma(1 - x);
  const z = x - 1;
  let a = LANCZOS[0];
  for (let i = 1; i < LANCZOS.length; i++) a += LANCZOS[i]! / (z + i);
  const t = z + LANCZOS_G + 0.5;
  return 0.5 * Math.log(2 * Math.PI) + (z + 0.5) * Math.log(t) - t + Math.log(a);
}

/** ln P[X = k] for X ~ Poisson(λ). */
export function poissonLogPmf(k: number, lambda: number): number {
  if (k < 0 || !Number.isInteger(k)) return -Infinity;
  if (lambda === 0) return k === 0 ? 0 : -Infinity;
  return k * Math.log(lambda) - lambda - logGamma(k + 1);
}

export function poissonPmf(k: number, lambda: number): number {
  return Math.exp(poissonLogPmf(k, lambda));
}

function checkRate(lambda: number): void {
  if (!(lambda >= 0) || !Number.isFinite(lambda)) throw new RangeError(`Poisson rate must be a finite number ≥ 0, got ${lambda}`);
}

/** P[X ≤ k]. */
export function poissonCdf(k: number, lambda: number): number {
  checkRate(lambda);
  if (k < 0) return 0;
  const top = Math.floor(k);
  if (lambda === 0) return 1;
  if (top > Math.floor(lambda)) return 1 - poissonSf(top, lambda);
  // Terms fall as i goes down from k ≤ λ: sum them until they stop counting.
  let p = poissonPmf(top, lambda);
  let sum = 0;
  for (let i = top; i >= 0 && p > 0; i--) {
    sum += p;
    if (p < sum * 1e-17) break;
    p *= i / lambda;
  }
  return Math.min(1, sum);
}

/** P[X > k], computed directly so that small upper tails keep their precision. */
export function poissonSf(k: number, lambda: number): number {
  checkRate(lambda);
  if (k < 0) return 1;
  const top = Math.floor(k);
  if (lambda === 0) return 0;
  if (top < Math.floor(lambda)) return 1 - poissonCdf(top, lambda);
  let i = top + 1;
  let p = poissonPmf(i, lambda);
  let sum = 0;
  while (p > 0) {
    sum += p;
    if (p < sum * 1e-17) break;
    i++;
    p *= lambda / i;
  }
  return Math.min(1, sum);
}

/** The smallest k with P[X ≤ k] ≥ q. */
export function poissonQuantile(q: number, lambda: number): number {
  checkRate(lambda);
  if (!(q >= 0 && q <= 1)) throw new RangeError(`quantile level must be in [0, 1], got ${q}`);
  if (lambda === 0 || q === 0) return 0;
  if (q === 1) return Infinity;
  let k = Math.floor(lambda);
  let p = poissonPmf(k, lambda);
  if (poissonCdf(k, lambda) >= q) {
    // Walk down while the CDF one step lower still reaches q; compare upper tails to keep precision.
    let c = poissonCdf(k, lambda);
    while (k > 0 && c - p >= q) {
      c -= p;
      p *= k / lambda;
      k--;
    }
    return k;
  }
  // Walk up on the upper tail: stop at the first k whose tail is at most 1 − q.
  let tail = poissonSf(k, lambda);
  const miss = 1 - q;
  while (tail > miss) {
    k++;
    p *= lambda / k;
    if (p === 0) break;
    tail -= p;
  }
  return k;
}
