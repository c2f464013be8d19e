/** The q-quantile (0..1) of the samples, interpolated between the closest ranks; NaN when empty. */
export function percentile(samples: readonly number[], q: number): number {
  if (samples.length === 0) return NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

/** Rounded to 0.01; null for a figure that was not measured. */
export function round2(x: number | undefined): number | null {
  return x === undefined || !Number.isFinite(x) ? null : Math.round(x * 100) / 100;
}

/** `p50 1.23 ms, p99 4.56 ms, max 7.89 ms (n=200)` */
export function describe(samples: readonly number[]): string {
  if (samples.length === 0) return 'no samples';
  const f = (x: number) => `${x.toFixed(2)} ms`;
  return `p50 ${f(percentile(samples, 0.5))}, p99 ${f(percentile(samples, 0.99))}, max ${f(Math.max(...samples))} (n=${samples.length})`;
}
