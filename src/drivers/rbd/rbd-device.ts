/**
 * An RBD image (a copy, or a sealed image's snapshot) as a block device: what the NBD server
 * serves. One device may be shared by several connections; librbd orders nothing between them,
 * and with the client cache off (see rbd-driver.ts) a completed write is on the OSDs, so a flush
 * only has to wait for the writes in flight.
 */
import { EXTENT_HOLE, EXTENT_ZERO, type BlockDevice, type BlockExtent } from '../../domain/index.js';
import type { RbdImage } from './librbd.js';

/**
 * How far one extents() call looks. Without the object-map feature librbd lists every object of
 * the range (one request per 4 MiB object, ten at a time), so an NBD client asking about a whole
 * disk gets the first 256 MiB answered and asks again from there, as the protocol allows.
 */
const EXTENTS_WINDOW = 256 * 1024 * 1024;

function ioError(message: string, code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: ${message}`), { code });
}

export class RbdDevice implements BlockDevice {
  readonly size: number;
  /** Operations started and not yet settled. */
  private running = 0;
  /** Called when `running` drops to 0 (close() waiting). */
  private idle: (() => void) | undefined;
  private closing: Promise<void> | undefined;

  constructor(
    private readonly image: RbdImage,
    readonly readOnly: boolean,
    private readonly onClose?: () => void,
  ) {
    this.size = image.size;
  }

  get name(): string {
    return this.image.name;
  }

  read(into: Buffer, offset: number): Promise<void> {
    // The hot path of an export: one promise on top of librbd's, no closure per step.
    if (this.closing) return Promise.reject(ioError('device closed', 'EBADF'));
    this.running++;
    return this.image.read(into, offset).then(
      (n) => {
        this.settled();
        // librbd reads short only past the end: an image that shrank under us.
        if (n !== into.length) throw ioError(`short read of ${this.image.name} at ${offset}: ${n} of ${into.length} bytes`, 'EIO');
      },
      (e: unknown) => {
        this.settled();
        throw e;
      },
    );
  }

  write(data: Buffer, offset: number): Promise<void> {
    if (this.readOnly) return Promise.reject(ioError(`${this.image.name} is open read-only`, 'EROFS'));
    return this.track(async () => {
      await this.image.write(data, offset);
    });
  }

  flush(): Promise<void> {
    return this.track(async () => {
      if (!this.readOnly) await this.image.flush();
    });
  }

  trim(offset: number, length: number): Promise<void> {
    // A hint: librbd may keep partial objects (and a clone's parent-backed data) as they are.
    if (this.readOnly) return Promise.resolve();
    return this.track(() => this.image.discard(offset, length).then(() => undefined, () => undefined));
  }

  zero(offset: number, length: number, mayPunch: boolean): Promise<void> {
    if (this.readOnly) return Promise.reject(ioError(`${this.image.name} is open read-only`, 'EROFS'));
    // write_zeroes, unlike discard, always reads back as zeros, in a clone too (where dropping an
    // object would uncover the parent's data, librbd truncates or writes it instead).
    return this.track(async () => {
      await this.image.writeZeroes(offset, length, !mayPunch);
    });
  }

  extents(offset: number, length: number, max: number): Promise<BlockExtent[]> {
    return this.track(async () => {
      const end = offset + Math.min(length, EXTENTS_WINDOW);
      const out: { length: number; flags: number }[] = [];
      let pos = offset;
      const add = (to: number, flags: number): void => {
        if (to <= pos) return;
        const last = out[out.length - 1];
        if (last && last.flags === flags) last.length += to - pos;
        else out.push({ length: to - pos, flags });
        pos = to;
      };
      try {
        // Including the parent: what a clone reads through from its image is data, not a hole.
        // librbd may report objects out of order (it lists several at once): sort first.
        const found: [number, number][] = [];
        await this.image.diffIterate(offset, end - offset, true, (off, len) => found.push([off, off + len]));
        found.sort((a, b) => a[0] - b[0]);
        for (const [from, to] of found) {
          add(Math.min(Math.max(from, pos), end), EXTENT_HOLE | EXTENT_ZERO);
          // Without a base snapshot every extent reported exists; were one not to, it would still
          // be a true answer to call it data.
          add(Math.min(to, end), 0);
        }
        add(end, EXTENT_HOLE | EXTENT_ZERO);
      } catch {
        // Status 0 ("allocated, contents unknown") is always a true answer.
        return [{ length, flags: 0 }];
      }
      // The answer may stop short of the range: the client asks again from where it ends.
      return out.slice(0, Math.max(1, max));
    });
  }

  /** Waits for running operations, then closes the image. Later calls fail with EBADF. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.running > 0) await new Promise<void>((resolve) => (this.idle = resolve));
      try {
        await this.image.close();
      } finally {
        this.onClose?.();
      }
    })();
    return this.closing;
  }

  /** Counts an operation as running until it settles, so close() never pulls the image from under it. */
  private track<T>(op: () => Promise<T>): Promise<T> {
    if (this.closing) return Promise.reject(ioError('device closed', 'EBADF'));
    this.running++;
    let p: Promise<T>;
    try {
      p = op();
    } catch (e) {
      p = Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
    return p.finally(() => this.settled());
  }

  private settled(): void {
    if (--this.running > 0) return;
    const idle = this.idle;
    this.idle = undefined;
    idle?.();
  }
}
