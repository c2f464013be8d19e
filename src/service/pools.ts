import {
  InputError,
  NotFoundError,
  costPolicy,
  formatSourceSpec,
  parseSourceSpec,
  predictivePolicy,
  staticPolicy,
  targetSpares,
  type Pool,
  type PoolPolicy,
  type Store,
} from '../domain/index.js';
import { parsePrewarmEvent, resolveSource, shortageText, type Replenisher, type SpaceShortage } from '../pool/index.js';

/** Why the pool holds what it holds: the replenisher's last plan of it. */
export interface PoolPlanView {
  /** Requests per hour expected over the next lead time. */
  readonly requestsPerHour: number;
  readonly meanBatch: number;
  /** Seconds one copy takes here, as measured. */
  readonly leadTimeS: number;
  /** Spares the policy and pre-warm events ask for, before the budget. */
  readonly wanted: number;
  /** What the budget grants of `wanted`; the target stays above it only while a lowered target falls. */
  readonly granted: number;
  /** Most requests seen within about one lead time: the most a demand-sized pool asks for; null for a static pool. */
  readonly historyCap: number | null;
  /** Expected share of requests served warm at the target; null with no demand seen. */
  readonly expectedFill: number | null;
  /** Warm requests per hour the last spare of the target buys (what the budget compares between pools); null when not worked out. */
  readonly lastSpareHitsPerHour: number | null;
  /** The same per GiB of the copy (what a budget in bytes compares); null when not worked out. */
  readonly lastSpareHitsPerHourPerGiB: number | null;
  readonly reason: string;
}

export interface PoolView extends Pool {
  /** The image version the pool copies now, if any. */
  readonly image: string | null;
  readonly target: number;
  readonly ready: number;
  readonly making: number;
  readonly mapped: number;
  readonly plan: PoolPlanView | null;
  /** Why the pool cannot reach its target now; null when nothing stops it. */
  readonly shortage: SpaceShortage | null;
}

export interface PoolInput {
  readonly min?: number;
  readonly max?: number;
  /** `static` (default for a new pool), `predictive` or `cost`. */
  readonly policy?: PoolPolicy['kind'];
  /** With `predictive`: the share of requests to serve warm, e.g. 0.999. */
  readonly fillRate?: number;
  /** With `cost`: a cold wait costs as much as holding one spare this many hours, e.g. 2. */
  readonly missCost?: number;
  /** Replaces the pool's pre-warm events (`COUNT@HH:MM[/DAYS]`, UTC). */
  readonly prewarm?: readonly string[];
}

const DEFAULT_FILL_RATE = 0.999;

/**
 * The miss cost of a cost pool: given, or kept from the pool's cost policy. No default: what a
 * cold wait costs against storage is the operator's call, and a guess would size every pool.
 */
function missCostOf(input: PoolInput, existing: PoolPolicy | undefined): number {
  if (input.missCost !== undefined) return input.missCost;
  if (existing?.kind === 'cost') return existing.missCostSpareHours;
  throw new InputError('the cost policy needs a miss cost: how many hours of holding one spare a cold wait costs, e.g. missCost 2', { field: 'missCost' });
}

export class PoolService {
  constructor(
    private readonly store: Store,
    private readonly replenisher: Replenisher,
    private readonly defaults: { readonly min: number; readonly max: number },
  ) {}

  async set(source: string, input: PoolInput): Promise<PoolView> {
    const spec = parseSourceSpec(source);
    const normalized = formatSourceSpec(spec);
    if (!(await resolveSource(this.store, spec))) throw new NotFoundError('image', normalized);
    const existing = await this.store.getPool(normalized);
    if (input.fillRate !== undefined && input.missCost !== undefined) {
      throw new InputError('give a fill rate (predictive policy) or a miss cost (cost policy), not both', { field: 'missCost' });
    }
    const kind = input.policy ?? (input.fillRate !== undefined ? 'predictive' : input.missCost !== undefined ? 'cost' : existing?.policy.kind ?? 'static');
    if (kind !== 'predictive' && input.fillRate !== undefined) throw new InputError('a fill rate goes with the predictive policy only', { field: 'fillRate' });
    if (kind !== 'cost' && input.missCost !== undefined) throw new InputError('a miss cost goes with the cost policy only', { field: 'missCost' });
    // Demand-sized pools start from nothing and may grow to 100; a static one gets the server's defaults.
    const sized = kind !== 'static';
    const min = input.min ?? existing?.policy.min ?? (sized ? 0 : this.defaults.min);
    const max = input.max ?? existing?.policy.max ?? Math.max(sized ? 100 : this.defaults.max, min);
    const policy: PoolPolicy =
      kind === 'predictive'
        ? predictivePolicy(input.fillRate ?? (existing?.policy.kind === 'predictive' ? existing.policy.fillRate : DEFAULT_FILL_RATE), min, max)
        : kind === 'cost'
          ? costPolicy(missCostOf(input, existing?.policy), min, max)
          : staticPolicy(min, max);
    // Checked here so a bad event is refused now, not skipped by every refill pass.
    for (const raw of input.prewarm ?? []) {
      const event = parsePrewarmEvent(`${normalized}:${raw}`, {}, 'prewarm');
      // An event asks for spares the pool will hold: more than its max could never be met.
      if (event.count > policy.max) throw new InputError(`prewarm: '${raw}' asks for ${event.count} spares, more than the pool's max of ${policy.max}`, { field: 'prewarm' });
    }
    const pool = await this.store.upsertPool(normalized, policy, { type: 'pool.set', subject: normalized, data: { ...policy, ...(input.prewarm && { prewarm: input.prewarm }) } }, input.prewarm);
    // The reply shows the target the new settings give, not the one planned before them.
    await this.replenisher.nextPlan();
    return this.view(pool);
  }

  async list(): Promise<PoolView[]> {
    return Promise.all((await this.store.listPools()).map((p) => this.view(p)));
  }

  async get(source: string): Promise<PoolView> {
    const normalized = formatSourceSpec(parseSourceSpec(source));
    const pool = await this.store.getPool(normalized);
    if (!pool) throw new NotFoundError('pool', normalized);
    return this.view(pool);
  }

  async remove(source: string): Promise<void> {
    const normalized = formatSourceSpec(parseSourceSpec(source));
    await this.store.deletePool(normalized, { type: 'pool.removed', subject: normalized });
    this.replenisher.poke(true);
  }

  private async view(pool: Pool): Promise<PoolView> {
    const image = await resolveSource(this.store, parseSourceSpec(pool.source));
    const counts = image ? await this.store.countCopies(image.id, pool.source) : { ready: 0, making: 0, mapped: 0 };
    const plan = this.replenisher.planFor(pool.source);
    const shortage = this.replenisher.shortageOf(pool.source);
    return {
      ...pool,
      image: image ? `${image.name}@${image.version}` : null,
      target: plan?.target ?? targetSpares(pool.policy),
      ...counts,
      plan: plan
        ? {
            requestsPerHour: plan.requestsPerS * 3600,
            meanBatch: plan.meanBatch,
            leadTimeS: plan.leadTimeS,
            wanted: plan.wanted,
            granted: plan.granted,
            historyCap: plan.historyCap,
            expectedFill: plan.fill,
            lastSpareHitsPerHour: plan.lastSpareHitsPerHour,
            lastSpareHitsPerHourPerGiB: plan.lastSpareHitsPerHourPerGiB,
            reason: shortage ? `${shortageText(shortage)}; ${plan.reason}` : plan.reason,
          }
        : null,
      shortage,
    };
  }
}
