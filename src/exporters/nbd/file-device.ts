/**
 * A regular file as the storage of an export. One FileDevice per export is shared by every
 * connection to it, which is what makes NBD_FLAG_CAN_MULTI_CONN honest: a FLUSH on any
 * connection fdatasyncs the one file all of them write to.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { InputError } from '../../domain/index.js';
import { NBD_STATE_HOLE, NBD_STATE_ZERO, type Extent } from './protocol.js';
import type { BlockDevice } from './transmission.js';
import { punchHole, readCached, seekData, seekHole, zeroRange } from './native.js';

/** Writes of zeros, when the filesystem cannot zero a range itself, go in pieces of this size. */
const ZERO_PIECE = 1 << 20;
const zeros = Buffer.alloc(ZERO_PIECE);

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
    // Data in the page cache is copied right here; only what is not cached goes to the thread pool.
    const cached = this.closing ? -1 : readCached(this.handle.fd, into, offset);
    if (cached === into.length) return Promise.resolve();
    return this.track(async () => {
      for (let done = Math.max(cached, 0); done < into.length; ) {
        const { bytesRead } = await this.handle.read(into, done, into.length - done, offset + done);
        // The file shrank under us: report it rather than hand out bytes that were never read.
        if (bytesRead === 0) throw Object.assign(new Error('EIO: read past the end of the file'), { code: 'EIO' });
        done += bytesRead;
      }
    });
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

  extents(offset: number, length: number, max: number): Promise<Extent[]> {
    return this.track(async () => {
      const end = offset + length;
      const out: Extent[] = [];
      let pos = offset;
      const add = (to: number, flags: number) => {
        out.push({ length: to - pos, flags });
        pos = to;
      };
      try {
        while (pos < end && out.length < max) {
          const data = await seekData(this.handle.fd, pos);
          if (data === null || data >= end) add(end, NBD_STATE_HOLE | NBD_STATE_ZERO);
          else if (data > pos) add(data, NBD_STATE_HOLE | NBD_STATE_ZERO);
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

async function succeeds(p: Promise<unknown>): Promise<boolean> {
  try {
    await p;
    return true;
  } catch {
    return false;
  }
}
