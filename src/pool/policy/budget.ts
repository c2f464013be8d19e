/**
 * A storage budget shared by all pools. When the pools want more spares than it holds, spares
 * go where one more buys the most expected warm requests per unit of budget.
 *
 * The value of s spares to a pool is its request rate times fill(s) (warm requests per second).
 * That curve is S-shaped, not concave: a pool whose lead-time demand is 100 gains almost nothing
 * from its first 50 spares (they are always gone) and a lot from the next ones. Handing out
 * spares one at a time by the gain of the next single spare (the classic marginal allocation,
 * optimal for concave gains) would then starve busy pools, and even a greedy on the concave hulls
 * goes wrong where the budget ends inside a convex stretch. So the split is solved exactly, as a
 * knapsack over the pools (pools are few and spares are counted in budget units); the planner
 * caches it per forecast.
 */
import { InputError, parseSize } from '../../domain/index.js';

/** A cap on the spares of all pools together (ready and being made), in copies or in bytes. */
export type Budget = { readonly kind: 'copies'; readonly copies: number } | { readonly kind: 'bytes'; readonly bytes: number };

/** `800` → 800 copies; `500GiB`, `2TB` → bytes. */
export function parseBudget(raw: string, field = 'budget'): Budget {
  const s = raw.trim();
  if (/^[0-9]+$/.test(s)) {
    const copies = Number(s);
    if (!Number.isSafeInteger(copies)) throw new InputError(`${field}: ${s} is too large`, { field });
    return { kind: 'copies', copies };
  }
  try {
    return { kind: 'bytes', bytes: parseSize(s, field) };
  } catch (e) {
    throw new InputError(`${field}: cannot read '${raw}' (a number of copies such as 800, or a size such as 500GiB)`, { field }, { cause: e });
  }
}

/** Budget units the budget holds: copies, or bytes; Infinity without a budget. */
export function budgetCap(b: Budget | null): number {
  return b === null ? Infinity : b.kind === 'copies' ? b.copies : b.bytes;
}

/** Budget units one copy of `sizeBytes` uses: 1 in a budget of copies, its bytes in one of bytes; 0 without a budget. */
export function budgetUnits(b: Budget | null, sizeBytes: number): number {
  return b === null ? 0 : b.kind === 'copies' ? 1 : sizeBytes;
}

export function formatBudget(b: Budget): string {
  return b.kind === 'copies' ? `${b.copies} copies` : `${b.bytes} bytes`;
}

export interface AllocationRequest {
  readonly source: string;
  /** Spares the pool wants (its target without the budget). */
  readonly wanted: number;
  /** Spares it keeps before any other pool gets more than its own floor (min, declared events). */
  readonly floor: number;
  /** Budget units one spare uses: 1 for a budget in copies, the copy's bytes for one in bytes. */
  readonly cost: number;
  /** value[s] = expected warm requests per second with s spares, for s = 0..wanted. */
  readonly value: ArrayLike<number>;
}

export interface Allocation {
  readonly source: string;
  readonly wanted: number;
  readonly granted: number;
  /** Warm requests per second the last spare granted buys: value(granted) − value(granted − 1). */
  readonly lastSpareValue: number;
  readonly reason: 'within budget' | 'cut by budget' | 'floor cut by budget' | 'no demand';
}

/** Work the exact allocation may do: budget units × spare counts tried. */
const DP_WORK = 4e6;

/**
 * The spares of each pool in [from, to] (budget units `units` per spare) that maximize the summed
 * value within `budget` units: a knapsack over the pools, exact for these units.
 */
function bestSplit(value: readonly ArrayLike<number>[], from: readonly number[], to: readonly number[], units: readonly number[], budget: number): number[] {
  const P = value.length;
  let best = new Float64Array(budget + 1);
  const choice: Int32Array[] = [];
  for (let p = 0; p < P; p++) {
    const next = new Float64Array(budget + 1).fill(-Infinity);
    const pick = new Int32Array(budget + 1);
    const v = value[p]!;
    const base = v[from[p]!]!;
    for (let u = 0; u <= budget; u++) {
      for (let k = 0; from[p]! + k <= to[p]! && k * units[p]! <= u; k++) {
        const val = best[u - k * units[p]!]! + v[from[p]! + k]! - base;
        if (val > next[u]!) {
          next[u] = val;
          pick[u] = k;
        }
      }
    }
    choice.push(pick);
    best = next;
  }
  const out = new Array<number>(P).fill(0);
  let u = budget;
  for (let p = P - 1; p >= 0; p--) {
    const k = choice[p]![u]!;
    out[p] = from[p]! + k;
    u -= k * units[p]!;
  }
  return out;
}

/**
 * Grants each pool its spares within `cap` budget units: floors first (when even they do not fit,
 * the floors are what is shared), then the split of the rest that buys the most expected warm
 * requests. The split is exact (a knapsack) with spares counted in budget units; a budget of
 * many different sizes is counted in coarser units, rounded up so the split always fits, and
 * what rounding leaves over goes one spare at a time to the best value per unit.
 */
export function allocateBudget(requests: readonly AllocationRequest[], cap: number): Allocation[] {
  const total = requests.reduce((s, r) => s + r.wanted * r.cost, 0);
  if (total <= cap) return requests.map((r) => ({ source: r.source, wanted: r.wanted, granted: r.wanted, lastSpareValue: marginal(r, r.wanted), reason: 'within budget' }));

  const floorOf = (r: AllocationRequest) => Math.min(r.floor, r.wanted);
  const floors = requests.reduce((s, r) => s + floorOf(r) * r.cost, 0);
  const fitFloors = floors <= cap;
  const from = requests.map((r) => (fitFloors ? floorOf(r) : 0));
  const to = requests.map((r) => (fitFloors ? r.wanted : floorOf(r)));
  let left = fitFloors ? cap - floors : cap;

  const range = requests.reduce((s, _, i) => s + to[i]! - from[i]! + 1, 0);
  const smallest = Math.min(...requests.map((r) => r.cost));
  const unit = Math.max(smallest, left / Math.max(1, Math.floor(DP_WORK / range)));
  const units = requests.map((r) => Math.max(1, Math.ceil(r.cost / unit - 1e-9)));
  const granted = bestSplit(
    requests.map((r) => r.value),
    from,
    to,
    units,
    Math.floor(left / unit + 1e-9),
  );
  left -= requests.reduce((s, r, i) => s + (granted[i]! - from[i]!) * r.cost, 0);
  // What rounding left over: one spare at a time, best value per unit first.
  for (;;) {
    let pick = -1;
    let pickGain = 0;
    requests.forEach((r, i) => {
      if (granted[i]! >= to[i]! || r.cost > left + 1e-9) return;
      const gain = (r.value[granted[i]! + 1]! - r.value[granted[i]!]!) / r.cost;
      if (gain > pickGain) {
        pick = i;
        pickGain = gain;
      }
    });
    if (pick < 0) break;
    granted[pick]!++;
    left -= requests[pick]!.cost;
  }
  return requests.map((r, i) => {
    const g = granted[i]!;
    const noDemand = r.value.length > 0 && r.value[Math.min(r.wanted, r.value.length - 1)]! <= 0;
    const reason = g >= r.wanted ? 'within budget' : noDemand ? 'no demand' : g < floorOf(r) ? 'floor cut by budget' : 'cut by budget';
    return { source: r.source, wanted: r.wanted, granted: g, lastSpareValue: marginal(r, g), reason };
  });
}

/** Value of the s-th spare alone. */
function marginal(r: AllocationRequest, s: number): number {
  if (s <= 0 || s >= r.value.length) return 0;
  return Math.max(0, r.value[s]! - r.value[s - 1]!);
}
