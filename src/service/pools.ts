import {
  InputError,
  NotFoundError,
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
  /** Expected share of requests served warm at the target; null with no demand seen. */
  readonly expectedFill: number | null;
  /** Warm requests per hour the last granted spare buys (what the budget compares); null without a budget. */
  readonly lastSpareHitsPerHour: number | null;
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
  /** `static` (default for a new pool) or `predictive`. */
  readonly policy?: 'static' | 'predictive';
  /** With `predictive`: the share of requests to serve warm, e.g. 0.999. */
  readonly fillRate?: number;
  /** Replaces the pool's pre-warm events (`COUNT@HH:MM[/DAYS]`, UTC). */
  readonly prewarm?: readonly string[];
}

const DEFAULT_FILL_RATE = 0.999;

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
    const kind = input.policy ?? (input.fillRate !== undefined ? 'predictive' : existing?.policy.kind ?? 'static');
    if (kind === 'static' && input.fillRate !== undefined) throw new InputError('a fill rate goes with the predictive policy only', { field: 'fillRate' });
    const min = input.min ?? existing?.policy.min ?? (kind === 'predictive' ? 0 : this.defaults.min);
    const max = input.max ?? existing?.policy.max ?? Math.max(kind === 'predictive' ? 100 : this.defaults.max, min);
    const policy: PoolPolicy =
      kind === 'predictive'
        ? predictivePolicy(input.fillRate ?? (existing?.policy.kind === 'predictive' ? existing.policy.fillRate : DEFAULT_FILL_RATE), min, max)
        : staticPolicy(min, max);
    // Checked here so a bad event is refused now, not skipped by every refill pass.
    for (const raw of input.prewarm ?? []) parsePrewarmEvent(`${normalized}:${raw}`, {}, 'prewarm');
    const pool = await this.store.upsertPool(normalized, policy, { type: 'pool.set', subject: normalized, data: { ...policy, ...(input.prewarm && { prewarm: input.prewarm }) } }, input.prewarm);
    this.replenisher.poke(true);
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
            expectedFill: plan.fill,
            lastSpareHitsPerHour: plan.lastSpareHitsPerHour,
            reason: shortage ? `${shortageText(shortage)}; ${plan.reason}` : plan.reason,
          }
        : null,
      shortage,
    };
  }
}
