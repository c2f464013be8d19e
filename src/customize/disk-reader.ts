/**
 * The narrow view of a disk the parsers need: its size and positioned reads. Parsers take this
 * instead of a file handle so their tests can feed them plain buffers (and random bytes).
 */
import type { FileHandle } from 'node:fs/promises';
import { BadImageError } from '../domain/index.js';

export interface DiskReader {
  readonly sizeBytes: number;
  /** Up to `length` bytes at `offset`; shorter only at the end of the disk. */
  read(offset: number, length: number): Promise<Buffer>;
}

export async function fileDiskReader(fh: FileHandle): Promise<DiskReader> {
  const { size } = await fh.stat();
  return {
    sizeBytes: size,
    async read(offset, length) {
      const n = Math.max(0, Math.min(length, size - offset));
      const buf = Buffer.alloc(n);
      let done = 0;
      while (done < n) {
        const { bytesRead } = await fh.read(buf, done, n - done, offset + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return buf.subarray(0, done);
    },
  };
}

export function bufferDiskReader(bytes: Buffer): DiskReader {
  return {
    sizeBytes: bytes.length,
    read: (offset, length) => Promise.resolve(bytes.subarray(Math.min(offset, bytes.length), Math.min(offset + length, bytes.length))),
  };
}

/** Exactly `length` bytes, or a BadImageError saying what was cut off. */
export async function readExactly(disk: DiskReader, offset: number, length: number, what: string): Promise<Buffer> {
  const buf = await disk.read(offset, length);
  if (buf.length < length) {
    throw new BadImageError(`the disk is truncated: ${what} at byte ${offset} needs ${length} bytes, the disk has ${disk.sizeBytes}`, {
      offset,
      length,
      sizeBytes: disk.sizeBytes,
    });
  }
  return buf;
}
