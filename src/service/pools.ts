import {
  NotFoundError,
  formatSourceSpec,
  parseSourceSpec,
  staticPolicy,
  targetSpares,
  type Pool,
  type Store,
} from '../domain/index.js';
import { resolveSource, type Replenisher } from '../pool/index.js';

export interface PoolView extends Pool {
  /** The image version the pool copies now, if any. */
  readonly image: string | null;
  readonly target: number;
  readonly ready: number;
  readonly making: number;
  readonly mapped: number;
}

export class PoolService {
  constructor(
    private readonly store: Store,
    private readonly replenisher: Replenisher,
    private readonly defaults: { readonly min: number; readonly max: number },
  ) {}

  async set(source: string, input: { min?: number; max?: number }): Promise<PoolView> {
    const spec = parseSourceSpec(source);
    const normalized = formatSourceSpec(spec);
    if (!(await resolveSource(this.store, spec))) throw new NotFoundError('image', normalized);
    const existing = await this.store.getPool(normalized);
    const min = input.min ?? existing?.policy.min ?? this.defaults.min;
    const max = input.max ?? existing?.policy.max ?? Math.max(this.defaults.max, min);
    const policy = staticPolicy(min, max);
    const pool = await this.store.upsertPool(normalized, policy, { type: 'pool.set', subject: normalized, data: { min, max } });
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
    return { ...pool, image: image ? `${image.name}@${image.version}` : null, target: targetSpares(pool.policy), ...counts };
  }
}
