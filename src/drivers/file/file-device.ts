/**
 * A regular file as a block device (an NBD export's storage). One FileDevice per export is shared by every
 * connection to it, which is what makes NBD_FLAG_CAN_MULTI_CONN honest: a FLUSH on any
 * connection fdatasyncs the one file all of them write to.
 */
import { read as fsRead } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { EXTENT_HOLE, EXTENT_ZERO, InputError, type BlockDevice, type BlockExtent } from '../../domain/index.js';
import { punchHole, readCached, seekData, seekHole, zeroRange } from './file-device-native.js';

/** Writes of zeros, when the filesystem cannot zero a range itself, go in pieces of this size. */
const ZERO_PIECE = 1 << 20;
const zeros = Buffer.alloc(ZERO_PIECE);
/** Reads up to this size try the page cache on the event loop first; see read(). */
const INLINE_READ_MAX = 64 << 10;

export class FileDevice implements BlockDevice {
  private readonly pending = new Set<Promise<unknown>>();
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly handle: FileHandle,
    readonly size: number,
    readonly path: string,
  ) {}

  static async open(path: string, readOnly: boolean): Promise<FileDevice> {
    const handle = await open(path, readOnly ? 'r' : 'r+');
    try {
      const st = await handle.stat();
      if (!st.isFile()) throw new InputError(`'${path}' is not a regular file`, { path });
      return new FileDevice(handle, st.size, path);
    } catch (e) {
      await handle.close();
      throw e;
    }
  }

  read(into: Buffer, offset: number): Promise<void> {
    // A small read the page cache holds costs less copied right here than a trip through the
    // thread pool. A large one is copied on a pool thread, in parallel with the event loop
    // writing earlier replies to the socket: done here, the two copies of every byte (file to
    // buffer, buffer to socket) take turns on one thread, and sequential reads are bound by it.
    const cached = !this.closing && into.length <= INLINE_READ_MAX ? readCached(this.handle.fd, into, offset) : -1;
    if (cached === into.length) return Promise.resolve();
    return this.track(() => readFully(this.handle.fd, into, Math.max(cached, 0), offset));
  }

  write(data: Buffer, offset: number): Promise<void> {
    return this.track(async () => {
      for (let done = 0; done < data.length; ) {
        const { bytesWritten } = await this.handle.write(data, done, data.length - done, offset + done);
        done += bytesWritten;
      }
    });
  }

  flush(): Promise<void> {
    return this.track(() => this.handle.datasync());
  }

  trim(offset: number, length: number): Promise<void> {
    // TRIM is a hint: where holes cannot be punched, doing nothing is a correct answer.
    return this.track(() => punchHole(this.handle.fd, offset, length).catch(() => undefined));
  }

  zero(offset: number, length: number, mayPunch: boolean): Promise<void> {
    return this.track(async () => {
      if (mayPunch && (await succeeds(punchHole(this.handle.fd, offset, length)))) return;
      if (await succeeds(zeroRange(this.handle.fd, offset, length))) return;
      // Neither works on this filesystem (or it is full): write the zeros, which also gives
      // the real error, such as ENOSPC.
      for (let done = 0; done < length; ) {
        const n = Math.min(ZERO_PIECE, length - done);
        const { bytesWritten } = await this.handle.write(zeros, 0, n, offset + done);
        done += bytesWritten;
      }
    });
  }

  extents(offset: number, length: number, max: number): Promise<BlockExtent[]> {
    return this.track(async () => {
      const end = offset + length;
      const out: BlockExtent[] = [];
      let pos = offset;
      const add = (to: number, flags: number) => {
        out.push({ length: to - pos, flags });
        pos = to;
      };
      try {
        while (pos < end && out.length < max) {
          const data = await seekData(this.handle.fd, pos);
          if (data === null || data >= end) add(end, EXTENT_HOLE | EXTENT_ZERO);
          else if (data > pos) add(data, EXTENT_HOLE | EXTENT_ZERO);
          else {
            // A hole punched between the two calls could put the next hole at `pos`: then
            // claim data up to the end, which is always a true answer, never an empty extent.
            const hole = await seekHole(this.handle.fd, pos);
            add(hole > pos ? Math.min(hole, end) : end, 0);
          }
        }
      } catch {
        // Status 0 ("allocated, contents unknown") is always a true answer.
        if (out.length === 0) return [{ length, flags: 0 }];
      }
      return out;
    });
  }

  /** Waits for running operations, then closes the file. Later calls fail with EBADF-like errors. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
      await this.handle.close();
    })();
    return this.closing;
  }

  /** Counts an operation as running until it settles, so close() never pulls the fd from under it. */
  private track<T>(op: () => Promise<T>): Promise<T> {
    if (this.closing) return Promise.reject(Object.assign(new Error('EBADF: export closed'), { code: 'EBADF' }));
    const p = op();
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p)).catch(() => undefined);
    return p;
  }
}

/** pread on the thread pool until `into` is full, from its byte `from` on. */
function readFully(fd: number, into: Buffer, from: number, offset: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (done: number): void => {
      if (done >= into.length) return resolve();
      fsRead(fd, into, done, into.length - done, offset + done, (err, n) => {
        if (err) return reject(err);
        // The file shrank under us: report it rather than hand out bytes that were never read.
        if (n === 0) return reject(Object.assign(new Error('EIO: read past the end of the file'), { code: 'EIO' }));
        step(done + n);
      });
    };
    step(from);
  });
}

async function succeeds(p: Promise<unknown>): Promise<boolean> {
  try {
    await p;
    return true;
  } catch {
    return false;
  }
}
