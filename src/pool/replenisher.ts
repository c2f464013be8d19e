import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import {
  NoSpaceError,
  errnoCode,
  failpoint,
  formatBytes,
  isNoSpace,
  isPrestageError,
  newId,
  parseSourceSpec,
  type Copy,
  type CopyMethod,
  type Image,
  type Progress,
  type Store,
  type VolumeDriver,
} from '../domain/index.js';
import { resolveSource } from './resolve-source.js';
import { SpaceGate, type SpaceShortage, type SpaceVerdict } from './space.js';
import { PlanCache, advance, newForecast, reviveForecast, observe, parsePrewarmEvent, planPools, budgetCap, budgetUnits, type Budget, type ForecastState, type Plan, type PlanPoolInput, type PoolPlan, type PrewarmEvent } from './policy/index.js';

/** Before any copy was measured, a copy is assumed to take this long. */
const DEFAULT_LEAD_MS = 10_000;
/** Weight of the newest measurement in the copy-time averages. */
const LEAD_ALPHA = 0.3;

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
  /** Cap on the targets of all pools together (copies or bytes). Default none. */
  readonly budget?: Budget | null;
  /** Milliseconds since the epoch (tests move it). Default Date.now. Every time the replenisher reads or records (forecasts, back-off, tick spacing, copy times and timestamps) is this clock's. */
  readonly now?: () => number;
  /** Bytes kept free on the store besides what copies take. Default 1 % of the filesystem, at least 32 MiB or a tenth of it. */
  readonly spaceMarginBytes?: number;
  /** With several instances on one state: which pools this one refills. Default: every pool, no fence. */
  readonly leadership?: PoolLeadership;
  /** Told of every copy made ready here (metrics). Default: nobody. */
  readonly observer?: CopyObserver;
}

/** What a finished copy tells its observer. */
export interface CopyMade {
  /** The copy's volume locator: which driver holds it. */
  readonly volume: string;
  /** The driver's word for how it copied (`reflink`, `sparse-copy`, `clone`). */
  readonly method: CopyMethod;
  /** From the driver's start to a verified volume. */
  readonly durationMs: number;
  /** The image's size: the bytes the copy holds for its host. */
  readonly sizeBytes: number;
}

export interface CopyObserver {
  copyMade(copy: CopyMade): void;
}

/**
 * Which pools this instance refills (the cluster's leases). A spare is started only under the
 * pool's lease and carries its epoch, so that it is never marked ready once the lease moved on.
 */
export interface PoolLeadership {
  /** This instance: recorded as the maker of every copy. */
  readonly id: string;
  /** The lease epoch when this instance leads the pool now; undefined when another does (or nobody). */
  leaseFor(source: string): number | undefined;
  /** Takes the lease now if it is free and this instance is under its share. */
  tryLead(source: string): Promise<number | undefined>;
}

/** One pass's starts through the space gate: copies started and pools refused, by source. */
interface Gated {
  readonly started: Map<string, number>;
  readonly refused: Set<string>;
}

export type ReplenisherState = 'INITIALIZED' | 'RUNNING' | 'DRAINING' | 'STOPPED';

export interface InFlightCopy {
  readonly copyId: string;
  readonly imageId: string;
  readonly pool: string | null;
  readonly startedAt: number;
  /** Made for a provision that found no spare (it goes to that waiter), not to refill the pool. */
  readonly onDemand: boolean;
  progress: Progress;
}

interface Events {
  'copy-ready': [copy: Copy];
  'copy-failed': [imageId: string, error: unknown];
}

/**
 * Keeps each pool's ready spares at its target and makes on-demand copies for provisions
 * that found no spare. A claim pokes it at once; copies run at most `concurrency` at a time,
 * on-demand ones first, then the pool that would run dry soonest at its forecast demand.
 * Targets and order come from `planPools`, the same code the trace simulator runs.
 */
export class Replenisher extends EventEmitter<Events> {
  private stateValue: ReplenisherState = 'INITIALIZED';
  private readonly inflight = new Map<string, InFlightCopy>();
  /** On-demand copies asked for but not started yet, per image. */
  private readonly urgent = new Map<string, { count: number; pool: string | null }>();
  private readonly backoff = new Map<string, { until: number; delayMs: number }>();
  /** Provisions waiting for a copy, per image. */
  private readonly waiting = new Map<string, number>();
  private ticking = false;
  private again = false;
  private timer: NodeJS.Timeout | undefined;
  private lastTick = 0;
  private readonly concurrency: number;
  private readonly retryBaseMs: number;
  private readonly tickIntervalMs: number;
  private idleWaiters: (() => void)[] = [];
  /** Demand history per source, fed by every provision request. */
  private readonly forecasts = new Map<string, ForecastState>();
  /** The forecast bins last written to the store, per source. */
  private readonly savedBins = new Map<string, number>();
  /** Average copy time per image (ms), and per byte over every copy: the lead time of a refill. */
  private readonly copyMs = new Map<string, number>();
  private msPerByte: number | undefined;
  private readonly planCache = new PlanCache();
  private lastPlan: Plan | undefined;
  /** Refill passes started so far; a waiter of nextPlan() wants a plan from a pass after its call. */
  private passes = 0;
  private planWaiters: { after: number; done: () => void }[] = [];
  private readonly now: () => number;
  /** Bytes reserved by copies in flight, and the sources short of space. */
  private readonly space: SpaceGate;

  constructor(private readonly opts: ReplenisherOptions) {
    super();
    this.concurrency = opts.concurrency ?? 2;
    this.retryBaseMs = opts.retryBaseMs ?? 1000;
    this.tickIntervalMs = opts.tickIntervalMs ?? 20;
    this.now = opts.now ?? Date.now;
    const { store, driver, logger, spaceMarginBytes } = opts;
    this.space = new SpaceGate({ store, driver, logger, onRoom: () => this.poke(true), ...(spaceMarginBytes !== undefined && { marginBytes: spaceMarginBytes }) });
  }

  /** The pool (or source asked for on demand) is short of space: a copy it needs does not fit. */
  shortageOf(source: string): SpaceShortage | null {
    return this.space.shortageOf(source);
  }

  shortages(): readonly (SpaceShortage & { readonly source: string })[] {
    return this.space.shortages();
  }

  /** Reads the demand history kept by the last run, so forecasts survive a restart. */
  async loadDemand(): Promise<void> {
    for (const [source, text] of await this.opts.store.loadPoolForecasts()) {
      try {
        const state = reviveForecast(JSON.parse(text));
        this.forecasts.set(source, state);
        this.savedBins.set(source, state.bins);
      } catch (err) {
        this.opts.logger.warn({ err, source }, 'demand history unreadable; starting it afresh');
      }
    }
  }

  /** One provision request for `source` (warm or not): what predictive pools learn from. */
  recordDemand(source: string): void {
    observe(this.forecast(source), this.now() / 1000, 1);
  }

  /**
   * Resolves once a refill pass that started after this call has planned (so a pool just set is
   * in it), or after `timeoutMs` (a stopped replenisher plans no more). Pokes the replenisher.
   */
  nextPlan(timeoutMs = 5_000): Promise<void> {
    if (this.stateValue !== 'RUNNING') return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, timeoutMs);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.planWaiters.push({ after: this.passes, done });
      this.poke(true);
    });
  }

  /** The last plan of a pool: its target, forecast, lead time and why. */
  planFor(source: string): PoolPlan | undefined {
    return this.lastPlan?.pools.find((p) => p.source === source);
  }

  private forecast(source: string): ForecastState {
    let f = this.forecasts.get(source);
    // Requests of one source within a second are one batch: a boot storm is not many independent arrivals.
    if (!f) this.forecasts.set(source, (f = newForecast({ coalesceS: 1 })));
    return f;
  }

  /** Seconds one copy of the image takes, as measured here (by image, else by size). */
  private leadTimeS(image: Image): number {
    const ms = this.copyMs.get(image.id) ?? (this.msPerByte === undefined ? DEFAULT_LEAD_MS : this.msPerByte * image.sizeBytes);
    return Math.max(0.001, ms / 1000);
  }

  private measureCopy(image: Image, ms: number): void {
    const prev = this.copyMs.get(image.id);
    this.copyMs.set(image.id, prev === undefined ? ms : prev + LEAD_ALPHA * (ms - prev));
    if (image.sizeBytes > 0) {
      const perByte = ms / image.sizeBytes;
      this.msPerByte = this.msPerByte === undefined ? perByte : this.msPerByte + LEAD_ALPHA * (perByte - this.msPerByte);
    }
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
    // Within [0, tickIntervalMs] whatever the clock does (a test's clock may stand still or jump).
    const wait = urgent ? 0 : Math.min(this.tickIntervalMs, Math.max(0, this.lastTick + this.tickIntervalMs - this.now()));
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

  /** Provisions of this image waiting for a copy now (the provisioning service keeps it current). */
  setWaiting(imageId: string, count: number): void {
    if (count > 0) this.waiting.set(imageId, count);
    else this.waiting.delete(imageId);
  }

  /** Copies of this image being made or asked for on demand. */
  inFlight(imageId: string): number {
    let n = this.urgent.get(imageId)?.count ?? 0;
    for (const c of this.inflight.values()) if (c.imageId === imageId) n++;
    return n;
  }

  private copiesMaking(imageId: string, pool: string): number {
    let n = 0;
    for (const c of this.inflight.values()) if (c.imageId === imageId && c.pool === pool) n++;
    return n;
  }

  /** Whether spares of the pool are being made here (its lease is then kept, not handed back). */
  makingFor(source: string): boolean {
    for (const c of this.inflight.values()) if (c.pool === source && !c.onDemand) return true;
    return false;
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
    this.space.stop();
    this.urgent.clear();
    if (this.inflight.size > 0) {
      let timeout: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => this.idleWaiters.push(resolve)),
        new Promise<void>((resolve) => (timeout = setTimeout(resolve, timeoutMs))),
      ]);
      clearTimeout(timeout);
    }
    await this.saveDemand(true).catch((err: unknown) => this.opts.logger.warn({ err }, 'demand history not saved'));
    this.stateValue = 'STOPPED';
    this.wakeIdle(true);
  }

  /** Writes the forecasts whose bins moved on (or all of them). */
  private async saveDemand(all = false): Promise<void> {
    for (const [source, f] of this.forecasts) {
      if (!all && this.savedBins.get(source) === f.bins) continue;
      await this.opts.store.savePoolForecast(source, JSON.stringify(f));
      this.savedBins.set(source, f.bins);
    }
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
    this.lastTick = this.now();
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

  /**
   * Whether one more on-demand copy of `image` for `pool` keeps within the bounds: copies being
   * made for the pool at most its max, and all copies being made within the budget. One copy may
   * always run, so a waiting provision is never starved; the others start as copies finish.
   */
  private async urgentFits(image: Image, pool: string | null): Promise<boolean> {
    if (this.inflight.size === 0) return true;
    const record = pool === null ? undefined : await this.opts.store.getPool(pool);
    if (record !== undefined && pool !== null && this.copiesMaking(image.id, pool) >= Math.max(1, record.policy.max)) return false;
    const budget = this.opts.budget ?? null;
    let units = budgetUnits(budget, image.sizeBytes);
    for (const c of this.inflight.values()) units += budgetUnits(budget, c.progress.totalBytes);
    return units <= budgetCap(budget);
  }

  private async startUrgent(): Promise<void> {
    for (const [imageId, req] of this.urgent) {
      if (this.freeSlots() <= 0) return;
      const image = await this.opts.store.getImage(imageId);
      let refused: SpaceVerdict | undefined;
      while (req.count > 0 && this.freeSlots() > 0 && (!image || (await this.urgentFits(image, req.pool)))) {
        if (image) {
          const v = await this.startCopy(image, req.pool, true);
          // Room held by copies in flight comes back when they finish; no room at all fails the waiters now.
          if (!v.ok) {
            if (v.short) {
              refused = v;
              req.count = 0;
            }
            break;
          }
        }
        req.count--;
      }
      if (req.count <= 0 || !image) this.urgent.delete(imageId);
      if (!image) this.emit('copy-failed', imageId, new Error(`image ${imageId} is gone`));
      if (image && refused && !refused.ok) {
        const ref = `${image.name}@${image.version}`;
        const message = `no room for a copy of ${ref}: it needs ${formatBytes(refused.neededBytes)}, ${formatBytes(refused.freeBytes)} are free`;
        this.emit('copy-failed', imageId, new NoSpaceError(message, { image: ref, neededBytes: refused.neededBytes, freeBytes: refused.freeBytes }));
      }
    }
  }

  private async refillPools(): Promise<void> {
    const pass = ++this.passes;
    const { store, logger } = this.opts;
    const nowS = this.now() / 1000;
    const inputs: PlanPoolInput[] = [];
    const images = new Map<string, Image>();
    const schedule: PrewarmEvent[] = [];
    const lead = this.opts.leadership;
    for (const pool of await store.listPools()) {
      // Another instance refills it (or nobody yet, and this one is at its share).
      if (lead && (lead.leaseFor(pool.source) ?? (await lead.tryLead(pool.source))) === undefined) continue;
      const image = await resolveSource(store, parseSourceSpec(pool.source));
      await this.discardStale(pool.source, image?.id);
      if (!image || image.state !== 'ready') continue;
      const counts = await store.countCopies(image.id, pool.source);
      for (const raw of pool.prewarm) {
        try {
          schedule.push(parsePrewarmEvent(`${pool.source}:${raw}`));
        } catch (err) {
          logger.warn({ err, pool: pool.source, prewarm: raw }, 'a pre-warm event cannot be read; ignored');
        }
      }
      const forecast = this.forecast(pool.source);
      advance(forecast, nowS);
      const queued = this.urgent.get(image.id)?.count ?? 0;
      images.set(pool.source, image);
      inputs.push({
        source: pool.source,
        policy: pool.policy,
        ready: counts.ready,
        // Counted in memory, not from the store's making rows: a copy just launched has no row yet.
        inFlight: this.copiesMaking(image.id, pool.source) + queued,
        // Copies on their way to a waiting provision are not spares.
        waiting: this.waiting.get(image.id) ?? 0,
        sizeBytes: image.sizeBytes,
        forecast,
        leadTimeS: this.leadTimeS(image),
      });
    }
    const options = {
      budget: this.opts.budget ?? null,
      schedule,
      concurrency: this.concurrency,
      cache: this.planCache,
      explain: true,
      previous: this.lastPlan ?? null,
    };
    const backedOff = new Set(inputs.filter((i) => (this.backoff.get(i.source)?.until ?? 0) > this.now()).map((i) => i.source));
    let plan = planPools(nowS, inputs, { ...options, freeSlots: Math.max(0, this.freeSlots()), blocked: backedOff });
    for (const t of plan.trims) await this.trim(t.source, t.copies);
    const gated: Gated = { started: new Map(), refused: new Set() };
    await this.startPlanned(plan, images, gated);
    /** Copies started since `plan` was made (what its `lacking` does not know of yet). */
    let sincePlan = gated.started;
    if (gated.refused.size > 0 && this.freeSlots() > 0) {
      // Slots a pool short of space could not use go to the others, in the planner's order and
      // within its bounds: the same plan again, counting what just started, without the short pools.
      const moved = inputs.map((i) => ({ ...i, inFlight: i.inFlight + (gated.started.get(i.source) ?? 0), ready: i.ready - (plan.pools.find((p) => p.source === i.source)?.trim ?? 0) }));
      plan = planPools(nowS, moved, { ...options, freeSlots: Math.max(0, this.freeSlots()), blocked: new Set([...backedOff, ...gated.refused]) });
      const again: Gated = { started: new Map(), refused: gated.refused };
      await this.startPlanned(plan, images, again);
      sincePlan = again.started;
    }
    this.lastPlan = plan;
    const waiting = this.planWaiters;
    this.planWaiters = waiting.filter((w) => w.after >= pass);
    for (const w of waiting) if (w.after < pass) w.done();
    // The shortages that are over end: a pool that lacks nothing (or whose lack now fits) is not short.
    const lacking = new Map(plan.pools.map((p) => [p.source, p.lacking - (sincePlan.get(p.source) ?? 0)]));
    await this.space.settle((source) => lacking.get(source));
    await this.saveDemand();
  }

  private async startPlanned(plan: Plan, images: ReadonlyMap<string, Image>, gated: Gated): Promise<void> {
    for (const start of plan.starts) {
      const image = images.get(start.source);
      if (!image) continue;
      for (let i = 0; i < start.copies && this.freeSlots() > 0; i++) if (!(await this.startSpare(image, start.source, gated))) break;
    }
  }

  /** Starts one spare of a pool if the store has room for it; counts what was started and refused. */
  private async startSpare(image: Image, source: string, gated: Gated): Promise<boolean> {
    const v = await this.startCopy(image, source, false);
    if (!v.ok) gated.refused.add(source);
    else gated.started.set(source, (gated.started.get(source) ?? 0) + 1);
    return v.ok;
  }

  /** Starts a copy if the store has room for it: its bytes are reserved first, released when it ends. */
  private async startCopy(image: Image, pool: string | null, onDemand: boolean): Promise<SpaceVerdict> {
    const id = newId('c');
    // A spare carries its pool's lease epoch (the fence); an on-demand copy goes to a waiter here, under no lease.
    const fence = onDemand || pool === null || !this.opts.leadership ? null : this.opts.leadership.leaseFor(pool);
    if (fence === undefined) return { ok: false, short: false, neededBytes: 0, freeBytes: 0 };
    const v = await this.space.reserve(id, image, spaceSource(image, pool), onDemand);
    if (!v.ok) return v;
    if (this.stateValue !== 'RUNNING') {
      this.space.release(id);
      return { ok: false, short: false, neededBytes: 0, freeBytes: 0 };
    }
    this.launch(image, pool, onDemand, id, fence);
    return v;
  }

  /** Ready spares of a pool that no longer match its source (a newer version arrived) are removed. */
  private async discardStale(source: string, imageId: string | undefined): Promise<void> {
    const stale = await this.opts.store.listCopies({ state: 'ready', pool: source, notImageId: imageId ?? '' });
    for (const c of stale) await this.discard(c.id, source, 'stale');
  }

  /** Spares above a lowered target go, oldest first (a claim may take one first: then fewer go). */
  private async trim(source: string, excess: number): Promise<void> {
    const spares = await this.opts.store.listCopies({ state: 'ready', pool: source });
    spares.sort((a, b) => (a.readyAt ?? a.createdAt).localeCompare(b.readyAt ?? b.createdAt));
    for (const c of spares.slice(0, excess)) await this.discard(c.id, source, 'above target');
  }

  private async discard(copyId: string, pool: string, reason: string): Promise<void> {
    const { store, driver, logger } = this.opts;
    // The claim may take it first: only a spare still ready is discarded.
    if (!(await store.moveCopy(copyId, 'ready', 'releasing', {}, { type: 'copy.discarded', subject: copyId, data: { pool, reason } }))) return;
    failpoint('rollover.after-discard');
    await driver.removeCopy(copyId);
    await store.moveCopy(copyId, 'releasing', 'gone', {}, { type: 'copy.gone', subject: copyId, data: { reason } });
    logger.info({ copyId, pool, reason }, 'discarded a spare');
  }

  /** Starts a copy whose bytes `startCopy` reserved under `id`. */
  private launch(image: Image, pool: string | null, onDemand: boolean, id: string, fence: number | null): void {
    const entry: InFlightCopy = { copyId: id, imageId: image.id, pool, startedAt: this.now(), onDemand, progress: { doneBytes: 0, totalBytes: image.sizeBytes } };
    this.inflight.set(id, entry);
    void this.makeCopy(image, pool, entry, fence).then((result) => {
      // Out of flight before anyone hears of it: listeners count what is still in flight.
      this.inflight.delete(id);
      this.space.release(id);
      if (result.ok) this.emit('copy-ready', result.copy);
      else this.emit('copy-failed', image.id, result.error);
      this.poke(true);
      this.wakeIdle();
    });
  }

  private async makeCopy(image: Image, pool: string | null, entry: InFlightCopy, fence: number | null): Promise<{ ok: true; copy: Copy } | { ok: false; error: unknown }> {
    const { store, driver } = this.opts;
    const log = this.opts.logger.child({ copyId: entry.copyId, imageId: image.id, pool });
    const createdAt = new Date(entry.startedAt).toISOString();
    const copy: Copy = {
      id: entry.copyId,
      imageId: image.id,
      pool,
      state: 'making',
      volume: driver.copyVolumeFor(entry.copyId, image),
      method: null,
      hostId: null,
      error: null,
      createdAt,
      readyAt: null,
      copyMs: null,
      owner: this.opts.leadership?.id ?? null,
      fence,
    };
    try {
      await store.insertCopy(copy);
      failpoint('copy.after-insert');
      const made = await driver.makeCopy(image, entry.copyId, (p) => (entry.progress = p));
      failpoint('copy.before-ready');
      const readyAt = new Date(this.now()).toISOString();
      const moved = await store.moveCopy(entry.copyId, 'making', 'ready', { method: made.method, readyAt, copyMs: Math.round(made.durationMs) }, {
        type: 'copy.ready',
        subject: entry.copyId,
        data: { imageId: image.id, pool, method: made.method, ms: Math.round(made.durationMs) },
      });
      if (!moved) throw new Error(fence === null ? 'copy row left the making state while it was being made' : `the pool's lease moved on while the copy was made (epoch ${fence}): another instance refills it now`);
      if (pool !== null) this.backoff.delete(pool);
      this.measureCopy(image, this.now() - entry.startedAt);
      this.opts.observer?.copyMade({ volume: copy.volume, method: made.method, durationMs: made.durationMs, sizeBytes: image.sizeBytes });
      log.info({ method: made.method, ms: Math.round(made.durationMs) }, 'copy ready');
      return { ok: true, copy: { ...copy, state: 'ready', method: made.method, readyAt, copyMs: Math.round(made.durationMs) } };
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      log.warn({ err: e, code: isPrestageError(e) ? e.code : errnoCode(e) }, 'copy failed');
      const landed = await this.settleFailedCopy(image, pool, entry.copyId, message, log);
      if (landed) {
        if (pool !== null) this.backoff.delete(pool);
        log.info('copy ready (its state change committed although the reply was lost)');
        return { ok: true, copy: landed };
      }
      this.space.release(entry.copyId);
      if (isNoSpace(e)) {
        // Not a back-off: the pool is short of space and tries again as soon as space is freed.
        await this.space.ranOut(image, spaceSource(image, pool), entry.onDemand).catch((err: unknown) => log.error({ err }, 'free space unreadable'));
      } else if (pool !== null) {
        const prev = this.backoff.get(pool);
        const delayMs = Math.min(60_000, prev ? prev.delayMs * 2 : this.retryBaseMs);
        this.backoff.set(pool, { until: this.now() + delayMs, delayMs });
        setTimeout(() => this.poke(), delayMs).unref();
      }
      return { ok: false, error: e };
    }
  }
  /**
   * Records a copy as failed and only then removes its volume, so that a row is never left
   * ready or mapped without its bytes. When the store cannot be reached (a commit whose reply
   * was lost may have landed) it asks again until it can, and then goes by what the row says:
   * still making → failed here and removed; ready → the copy did land and is returned; anything
   * else → another instance (the one that reaped this one) owns the row and its volume.
   */
  private async settleFailedCopy(image: Image, pool: string | null, copyId: string, message: string, log: Logger): Promise<Copy | null> {
    const { store, driver } = this.opts;
    for (let delayMs = 100; ; delayMs = Math.min(5000, delayMs * 2)) {
      try {
        const failed = await store.moveCopy(copyId, 'making', 'failed', { error: message }, { type: 'copy.failed', subject: copyId, data: { imageId: image.id, pool, error: message } });
        if (failed) {
          await driver.removeCopy(copyId).catch((err: unknown) => log.error({ err }, 'could not remove a failed copy'));
          return null;
        }
        const row = await store.getCopy(copyId);
        return row?.state === 'ready' ? row : null;
      } catch (err) {
        if (this.stateValue === 'STOPPED') {
          log.error({ err }, 'could not record a failed copy before stopping; reconcile on the next start removes it');
          return null;
        }
        log.warn({ err, retryInMs: delayMs }, 'could not record a failed copy; asking again');
        await new Promise((r) => setTimeout(r, delayMs));
      }
    }
  }
}

/** What the space gate files a copy's shortage under: its pool, or the image for an on-demand copy without one. */
function spaceSource(image: Image, pool: string | null): string {
  return pool ?? `${image.name}@${image.version}`;
}
