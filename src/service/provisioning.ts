import type { Logger } from 'pino';
import {
  ConflictError,
  InputError,
  NotFoundError,
  UnavailableError,
  failpoint,
  formatSourceSpec,
  isPrestageError,
  parseSourceSpec,
  renderPerHost,
  type Access,
  type Copy,
  type ExportedCopy,
  type Exporter,
  type Host,
  type Image,
  type Mapping,
  type ProvisionOutcome,
  type Store,
  type VolumeDriver,
} from '../domain/index.js';
import type { Replenisher } from '../pool/index.js';

export interface ProvisionResult {
  readonly hostId: string;
  readonly source: string;
  readonly image: string;
  readonly copyId: string;
  readonly access: Access;
  readonly outcome: ProvisionOutcome;
  /** True when the host had this mapping already and nothing was claimed. */
  readonly existing: boolean;
  readonly waitMs: number;
}

interface Waiter {
  readonly hostId: string;
  readonly source: string;
  readonly image: Image;
  readonly startedAt: number;
  resolve(r: { copy: Copy; mapping: Mapping }): void;
  reject(e: unknown): void;
}

/**
 * Told how each provision ended (metrics): one that claimed a copy, with its outcome, or one that
 * was asked for an existing source and got none (`failed`: no copy came, the export failed, the
 * server stopped). Requests refused before that (an unknown host or image) and a host asking
 * again for the copy it has are not provisions. Called on the request path: keep it cheap.
 */
export interface ProvisionObserver {
  provisioned(source: string, outcome: ProvisionOutcome | 'failed', seconds: number): void;
}

export interface ProvisioningOptions {
  readonly store: Store;
  readonly driver: VolumeDriver;
  readonly exporter: Exporter;
  readonly replenisher: Replenisher;
  readonly logger: Logger;
  /** How long a provision may wait for a copy before it gives up. Default 30 minutes. */
  readonly waitTimeoutMs?: number;
  /** Default: nobody is told. */
  readonly observer?: ProvisionObserver;
}

/** What a provision gets once `stop` was called: refused, or its wait for a copy ended. */
function stoppingError(hostId: string, source: string): UnavailableError {
  return new UnavailableError(`the server is stopping: host '${hostId}' was not provisioned from ${source}; provision it again once the server is back`, { hostId, source });
}

/**
 * Provision and release. A provision claims a ready spare in one transaction; with none
 * ready it waits for a copy in flight (joined) or for one made on its demand (cold). Copies
 * that come ready go to waiters first come, first served. `stop` ends every wait.
 */
/** How often waiters' supply of copies is checked (see `supplyCheck`). */
const SUPPLY_CHECK_MS = 1000;

export class ProvisioningService {
  private readonly waiters = new Map<string, Waiter[]>();
  /** A host asking twice while its first request waits gets the same answer. */
  private readonly pending = new Map<string, { source: string; result: Promise<ProvisionResult> }>();
  /** Hand-offs of a ready copy to a waiter under way (a claim in the store): `stop` lets them finish. */
  private readonly handingOff = new Set<Promise<void>>();
  private stopped = false;
  private readonly onCopyReady = (copy: Copy): void => {
    const done = this.handOff(copy)
      .catch((err: unknown) => this.o.logger.error({ err, copyId: copy.id }, 'hand-off of a ready copy failed'))
      .finally(() => this.handingOff.delete(done));
    this.handingOff.add(done);
  };
  private readonly onCopyFailed = (imageId: string, error: unknown): void => this.failWaiters(imageId, error);

  /**
   * A safety net under the hand-off: a ready copy can be taken between its hand-off and the
   * claim (by a warm request, or discarded), and with a database whose queries interleave (PostgreSQL)
   * a waiter was seen left with no copy asked for. Every second, each image with waiters gets
   * the copies still missing; a waiter never waits on nothing for longer than that.
   */
  private readonly supplyCheck: NodeJS.Timeout;

  constructor(private readonly o: ProvisioningOptions) {
    o.replenisher.on('copy-ready', this.onCopyReady);
    o.replenisher.on('copy-failed', this.onCopyFailed);
    this.supplyCheck = setInterval(() => {
      for (const [imageId, queue] of this.waiters) if (queue.length > 0) this.ensureSupply(imageId, queue[0]!.source);
    }, SUPPLY_CHECK_MS);
    this.supplyCheck.unref();
  }

  /**
   * The server is stopping: every provision waiting for a copy fails now, and any provision
   * asked for from here on is refused, both with an UnavailableError (503) saying so. Copies
   * that come ready later are no longer handed to anyone here. Resolves when the hand-offs already under way have finished. Run it before the replenisher
   * drains, so nobody waits on copies that will not be made.
   */
  async stop(): Promise<void> {
    if (!this.stopped) {
      this.stopped = true;
      clearInterval(this.supplyCheck);
      this.o.replenisher.off('copy-ready', this.onCopyReady);
      this.o.replenisher.off('copy-failed', this.onCopyFailed);
      const waiters = [...this.waiters];
      this.waiters.clear();
      const failed = waiters.reduce((n, [, q]) => n + q.length, 0);
      if (failed > 0) this.o.logger.info({ failed }, 'stopping: provisions waiting for a copy fail');
      for (const [imageId, queue] of waiters) {
        this.o.replenisher.setWaiting(imageId, 0);
        for (const w of queue.splice(0)) w.reject(stoppingError(w.hostId, w.source));
      }
    }
    await Promise.allSettled([...this.handingOff]);
  }

  async provision(hostId: string, sourceRaw: string): Promise<ProvisionResult> {
    const started = performance.now();
    if (this.stopped) throw stoppingError(hostId, sourceRaw);
    const spec = parseSourceSpec(sourceRaw);
    const source = formatSourceSpec(spec);
    // One query for the host, its mapping and the image the source names (resolved as
    // `resolveSource` does), where this read them one by one.
    const found = await this.o.store.provisionLookup(hostId, spec.name, spec.version);
    if (!found) throw new NotFoundError('host', hostId);
    const { host, mapping: mapped, image } = found;

    if (mapped) return this.existing(mapped, source, started);
    const inFlight = this.pending.get(hostId);
    if (inFlight) {
      if (inFlight.source !== source) throw new ConflictError(`host '${hostId}' is being provisioned from ${inFlight.source}`, { hostId, source: inFlight.source });
      return { ...(await inFlight.result), existing: true };
    }

    if (!image) throw new NotFoundError('image', source);
    await this.checkPerHostValues(host, image);
    this.o.replenisher.recordDemand(source);
    if (image.state !== 'ready') {
      this.o.observer?.provisioned(source, 'failed', (performance.now() - started) / 1000);
      throw new UnavailableError(`${image.name}@${image.version} is not available (its volume is ${image.state})`, { image: source });
    }

    const result = this.claimOrWait(hostId, source, image, started);
    this.pending.set(hostId, { source, result });
    try {
      const r = await result;
      // A request that lost the claim race to its own twin got the twin's copy: the twin counts it.
      if (!r.existing) this.o.observer?.provisioned(source, r.outcome, r.waitMs / 1000);
      return r;
    } catch (e) {
      this.o.observer?.provisioned(source, 'failed', (performance.now() - started) / 1000);
      throw e;
    } finally {
      this.pending.delete(hostId);
    }
  }

  /**
   * A host provisioned from a template must have a value for each per-host param without a
   * default: refused now, naming them, rather than a host whose documents cannot be served.
   */
  private async checkPerHostValues(host: Host, image: Image): Promise<void> {
    if (image.kind !== 'template') return;
    const build = await this.o.store.buildOfImage(image.id);
    if (!build) return;
    const hostId = host.id;
    try {
      renderPerHost(build.spec, { id: host.id, values: host.vars });
    } catch (e) {
      if (!(e instanceof InputError)) throw e;
      const missing = Array.isArray(e.details['missing']) ? (e.details['missing'] as string[]) : [];
      const hint = missing.length > 0 ? `; set ${missing.length > 1 ? 'them' : 'it'}: prestage host set ${hostId} ${missing.map((m) => `--var ${m}=VALUE`).join(' ')}` : '';
      throw new InputError(`${e.message}${hint}`, { ...e.details, hostId }, { cause: e });
    }
  }

  private async claimOrWait(hostId: string, source: string, image: Image, started: number): Promise<ProvisionResult> {
    const { store, replenisher } = this.o;
    const at = new Date().toISOString();
    let claimed: { copy: Copy; mapping: Mapping } | undefined;
    try {
      claimed = await store.claim({ hostId, imageId: image.id, source, at }, { type: 'host.mapped', subject: hostId, data: { source, outcome: 'warm' } });
    } catch (e) {
      return this.afterClaimRace(hostId, source, started, e);
    }
    let outcome: ProvisionOutcome = 'warm';
    if (claimed) {
      failpoint('claim.after-claim');
      replenisher.poke();
    } else {
      const startedAtMs = Date.now();
      claimed = await this.wait(hostId, source, image);
      outcome = Date.parse(claimed.copy.createdAt) < startedAtMs ? 'joined' : 'cold';
    }
    const access = await this.exportOrUndo(claimed.mapping, { id: claimed.copy.id, volume: claimed.copy.volume, sizeBytes: image.sizeBytes });
    failpoint('export.after-export');
    const waitMs = performance.now() - started;
    this.o.logger.info({ hostId, copyId: claimed.copy.id, source, outcome, waitMs: Math.round(waitMs * 10) / 10 }, 'provisioned');
    return { hostId, source, image: `${image.name}@${image.version}`, copyId: claimed.copy.id, access, outcome, existing: false, waitMs };
  }

  /** Two requests for one host raced to the claim; the database let one win. */
  private async afterClaimRace(hostId: string, source: string, started: number, e: unknown): Promise<ProvisionResult> {
    const mapped = await this.o.store.getMapping(hostId);
    if (!mapped) throw e;
    return this.existing(mapped, source, started);
  }

  private async existing(mapping: Mapping, source: string, started: number): Promise<ProvisionResult> {
    if (mapping.source !== source) {
      throw new ConflictError(`host '${mapping.hostId}' is provisioned from ${mapping.source}; release it first`, { hostId: mapping.hostId, source: mapping.source });
    }
    const copy = await this.o.store.getCopy(mapping.copyId);
    const image = await this.o.store.getImage(mapping.imageId);
    if (!copy || copy.state !== 'mapped') {
      throw new UnavailableError(`the copy of host '${mapping.hostId}' is ${copy?.state ?? 'missing'}; release the host and provision it again`, { hostId: mapping.hostId });
    }
    // Images are never deleted while a copy of theirs is mapped (the store refuses it).
    if (!image) throw new NotFoundError('image', mapping.imageId);
    const access = await this.o.exporter.export(mapping, { id: copy.id, volume: copy.volume, sizeBytes: image.sizeBytes });
    return {
      hostId: mapping.hostId,
      source,
      image: `${image.name}@${image.version}`,
      copyId: copy.id,
      access,
      outcome: 'warm',
      existing: true,
      waitMs: performance.now() - started,
    };
  }

  private wait(hostId: string, source: string, image: Image): Promise<{ copy: Copy; mapping: Mapping }> {
    // Stopped while this provision looked for a spare: no copy will be handed to it.
    if (this.stopped) return Promise.reject(stoppingError(hostId, source));
    return new Promise((resolve, reject) => {
      const queue = this.waiters.get(image.id) ?? [];
      this.waiters.set(image.id, queue);
      const timeoutMs = this.o.waitTimeoutMs ?? 30 * 60_000;
      const timer = setTimeout(() => {
        const i = queue.indexOf(w);
        if (i >= 0) queue.splice(i, 1);
        this.o.replenisher.setWaiting(image.id, queue.length);
        reject(new UnavailableError(`no copy of ${source} came ready within ${Math.round(timeoutMs / 1000)} s`, { hostId, source }));
      }, timeoutMs);
      const w: Waiter = {
        hostId,
        source,
        image,
        startedAt: Date.now(),
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e instanceof Error ? e : new Error(String(e)));
        },
      };
      queue.push(w);
      this.ensureSupply(image.id, source);
    });
  }

  /** Every waiter needs one copy in flight; ask for the ones missing. */
  private ensureSupply(imageId: string, source: string): void {
    const waiting = this.waiters.get(imageId)?.length ?? 0;
    this.o.replenisher.setWaiting(imageId, waiting);
    const missing = waiting - this.o.replenisher.inFlight(imageId);
    for (let i = 0; i < missing; i++) this.o.replenisher.requestCopy(imageId, source);
  }

  private async handOff(copy: Copy): Promise<void> {
    const queue = this.waiters.get(copy.imageId);
    const w = queue?.shift();
    if (!queue || !w) return;
    try {
      const claimed = await this.o.store.claim(
        { hostId: w.hostId, imageId: copy.imageId, source: w.source, copyId: copy.id, at: new Date().toISOString() },
        { type: 'host.mapped', subject: w.hostId, data: { source: w.source, outcome: Date.parse(copy.createdAt) < w.startedAt ? 'joined' : 'cold' } },
      );
      if (claimed) {
        w.resolve(claimed);
      } else if (this.stopped) {
        // Stopped meanwhile: no further copy will come to it.
        w.reject(stoppingError(w.hostId, w.source));
      } else {
        // A warm request took this spare first: the waiter keeps its place and gets the next.
        queue.unshift(w);
        this.ensureSupply(copy.imageId, w.source);
      }
    } catch (e) {
      w.reject(e);
    }
    this.o.replenisher.setWaiting(copy.imageId, queue.length);
    if (queue.length === 0) this.waiters.delete(copy.imageId);
    this.o.replenisher.poke();
  }

  private failWaiters(imageId: string, error: unknown): void {
    const queue = this.waiters.get(imageId);
    if (!queue) return;
    // Waiters beyond the copies still in flight will not be served: tell them why.
    while (queue.length > this.o.replenisher.inFlight(imageId)) {
      const w = queue.shift()!;
      w.reject(isPrestageError(error) ? error : new UnavailableError(`the copy for host '${w.hostId}' failed: ${error instanceof Error ? error.message : String(error)}`, { hostId: w.hostId }, { cause: error }));
    }
    this.o.replenisher.setWaiting(imageId, queue.length);
    if (queue.length === 0) this.waiters.delete(imageId);
  }

  /** The export failed after the claim: give the copy back to nobody (it is removed) and report. */
  private async exportOrUndo(mapping: Mapping, copy: ExportedCopy): Promise<Access> {
    try {
      return await this.o.exporter.export(mapping, copy);
    } catch (e) {
      this.o.logger.error({ err: e, hostId: mapping.hostId }, 'export failed; undoing the mapping');
      await this.release(mapping.hostId).catch(() => undefined);
      throw e;
    }
  }

  /** Unmaps the host, closes its access, deletes its copy; the pool refills. */
  async release(hostId: string): Promise<{ hostId: string; copyId: string }> {
    const { store, exporter, driver, replenisher } = this.o;
    if (!(await store.getHost(hostId))) throw new NotFoundError('host', hostId);
    const copy = await store.unmap(hostId, { type: 'host.released', subject: hostId });
    if (!copy) throw new NotFoundError('mapping of host', hostId);
    failpoint('release.after-unmap');
    await exporter.unexport(hostId);
    await driver.removeCopy(copy.id);
    failpoint('release.after-remove');
    await store.moveCopy(copy.id, 'releasing', 'gone', {}, { type: 'copy.gone', subject: copy.id, data: { reason: 'released', hostId } });
    replenisher.poke(true);
    this.o.logger.info({ hostId, copyId: copy.id }, 'released');
    return { hostId, copyId: copy.id };
  }

  /** Re-exports every mapping (at start), so hosts find their copies after a restart. */
  async exportAll(): Promise<number> {
    let n = 0;
    const sizes = new Map<string, number>();
    for (const m of await this.o.store.listMappings()) {
      const copy = await this.o.store.getCopy(m.copyId);
      if (copy?.state !== 'mapped') continue;
      let sizeBytes = sizes.get(m.imageId);
      if (sizeBytes === undefined) {
        const image = await this.o.store.getImage(m.imageId);
        if (!image) continue;
        sizes.set(m.imageId, (sizeBytes = image.sizeBytes));
      }
      await this.o.exporter.export(m, { id: copy.id, volume: copy.volume, sizeBytes });
      n++;
    }
    return n;
  }

  /**
   * A copy came ready on another instance (told over the cluster bus): a provision waiting here
   * for its image may take it, at once rather than when its own copy is done.
   */
  copyReadyElsewhere(copyId: string, imageId: string): void {
    if (this.stopped || (this.waiters.get(imageId)?.length ?? 0) === 0) return;
    void this.o.store
      .getCopy(copyId)
      .then((copy) => {
        if (copy?.state === 'ready') this.onCopyReady(copy);
      })
      .catch((err: unknown) => this.o.logger.warn({ err, copyId }, 'a copy made ready elsewhere could not be read'));
  }

  /** Provisions still waiting for a copy, by image id. */
  waitingCount(): number {
    let n = 0;
    for (const q of this.waiters.values()) n += q.length;
    return n;
  }
}
