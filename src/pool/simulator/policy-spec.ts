/**
 * Policies as the simulator's command line names them, and how each becomes one PlanPolicy per
 * pool:
 *   static:N              every pool keeps N spares
 *   static:b=400,g=100    per pool (pools not named keep 0)
 *   static-share:N        N spares in all, split by each pool's share of the requests
 *   predictive:F          fill rate F (0.999 = 99.9 % of requests warm), min 0, max 10000
 *   predictive:F,min=N,max=N
 *   cost:H                a cold wait costs as much as one spare held H hours (2 or 2h), min 0, max 10000
 *   cost:H,min=N,max=N
 */
import { InputError, MISS_COST_LIMIT, POOL_MAX_LIMIT, costPolicy, staticPolicy } from '../../domain/index.js';
import { predictivePolicy, type PlanPolicy } from '../policy/index.js';

export type PolicySpec =
  | { readonly kind: 'static'; readonly label: string; readonly each: number }
  | { readonly kind: 'static-per-pool'; readonly label: string; readonly sizes: Readonly<Record<string, number>> }
  | { readonly kind: 'static-share'; readonly label: string; readonly total: number }
  | { readonly kind: 'predictive'; readonly label: string; readonly fillRate: number; readonly min: number; readonly max: number }
  | { readonly kind: 'cost'; readonly label: string; readonly missCostSpareHours: number; readonly min: number; readonly max: number };

const KINDS = 'static:N, static:SRC=N,…, static-share:N, predictive:FILL[,min=N,max=N] or cost:HOURS[,min=N,max=N]';

function whole(raw: string, what: string, spec: string): number {
  const n = /^[0-9]+$/.test(raw.trim()) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(n)) throw new InputError(`policy '${spec}': ${what} '${raw}' is not a whole number ≥ 0`, { field: 'policy' });
  return n;
}

/** The `min=N,max=N` options of a demand-sized policy; min 0 and max POOL_MAX_LIMIT when left out. */
function bounds(opts: readonly string[], spec: string): { min: number; max: number } {
  let min = 0;
  let max = POOL_MAX_LIMIT;
  for (const o of opts) {
    const [k, v] = o.split('=') as [string, string | undefined];
    if (k.trim() === 'min' && v !== undefined) min = whole(v, 'min', spec);
    else if (k.trim() === 'max' && v !== undefined) max = whole(v, 'max', spec);
    else throw new InputError(`policy '${spec}': unknown option '${o}' (min=N, max=N)`, { field: 'policy' });
  }
  return { min, max };
}

export function parsePolicySpec(raw: string): PolicySpec {
  const spec = raw.trim();
  const m = /^([a-z-]+):(.+)$/.exec(spec);
  if (!m) throw new InputError(`policy '${raw}': expected ${KINDS}`, { field: 'policy' });
  const [, kind, arg] = m as unknown as [string, string, string];
  switch (kind) {
    case 'static': {
      if (!arg.includes('=')) {
        const each = whole(arg, 'size', spec);
        if (each > POOL_MAX_LIMIT) throw new InputError(`policy '${spec}': at most ${POOL_MAX_LIMIT} spares per pool`, { field: 'policy' });
        return { kind: 'static', label: spec, each };
      }
      const sizes: Record<string, number> = {};
      for (const part of arg.split(',')) {
        const [src, n] = part.split('=') as [string, string | undefined];
        if (!src.trim() || n === undefined) throw new InputError(`policy '${spec}': expected SRC=N, got '${part}'`, { field: 'policy' });
        sizes[src.trim()] = whole(n, 'size', spec);
      }
      return { kind: 'static-per-pool', label: spec, sizes };
    }
    case 'static-share':
      return { kind: 'static-share', label: spec, total: whole(arg, 'total', spec) };
    case 'predictive': {
      const [fill, ...opts] = arg.split(',');
      const f = /^(0?\.[0-9]+)$/.test(fill!.trim()) ? Number(fill) : NaN;
      if (!(f > 0 && f < 1)) throw new InputError(`policy '${spec}': fill rate '${fill}' must be a number between 0 and 1, e.g. 0.999`, { field: 'policy' });
      const { min, max } = bounds(opts, spec);
      predictivePolicy(f, min, max);
      return { kind: 'predictive', label: spec, fillRate: f, min, max };
    }
    case 'cost': {
      const [hours, ...opts] = arg.split(',');
      const given = /^([0-9]*\.?[0-9]+)\s*h?$/.exec(hours!.trim());
      const h = given ? Number(given[1]) : NaN;
      if (!(h > 0 && h <= MISS_COST_LIMIT)) {
        throw new InputError(`policy '${spec}': miss cost '${hours}' must be the hours of holding one spare that a cold wait costs, more than 0 and at most ${MISS_COST_LIMIT}, e.g. 2`, {
          field: 'policy',
        });
      }
      const { min, max } = bounds(opts, spec);
      costPolicy(h, min, max);
      return { kind: 'cost', label: spec, missCostSpareHours: h, min, max };
    }
    default:
      throw new InputError(`policy '${raw}': unknown kind '${kind}' (static, static-share, predictive, cost)`, { field: 'policy' });
  }
}

/**
 * Splits `total` spares over pools in proportion to their weights, by largest remainder (ties to
 * the busier pool), so the parts add up to `total` exactly.
 */
export function splitByShare(total: number, weights: ReadonlyMap<string, number>): Map<string, number> {
  const entries = [...weights.entries()];
  const sum = entries.reduce((s, [, w]) => s + Math.max(0, w), 0);
  const out = new Map<string, number>();
  if (sum <= 0) {
    entries.forEach(([s], i) => out.set(s, Math.floor(total / entries.length) + (i < total % entries.length ? 1 : 0)));
    return out;
  }
  const exact = entries.map(([s, w]) => ({ s, w, x: (total * Math.max(0, w)) / sum }));
  let given = 0;
  for (const e of exact) {
    out.set(e.s, Math.floor(e.x));
    given += Math.floor(e.x);
  }
  const byRemainder = [...exact].sort((a, b) => b.x - Math.floor(b.x) - (a.x - Math.floor(a.x)) || b.w - a.w);
  for (let i = 0; given < total; i++, given++) {
    const e = byRemainder[i % byRemainder.length]!;
    out.set(e.s, out.get(e.s)! + 1);
  }
  return out;
}

/** The PlanPolicy of each pool; `demand` (requests per source) is needed by static-share. */
export function policiesFor(spec: PolicySpec, sources: readonly string[], demand: ReadonlyMap<string, number>): (source: string) => PlanPolicy {
  switch (spec.kind) {
    case 'static': {
      const p = staticPolicy(spec.each, spec.each);
      return () => p;
    }
    case 'static-per-pool':
      return (s) => {
        const n = spec.sizes[s] ?? 0;
        return staticPolicy(Math.min(n, POOL_MAX_LIMIT), Math.min(n, POOL_MAX_LIMIT));
      };
    case 'static-share': {
      const split = splitByShare(spec.total, new Map(sources.map((s) => [s, demand.get(s) ?? 0])));
      return (s) => {
        const n = Math.min(split.get(s) ?? 0, POOL_MAX_LIMIT);
        return staticPolicy(n, n);
      };
    }
    case 'predictive': {
      const p = predictivePolicy(spec.fillRate, spec.min, spec.max);
      return () => p;
    }
    case 'cost': {
      const p = costPolicy(spec.missCostSpareHours, spec.min, spec.max);
      return () => p;
    }
  }
}
