/**
 * Space accounting for the replenisher: bytes reserved by copies in flight, and the pools (or
 * sources asked for on demand) that are short of space. A copy starts only when the free space,
 * less what copies in flight have reserved and a margin, holds what it needs; a source that is
 * refused is short until the space comes back, and a short poll notices space freed by anyone.
 */
import type { Logger } from 'pino';
import { formatBytes, type Image, type Store, type VolumeDriver } from '../domain/index.js';

const MiB = 1 << 20;
/** The margin kept free for metadata, the database and writers we do not know of: 1 % of the filesystem, at least this (or a tenth of a small one). */
const MIN_MARGIN_BYTES = 32 * MiB;
/** Free space may wobble by this much (logs, the database) without counting as space freed. */
const NOISE_BYTES = MiB;

export interface SpaceShortage {
  readonly kind: 'space';
  /** Bytes one copy needs. */
  readonly neededBytes: number;
  /** Free bytes not promised to copies in flight, at the last look. */
  readonly freeBytes: number;
  /** Bytes kept free besides. */
  readonly marginBytes: number;
  /** When the shortage began (ISO 8601). */
  readonly since: string;
}

interface Entry {
  shortage: SpaceShortage;
  readonly imageId: string;
  /** The image's volume: where its copies go decides which store's free space counts. */
  readonly volume: string;
  /** A shortage of on-demand copies for a source without a pool: it lasts until one copy fits. */
  readonly onDemand: boolean;
  /** After a copy ran out of space, free bytes must grow past this before another is tried. */
  retryAbove: number;
}

export type SpaceVerdict =
  | { readonly ok: true }
  /** `short`: the free space cannot hold the copy; else copies in flight hold the room and it waits for them. */
  | { readonly ok: false; readonly short: boolean; readonly neededBytes: number; readonly freeBytes: number };

export interface SpaceGateOptions {
  readonly driver: VolumeDriver;
  readonly store: Store;
  readonly logger: Logger;
  /** Called when a short source would fit now. */
  readonly onRoom: () => void;
  /** Bytes kept free on the store. Default 1 % of the filesystem, at least 32 MiB or a tenth of it. */
  readonly marginBytes?: number;
  /** How often free space is looked at while something is short. Default 250 ms. */
  readonly pollMs?: number;
}

export class SpaceGate {
  /** Bytes reserved per copy in flight, and the store (driver) they are reserved on; released when it finishes or fails. */
  private readonly reserved = new Map<string, { readonly bytes: number; readonly store: string | undefined }>();
  private readonly short = new Map<string, Entry>();
  private poll: NodeJS.Timeout | undefined;
  private polling = false;
  private stopped = false;

  constructor(private readonly opts: SpaceGateOptions) {}

  /** Reserves what one copy of `image` for `source` needs under `copyId`, or says why not. */
  async reserve(copyId: string, image: Image, source: string, onDemand: boolean): Promise<SpaceVerdict> {
    const room = await this.room(image);
    const entry = this.short.get(source);
    const retryable = !entry || room.rawFree > entry.retryAbove;
    if (retryable && room.neededBytes <= room.freeBytes - room.marginBytes) {
      this.reserved.set(copyId, { bytes: room.neededBytes, store: this.opts.driver.driverOf(image.volume) });
      return { ok: true };
    }
    // Reservations count bytes copies in flight have written already (free space shows them
    // too), so only what the free space alone cannot hold is a shortage; the rest waits for them.
    const short = !retryable || room.neededBytes > room.rawFree - room.marginBytes;
    if (short) await this.mark(source, image, onDemand, room);
    else if (entry) entry.shortage = { ...entry.shortage, freeBytes: room.freeBytes };
    return { ok: false, short, neededBytes: room.neededBytes, freeBytes: room.freeBytes };
  }

  release(copyId: string): void {
    this.reserved.delete(copyId);
  }

  /**
   * A copy ran out of space although it fitted when it started (someone else wrote, or it needed
   * more than counted): short, and the next try waits until space is freed, not for a back-off.
   */
  async ranOut(image: Image, source: string, onDemand: boolean): Promise<void> {
    const room = await this.room(image);
    await this.mark(source, image, onDemand, room);
    const entry = this.short.get(source);
    if (entry) entry.retryAbove = room.rawFree + NOISE_BYTES;
  }

  /**
   * Ends the shortages that are over: `missing(source)` is the copies a pool still lacks (after
   * the ones just started), undefined for a source that has no pool. A shortage ends when nothing
   * is missing or the free space holds every copy that is.
   */
  async settle(missing: (source: string) => number | undefined): Promise<void> {
    for (const [source, entry] of [...this.short]) {
      const m = missing(source) ?? (entry.onDemand ? 1 : 0);
      if (m <= 0) {
        await this.clear(source);
        continue;
      }
      const image = await this.opts.store.getImage(entry.imageId);
      if (!image) {
        await this.clear(source);
        continue;
      }
      const room = await this.room(image);
      if (room.rawFree > entry.retryAbove && m * room.neededBytes <= room.freeBytes - room.marginBytes) await this.clear(source);
      else entry.shortage = { ...entry.shortage, neededBytes: room.neededBytes, freeBytes: room.freeBytes };
    }
  }

  shortageOf(source: string): SpaceShortage | null {
    return this.short.get(source)?.shortage ?? null;
  }

  shortages(): readonly (SpaceShortage & { readonly source: string })[] {
    return [...this.short].map(([source, e]) => ({ source, ...e.shortage }));
  }

  /** Stops the poll for good (the replenisher is draining). */
  stop(): void {
    this.stopped = true;
    this.pause();
  }

  private pause(): void {
    clearInterval(this.poll);
    this.poll = undefined;
  }

  /** Free bytes where copies of the image go, as the store says (`rawFree`) and less reservations there (`freeBytes`), and the margin to keep. */
  private async space(near: Pick<Image, 'volume'>): Promise<{ freeBytes: number; rawFree: number; marginBytes: number }> {
    const space = await this.opts.driver.freeSpace(near);
    const store = this.opts.driver.driverOf(near.volume);
    let reserved = 0;
    for (const r of this.reserved.values()) if (r.store === store) reserved += r.bytes;
    const marginBytes = this.opts.marginBytes ?? Math.max(Math.floor(space.totalBytes / 100), Math.min(MIN_MARGIN_BYTES, Math.floor(space.totalBytes / 10)));
    return { freeBytes: Math.max(0, space.freeBytes - reserved), rawFree: space.freeBytes, marginBytes };
  }

  /** The space, and what one copy of the image needs. */
  private async room(image: Image): Promise<{ neededBytes: number; freeBytes: number; rawFree: number; marginBytes: number }> {
    const [neededBytes, space] = await Promise.all([this.opts.driver.copyBytes(image), this.space(image)]);
    return { neededBytes, ...space };
  }

  private async mark(source: string, image: Pick<Image, 'id' | 'volume'>, onDemand: boolean, room: { neededBytes: number; freeBytes: number; marginBytes: number }): Promise<void> {
    const entry = this.short.get(source);
    const shortage: SpaceShortage = { kind: 'space', neededBytes: room.neededBytes, freeBytes: room.freeBytes, marginBytes: room.marginBytes, since: entry?.shortage.since ?? new Date().toISOString() };
    if (entry) {
      entry.shortage = shortage;
      return;
    }
    this.short.set(source, { shortage, imageId: image.id, volume: image.volume, onDemand, retryAbove: -1 });
    this.opts.logger.warn({ source, ...shortage }, 'short of space');
    await this.event('pool.short-of-space', source, { neededBytes: room.neededBytes, freeBytes: room.freeBytes, marginBytes: room.marginBytes });
    if (!this.stopped) this.poll ??= setInterval(() => void this.look(), this.opts.pollMs ?? 250).unref();
  }

  private async clear(source: string): Promise<void> {
    const entry = this.short.get(source);
    if (!entry) return;
    this.short.delete(source);
    if (this.short.size === 0) this.pause();
    const shortMs = Date.now() - Date.parse(entry.shortage.since);
    this.opts.logger.info({ source, shortMs }, 'space is back');
    await this.event('pool.space-ok', source, { shortMs });
  }

  /** Space freed by anyone (a release, a removal, another program) wakes the replenisher at once. */
  private async look(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    try {
      let fits = false;
      for (const e of this.short.values()) {
        const { freeBytes, rawFree, marginBytes } = await this.space(e);
        e.shortage = { ...e.shortage, freeBytes };
        if (rawFree > e.retryAbove && e.shortage.neededBytes <= freeBytes - marginBytes) fits = true;
      }
      if (fits) this.opts.onRoom();
    } catch (err) {
      this.opts.logger.warn({ err }, 'free space unreadable');
    } finally {
      this.polling = false;
    }
  }

  private async event(type: string, source: string, data: Record<string, unknown>): Promise<void> {
    await this.opts.store.appendEvent({ type, subject: source, data }).catch((err: unknown) => this.opts.logger.error({ err, type }, 'event not recorded'));
  }
}

/** `short of space: a copy needs 100 MiB + 32 MiB kept free, 85 MiB free` */
export function shortageText(s: SpaceShortage): string {
  return `short of space: a copy needs ${formatBytes(s.neededBytes)} + ${formatBytes(s.marginBytes)} kept free, ${formatBytes(s.freeBytes)} free`;
}
