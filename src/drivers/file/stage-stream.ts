/**
 * Writes a stream of bytes (an upload, a download) to a new file, hashing it on the way and
 * leaving holes where the stream is zero, so a sparse image sent over the wire stays sparse on
 * disk. The file is flushed before this returns; on any failure it is removed.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import { NoSpaceError, isNoSpace, type ProgressListener, type StagedImage } from '../../domain/index.js';

export interface StreamWritten {
  readonly bytes: number;
  readonly sha256: string;
}

/** Zero runs shorter than this are written: a hole smaller than a block saves nothing. */
const HOLE_MIN = 4096;
const ZEROS = Buffer.alloc(1 << 20);
/** Progress at most every this many bytes. */
const PROGRESS_EVERY = 8 << 20;

function isZero(b: Buffer): boolean {
  for (let at = 0; at < b.length; at += ZEROS.length) {
    const part = b.subarray(at, Math.min(b.length, at + ZEROS.length));
    if (!part.equals(ZEROS.subarray(0, part.length))) return false;
  }
  return true;
}

export async function writeStreamToFile(
  chunks: AsyncIterable<Uint8Array>,
  path: string,
  opts: { readonly totalBytes?: number; readonly onProgress?: ProgressListener } = {},
): Promise<StreamWritten> {
  const hash = createHash('sha256');
  // 'wx': never write through a file (or link) that is already there.
  const file = await fs.open(path, 'wx', 0o600);
  let offset = 0;
  let reported = 0;
  try {
    for await (const chunk of chunks) {
      const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
      hash.update(buf);
      if (!(buf.length >= HOLE_MIN && isZero(buf))) {
        let done = 0;
        while (done < buf.length) done += (await file.write(buf, done, buf.length - done, offset + done)).bytesWritten;
      }
      offset += buf.length;
      if (opts.onProgress && offset - reported >= PROGRESS_EVERY) {
        reported = offset;
        opts.onProgress({ doneBytes: offset, totalBytes: Math.max(opts.totalBytes ?? 0, offset) });
      }
    }
    // Trailing holes are not written: the length is set here.
    await file.truncate(offset);
    await file.sync();
    opts.onProgress?.({ doneBytes: offset, totalBytes: Math.max(opts.totalBytes ?? 0, offset) });
  } catch (e) {
    await file.close().catch(() => undefined);
    await fs.rm(path, { force: true });
    throw e;
  }
  await file.close();
  return { bytes: offset, sha256: hash.digest('hex') };
}

/**
 * A driver's stageImage: the stream into `path`, which is counted in `inFlight` (so a clean-up of
 * temporaries leaves it alone) until discarded; a full disk is a NoSpaceError naming `dir`.
 */
export async function stageStream(
  chunks: AsyncIterable<Uint8Array>,
  path: string,
  opts: { readonly totalBytes?: number; readonly onProgress?: ProgressListener },
  inFlight: Set<string>,
  dir: string,
): Promise<StagedImage> {
  inFlight.add(path);
  const discard = async (): Promise<void> => {
    await fs.rm(path, { force: true });
    inFlight.delete(path);
  };
  try {
    const written = await writeStreamToFile(chunks, path, opts);
    return { path, ...written, discard };
  } catch (e) {
    await discard();
    if (isNoSpace(e)) throw new NoSpaceError(`no space left in ${dir} for the image being received`, { dir }, { cause: e });
    throw e;
  }
}
