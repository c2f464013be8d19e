import type { Logger } from 'pino';
import { confinedPath } from './import-paths.js';
import { checkSha256, fetchFailure, parseFetchUrl, redact } from './fetch-url.js';
import {
  BadImageError,
  ConflictError,
  NotFoundError,
  failpoint,
  parseSourceSpec,
  validateImageName,
  type DriverName,
  type Image,
  type ProgressListener,
  type Store,
  type VolumeDriver,
} from '../domain/index.js';
import type { Replenisher } from '../pool/index.js';
import { ensureDefaultPool, insertNextVersion } from './image-versions.js';

export interface ImageServiceOptions {
  readonly store: Store;
  readonly driver: VolumeDriver;
  readonly replenisher: Replenisher;
  readonly logger: Logger;
  /** The static pool a name gets on its first import; null: no pool until one is set. */
  readonly defaultPool: { readonly min: number; readonly max: number } | null;
  /** Directories an admin may import server-side files from (resolved, absolute); none by default. */
  readonly importDirs?: readonly string[];
  /** The data directory: never importable, whatever the import directories hold. */
  readonly dataDir?: string;
  /** Told of each new version once it is stored (templates rebuild on it); must not throw. */
  readonly onImported?: (image: Image) => void;
}

export interface ImportOptions {
  readonly onProgress?: ProgressListener;
  /** Where the image goes; default: where the name's latest version is, else the default driver. */
  readonly driver?: DriverName;
}

export class ImageService {
  constructor(private readonly o: ImageServiceOptions) {}

  /**
   * Imports a file on the server's own disk (an admin's request): only from inside the import
   * directories, never from the data directory, symlinks resolved. A path outside gets the same
   * answer whether it exists or not.
   */
  async importPath(name: string, path: string, opts: ImportOptions = {}): Promise<Image> {
    validateImageName(name);
    const file = await confinedPath(path, this.o.importDirs ?? [], this.o.dataDir);
    return this.importFile(name, file, { path: file }, opts);
  }

  /**
   * Imports an image sent as a stream (an upload): staged while hashed, checked against the
   * digest the sender expects, then imported. Nothing is kept when the stream breaks or the digest
   * differs.
   */
  async importStream(
    name: string,
    chunks: AsyncIterable<Uint8Array>,
    opts: ImportOptions & { readonly sha256?: string; readonly totalBytes?: number; readonly origin: Record<string, unknown> },
  ): Promise<Image> {
    validateImageName(name);
    const expected = opts.sha256 === undefined ? undefined : checkSha256(opts.sha256);
    const staged = await this.o.driver.stageImage(chunks, { totalBytes: opts.totalBytes, onProgress: opts.onProgress });
    try {
      if (opts.totalBytes !== undefined && staged.bytes !== opts.totalBytes) {
        throw new BadImageError(`received ${staged.bytes} of ${opts.totalBytes} bytes; nothing kept`, { received: staged.bytes, expected: opts.totalBytes });
      }
      if (expected !== undefined && staged.sha256 !== expected) {
        throw new BadImageError(`the data received has sha256 ${staged.sha256}, not the expected ${expected}; nothing kept`, { sha256: staged.sha256, expected });
      }
      return await this.importFile(name, staged.path, { ...opts.origin, receivedSha256: staged.sha256, receivedBytes: staged.bytes }, opts);
    } finally {
      await staged.discard();
    }
  }

  /**
   * Fetches an http(s) URL and imports what it serves. The server makes the request: who may
   * ask it to is an operator (see the README's security section).
   */
  async importUrl(name: string, url: string, opts: ImportOptions & { readonly sha256?: string; readonly signal?: AbortSignal } = {}): Promise<Image> {
    validateImageName(name);
    const target = parseFetchUrl(url);
    if (opts.sha256 !== undefined) checkSha256(opts.sha256);
    let res: Response;
    try {
      res = await fetch(target, { redirect: 'follow', signal: opts.signal });
    } catch (e) {
      throw new BadImageError(`cannot fetch ${redact(target)}: ${fetchFailure(e)}`, { url: redact(target) }, { cause: e });
    }
    if (!res.ok || res.body === null) {
      await res.body?.cancel();
      throw new BadImageError(`${redact(target)} answered ${res.status} ${res.statusText}`, { url: redact(target), status: res.status });
    }
    const length = Number(res.headers.get('content-length') ?? NaN);
    return this.importStream(name, res.body as AsyncIterable<Uint8Array>, {
      sha256: opts.sha256,
      totalBytes: Number.isSafeInteger(length) && length >= 0 ? length : undefined,
      origin: { url: redact(target) },
      ...(opts.onProgress && { onProgress: opts.onProgress }),
      ...(opts.driver && { driver: opts.driver }),
    });
  }

  /**
   * Imports an image file as the next version of `name`. The file is hashed while it is
   * stored; an identical file to the name's latest version is refused as a clash.
   */
  private async importFile(name: string, path: string, origin: Record<string, unknown>, opts: ImportOptions): Promise<Image> {
    const { store, driver } = this.o;
    const started = Date.now();
    // A name stays where its versions are unless told otherwise: its pools keep one kind of storage.
    const where = opts.driver ?? driver.driverOf((await store.findImage(name, null))?.volume ?? '');
    const vol = await driver.importImage(path, opts.onProgress, where);
    failpoint('import.after-seal');
    const latest = await store.findImage(name, null);
    if (latest?.sha256 === vol.sha256) {
      await this.dropVolumeIfUnused(vol.volume);
      throw new ConflictError(`${name}@${latest.version} has the same content already (sha256 ${vol.sha256.slice(0, 12)}…)`, { name, version: latest.version });
    }
    let image: Image;
    try {
      image = await insertNextVersion(store, { name, sha256: vol.sha256, sizeBytes: vol.sizeBytes, volume: vol.volume, kind: 'golden', baseImageId: null }, (i) => ({
        type: 'image.imported',
        subject: `${name}@${i.version}`,
        data: { imageId: i.id, sha256: i.sha256, sizeBytes: i.sizeBytes, format: vol.format, ...origin, ms: Date.now() - started },
      }));
    } catch (e) {
      await this.dropVolumeIfUnused(vol.volume);
      throw e;
    }
    this.o.logger.info({ image: `${name}@${image.version}`, sha256: image.sha256, ms: Date.now() - started }, 'image imported');
    await ensureDefaultPool(store, name, this.o.defaultPool);
    this.o.replenisher.poke(true);
    this.o.onImported?.(image);
    return image;
  }

  list(): Promise<Image[]> {
    return this.o.store.listImages();
  }

  async get(ref: string): Promise<Image> {
    const spec = parseSourceSpec(ref);
    const image = await this.o.store.findImage(spec.name, spec.version);
    if (!image) throw new NotFoundError('image', ref);
    return image;
  }

  /**
   * Removes one version (`name@N`), or every version of a name. Its spares go too; mapped copies
   * block it. Every version of a template goes with the template only (`opts.template`).
   */
  async remove(ref: string, opts: { template?: boolean } = {}): Promise<Image[]> {
    const { store } = this.o;
    const spec = parseSourceSpec(ref);
    const images = spec.version === null ? (await store.listImages()).filter((i) => i.name === spec.name) : [await this.get(ref)];
    if (images.length === 0) throw new NotFoundError('image', ref);
    if (spec.version === null && !opts.template && images.some((i) => i.kind === 'template')) {
      throw new ConflictError(`'${ref}' is a template: remove it with prestage template rm ${ref} (or one version with ${ref}@N)`, { name: ref });
    }
    const pools = await store.listPools();
    const pinned = pools.filter((p) => images.some((i) => p.source === `${i.name}@${i.version}`) || (spec.version === null && p.source === spec.name));
    if (pinned.length > 0 && spec.version !== null) {
      throw new ConflictError(`pool '${pinned[0]!.source}' uses ${ref}; remove or change the pool first`, { pool: pinned[0]!.source });
    }
    for (const image of images) {
      const counts = await store.countCopies(image.id);
      if (counts.mapped > 0 || counts.making > 0) {
        throw new ConflictError(`${image.name}@${image.version} has ${counts.mapped} mapped and ${counts.making} copies being made; release its hosts first`, {
          image: `${image.name}@${image.version}`,
        });
      }
    }
    for (const p of pinned) await store.deletePool(p.source, { type: 'pool.removed', subject: p.source, data: { reason: `image ${ref} removed` } });
    for (const image of images) {
      for (const c of await store.listCopies({ imageId: image.id, state: 'ready' })) {
        if (await store.moveCopy(c.id, 'ready', 'releasing')) {
          await this.o.driver.removeCopy(c.id);
          await store.moveCopy(c.id, 'releasing', 'gone', {}, { type: 'copy.gone', subject: c.id, data: { reason: 'image removed' } });
        }
      }
      await store.deleteImage(image.id, { type: 'image.removed', subject: `${image.name}@${image.version}`, data: { imageId: image.id } });
      await this.dropVolumeIfUnused(image.volume);
    }
    this.o.replenisher.poke(true);
    return images;
  }

  /** Images are content-addressed: one volume may back several versions or names. */
  private async dropVolumeIfUnused(volume: string): Promise<void> {
    const users = (await this.o.store.listImages()).filter((i) => i.volume === volume);
    if (users.length === 0) await this.o.driver.removeImage(volume);
  }
}
