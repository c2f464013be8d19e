/**
 * The drivers one instance runs, as one driver: new images go to the default one (or to the one
 * an import names), and everything about an existing volume goes to the driver that owns it, so
 * copies of an image on Ceph are clones on Ceph and copies of an image on local disk are files,
 * side by side in one service.
 */
import {
  InputError,
  type BlockDevice,
  type DriverName,
  type Image,
  type ImportedVolume,
  type MadeCopy,
  type ProgressListener,
  type ScratchFile,
  type StagedImage,
  type StoreSpace,
  type VolumeDriver,
} from '../domain/index.js';

export class DriverSet implements VolumeDriver {
  private readonly byName: ReadonlyMap<DriverName, VolumeDriver>;

  constructor(
    drivers: readonly VolumeDriver[],
    /** Where new images go unless an import names another. */
    readonly name: DriverName,
  ) {
    this.byName = new Map(drivers.map((d) => [d.name, d]));
    if (this.byName.size !== drivers.length) throw new Error('two drivers of one kind in a set');
    this.named(name);
  }

  /** The kinds configured, the default first. */
  get names(): readonly DriverName[] {
    return [this.name, ...[...this.byName.keys()].filter((n) => n !== this.name)];
  }

  private named(name: DriverName): VolumeDriver {
    const d = this.byName.get(name);
    if (!d) throw new InputError(`driver '${name}' is not configured here; configured: ${[...this.byName.keys()].join(', ')}`, { driver: name });
    return d;
  }

  private owner(volume: string): VolumeDriver {
    for (const d of this.byName.values()) if (d.owns(volume)) return d;
    throw new InputError(`no configured driver stores '${volume}'`, { volume });
  }

  owns(volume: string): boolean {
    return [...this.byName.values()].some((d) => d.owns(volume));
  }

  driverOf(volume: string): DriverName | undefined {
    return [...this.byName.values()].find((d) => d.owns(volume))?.name;
  }

  importImage(path: string, onProgress?: ProgressListener, into?: DriverName): Promise<ImportedVolume> {
    return this.named(into ?? this.name).importImage(path, onProgress);
  }

  stageImage(chunks: AsyncIterable<Uint8Array>, opts?: { readonly totalBytes?: number; readonly onProgress?: ProgressListener }): Promise<StagedImage> {
    return this.named(this.name).stageImage(chunks, opts);
  }

  copyVolumeFor(copyId: string, image: Pick<Image, 'volume'>): string {
    return this.owner(image.volume).copyVolumeFor(copyId, image);
  }

  makeCopy(image: Pick<Image, 'volume' | 'sha256' | 'sizeBytes'>, copyId: string, onProgress?: ProgressListener): Promise<MadeCopy> {
    return this.owner(image.volume).makeCopy(image, copyId, onProgress);
  }

  copyBytes(image: Pick<Image, 'volume' | 'sizeBytes'>): Promise<number> {
    return this.owner(image.volume).copyBytes(image);
  }

  freeSpace(near?: Pick<Image, 'volume'>): Promise<StoreSpace> {
    return (near === undefined ? this.named(this.name) : this.owner(near.volume)).freeSpace(near);
  }

  openVolume(volume: string, opts: { readonly readOnly: boolean }): Promise<BlockDevice> {
    return this.owner(volume).openVolume(volume, opts);
  }

  scratchFile(image: Pick<Image, 'volume' | 'sha256' | 'sizeBytes'>, name: string, onProgress?: ProgressListener): Promise<ScratchFile> {
    return this.owner(image.volume).scratchFile(image, name, onProgress);
  }

  /** A copy id names one volume in whichever driver made it; the others find nothing to remove. */
  async removeCopy(copyId: string): Promise<void> {
    for (const d of this.byName.values()) await d.removeCopy(copyId);
  }

  removeImage(volume: string): Promise<void> {
    return this.owner(volume).removeImage(volume);
  }

  async volumeExists(volume: string): Promise<boolean> {
    const d = [...this.byName.values()].find((x) => x.owns(volume));
    return d ? d.volumeExists(volume) : false;
  }

  async listCopyVolumes(): Promise<readonly { copyId: string; volume: string; partial: boolean }[]> {
    return (await Promise.all([...this.byName.values()].map((d) => d.listCopyVolumes()))).flat();
  }

  async removeTempFiles(dead?: (owner: string | null) => boolean): Promise<readonly string[]> {
    return (await Promise.all([...this.byName.values()].map((d) => d.removeTempFiles(dead)))).flat();
  }

  async listImageVolumes(): Promise<readonly string[]> {
    return (await Promise.all([...this.byName.values()].map((d) => d.listImageVolumes()))).flat();
  }

  async close(): Promise<void> {
    await Promise.all([...this.byName.values()].map((d) => d.close()));
  }
}
