/**
 * The Ceph RBD volume driver: images and copies are RBD images in one pool, reached through
 * librbd (librbd.ts).
 *
 *   rbd:POOL/img-<sha256>@sealed   a sealed image: written once, snapshotted, snapshot protected
 *   rbd:POOL/copy-<copyId>         a copy: a copy-on-write clone of a sealed image's snapshot
 *   rbd:POOL/tmp-<owner>~<uuid>    an import in progress (or left by a crash: removeTempFiles)
 *
 * A copy is a clone, so it takes tens of milliseconds and no space up front, whatever the image
 * size. An import writes a temporary image, seals it (snapshot, protect) and only then renames it
 * to `img-<sha256>`: an `img-` name always means a complete, sealed image, and a crash leaves only
 * `tmp-` names behind. Local files (uploads being received, qcow2 conversions, scratch files for
 * template builds) live in `stagingDir`.
 */
import { createHash, randomUUID } from 'node:crypto';
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
  UnavailableError,
  errnoCode,
  failpoint,
  isNoSpace,
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
} from '../../domain/index.js';
import { dataSegments } from '../file/fs-native.js';
import { stageStream } from '../file/stage-stream.js';
import { inspectImageFile, qcow2ToRaw } from '../image-file.js';
import { RadosCluster, type IoCtx, type RbdImage } from './librbd.js';
import { RbdDevice } from './rbd-device.js';

export interface RbdDriverOptions {
  /** A ceph.conf naming the monitors and the keyring. */
  readonly confPath: string;
  readonly pool: string;
  /** The cephx user, without `client.` (default admin). */
  readonly id?: string;
  /** A local directory for uploads being received, qcow2 conversions and scratch files. */
  readonly stagingDir: string;
  readonly logger?: Logger;
  /**
   * Who is writing (the instance id), put in temporary names so that when several instances
   * share the pool one cleans up only what a dead one left.
   */
  readonly owner?: () => string;
}

const SNAP = 'sealed';
const IMAGE_PREFIX = 'img-';
const COPY_PREFIX = 'copy-';
const TEMP_PREFIX = 'tmp-';
const IMAGE_NAME = /^img-[0-9a-f]{64}$/;
/** Copy ids become image and file names: no separators, nothing RBD reserves ('/', '@'). */
const COPY_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const LOCATOR = /^rbd:([^/@]+)\/([^/@]+)(?:@([^/@]+))?$/;

const MiB = 1024 * 1024;
/** One RBD object (the default order 22): imports write whole objects where they can. */
const CHUNK = 4 * MiB;
/** Writes (imports) and reads (scratch files) in flight at once. */
const DEPTH = 8;
const ZEROS = Buffer.alloc(CHUNK);
/** Zero runs shorter than this are written: a hole smaller than BlueStore's allocation unit saves nothing. */
const GRAIN = 64 * 1024;
const PROGRESS_MS = 200;
/**
 * What a clone takes before it is ready: its header and a few omap entries. Its own objects
 * come as its host writes, after it has left the pool.
 */
const CLONE_BYTES = 4 * MiB;
/**
 * Longest chain of clones a copy may sit at the end of. Every read of a block a clone has not
 * written goes to its parent, and on to the parent's parent: each level is one more lookup on a
 * miss, and the kernel client refuses chains beyond 16. Imports write whole images, so today a
 * copy is one level deep; a copy of an image that is itself a deep clone is flattened instead.
 */
const MAX_CHAIN = 8;
/** Blocks a new clone is compared on against its image: cheap, and catches a wrong parent or size. */
const VERIFY_SAMPLES = 4;
const VERIFY_BYTES = 64 * 1024;
/**
 * librbd's client cache is off: two instances may serve one copy (a host that reconnects to the
 * other after one dies), and a cache in one would answer reads with what the other overwrote. A
 * mount that cannot reach the monitors fails in 30 s rather than librados's 5 minutes.
 */
const CLIENT_CONF = { rbd_cache: 'false', client_mount_timeout: '30' };

interface Locator {
  readonly pool: string;
  readonly image: string;
  readonly snap: string | undefined;
}

/** Promises in flight, at most `depth`: the first failure is thrown at the next add() or at drain(). */
class Window {
  private readonly running = new Set<Promise<void>>();
  private failed: { error: unknown } | undefined;
  constructor(private readonly depth: number) {}

  async add(p: Promise<unknown>): Promise<void> {
    const tracked: Promise<void> = p.then(
      () => undefined,
      (error: unknown) => {
        this.failed ??= { error };
      },
    );
    this.running.add(tracked);
    void tracked.finally(() => this.running.delete(tracked));
    while (this.running.size >= this.depth) await Promise.race(this.running);
    if (this.failed) throw this.failed.error;
  }

  async drain(): Promise<void> {
    await Promise.all(this.running);
    if (this.failed) throw this.failed.error;
  }
}

/** Reads `into.length` bytes at `offset` of a local file; a file that ends early is a bad image. */
async function readFull(fh: fs.FileHandle, into: Buffer, offset: number, path: string): Promise<void> {
  for (let got = 0; got < into.length; ) {
    const { bytesRead } = await fh.read(into, got, into.length - got, offset + got);
    if (bytesRead === 0) throw new BadImageError(`${path} ended at ${offset + got} while it was being read`, { path });
    got += bytesRead;
  }
}

/**
 * The non-zero runs [start, end) of a buffer, found `GRAIN` bytes at a time: only those are
 * written, so a mostly empty chunk stays mostly unallocated, in an RBD object or a local file.
 */
function nonZeroRuns(b: Buffer): [number, number][] {
  const runs: [number, number][] = [];
  for (let at = 0; at < b.length; at += GRAIN) {
    const end = Math.min(b.length, at + GRAIN);
    if (b.subarray(at, end).equals(ZEROS.subarray(0, end - at))) continue;
    const last = runs[runs.length - 1];
    if (last && last[1] === at) last[1] = end;
    else runs.push([at, end]);
  }
  return runs;
}

/** How long a removal waits for other clients of a copy to close it: past Ceph's 30 s watch timeout. */
const REMOVE_BUSY_WAIT_MS = 35_000;

export class RbdDriver implements VolumeDriver {
  readonly name = 'rbd' as const;
  readonly pool: string;
  private readonly scratchDir: string;
  /** Temporary images and files this process is writing: never "left by a crash". */
  private readonly inFlight = new Set<string>();
  private readonly devices = new Set<RbdDevice>();
  private readonly running = new Set<Promise<unknown>>();
  /** Chain depth of each sealed image (an image never changes, nor does its parent). */
  private readonly depths = new Map<string, Promise<number>>();
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly cluster: RadosCluster,
    private readonly io: IoCtx,
    readonly stagingDir: string,
    private readonly logger: Logger | undefined,
    private readonly owner: (() => string) | undefined,
  ) {
    this.pool = io.pool;
    this.scratchDir = join(stagingDir, 'scratch');
  }

  static async open(opts: RbdDriverOptions): Promise<RbdDriver> {
    const stagingDir = resolve(opts.stagingDir);
    try {
      await fs.mkdir(join(stagingDir, 'scratch'), { recursive: true, mode: 0o700 });
    } catch (e) {
      throw new InputError(`staging directory ${stagingDir} is not usable: ${e instanceof Error ? e.message : String(e)}`, { stagingDir }, { cause: e });
    }
    let cluster: RadosCluster;
    try {
      cluster = await RadosCluster.connect({ confPath: opts.confPath, id: opts.id ?? 'admin', conf: CLIENT_CONF });
    } catch (e) {
      if (e instanceof PrestageError) throw e;
      throw new UnavailableError(`cannot connect to Ceph with ${opts.confPath}: ${e instanceof Error ? e.message : String(e)}`, { confPath: opts.confPath }, { cause: e });
    }
    try {
      const io = await cluster.ioctx(opts.pool);
      return new RbdDriver(cluster, io, stagingDir, opts.logger, opts.owner);
    } catch (e) {
      await cluster.shutdown();
      if (errnoCode(e) === 'ENOENT') throw new InputError(`Ceph pool '${opts.pool}' does not exist (ceph osd pool create ${opts.pool}; rbd pool init ${opts.pool})`, { pool: opts.pool }, { cause: e });
      throw e;
    }
  }

  importImage(path: string, onProgress?: ProgressListener, into?: DriverName): Promise<ImportedVolume> {
    return this.op(async () => {
      if (into !== undefined && into !== this.name) throw new InputError(`driver '${into}' is not configured here (serve --driver ${into} …)`, { driver: into });
      const source = resolve(path);
      const format = await inspectImageFile(source);
      let converted: string | undefined;
      try {
        let raw = source;
        if (format === 'qcow2') {
          converted = this.stagingPath('convert.raw');
          this.inFlight.add(converted);
          await qcow2ToRaw(source, converted);
          raw = converted;
        }
        return { ...(await this.importRaw(raw, onProgress)), format };
      } catch (e) {
        const code = errnoCode(e);
        const fromFile = !/^(rbd|rados)_/.test((e as NodeJS.ErrnoException).syscall ?? '');
        if (fromFile && (code === 'ENOENT' || code === 'EIO')) throw new BadImageError(`cannot read ${source}: ${code}`, { path: source }, { cause: e });
        throw this.failure(e, `import of ${source}`, { path: source });
      } finally {
        if (converted) {
          await fs.rm(converted, { force: true });
          this.inFlight.delete(converted);
        }
      }
    });
  }

  /**
   * Writes a raw file into a temporary image (only its non-zero chunks: the image stays thin),
   * hashing every byte on the way, seals it, and renames it to its content's name. The hash runs
   * here on the main thread, about 3 ms per 4 MiB chunk: a pause other requests can bear, where a
   * worker thread would cost a copy of every chunk.
   */
  private async importRaw(raw: string, onProgress?: ProgressListener): Promise<Omit<ImportedVolume, 'format'>> {
    const t0 = performance.now();
    const fh = await fs.open(raw, 'r');
    const tmp = this.tempName();
    this.inFlight.add(tmp);
    let image: RbdImage | undefined;
    const writes = new Window(DEPTH);
    try {
      const size = (await fh.stat()).size;
      // lseek(SEEK_DATA/SEEK_HOLE) answers from the inode without I/O to wait for: fine on the
      // main thread, though fs-native's functions are meant for workers.
      const segments = dataSegments(fh.fd, size);
      // A full cluster makes writes wait rather than fail: refuse up front what cannot fit.
      const dataBytes = segments.reduce((n, [s, e]) => n + e - s, 0);
      const space = await this.freeSpace();
      if (dataBytes > space.freeBytes) {
        throw new NoSpaceError(`import of ${raw}: ${dataBytes} bytes of data, ${space.freeBytes} free in Ceph pool ${this.pool}`, { pool: this.pool, dataBytes, freeBytes: space.freeBytes });
      }
      await this.io.create(tmp, size);
      image = await this.io.open(tmp);
      const hash = createHash('sha256');
      const free: Buffer[] = [];
      let reportedAt = 0;
      const progress = (done: number): void => {
        if (!onProgress || (done < size && performance.now() - reportedAt < PROGRESS_MS)) return;
        reportedAt = performance.now();
        onProgress({ doneBytes: done, totalBytes: size });
      };
      // Holes are hashed as zeros without being read: GiBs of them in a sparse image, so the
      // loop lets other callbacks run every 16 MiB (about 10 ms of hashing).
      const hashZeros = async (from: number, to: number): Promise<void> => {
        for (let at = from, n = 0; at < to; at += CHUNK, n++) {
          if (n % 4 === 3) {
            this.checkOpen();
            await new Promise((r) => setImmediate(r));
          }
          hash.update(ZEROS.subarray(0, Math.min(CHUNK, to - at)));
          progress(Math.min(to, at + CHUNK));
        }
      };
      let pos = 0;
      for (const [start, end] of segments) {
        await hashZeros(pos, start);
        for (let off = start; off < end; ) {
          this.checkOpen();
          // Pieces end on object boundaries, so each write fills (part of) one object.
          const n = Math.min(end, (Math.floor(off / CHUNK) + 1) * CHUNK) - off;
          const whole = free.pop() ?? Buffer.allocUnsafe(CHUNK);
          const buf = whole.subarray(0, n);
          await readFull(fh, buf, off, raw);
          hash.update(buf);
          const runs = nonZeroRuns(buf);
          const img = image;
          const at = off;
          if (runs.length === 0) free.push(whole);
          else await writes.add(Promise.all(runs.map(([s, e]) => img.write(buf.subarray(s, e), at + s))).then(() => free.push(whole)));
          off += n;
          progress(off);
        }
        pos = end;
      }
      await hashZeros(pos, size);
      await writes.drain();
      await image.flush();
      const sha256 = hash.digest('hex');
      await image.snapCreate(SNAP);
      await image.snapProtect(SNAP);
      await image.close();
      image = undefined;
      failpoint('import.after-temp');
      const name = `${IMAGE_PREFIX}${sha256}`;
      try {
        await this.io.rename(tmp, name);
      } catch (e) {
        if (errnoCode(e) !== 'EEXIST') throw e;
        // rename never replaces: these bytes are stored already, sealed as they were.
        this.logger?.info({ sha256 }, 'image already stored, reusing it');
        await this.destroy(tmp);
      }
      progress(size);
      this.logger?.info({ sha256, sizeBytes: size, dataBytes, pool: this.pool, ms: Math.round(performance.now() - t0) }, 'image imported');
      return { sha256, sizeBytes: size, volume: this.locator(name, SNAP) };
    } catch (e) {
      await writes.drain().catch(() => undefined);
      await image?.close().catch(() => undefined);
      await this.destroy(tmp).catch((err: unknown) => this.logger?.warn({ err, image: tmp }, 'could not remove the temporary image of a failed import'));
      throw e;
    } finally {
      this.inFlight.delete(tmp);
      await fh.close();
    }
  }

  stageImage(chunks: AsyncIterable<Uint8Array>, opts: { readonly totalBytes?: number; readonly onProgress?: ProgressListener } = {}): Promise<StagedImage> {
    return stageStream(chunks, this.stagingPath('upload'), opts, this.inFlight, this.stagingDir);
  }


  copyVolumeFor(copyId: string, _image?: Pick<Image, 'volume'>): string {
    return this.locator(this.copyName(copyId));
  }

  owns(volume: string): boolean {
    return this.parse(volume) !== undefined || this.scratchIdOf(volume) !== undefined;
  }

  driverOf(volume: string): DriverName | undefined {
    return this.owns(volume) ? this.name : undefined;
  }

  /** A clone of the image's sealed snapshot, checked on its size and a few sampled blocks. */
  makeCopy(image: Pick<Image, 'volume' | 'sha256' | 'sizeBytes'>, copyId: string, onProgress?: ProgressListener): Promise<MadeCopy> {
    return this.op(async () => {
      const t0 = performance.now();
      const child = this.copyName(copyId);
      const parent = this.sealedImage(image.volume);
      let created = false;
      try {
        const depth = await this.chainDepth(parent.image);
        await this.io.clone(parent.image, SNAP, child);
        created = true;
        let method = 'clone';
        if (depth + 1 > MAX_CHAIN) {
          const c = await this.io.open(child);
          try {
            await c.flatten();
          } finally {
            await c.close();
          }
          method = 'clone+flatten';
        }
        await this.verifyClone(parent.image, child, image.sizeBytes);
        const durationMs = performance.now() - t0;
        onProgress?.({ doneBytes: image.sizeBytes, totalBytes: image.sizeBytes });
        this.logger?.info({ copyId, image: parent.image, method, ms: Math.round(durationMs) }, 'copy made');
        // A flattened copy holds the image's data itself: count it all (an upper bound, cheaply known).
        return { method, durationMs, allocatedBytes: method === 'clone' ? 0 : image.sizeBytes };
      } catch (e) {
        const code = errnoCode(e);
        if (code === 'EEXIST' && !created) throw new ConflictError(`copy ${copyId} already exists; remove it first`, { copyId }, { cause: e });
        if (created) await this.io.remove(child).catch((err: unknown) => this.logger?.warn({ err, image: child }, 'could not remove a failed copy'));
        if (code === 'ENOENT' && !(await this.volumeExists(image.volume))) throw new NotFoundError('volume', image.volume, { cause: e });
        throw this.failure(e, `copy ${copyId}`, { copyId, volume: image.volume });
      }
    });
  }

  /** A clone's metadata; a copy that will be flattened (see MAX_CHAIN), the whole image. */
  copyBytes(image: Pick<Image, 'volume' | 'sizeBytes'>): Promise<number> {
    return this.op(async () => {
      const depth = await this.chainDepth(this.sealedImage(image.volume).image).catch(() => 0);
      return depth + 1 > MAX_CHAIN ? image.sizeBytes : CLONE_BYTES;
    });
  }

  /**
   * The pool's room as `ceph df` reports it (MAX AVAIL: after replication and the full ratio),
   * within the pool's byte quota when it has one. A pool the mgr has not reported on yet (just
   * created) gets the cluster's raw free space, which overstates it by the replication factor.
   */
  freeSpace(_near?: Pick<Image, 'volume'>): Promise<StoreSpace> {
    return this.op(async () => {
      const [df, quota] = await Promise.all([
        this.cluster.monCommand({ prefix: 'df', format: 'json' }),
        this.cluster.monCommand({ prefix: 'osd pool get-quota', pool: this.pool, format: 'json' }).catch((e: unknown) => {
          if (errnoCode(e) === 'ENOENT') return '{}';
          throw e;
        }),
      ]);
      const pools = (JSON.parse(df) as { pools: { name: string; stats: { stored: number; max_avail: number } }[] }).pools;
      const stats = pools.find((p) => p.name === this.pool)?.stats;
      if (!stats) {
        const raw = await this.cluster.stat();
        return { freeBytes: raw.availBytes, totalBytes: raw.totalBytes };
      }
      let freeBytes = stats.max_avail;
      let totalBytes = stats.stored + stats.max_avail;
      const maxBytes = (JSON.parse(quota) as { quota_max_bytes?: number }).quota_max_bytes ?? 0;
      if (maxBytes > 0) {
        freeBytes = Math.min(freeBytes, Math.max(0, maxBytes - stats.stored));
        totalBytes = Math.min(totalBytes, maxBytes);
      }
      return { freeBytes, totalBytes };
    });
  }

  openVolume(volume: string, opts: { readonly readOnly: boolean }): Promise<BlockDevice> {
    return this.op(async () => {
      const loc = this.parse(volume);
      if (!loc || !(loc.image.startsWith(COPY_PREFIX) || (IMAGE_NAME.test(loc.image) && loc.snap === SNAP))) {
        throw new InputError(`'${volume}' is not a copy or image of Ceph pool ${this.pool}`, { volume });
      }
      if (loc.snap !== undefined && !opts.readOnly) throw new InputError(`'${volume}' is a sealed image: it opens read-only`, { volume });
      const image = await this.io.open(loc.image, { readOnly: opts.readOnly, ...(loc.snap !== undefined && { snap: loc.snap }) });
      const device: RbdDevice = new RbdDevice(image, opts.readOnly, () => this.devices.delete(device));
      this.devices.add(device);
      return device;
    });
  }

  /**
   * The image's bytes in a local file of the staging area, `scratch/<name>.raw`: only the extents
   * the image has data in are read, and only non-zero chunks written, so the file is as sparse as
   * the image. Written as `.partial` and renamed once complete and fsynced.
   */
  scratchFile(image: Pick<Image, 'volume' | 'sha256' | 'sizeBytes'>, name: string, onProgress?: ProgressListener): Promise<ScratchFile> {
    return this.op(async () => {
      const t0 = performance.now();
      const path = this.scratchPath(name);
      const partial = `${path}.partial`;
      const sealed = this.sealedImage(image.volume);
      let src: RbdImage | undefined;
      let out: fs.FileHandle | undefined;
      const reads = new Window(DEPTH);
      try {
        src = await this.io.open(sealed.image, { readOnly: true, snap: SNAP });
        const size = src.size;
        out = await fs.open(partial, 'wx', 0o600);
        await out.truncate(size);
        const extents: [number, number][] = [];
        await src.diffIterate(0, size, true, (off, len) => extents.push([off, off + len]));
        extents.sort((a, b) => a[0] - b[0]);
        let done = 0;
        let reportedAt = 0;
        for (const [start, end] of extents) {
          for (let off = start; off < end; off += CHUNK) {
            this.checkOpen();
            const buf = Buffer.allocUnsafe(Math.min(CHUNK, end - off));
            const at = off;
            const img = src;
            const file = out;
            await reads.add(
              (async () => {
                const n = await img.read(buf, at);
                if (n !== buf.length) throw Object.assign(new Error(`EIO: short read of ${sealed.image}@${SNAP} at ${at}`), { code: 'EIO' });
                for (const [s, e] of nonZeroRuns(buf)) {
                  for (let put = s; put < e; ) put += (await file.write(buf, put, e - put, at + put)).bytesWritten;
                }
                done += buf.length;
                if (onProgress && performance.now() - reportedAt >= PROGRESS_MS) {
                  reportedAt = performance.now();
                  onProgress({ doneBytes: Math.min(done, size), totalBytes: size });
                }
              })(),
            );
          }
        }
        await reads.drain();
        await out.sync();
        await out.close();
        out = undefined;
        await fs.rename(partial, path);
        onProgress?.({ doneBytes: size, totalBytes: size });
        return { path, method: 'export', durationMs: performance.now() - t0 };
      } catch (e) {
        await reads.drain().catch(() => undefined);
        await out?.close().catch(() => undefined);
        await fs.rm(partial, { force: true });
        if (isNoSpace(e)) throw new NoSpaceError(`no space left in ${this.stagingDir} for a scratch file of ${image.volume}`, { stagingDir: this.stagingDir }, { cause: e });
        if (errnoCode(e) === 'ENOENT' && !(await this.volumeExists(image.volume))) throw new NotFoundError('volume', image.volume, { cause: e });
        throw this.failure(e, `scratch file ${name}`, { volume: image.volume });
      } finally {
        await src?.close().catch(() => undefined);
      }
    });
  }

  /** Removes the clone `copy-<id>` and a scratch file of that name; absent is fine. */
  removeCopy(copyId: string): Promise<void> {
    return this.op(async () => {
      const name = this.copyName(copyId);
      const path = this.scratchPath(copyId);
      await fs.rm(`${path}.partial`, { force: true });
      await fs.rm(path, { force: true });
      try {
        await this.removeWhenClosed(name, `copy ${copyId}`, { copyId });
      } catch (e) {
        throw this.failure(e, `removing copy ${copyId}`, { copyId });
      }
    });
  }

  /** Unprotects and removes the sealed snapshot, then the image; refused while clones of it live. */
  removeImage(volume: string): Promise<void> {
    return this.op(async () => {
      const { image } = this.sealedImage(volume);
      this.depths.delete(image);
      await this.destroy(image);
    });
  }

  volumeExists(volume: string): Promise<boolean> {
    return this.op(async () => {
      const scratch = this.scratchIdOf(volume);
      if (scratch !== undefined) {
        try {
          await fs.stat(volume);
          return true;
        } catch (e) {
          if (errnoCode(e) === 'ENOENT') return false;
          throw e;
        }
      }
      const loc = this.parse(volume);
      if (!loc) return false;
      try {
        const image = await this.io.open(loc.image, { readOnly: true, ...(loc.snap !== undefined && { snap: loc.snap }) });
        await image.close();
        return true;
      } catch (e) {
        if (errnoCode(e) === 'ENOENT') return false;
        throw e;
      }
    });
  }

  /** Every `copy-*` image (a clone appears whole or not at all) and every scratch file. */
  listCopyVolumes(): Promise<readonly { copyId: string; volume: string; partial: boolean }[]> {
    return this.op(async () => {
      const out: { copyId: string; volume: string; partial: boolean }[] = [];
      for (const name of await this.io.list()) {
        const copyId = name.slice(COPY_PREFIX.length);
        if (name.startsWith(COPY_PREFIX) && COPY_ID.test(copyId)) out.push({ copyId, volume: this.locator(name), partial: false });
      }
      for (const name of await fs.readdir(this.scratchDir)) {
        const m = /^(.+)\.raw(\.partial)?$/.exec(name);
        if (m && COPY_ID.test(m[1]!)) out.push({ copyId: m[1]!, volume: join(this.scratchDir, name), partial: m[2] !== undefined });
      }
      return out;
    });
  }

  /**
   * Temporary images and staging files of interrupted imports and uploads: those of the owners
   * `dead` names (a name without an owner counts as dead: no live instance writes one), never one
   * in flight here.
   */
  removeTempFiles(dead: (owner: string | null) => boolean = () => true): Promise<readonly string[]> {
    return this.op(async () => {
      const ownerOf = (n: string): string | null => (n.includes('~') ? n.slice(0, n.indexOf('~')) : null);
      const images = (await this.io.list()).filter((n) => n.startsWith(TEMP_PREFIX) && !this.inFlight.has(n) && dead(ownerOf(n.slice(TEMP_PREFIX.length))));
      const files = (await fs.readdir(this.stagingDir, { withFileTypes: true }))
        .filter((d) => d.isFile() && !this.inFlight.has(join(this.stagingDir, d.name)) && dead(ownerOf(d.name)))
        .map((d) => d.name);
      for (const n of images) await this.destroy(n);
      await Promise.all(files.map((n) => fs.rm(join(this.stagingDir, n), { force: true })));
      return [...images, ...files];
    });
  }

  listImageVolumes(): Promise<readonly string[]> {
    return this.op(async () => {
      return (await this.io.list()).filter((n) => IMAGE_NAME.test(n)).map((n) => this.locator(n, SNAP));
    });
  }

  /**
   * Lets the operations running end (imports and scratch files stop at their next chunk), closes
   * the devices still open (after their own operations), then the cluster handle: librados must
   * not be shut down under a call in flight.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      while (this.running.size > 0) await Promise.allSettled([...this.running]);
      await Promise.allSettled([...this.devices].map((d) => d.close()));
      this.io.destroy();
      await this.cluster.shutdown();
    })();
    return this.closing;
  }

  /**
   * Removes an image whatever state an import or a crash left it in: its sealed snapshot
   * unprotected and removed first. An image with live clones is refused (ConflictError); one
   * already gone is fine.
   */
  private async destroy(name: string): Promise<void> {
    let image: RbdImage;
    try {
      image = await this.io.open(name);
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return;
      throw e;
    }
    try {
      if ((await image.snapList()).includes(SNAP)) {
        if (await image.snapIsProtected(SNAP)) {
          try {
            await image.snapUnprotect(SNAP);
          } catch (e) {
            if (errnoCode(e) !== 'EBUSY') throw e;
            const clones = await this.liveClones(name);
            throw new ConflictError(`image ${this.locator(name, SNAP)} has ${clones.length} live clone${clones.length === 1 ? '' : 's'} (${clones.slice(0, 3).join(', ')}${clones.length > 3 ? ', …' : ''}); remove them first`, { volume: this.locator(name, SNAP), clones: clones.length }, { cause: e });
          }
        }
        await image.snapRemove(SNAP);
      }
    } finally {
      await image.close();
    }
    // An import's temporary a killed instance was writing stays open (watched) by it until the
    // watch times out: wait for that as for a copy, rather than fail the start-up that cleans it.
    await this.removeWhenClosed(name, `image ${name}`, { image: name });
  }

  /**
   * Removes the RBD image `name` (absent is fine) once no other client has it open: another
   * instance closing its export after the same release, or one that died less than the watch
   * timeout (30 s) ago. Both let go by themselves; after REMOVE_BUSY_WAIT_MS it is a ConflictError.
   */
  private async removeWhenClosed(name: string, what: string, details: Record<string, unknown>): Promise<void> {
    for (let wait = 50, waited = 0; ; waited += wait, wait = Math.min(wait * 2, 2000)) {
      try {
        await this.io.remove(name);
        return;
      } catch (e) {
        if (errnoCode(e) === 'ENOENT') return;
        if (errnoCode(e) !== 'EBUSY') throw e;
        if (waited >= REMOVE_BUSY_WAIT_MS) throw new ConflictError(`${what} is still open (${this.locator(name)}) after ${waited} ms`, details, { cause: e });
      }
      await new Promise((r) => setTimeout(r, wait));
    }
  }

  private async liveClones(name: string): Promise<string[]> {
    const snap = await this.io.open(name, { readOnly: true, snap: SNAP });
    try {
      return (await snap.children()).filter((c) => !c.trash).map((c) => `${c.pool}/${c.image}`);
    } finally {
      await snap.close();
    }
  }

  /** How many clones deep the image's snapshot is (0: not a clone). */
  private chainDepth(name: string): Promise<number> {
    let depth = this.depths.get(name);
    if (!depth) {
      depth = (async () => {
        let n = 0;
        for (let at: { image: string; snap: string } | null = { image: name, snap: SNAP }; at && n <= MAX_CHAIN; n++) {
          const img = await this.io.open(at.image, { readOnly: true, snap: at.snap });
          try {
            const parent = await img.parent();
            // A parent in another pool would need another ioctx; counting it as the end is safe
            // only because this driver never makes such images: say so rather than guess.
            if (parent && parent.pool !== this.pool) throw new InputError(`image ${name} has a parent in another pool (${parent.pool})`, { image: name });
            at = parent;
          } finally {
            await img.close();
          }
        }
        return n - 1;
      })();
      this.depths.set(name, depth);
      depth.catch(() => this.depths.delete(name));
    }
    return depth;
  }

  /** The clone has the image's size and reads as the image at a few places (first, last, between). */
  private async verifyClone(parent: string, child: string, sizeBytes: number): Promise<void> {
    const [p, c] = await Promise.all([this.io.open(parent, { readOnly: true, snap: SNAP }), this.io.open(child, { readOnly: true })]);
    try {
      if (c.size !== p.size || c.size !== sizeBytes) {
        throw new PrestageError('PRESTAGE_INTERNAL', `clone ${child} is ${c.size} bytes, its image ${p.size}, expected ${sizeBytes}`, { child, parent });
      }
      const blocks = Math.max(1, Math.floor(sizeBytes / VERIFY_BYTES));
      const picks = new Set([0, blocks - 1]);
      while (picks.size < Math.min(VERIFY_SAMPLES, blocks)) picks.add(Math.floor(Math.random() * blocks));
      await Promise.all(
        [...picks].map(async (b) => {
          const off = b * VERIFY_BYTES;
          const len = Math.min(VERIFY_BYTES, sizeBytes - off);
          const [x, y] = [Buffer.alloc(len), Buffer.alloc(len)];
          await Promise.all([p.read(x, off), c.read(y, off)]);
          if (!x.equals(y)) throw new PrestageError('PRESTAGE_INTERNAL', `clone ${child} differs from ${parent}@${SNAP} at ${off}: verification failed`, { child, parent, offset: off });
        }),
      );
    } finally {
      await Promise.all([p.close(), c.close()]);
    }
  }

  private locator(image: string, snap?: string): string {
    return `rbd:${this.pool}/${image}${snap === undefined ? '' : `@${snap}`}`;
  }

  /** A locator of this pool, or undefined. */
  private parse(volume: string): Locator | undefined {
    const m = LOCATOR.exec(volume);
    if (!m || m[1] !== this.pool) return undefined;
    return { pool: m[1], image: m[2]!, snap: m[3] };
  }

  /** Only sealed images of this pool may be cloned, exported or removed as images. */
  private sealedImage(volume: string): Locator {
    const loc = this.parse(volume);
    if (!loc || !IMAGE_NAME.test(loc.image) || loc.snap !== SNAP) throw new InputError(`'${volume}' is not an image volume of Ceph pool ${this.pool}`, { volume });
    return loc;
  }

  private copyName(copyId: string): string {
    if (!COPY_ID.test(copyId)) throw new InputError(`invalid copy id '${copyId}'`, { copyId });
    return `${COPY_PREFIX}${copyId}`;
  }

  private scratchPath(name: string): string {
    if (!COPY_ID.test(name)) throw new InputError(`invalid scratch file name '${name}'`, { name });
    return join(this.scratchDir, `${name}.raw`);
  }

  /** The copy id of a scratch file path of this driver, or undefined. */
  private scratchIdOf(volume: string): string | undefined {
    if (!volume.startsWith(`${this.scratchDir}/`)) return undefined;
    const m = /^(.+)\.raw(\.partial)?$/.exec(volume.slice(this.scratchDir.length + 1));
    return m && COPY_ID.test(m[1]!) ? m[1] : undefined;
  }

  private ownerPrefix(): string {
    const owner = this.owner?.();
    return owner === undefined ? '' : `${owner}~`;
  }

  private tempName(): string {
    return `${TEMP_PREFIX}${this.ownerPrefix()}${randomUUID()}`;
  }

  private stagingPath(suffix: string): string {
    return join(this.stagingDir, `${this.ownerPrefix()}${randomUUID()}.${suffix}`);
  }

  private checkOpen(): void {
    if (this.closing) throw new UnavailableError('the RBD driver is closed', { pool: this.pool });
  }

  /** Runs an operation that uses the cluster, counted until it settles so that close() waits for it. */
  private op<T>(fn: () => Promise<T>): Promise<T> {
    if (this.closing) return Promise.reject(new UnavailableError('the RBD driver is closed', { pool: this.pool }));
    const p = fn();
    this.running.add(p);
    void p.finally(() => this.running.delete(p)).catch(() => undefined);
    return p;
  }

  /** Maps a failure to the domain's error family. */
  private failure(e: unknown, what: string, details: Record<string, unknown>): PrestageError {
    if (e instanceof PrestageError) return e;
    const code = errnoCode(e);
    const message = e instanceof Error ? e.message : String(e);
    if (isNoSpace(e)) return new NoSpaceError(`${what}: no space left in Ceph pool ${this.pool}`, { ...details, errno: code }, { cause: e });
    return new PrestageError('PRESTAGE_INTERNAL', `${what} failed: ${message}`, { ...details, errno: code }, { cause: e });
  }
}
