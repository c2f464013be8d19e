import type { Logger } from 'pino';
import {
  ConflictError,
  NotFoundError,
  parseSourceSpec,
  validateImageName,
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
  /** Told of each new version once it is stored (templates rebuild on it); must not throw. */
  readonly onImported?: (image: Image) => void;
}

export class ImageService {
  constructor(private readonly o: ImageServiceOptions) {}

  /**
   * Imports an image file as the next version of `name`. The file is hashed while it is
   * stored; an identical file to the name's latest version is refused as a clash.
   */
  async import(name: string, path: string, onProgress?: ProgressListener): Promise<Image> {
    validateImageName(name);
    const { store, driver } = this.o;
    const started = Date.now();
    const vol = await driver.importImage(path, onProgress);
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
        data: { imageId: i.id, sha256: i.sha256, sizeBytes: i.sizeBytes, format: vol.format, path, ms: Date.now() - started },
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
