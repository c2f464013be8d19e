import { InputError } from './errors.js';
import type { PoolPolicy, PredictivePolicy, StaticPolicy } from './types.js';

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

/**
 * The spares a pool holds at least, whatever its demand: static `min`; predictive `min` too,
 * the floor under its forecast (the replenisher's plan gives the target itself).
 */
export function targetSpares(policy: PoolPolicy): number {
  return Math.min(policy.min, policy.max);
}
