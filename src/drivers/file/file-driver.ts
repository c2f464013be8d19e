/**
 * The file volume driver: volumes are plain files under one data directory.
 *
 *   DATA/images/<sha256>.raw          golden images, content-addressed, sealed 0400 (read by the service only)
 *   DATA/copies/<copyId>.raw          finished copies (complete, flushed, verified)
 *   DATA/copies/<copyId>.raw.partial  copies being made (or left by a crash: reconcile removes them)
 *   DATA/tmp/                         imports and qcow2 conversions in progress
 *
 * Copies are reflinks where the filesystem shares blocks (XFS reflink=1, btrfs) and sparse,
 * in-kernel copies elsewhere. The heavy work runs in worker threads (copy-worker.ts).
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import {
  BadImageError,
  ConflictError,
  InputError,
  NoSpaceError,
  NotFoundError,
  PrestageError,
  errnoCode,
  failpoint,
  isNoSpace,
  type BlockDevice,
  type DriverName,
  type Image,
  type ImportedVolume,
  type MadeCopy,
  type ScratchFile,
  type StagedImage,
  type ProgressListener,
  type StoreSpace,
  type VolumeDriver,
} from '../../domain/index.js';
import { FileDevice } from './file-device.js';
import { inspectImageFile, qcow2ToRaw } from '../image-file.js';
import { createCopyRateShare } from './copy-rate.js';
import { CopyWorkers } from './copy-workers.js';
import { VERIFY_FAILED, type Job, type JobResults } from './jobs.js';
import { stageStream } from './stage-stream.js';

export interface FileDriverOptions {
  readonly dataDir: string;
  /** Copy worker threads (default 2). */
  readonly workers?: number;
  /**
   * 'auto' clones (FICLONE) where the filesystem can; 'never' always runs the byte copy, though on
   * XFS/btrfs the kernel may still share blocks inside copy_file_range.
   */
  readonly reflink?: 'auto' | 'never';
  /** Bytes per second all copies together may move (copy and verification); absent: no cap. */
  readonly copyRateBytesPerSec?: number;
  readonly logger?: Logger;
  /**
   * Who is writing, put at the head of temporary file names (the instance id), so that when
   * several instances share the directory one cleans up only what a dead one left.
   */
  readonly owner?: () => string;
}

/** A finished copy, with how it was checked (a reflink by sampling, a byte copy by sha256). */
export interface FileCopy extends MadeCopy {
  readonly verified: 'full' | 'sample';
}

const IMAGE_NAME = /^[0-9a-f]{64}\.raw$/;
/** Copy ids become file names: no separators, no dot files, nothing a shell would trip on. */
const COPY_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/**
 * What a reflink copy takes before it is ready. A clone shares every block with its image, so up
 * front it costs only extent and refcount records; its own blocks come as its host writes, after
 * it has left the pool, and no reservation made at spare time could bound that anyway.
 */
const CLONE_BYTES = 1 << 20;

async function fsyncDir(dir: string): Promise<void> {
  const fh = await fs.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export class FileDriver implements VolumeDriver {
  readonly name = 'file' as const;
  private readonly imagesDir: string;
  private readonly copiesDir: string;
  private readonly tmpDir: string;
  /** Temp files our jobs are writing, removed on close() if a job is cut short. */
  private readonly inFlight = new Set<string>();
  /** Whether a copy here is a clone: probed on first need, then what the last copy was. */
  private clones: Promise<boolean> | undefined;
  /** Blocks allocated per image volume (sealed files: read once). */
  private readonly allocated = new Map<string, number>();

  private constructor(
    readonly dataDir: string,
    private readonly workers: CopyWorkers,
    private readonly reflink: 'auto' | 'never',
    private readonly logger: Logger | undefined,
    private readonly owner: (() => string) | undefined,
  ) {
    this.imagesDir = join(dataDir, 'images');
    this.copiesDir = join(dataDir, 'copies');
    this.tmpDir = join(dataDir, 'tmp');
  }

  static async open(opts: FileDriverOptions): Promise<FileDriver> {
    const dataDir = resolve(opts.dataDir);
    const probe = join(dataDir, 'tmp', `.probe-${randomUUID()}`);
    try {
      for (const sub of ['images', 'copies', 'tmp']) await fs.mkdir(join(dataDir, sub), { recursive: true, mode: 0o700 });
      await fs.writeFile(probe, '');
      await fs.unlink(probe);
    } catch (e) {
      throw new InputError(`data directory ${dataDir} is not usable: ${e instanceof Error ? e.message : String(e)}`, { dataDir }, { cause: e });
    }
    const copyRate = opts.copyRateBytesPerSec === undefined ? undefined : createCopyRateShare(opts.copyRateBytesPerSec);
    const workers = new CopyWorkers({ size: opts.workers ?? 2, logger: opts.logger, ...(copyRate && { copyRate }) });
    return new FileDriver(dataDir, workers, opts.reflink ?? 'auto', opts.logger, opts.owner);
  }

  async importImage(path: string, onProgress?: ProgressListener, into?: DriverName): Promise<ImportedVolume> {
    if (into !== undefined && into !== this.name) throw new InputError(`driver '${into}' is not configured here (serve --driver ${into} …)`, { driver: into });
    const t0 = performance.now();
    const source = resolve(path);
    const format = await inspectImageFile(source);
    let converted: string | undefined;
    const tmp = this.tmpPath('import');
    try {
      let raw = source;
      if (format === 'qcow2') {
        converted = this.tmpPath('convert.raw');
        this.inFlight.add(converted);
        try {
          await qcow2ToRaw(source, converted);
        } finally {
          this.inFlight.delete(converted);
        }
        raw = converted;
      }
      const r = await this.runJob(tmp, { kind: 'import', source: raw, tmp }, onProgress);
      failpoint('import.after-temp');
      const volume = join(this.imagesDir, `${r.sha256}.raw`);
      // link() never replaces: if these bytes are already stored, the sealed file stays as it is.
      try {
        await fs.link(tmp, volume);
        await fsyncDir(this.imagesDir);
      } catch (e) {
        if (errnoCode(e) !== 'EEXIST') throw e;
        this.logger?.info({ sha256: r.sha256, source }, 'image already stored, reusing it');
      }
      this.logger?.info({ sha256: r.sha256, sizeBytes: r.sizeBytes, allocatedBytes: r.allocatedBytes, format, ms: Math.round(performance.now() - t0) }, 'image imported');
      return { sha256: r.sha256, sizeBytes: r.sizeBytes, volume, format };
    } catch (e) {
      const code = errnoCode(e);
      if (code === 'ENOENT' || code === 'EIO') throw new BadImageError(`cannot read ${source}: ${code}`, { path: source }, { cause: e });
      throw this.failure(e, `import of ${source}`, { path: source });
    } finally {
      await fs.rm(tmp, { force: true });
      if (converted) await fs.rm(converted, { force: true });
    }
  }

  stageImage(chunks: AsyncIterable<Uint8Array>, opts: { readonly totalBytes?: number; readonly onProgress?: ProgressListener } = {}): Promise<StagedImage> {
    return stageStream(chunks, this.tmpPath('upload'), opts, this.inFlight, this.tmpDir);
  }


  owns(volume: string): boolean {
    const dir = resolve(volume, '..');
    return volume.startsWith('/') && (dir === this.imagesDir || dir === this.copiesDir);
  }

  driverOf(volume: string): DriverName | undefined {
    return this.owns(volume) ? this.name : undefined;
  }

  copyVolumeFor(copyId: string): string {
    if (!COPY_ID.test(copyId)) throw new InputError(`invalid copy id '${copyId}'`, { copyId });
    return join(this.copiesDir, `${copyId}.raw`);
  }

  async makeCopy(image: Pick<Image, 'volume' | 'sha256' | 'sizeBytes'>, copyId: string, onProgress?: ProgressListener): Promise<FileCopy> {
    const target = this.copyVolumeFor(copyId);
    const tmp = `${target}.partial`;
    if (this.inFlight.has(tmp)) throw new ConflictError(`copy ${copyId} is already being made`, { copyId });
    try {
      const r = await this.runJob(
        tmp,
        { kind: 'copy', source: image.volume, tmp, target, expectSha256: image.sha256, sizeBytes: image.sizeBytes, reflink: this.reflink, verify: 'auto' },
        // The worker counts the copy pass and the check pass; callers see one bar of the image's size.
        onProgress && ((p) => onProgress({ doneBytes: p.totalBytes > 0 ? Math.round((p.doneBytes / p.totalBytes) * image.sizeBytes) : 0, totalBytes: image.sizeBytes })),
      );
      // A clone refused (another filesystem, reflink off) means byte copies from now on, and back.
      if (this.reflink === 'auto') this.clones = Promise.resolve(r.method === 'reflink');
      this.logger?.info({ copyId, ...r }, 'copy made');
      return { method: r.method, durationMs: r.durationMs, allocatedBytes: r.allocatedBytes, verified: r.verified };
    } catch (e) {
      const code = errnoCode(e);
      if (code === 'ENOENT' && !(await this.volumeExists(image.volume))) throw new NotFoundError('volume', image.volume, { cause: e });
      if (code === 'EEXIST') throw new ConflictError(`copy ${copyId} already exists (complete or partial); remove it first`, { copyId }, { cause: e });
      throw this.failure(e, `copy ${copyId}`, { copyId, volume: image.volume });
    }
  }

  async copyBytes(image: Pick<Image, 'volume' | 'sizeBytes'>): Promise<number> {
    if (await this.clonesHere()) return CLONE_BYTES;
    let n = this.allocated.get(image.volume);
    if (n === undefined) {
      try {
        // A byte copy keeps the image's holes: it takes what the image has allocated.
        n = (await fs.stat(image.volume)).blocks * 512;
        this.allocated.set(image.volume, n);
      } catch {
        // The copy itself will say what is wrong with the volume; until then assume it is full.
        return image.sizeBytes;
      }
    }
    return n;
  }

  async freeSpace(): Promise<StoreSpace> {
    // bavail, not bfree: blocks reserved for root are no room for copies, whoever runs the service.
    const s = await fs.statfs(this.copiesDir);
    return { freeBytes: s.bavail * s.bsize, totalBytes: s.blocks * s.bsize };
  }

  /**
   * Clones one small file from tmp/ (the filesystem of images/, which imports link into) to copies/
   * the way a copy is made. Run once, lazily, so opening a driver starts no worker. Named like a
   * copy, so a crash in the middle leaves files reconcile removes.
   */
  private clonesHere(): Promise<boolean> {
    if (this.reflink === 'never') return Promise.resolve(false);
    this.clones ??= (async () => {
      const name = `probe-${randomUUID()}`;
      const source = join(this.tmpDir, name);
      const target = this.copyVolumeFor(name);
      const data = randomBytes(64 << 10);
      try {
        await fs.writeFile(source, data, { flag: 'wx' });
        const expectSha256 = createHash('sha256').update(data).digest('hex');
        const r = await this.runJob(`${target}.partial`, { kind: 'copy', source, tmp: `${target}.partial`, target, expectSha256, sizeBytes: data.length, reflink: 'auto', verify: 'auto' });
        return r.method === 'reflink';
      } catch (err) {
        this.logger?.warn({ err }, 'reflink probe failed; counting copies as byte copies');
        return false;
      } finally {
        await Promise.all([source, target].map((p) => fs.rm(p, { force: true })));
      }
    })();
    return this.clones;
  }

  openVolume(volume: string, opts: { readonly readOnly: boolean }): Promise<BlockDevice> {
    if (!volume.startsWith(this.copiesDir + '/')) return Promise.reject(new InputError(`'${volume}' is not a copy of this data directory`, { volume }));
    return FileDevice.open(volume, opts.readOnly);
  }

  /** A copy in copies/ named like one, so that removeCopy(name) and reconcile treat it as one. */
  async scratchFile(image: Pick<Image, 'volume' | 'sha256' | 'sizeBytes'>, name: string, onProgress?: ProgressListener): Promise<ScratchFile> {
    const made = await this.makeCopy(image, name, onProgress);
    return { path: this.copyVolumeFor(name), method: made.method, durationMs: made.durationMs };
  }

  async removeCopy(copyId: string): Promise<void> {
    const target = this.copyVolumeFor(copyId);
    await fs.rm(`${target}.partial`, { force: true });
    await fs.rm(target, { force: true });
  }

  async removeImage(volume: string): Promise<void> {
    await fs.rm(this.imagePath(volume), { force: true });
  }

  async volumeExists(volume: string): Promise<boolean> {
    try {
      await fs.stat(volume);
      return true;
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return false;
      throw e;
    }
  }

  async listCopyVolumes(): Promise<readonly { copyId: string; volume: string; partial: boolean }[]> {
    const out: { copyId: string; volume: string; partial: boolean }[] = [];
    for (const name of await fs.readdir(this.copiesDir)) {
      const m = /^(.+)\.raw(\.partial)?$/.exec(name);
      if (m && COPY_ID.test(m[1]!)) out.push({ copyId: m[1]!, volume: join(this.copiesDir, name), partial: m[2] !== undefined });
    }
    return out;
  }

  /**
   * Import temps left by a process that died mid-import: those of the owners `dead` names (a
   * name without an owner counts as dead: no live instance writes one), never one in flight here.
   */
  async removeTempFiles(dead: (owner: string | null) => boolean = () => true): Promise<readonly string[]> {
    const ownerOf = (n: string) => (n.includes('~') ? n.slice(0, n.indexOf('~')) : null);
    const names = (await fs.readdir(this.tmpDir)).filter((n) => !this.inFlight.has(join(this.tmpDir, n)) && dead(ownerOf(n)));
    await Promise.all(names.map((n) => fs.rm(join(this.tmpDir, n), { force: true, recursive: true })));
    return names;
  }

  async listImageVolumes(): Promise<readonly string[]> {
    return (await fs.readdir(this.imagesDir)).filter((n) => IMAGE_NAME.test(n)).map((n) => join(this.imagesDir, n));
  }

  /** Stops the workers; anything they were writing is removed (a copy cut short is never complete). */
  async close(): Promise<void> {
    await this.workers.close();
    await Promise.all([...this.inFlight].map((p) => fs.rm(p, { force: true })));
    this.inFlight.clear();
  }

  /** Runs a worker job that writes `tmp`, remembering the file until the job has settled. */
  private async runJob<J extends Job>(tmp: string, job: J, onProgress?: ProgressListener): Promise<JobResults[J['kind']]> {
    this.inFlight.add(tmp);
    try {
      return await this.workers.run(job, onProgress);
    } finally {
      this.inFlight.delete(tmp);
    }
  }

  private tmpPath(suffix: string): string {
    const owner = this.owner?.();
    return join(this.tmpDir, `${owner === undefined ? '' : `${owner}~`}${randomUUID()}.${suffix}`);
  }

  /** Only our own image files may be removed, whatever locator a caller hands in. */
  private imagePath(volume: string): string {
    const path = resolve(volume);
    if (resolve(path, '..') !== this.imagesDir || !IMAGE_NAME.test(path.slice(this.imagesDir.length + 1))) {
      throw new InputError(`'${volume}' is not an image volume of this driver`, { volume });
    }
    return path;
  }

  /** Maps a failure to the domain's error family. */
  private failure(e: unknown, what: string, details: Record<string, unknown>): PrestageError {
    if (e instanceof PrestageError) return e;
    const code = errnoCode(e);
    const message = e instanceof Error ? e.message : String(e);
    if (isNoSpace(e)) {
      return new NoSpaceError(`${what}: no space left in ${this.dataDir}`, { ...details, errno: code }, { cause: e });
    }
    if (code === VERIFY_FAILED) return new PrestageError('PRESTAGE_INTERNAL', `${what}: verification failed: ${message}`, details, { cause: e });
    return new PrestageError('PRESTAGE_INTERNAL', `${what} failed: ${message}`, { ...details, errno: code }, { cause: e });
  }
}
