/**
 * A copy worker thread: does the long, synchronous disk work of the file driver (copies, imports,
 * hashing) so the main event loop never blocks on it. One job at a time, in arrival order; the
 * protocol is in `jobs.ts`. Sync `fs` calls are deliberate here: this thread has nothing else to do.
 */
import { createHash, type Hash } from 'node:crypto';
import fs from 'node:fs';
import { dirname } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parentPort, workerData } from 'node:worker_threads';
import { errnoCode } from '../../domain/index.js';
import { CopyRateLimit, type CopyRateShare } from './copy-rate.js';
import { copyFileRange, dataSegments, ficlone, lowerThreadPriority } from './fs-native.js';
import { VERIFY_FAILED, type CopyJob, type CopyResult, type ImportJob, type ImportResult, type JobMessage, type WorkerMessage } from './jobs.js';

const MiB = 1024 * 1024;
/** Bytes per copy_file_range call: small enough to report progress and notice errors early. */
const COPY_CHUNK = 32 * MiB;
const PROGRESS_BYTES = 64 * MiB;
const PROGRESS_MS = 200;
const SAMPLE_BLOCKS = 16;
const SAMPLE_BYTES = 64 * 1024;
/** Reflink is unsupported here (filesystem, or source and target on different ones): copy instead. */
const NO_CLONE = new Set(['EOPNOTSUPP', 'ENOTSUP', 'EXDEV', 'EINVAL', 'ENOTTY', 'ENOSYS']);
/** copy_file_range cannot do this pair of files: move the bytes through user space instead. */
const NO_KERNEL_COPY = new Set(['EXDEV', 'ENOSYS', 'EINVAL', 'EOPNOTSUPP', 'ENOTSUP']);

const port = parentPort;
if (!port) throw new Error('copy-worker.ts must run as a worker thread');

// One read buffer and one zero buffer per worker; jobs never overlap, so sharing is safe.
const buf = Buffer.allocUnsafe(4 * MiB);
const zeros = Buffer.alloc(4 * MiB);
/** `--copy-rate`, shared with the other workers; absent: copies run as fast as the disk goes. */
const rateShare = (workerData as { copyRate?: CopyRateShare } | null)?.copyRate;
const copyRate = rateShare ? new CopyRateLimit(rateShare) : undefined;

function post(msg: WorkerMessage): void {
  port!.postMessage(msg);
}

function jobError(code: string, message: string): NodeJS.ErrnoException {
  return Object.assign(new Error(message), { code });
}

/** Throttled progress: one message per 64 MiB done or per 200 ms, whichever comes first. */
class Progress {
  private done = 0;
  private postedBytes = -1;
  private postedAt = Date.now();
  constructor(private readonly id: number, private readonly total: number) {}
  add(n: number): void {
    this.done += n;
    if (this.done - this.postedBytes >= PROGRESS_BYTES || Date.now() - this.postedAt >= PROGRESS_MS) this.flush();
  }
  flush(): void {
    if (this.done === this.postedBytes) return;
    this.postedBytes = this.done;
    this.postedAt = Date.now();
    post({ type: 'progress', id: this.id, doneBytes: this.done, totalBytes: this.total });
  }
}

function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function unlinkQuiet(path: string): void {
  try {
    fs.unlinkSync(path);
  } catch {
    // already gone
  }
}

/** pread that fills `into` completely; a short file is a verification failure, not a short read. */
function readFull(fd: number, into: Buffer, offset: number): void {
  for (let got = 0; got < into.length; ) {
    const n = fs.readSync(fd, into, got, into.length - got, offset + got);
    if (n === 0) throw jobError(VERIFY_FAILED, `file ended at ${offset + got}, expected more data`);
    got += n;
  }
}

function writeFull(fd: number, data: Buffer, offset: number): void {
  for (let put = 0; put < data.length; ) put += fs.writeSync(fd, data, put, data.length - put, offset + put);
}

/**
 * Reads the first `size` bytes of `srcFd` through user space, visiting only its data segments.
 * Every byte goes into `hash` (holes as zeros, which are never read); data chunks go to `dstFd` at
 * the same offset unless they are all zeros, so `dstFd` (already ftruncated to `size`) stays at
 * least as sparse as the source.
 */
function readThrough(srcFd: number, size: number, progress: Progress, opts: { dstFd?: number; hash?: Hash; rate?: CopyRateLimit }): void {
  const { dstFd, hash, rate } = opts;
  const skipZeros = (n: number): void => {
    for (let left = n; left > 0; ) {
      const k = Math.min(left, zeros.length);
      hash?.update(zeros.subarray(0, k));
      left -= k;
    }
    progress.add(n);
  };
  let pos = 0;
  for (const [start, end] of dataSegments(srcFd, size)) {
    skipZeros(start - pos);
    for (let off = start; off < end; ) {
      const chunk = buf.subarray(0, Math.min(buf.length, end - off));
      rate?.take(chunk.length);
      readFull(srcFd, chunk, off);
      hash?.update(chunk);
      if (dstFd !== undefined && !chunk.equals(zeros.subarray(0, chunk.length))) writeFull(dstFd, chunk, off);
      off += chunk.length;
      progress.add(chunk.length);
    }
    pos = end;
  }
  skipZeros(size - pos);
}

/** sha256 of a file's first `size` bytes, reading only its data. */
function hashFd(fd: number, size: number, progress: Progress, rate?: CopyRateLimit): string {
  const hash = createHash('sha256');
  readThrough(fd, size, progress, { hash, ...(rate && { rate }) });
  return hash.digest('hex');
}

/** Moves up to one buffer of bytes through user space (the fallback when copy_file_range cannot). */
function userCopy(srcFd: number, dstFd: number, off: number, len: number): number {
  const chunk = buf.subarray(0, Math.min(buf.length, len));
  readFull(srcFd, chunk, off);
  if (!chunk.equals(zeros.subarray(0, chunk.length))) writeFull(dstFd, chunk, off);
  return chunk.length;
}

/**
 * Copies the data segments of `srcFd` into `dstFd` (already ftruncated to `size`, so the holes
 * between segments stay holes) with copy_file_range, in chunks for progress. If the kernel
 * refuses this pair of files, the rest goes through user space.
 */
function sparseCopy(srcFd: number, dstFd: number, size: number, progress: Progress): void {
  let kernel = true;
  let pos = 0;
  for (const [start, end] of dataSegments(srcFd, size)) {
    progress.add(start - pos);
    for (let off = start; off < end; ) {
      const len = Math.min(COPY_CHUNK, end - off);
      let n = 0;
      if (kernel) {
        copyRate?.take(len);
        try {
          n = copyFileRange(srcFd, off, dstFd, off, len);
          if (n === 0) throw jobError(VERIFY_FAILED, `source ended at ${off}, expected ${size} bytes`);
        } catch (e) {
          if (!NO_KERNEL_COPY.has(errnoCode(e) ?? '')) throw e;
          kernel = false;
        }
      }
      if (!kernel) {
        copyRate?.take(Math.min(buf.length, len));
        n = userCopy(srcFd, dstFd, off, len);
      }
      off += n;
      progress.add(n);
    }
    pos = end;
  }
  progress.add(size - pos);
}

/** Byte-compares ~16 blocks spread over both files (first, last and evenly between). */
function samplesEqual(srcFd: number, dstFd: number, size: number): boolean {
  const block = Math.min(SAMPLE_BYTES, size);
  const a = buf.subarray(0, block);
  const b = buf.subarray(block, 2 * block);
  const last = size - block;
  for (let i = 0; i < SAMPLE_BLOCKS && block > 0; i++) {
    const off = Math.floor((last * i) / (SAMPLE_BLOCKS - 1));
    readFull(srcFd, a, off);
    readFull(dstFd, b, off);
    if (!a.equals(b)) return false;
  }
  return true;
}

function copy(id: number, job: CopyJob): CopyResult {
  const t0 = performance.now();
  const src = fs.openSync(job.source, 'r');
  let dst: number | undefined;
  let created = false; // never unlink a tmp that O_EXCL found already there: it is someone else's
  let renamed = false;
  try {
    const size = fs.fstatSync(src).size;
    if (size !== job.sizeBytes) throw jobError(VERIFY_FAILED, `source ${job.source} is ${size} bytes, expected ${job.sizeBytes}`);
    // rename() would silently replace an existing copy; a target that exists is someone else's.
    if (fs.existsSync(job.target)) throw jobError('EEXIST', `copy ${job.target} already exists`);
    dst = fs.openSync(job.tmp, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
    created = true;

    let method: CopyResult['method'] = 'sparse-copy';
    if (job.reflink === 'auto') {
      try {
        ficlone(dst, src);
        method = 'reflink';
      } catch (e) {
        if (!NO_CLONE.has(errnoCode(e) ?? '')) throw e;
      }
    }
    const verified: CopyResult['verified'] = method === 'reflink' && job.verify === 'auto' ? 'sample' : 'full';
    const progress = new Progress(id, verified === 'full' ? 2 * size : size);
    if (method === 'reflink') {
      progress.add(size);
    } else {
      fs.ftruncateSync(dst, size);
      sparseCopy(src, dst, size, progress);
    }
    fs.fsyncSync(dst);

    if (verified === 'full') {
      const sha = hashFd(dst, size, progress, copyRate);
      if (sha !== job.expectSha256) throw jobError(VERIFY_FAILED, `copy of ${job.source} has sha256 ${sha}, expected ${job.expectSha256}`);
    } else if (fs.fstatSync(dst).size !== size || !samplesEqual(src, dst, size)) {
      throw jobError(VERIFY_FAILED, `reflink of ${job.source} differs from its source`);
    }
    const allocatedBytes = fs.fstatSync(dst).blocks * 512;
    fs.closeSync(dst);
    dst = undefined;
    fs.renameSync(job.tmp, job.target);
    renamed = true;
    fsyncDir(dirname(job.target));
    progress.flush();
    return { method, durationMs: Math.round(performance.now() - t0), allocatedBytes, verified };
  } catch (e) {
    if (dst !== undefined) fs.closeSync(dst);
    if (created && !renamed) unlinkQuiet(job.tmp);
    if (renamed) unlinkQuiet(job.target);
    throw e;
  } finally {
    fs.closeSync(src);
  }
}

function importFile(id: number, job: ImportJob): ImportResult {
  const src = fs.openSync(job.source, 'r');
  let dst: number | undefined;
  let created = false;
  try {
    const size = fs.fstatSync(src).size;
    dst = fs.openSync(job.tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
    created = true;
    fs.ftruncateSync(dst, size);
    const progress = new Progress(id, size);
    const hash = createHash('sha256');
    readThrough(src, size, progress, { dstFd: dst, hash });
    fs.fsyncSync(dst);
    fs.fchmodSync(dst, 0o400); // sealed: an image never changes after import, and only its owner reads it
    const allocatedBytes = fs.fstatSync(dst).blocks * 512;
    fs.closeSync(dst);
    dst = undefined;
    progress.flush();
    return { sha256: hash.digest('hex'), sizeBytes: size, allocatedBytes };
  } catch (e) {
    if (dst !== undefined) fs.closeSync(dst);
    if (created) unlinkQuiet(job.tmp);
    throw e;
  } finally {
    fs.closeSync(src);
  }
}

// Copies run at nice 10 so the request path on the main thread always gets the CPU first.
lowerThreadPriority();

port.on('message', (msg: JobMessage) => {
  try {
    const { job } = msg;
    let result: CopyResult | ImportResult;
    switch (job.kind) {
      case 'copy':
        result = copy(msg.id, job);
        break;
      case 'import':
        result = importFile(msg.id, job);
        break;
    }
    post({ type: 'done', id: msg.id, result });
  } catch (e) {
    post({ type: 'error', id: msg.id, code: errnoCode(e) ?? 'EUNKNOWN', message: e instanceof Error ? e.message : String(e) });
  }
});

post({ type: 'ready' });
