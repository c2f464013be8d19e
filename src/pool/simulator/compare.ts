/**
 * One comparison of policies on one trace, as the dashboard's simulator page asks for it: the
 * scores `prestage simulate` prints, and the demand, target and spares over time of each policy
 * and pool at a resolution a browser can plot. Pure: the caller reads the files.
 */
import { InputError } from '../../domain/index.js';
import type { Budget } from '../policy/index.js';
import { parsePolicySpec, policiesFor } from './policy-spec.js';
import { simulate, trainForecasts, type PoolResult, type ReplayScore } from './simulate.js';
import { sliceTrace } from './synthetic.js';
import { busiestSources, demandBySource, parseAzureTrace, parseCsvTrace, type Trace } from './trace.js';

/** csv when the first data line reads `time,source…`, azure when it reads `<t> <tokens>` (as `prestage simulate` guesses). */
export function guessTraceFormat(text: string): 'csv' | 'azure' {
  for (const line of text.split('\n', 50)) {
    const l = line.trim();
    if (l === '' || l.startsWith('#')) continue;
    return /^[0-9]+\s+[a-p|]/.test(l) || /^[0-9]+$/.test(l) ? 'azure' : 'csv';
  }
  return 'csv';
}

/** A trace file's text read in its format (guessed when not given); Azure batches spread with `seed`. */
export function parseTraceText(text: string, name: string, seed: number, format?: 'csv' | 'azure'): Trace {
  return (format ?? guessTraceFormat(text)) === 'azure' ? parseAzureTrace(text, name, { seed }) : parseCsvTrace(text, name);
}

export interface CompareOptions {
  readonly trace: Trace;
  /** Learned from first, without scoring. */
  readonly train?: Trace | null;
  /** Policy specs as `prestage simulate --policy` takes them. */
  readonly policies: readonly string[];
  /** The N busiest sources (of `train` when given, else of `trace`); default every source. */
  readonly top?: number;
  /** Score only the first this many hours of `trace`. Default all of it. */
  readonly hours?: number;
  readonly leadTimeS: number;
  readonly concurrency?: number;
  readonly budget?: Budget | null;
  /** Most points per plotted line: the bucket grows (in steps of 5 min) until the trace fits. */
  readonly maxPoints: number;
}

export type ScoreRow = ReplayScore & { readonly policy: string; readonly budgetViolations: number; readonly pools: PoolResult[] };

export interface PolicySeries {
  readonly policy: string;
  /** Per source (in the order of `sources`), per bucket. */
  readonly demand: number[][];
  readonly target: number[][];
  readonly spares: number[][];
}

export interface Comparison {
  readonly trace: string;
  readonly format: 'csv' | 'azure';
  readonly sources: string[];
  readonly spanS: number;
  readonly leadTimeS: number;
  readonly rows: ScoreRow[];
  /** Bucket starts, seconds since the epoch; every line of `series` has one value per bucket. */
  readonly time: number[];
  readonly bucketS: number;
  readonly series: PolicySeries[];
}

/** Two decimals are more than a plot shows, and keep the reply a fraction of its size. */
const round2 = (a: Float64Array): number[] => Array.from(a, (x) => Math.round(x * 100) / 100);

export function comparePolicies(o: CompareOptions): Comparison {
  const specs = o.policies.map(parsePolicySpec);
  if (specs.length === 0) throw new InputError('name at least one policy', { field: 'policies' });
  let trace = o.trace;
  if (o.hours !== undefined) trace = sliceTrace(trace, trace.start, Math.min(trace.end, trace.start + o.hours * 3600));
  const sources = busiestSources(o.train ?? trace, o.top ?? Infinity);
  if (sources.length === 0) throw new InputError(`${trace.name}: no arrivals to simulate`, { trace: trace.name });
  const forecasts = o.train ? trainForecasts(o.train, sources) : undefined;
  const demand = new Map(demandBySource(trace).map((d) => [d.source, d.requests]));
  const spanS = trace.end - trace.start;
  const bucketS = Math.max(300, Math.ceil(spanS / o.maxPoints / 300) * 300);
  const rows: ScoreRow[] = [];
  const series: PolicySeries[] = [];
  let buckets = 0;
  for (const spec of specs) {
    const r = simulate({
      trace,
      sources,
      policyFor: policiesFor(spec, sources, demand),
      leadTimeS: o.leadTimeS,
      concurrency: o.concurrency ?? Infinity,
      budget: o.budget ?? null,
      ...(forecasts && { forecasts }),
      seriesBucketS: bucketS,
    });
    const { series: s, spanS: _span, ...score } = r;
    rows.push({ policy: spec.label, ...score, pools: [...score.pools] });
    if (s) {
      buckets = s.demand[0]?.length ?? 0;
      series.push({ policy: spec.label, demand: s.demand.map(round2), target: s.target.map(round2), spares: s.spares.map(round2) });
    }
  }
  return {
    trace: trace.name,
    format: trace.format,
    sources,
    spanS,
    leadTimeS: o.leadTimeS,
    rows,
    time: Array.from({ length: buckets }, (_, i) => trace.start + i * bucketS),
    bucketS,
    series,
  };
}
