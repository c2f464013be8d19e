import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import {
  errnoCode,
  isPrestageError,
  newId,
  parseSourceSpec,
  targetSpares,
  type Copy,
  type Image,
  type Progress,
  type Store,
  type VolumeDriver,
} from '../domain/index.js';
import { resolveSource } from './resolve-source.js';

export interface ReplenisherOptions {
  readonly store: Store;
  readonly driver: VolumeDriver;
  readonly logger: Logger;
  /** Copies made at once over all pools. Default 2. */
  readonly concurrency?: number;
  /** First pause after a failed copy before the pool tries again; doubles up to 60 s. Default 1000 ms. */
  readonly retryBaseMs?: number;
  /** Pool refills run at most this often during a stream of claims; on-demand copies never wait for it. Default 20 ms. */
  readonly tickIntervalMs?: number;
}

export type ReplenisherState = 'INITIALIZED' | 'RUNNING' | 'DRAINING' | 'STOPPED';

export interface InFlightCopy {
  readonly copyId: string;
  readonly imageId: string;
  readonly pool: string | null;
  readonly startedAt: number;
  progress: Progress;
}

interface Events {
  'copy-ready': [copy: Copy];
  'copy-failed': [imageId: string, error: unknown];
}

/**
 * Keeps each pool's ready spares at its target and makes on-demand copies for provisions
 * that found no spare. A claim pokes it at once; copies run at most `concurrency` at a time,
 * on-demand ones first, then the pool closest to running dry.
 */
export class Replenisher extends EventEmitter<Events> {
  private stateValue: ReplenisherState = 'INITIALIZED';
  private readonly inflight = new Map<string, InFlightCopy>();
  /** On-demand copies asked for but not started yet, per image. */
  private readonly urgent = new Map<string, { count: number; pool: string | null }>();
  private readonly backoff = new Map<string, { until: number; delayMs: number }>();
  private ticking = false;
  private again = false;
  private timer: NodeJS.Timeout | undefined;
  private lastTick = 0;
  private readonly concurrency: number;
  private readonly retryBaseMs: number;
  private readonly tickIntervalMs: number;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly opts: ReplenisherOptions) {
    super();
    this.concurrency = opts.concurrency ?? 2;
    this.retryBaseMs = opts.retryBaseMs ?? 1000;
    this.tickIntervalMs = opts.tickIntervalMs ?? 20;
  }

  get state(): ReplenisherState {
    return this.stateValue;
  }

  start(): void {
    if (this.stateValue !== 'INITIALIZED') return;
    this.stateValue = 'RUNNING';
    this.poke(true);
  }

  /** Asks for a pass over the pools: now when urgent, else within tickIntervalMs. */
  poke(urgent = false): void {
    if (this.stateValue !== 'RUNNING') return;
    if (this.ticking) {
      this.again = true;
      return;
    }
    const wait = urgent ? 0 : Math.max(0, this.lastTick + this.tickIntervalMs - Date.now());
    if (this.timer && !urgent) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.tick();
    }, wait);
  }

  /** A provision is waiting for a copy of this image and none is in flight for it. */
  requestCopy(imageId: string, pool: string | null): void {
    const u = this.urgent.get(imageId);
    this.urgent.set(imageId, { count: (u?.count ?? 0) + 1, pool: u?.pool ?? pool });
    this.poke(true);
  }

  /** Copies of this image being made or asked for on demand. */
  inFlight(imageId: string): number {
    let n = this.urgent.get(imageId)?.count ?? 0;
    for (const c of this.inflight.values()) if (c.imageId === imageId) n++;
    return n;
  }

  copiesInFlight(): readonly InFlightCopy[] {
    return [...this.inflight.values()];
  }

  /** Resolves when no copy is in flight and no pass is pending (tests and benchmarks wait on it). */
  whenIdle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Stops starting copies and waits for those in flight, at most `timeoutMs`. */
  async drain(timeoutMs: number): Promise<void> {
    if (this.stateValue === 'STOPPED') return;
    this.stateValue = 'DRAINING';
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.urgent.clear();
    if (this.inflight.size > 0) {
      let timeout: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => this.idleWaiters.push(resolve)),
        new Promise<void>((resolve) => (timeout = setTimeout(resolve, timeoutMs))),
      ]);
      clearTimeout(timeout);
    }
    this.stateValue = 'STOPPED';
    this.wakeIdle(true);
  }

  private isIdle(): boolean {
    return this.inflight.size === 0 && this.urgent.size === 0 && !this.ticking && this.timer === undefined && !this.again;
  }

  private wakeIdle(force = false): void {
    if (!force && !this.isIdle()) return;
    const w = this.idleWaiters;
    this.idleWaiters = [];
    for (const f of w) f();
  }

  private async tick(): Promise<void> {
    if (this.stateValue !== 'RUNNING') return;
    this.ticking = true;
    this.lastTick = Date.now();
    try {
      await this.startUrgent();
      await this.refillPools();
    } catch (e) {
      this.opts.logger.error({ err: e }, 'replenisher pass failed');
    } finally {
      this.ticking = false;
    }
    if (this.again) {
      this.again = false;
      this.poke();
    }
    this.wakeIdle();
  }

  private freeSlots(): number {
    return this.concurrency - this.inflight.size;
  }

  private async startUrgent(): Promise<void> {
    for (const [imageId, req] of this.urgent) {
      if (this.freeSlots() <= 0) return;
      const image = await this.opts.store.getImage(imageId);
      while (req.count > 0 && this.freeSlots() > 0) {
        req.count--;
        if (image) this.launch(image, req.pool);
      }
      if (req.count <= 0 || !image) this.urgent.delete(imageId);
      if (!image) this.emit('copy-failed', imageId, new Error(`image ${imageId} is gone`));
    }
  }

  private async refillPools(): Promise<void> {
    const { store } = this.opts;
    const wants: { source: string; image: Image; deficit: number; fill: number }[] = [];
    for (const pool of await store.listPools()) {
      const image = await resolveSource(store, parseSourceSpec(pool.source));
      await this.discardStale(pool.source, image?.id);
      if (!image || image.state !== 'ready') continue;
      const target = targetSpares(pool.policy);
      const counts = await store.countCopies(image.id, pool.source);
      if (counts.ready > pool.policy.max) await this.trim(pool.source, counts.ready - pool.policy.max);
      const deficit = target - counts.ready - counts.making;
      const b = this.backoff.get(pool.source);
      if (deficit <= 0 || (b && b.until > Date.now())) continue;
      wants.push({ source: pool.source, image, deficit, fill: target === 0 ? 1 : counts.ready / target });
    }
    // The pool closest to running dry goes first; then round-robin one copy at a time.
    wants.sort((a, b) => a.fill - b.fill);
    while (this.freeSlots() > 0 && wants.some((w) => w.deficit > 0)) {
      for (const w of wants) {
        if (w.deficit <= 0 || this.freeSlots() <= 0) continue;
        w.deficit--;
        this.launch(w.image, w.source);
      }
    }
  }

  /** Ready spares of a pool that no longer match its source (a newer version arrived) are removed. */
  private async discardStale(source: string, imageId: string | undefined): Promise<void> {
    const stale = await this.opts.store.listCopies({ state: 'ready', pool: source, notImageId: imageId ?? '' });
    for (const c of stale) await this.discard(c.id, source, 'stale');
  }

  /** A pool whose max was lowered gives back its newest spares above it. */
  private async trim(source: string, excess: number): Promise<void> {
    const spares = await this.opts.store.listCopies({ state: 'ready', pool: source });
    for (const c of spares.slice(-excess)) await this.discard(c.id, source, 'above max');
  }

  private async discard(copyId: string, pool: string, reason: string): Promise<void> {
    const { store, driver, logger } = this.opts;
    // The claim may take it first: only a spare still ready is discarded.
    if (!(await store.moveCopy(copyId, 'ready', 'releasing', {}, { type: 'copy.discarded', subject: copyId, data: { pool, reason } }))) return;
    await driver.removeCopy(copyId);
    await store.moveCopy(copyId, 'releasing', 'gone', {}, { type: 'copy.gone', subject: copyId, data: { reason } });
    logger.info({ copyId, pool, reason }, 'discarded a spare');
  }

  private launch(image: Image, pool: string | null): void {
    const id = newId('c');
    const entry: InFlightCopy = { copyId: id, imageId: image.id, pool, startedAt: Date.now(), progress: { doneBytes: 0, totalBytes: image.sizeBytes } };
    this.inflight.set(id, entry);
    void this.makeCopy(image, pool, entry).then((result) => {
      // Out of flight before anyone hears of it: listeners count what is still in flight.
      this.inflight.delete(id);
      if (result.ok) this.emit('copy-ready', result.copy);
      else this.emit('copy-failed', image.id, result.error);
      this.poke(true);
      this.wakeIdle();
    });
  }

  private async makeCopy(image: Image, pool: string | null, entry: InFlightCopy): Promise<{ ok: true; copy: Copy } | { ok: false; error: unknown }> {
    const { store, driver } = this.opts;
    const log = this.opts.logger.child({ copyId: entry.copyId, imageId: image.id, pool });
    const createdAt = new Date(entry.startedAt).toISOString();
    const copy: Copy = {
      id: entry.copyId,
      imageId: image.id,
      pool,
      state: 'making',
      volume: driver.copyVolumeFor(entry.copyId),
      method: null,
      hostId: null,
      error: null,
      createdAt,
      readyAt: null,
      copyMs: null,
    };
    try {
      await store.insertCopy(copy);
      const made = await driver.makeCopy(image, entry.copyId, (p) => (entry.progress = p));
      const readyAt = new Date().toISOString();
      const moved = await store.moveCopy(entry.copyId, 'making', 'ready', { method: made.method, readyAt, copyMs: Math.round(made.durationMs) }, {
        type: 'copy.ready',
        subject: entry.copyId,
        data: { imageId: image.id, pool, method: made.method, ms: Math.round(made.durationMs) },
      });
      if (!moved) throw new Error('copy row left the making state while it was being made');
      if (pool !== null) this.backoff.delete(pool);
      log.info({ method: made.method, ms: Math.round(made.durationMs) }, 'copy ready');
      return { ok: true, copy: { ...copy, state: 'ready', method: made.method, readyAt, copyMs: Math.round(made.durationMs) } };
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      log.warn({ err: e, code: isPrestageError(e) ? e.code : errnoCode(e) }, 'copy failed');
      await driver.removeCopy(entry.copyId).catch((err: unknown) => log.error({ err }, 'could not remove a failed copy'));
      await store
        .moveCopy(entry.copyId, 'making', 'failed', { error: message }, { type: 'copy.failed', subject: entry.copyId, data: { imageId: image.id, pool, error: message } })
        .catch((err: unknown) => log.error({ err }, 'could not record a failed copy'));
      if (pool !== null) {
        const prev = this.backoff.get(pool);
        const delayMs = Math.min(60_000, prev ? prev.delayMs * 2 : this.retryBaseMs);
        this.backoff.set(pool, { until: Date.now() + delayMs, delayMs });
        setTimeout(() => this.poke(), delayMs).unref();
      }
      return { ok: false, error: e };
    }
  }
}
