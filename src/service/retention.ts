import type { Logger } from 'pino';
import type { Store } from '../domain/index.js';

export interface RetentionOptions {
  readonly store: Store;
  /** Events older than this, and copies gone for longer, are deleted. */
  readonly retentionMs: number;
  readonly logger: Logger;
  /** Between runs after the first. Default 1 h. */
  readonly everyMs?: number;
  readonly now?: () => number;
}

/**
 * Keeps the event log and the table of copies from growing forever: prunes once at start, then
 * on a timer. A failed run is logged and tried again at the next tick; it never stops the service.
 */
export class Retention {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;
  private stopped = false;

  constructor(private readonly o: RetentionOptions) {}

  /** Runs once (awaited, so a start leaves a pruned store), then every `everyMs`. */
  async start(): Promise<void> {
    await this.runOnce();
    if (this.stopped) return;
    this.timer = setInterval(() => void this.runOnce(), this.o.everyMs ?? 3_600_000);
    // The process stays up for its servers, not for this timer.
    this.timer.unref();
  }

  /** One prune; undefined when it failed (logged) or another run was still going. */
  async runOnce(): Promise<{ events: number; copies: number } | undefined> {
    if (this.running || this.stopped) return undefined;
    const cutoff = new Date((this.o.now ?? Date.now)() - this.o.retentionMs);
    const run = this.o.store.prune({ eventsBefore: cutoff, copiesGoneBefore: cutoff }).then(
      (pruned) => {
        if (pruned.events > 0 || pruned.copies > 0) this.o.logger.info({ ...pruned, before: cutoff.toISOString() }, 'pruned old events and gone copies');
        return pruned;
      },
      (err: unknown) => {
        this.o.logger.error({ err }, 'retention prune failed; trying again at the next run');
        return undefined;
      },
    );
    this.running = run;
    try {
      return await run;
    } finally {
      this.running = undefined;
    }
  }

  /** Stops the timer and waits for a run in flight, so the store can close after it. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }
}
