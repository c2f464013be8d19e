/** The trace simulator: replays demand through the live planner on a simulated clock. */
export { busiestSources, demandBySource, mulberry32, parseAzureTrace, parseCsvTrace, type AzureOptions, type Trace } from './trace.js';
export { simulate, trainForecasts, type PoolResult, type Series, type SimulationOptions, type SimulationResult } from './simulate.js';
export { parsePolicySpec, policiesFor, splitByShare, type PolicySpec } from './policy-spec.js';
export { seriesCsv, seriesSvg, type PlotOptions } from './report.js';
export { SYNTHETIC_START, generateTrace, mixedShapes, sliceTrace, type SourceShape } from './synthetic.js';
export { comparePolicies, guessTraceFormat, parseTraceText, type CompareOptions, type Comparison, type PolicySeries, type ScoreRow } from './compare.js';
