import type { Copy, CopyState, Store } from '../domain/index.js';
import type { Replenisher } from '../pool/index.js';

export type CopyView = Copy & { readonly progress?: { readonly doneBytes: number; readonly totalBytes: number } };

/** Copies as operators look at them: gone ones only when asked for, copies in flight with their progress. */
export class CopyService {
  constructor(
    private readonly store: Store,
    private readonly replenisher: Replenisher,
  ) {}

  async list(state?: CopyState): Promise<CopyView[]> {
    const progress = new Map(this.replenisher.copiesInFlight().map((c) => [c.copyId, c.progress]));
    const rows = await this.store.listCopies(state ? { state } : {});
    return rows.filter((c) => state !== undefined || c.state !== 'gone').map((c) => ({ ...c, ...(progress.has(c.id) && { progress: progress.get(c.id)! }) }));
  }
}
