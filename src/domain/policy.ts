import { InputError } from './errors.js';
import type { PoolPolicy, StaticPolicy } from './types.js';

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

/** How many ready spares the pool wants now. Static: `min`, never above `max`. */
export function targetSpares(policy: PoolPolicy): number {
  switch (policy.kind) {
    case 'static':
      return Math.min(policy.min, policy.max);
  }
}
