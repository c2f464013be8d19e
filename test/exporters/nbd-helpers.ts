/** Shared pieces of the NBD tests: an in-memory device, a reply decoder, a seeded PRNG. */
import { nbdProtocol as p, type BlockDevice } from '../../src/exporters/nbd/index.js';

const SECTOR = 512;

/** A device in memory that tracks allocation per 512-byte sector, like a sparse file. */
export class MemoryDevice implements BlockDevice {
  readonly bytes: Buffer;
  readonly allocated: boolean[];
  flushes = 0;

  constructor(readonly size: number) {
    this.bytes = Buffer.alloc(size);
    this.allocated = new Array<boolean>(Math.ceil(size / SECTOR)).fill(false);
  }

  read(into: Buffer, offset: number): Promise<void> {
    this.bytes.copy(into, 0, offset, offset + into.length);
    return Promise.resolve();
  }

  write(data: Buffer, offset: number): Promise<void> {
    data.copy(this.bytes, offset);
    this.mark(offset, data.length, true);
    return Promise.resolve();
  }

  flush(): Promise<void> {
    this.flushes++;
    return Promise.resolve();
  }

  trim(offset: number, length: number): Promise<void> {
    return this.zero(offset, length, true);
  }

  zero(offset: number, length: number, mayPunch: boolean): Promise<void> {
    this.bytes.fill(0, offset, offset + length);
    this.mark(offset, length, !mayPunch);
    return Promise.resolve();
  }

  extents(offset: number, length: number, max: number): Promise<p.Extent[]> {
    const out: p.Extent[] = [];
    const end = offset + length;
    let pos = offset;
    while (pos < end && out.length < max) {
      const data = this.allocated[Math.floor(pos / SECTOR)] ?? false;
      let next = (Math.floor(pos / SECTOR) + 1) * SECTOR;
      while (next < end && (this.allocated[next / SECTOR] ?? false) === data) next += SECTOR;
      next = Math.min(next, end);
      out.push({ length: next - pos, flags: data ? 0 : p.NBD_STATE_HOLE | p.NBD_STATE_ZERO });
      pos = next;
    }
    return Promise.resolve(out);
  }

  private mark(offset: number, length: number, value: boolean): void {
    // Only whole sectors change state, as with a filesystem's blocks.
    const first = value ? Math.floor(offset / SECTOR) : Math.ceil(offset / SECTOR);
    const last = value ? Math.ceil((offset + length) / SECTOR) : Math.floor((offset + length) / SECTOR);
    for (let s = first; s < last; s++) this.allocated[s] = value;
  }
}

export interface OptionReply {
  readonly option: number;
  readonly type: number;
  readonly data: Buffer;
}

/** Splits the server's negotiation bytes into option replies (what a client does). */
export function decodeOptionReplies(bytes: Buffer): OptionReply[] {
  const out: OptionReply[] = [];
  let pos = 0;
  while (pos < bytes.length) {
    if (bytes.readBigUInt64BE(pos) !== p.NBD_OPTION_REPLY_MAGIC) throw new Error(`no option reply magic at ${pos}`);
    const length = bytes.readUInt32BE(pos + 16);
    out.push({ option: bytes.readUInt32BE(pos + 8), type: bytes.readUInt32BE(pos + 12), data: bytes.subarray(pos + 20, pos + 20 + length) });
    pos += 20 + length;
  }
  return out;
}

/** Every way to cut `b` in two. */
export function* twoPieces(b: Buffer): Generator<Buffer[]> {
  for (let i = 0; i <= b.length; i++) yield [b.subarray(0, i), b.subarray(i)];
}

/** mulberry32: a tiny seeded PRNG, so a fuzz run can be repeated (the simulator's own). */
export { mulberry32 as prng } from '../../src/pool/simulator/trace.js';

/** Flips, inserts, deletes or overwrites a few bytes, or cuts the tail. */
export function mutate(b: Buffer, rand: () => number, count = 1 + Math.floor(rand() * 3)): Buffer {
  let out = Buffer.from(b);
  for (let i = 0; i < count; i++) {
    const pos = Math.floor(rand() * (out.length + 1));
    const byte = Math.floor(rand() * 256);
    switch (Math.floor(rand() * 5)) {
      case 0:
        if (pos < out.length) out[pos] = (out[pos] ?? 0) ^ (1 << Math.floor(rand() * 8));
        break;
      case 1:
        out = Buffer.concat([out.subarray(0, pos), Buffer.from([byte]), out.subarray(pos)]);
        break;
      case 2:
        out = Buffer.concat([out.subarray(0, pos), out.subarray(pos + 1)]);
        break;
      case 3:
        if (pos < out.length) out[pos] = byte;
        break;
      default:
        out = out.subarray(0, pos);
    }
  }
  return out;
}
