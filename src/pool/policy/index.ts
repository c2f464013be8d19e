/**
 * Pool sizing, pure: demand forecast, fill-rate math, pre-warm schedule, storage budget, and the
 * planner that puts them together. No I/O and no clock; the live replenisher and the trace
 * simulator call the same `planPools`.
 */
export { logGamma, poissonCdf, poissonLogPmf, poissonPmf, poissonQuantile, poissonSf } from './poisson.js';
export {
  SINGLE_REQUESTS,
  baseStockLevel,
  batchSizes,
  demandPmf,
  expectedShortfall,
  fillCurve,
  fillRate,
  meanBatchSize,
  type BaseStock,
  type BatchSizes,
  type DemandModel,
} from './demand.js';
export {
  DEFAULT_FORECAST_OPTIONS,
  PEAK_TAU_S,
  PEAK_WINDOWS_S,
  advance,
  forecastDemand,
  historyPeak,
  reviveForecast,
  newForecast,
  observe,
  type DemandForecast,
  type ForecastOptions,
  type ForecastState,
} from './forecast.js';
export { parsePrewarmEvent, prewarmEvent, prewarmLeadS, scheduledBoost, type PrewarmEvent, type ScheduledBoost } from './schedule.js';
export { allocateBudget, budgetCap, budgetUnits, formatBudget, parseBudget, type Allocation, type AllocationRequest, type Budget } from './budget.js';
export {
  PlanCache,
  planPools,
  predictivePolicy,
  type Plan,
  type PlanOptions,
  type PlanPolicy,
  type PlanPoolInput,
  type PoolPlan,
  type PredictivePolicy,
} from './planner.js';
