import { InputError } from './errors.js';
import type { CostPolicy, PoolPolicy, PredictivePolicy, StaticPolicy } from './types.js';

/** The highest `max` a pool may ask for: a guard against a typo that would fill the disk. */
export const POOL_MAX_LIMIT = 10_000;

export function staticPolicy(min: number, max: number): StaticPolicy {
  for (const [field, v] of [['min', min], ['max', max]] as const) {
    if (!Number.isSafeInteger(v) || v < 0 || v > POOL_MAX_LIMIT) {
      throw new InputError(`${field} must be a whole number from 0 to ${POOL_MAX_LIMIT}`, { field, value: v });
    }
  }
  if (min > max) throw new InputError(`min (${min}) must not exceed max (${max})`, { field: 'min' });
  return { kind: 'static', min, max };
}

export function predictivePolicy(fillRate: number, min = 0, max = POOL_MAX_LIMIT): PredictivePolicy {
  if (!(fillRate > 0 && fillRate < 1)) throw new InputError(`fill rate must be between 0 and 1 (exclusive), e.g. 0.999; got ${fillRate}`, { field: 'fillRate' });
  const { min: lo, max: hi } = staticPolicy(min, max);
  return Object.freeze({ kind: 'predictive', fillRate, min: lo, max: hi });
}

/** The most a cold wait may be said to cost, in spare-hours: a year of one spare. */
export const MISS_COST_LIMIT = 8760;

export function costPolicy(missCostSpareHours: number, min = 0, max = POOL_MAX_LIMIT): CostPolicy {
  if (!(missCostSpareHours > 0 && missCostSpareHours <= MISS_COST_LIMIT)) {
    throw new InputError(`miss cost must be more than 0 and at most ${MISS_COST_LIMIT} spare-hours (a cold wait costs as much as one spare held that long), e.g. 2; got ${missCostSpareHours}`, { field: 'missCost' });
  }
  const { min: lo, max: hi } = staticPolicy(min, max);
  return Object.freeze({ kind: 'cost', missCostSpareHours, min: lo, max: hi });
}

/**
 * The spares a pool holds at least, whatever its demand: static `min`; predictive and cost `min`
 * too, the floor under their forecast (the replenisher's plan gives the target itself).
 */
export function targetSpares(policy: PoolPolicy): number {
  return Math.min(policy.min, policy.max);
}
