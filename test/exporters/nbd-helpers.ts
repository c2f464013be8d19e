/** Shared pieces of the NBD tests: an in-memory device, a reply decoder, a seeded PRNG, a hand-driven client. */
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { FileDevice } from '../../src/drivers/file/file-device.js';
import { DEFAULT_PSK_CIPHERS, nbdProtocol as p, type BlockDevice, type NbdExportSpec } from '../../src/exporters/nbd/index.js';

const SECTOR = 512;

/** An export of a regular file, as the file driver would open it. */
export type FileExportSpec = Omit<NbdExportSpec, 'device' | 'volume'> & { readonly path: string };

export async function fileExport(spec: FileExportSpec): Promise<NbdExportSpec> {
  const { path, ...rest } = spec;
  return { ...rest, device: await FileDevice.open(path, spec.readOnly ?? false), volume: path };
}

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

  close(): Promise<void> {
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

/** `n` bytes from a paused stream; rejects if it ends first. */
export async function readExactly(s: Duplex, n: number): Promise<Buffer> {
  for (;;) {
    const b = s.read(n) as Buffer | null;
    if (b !== null && b.length === n) return b;
    if (b !== null || s.readableEnded || s.destroyed) throw new Error(`the server closed the connection (wanted ${n} bytes)`);
    await new Promise<void>((resolve) => {
      const done = () => {
        s.off('readable', done);
        s.off('close', done);
        resolve();
      };
      s.on('readable', done);
      s.on('close', done);
    });
  }
}

/** Reads option replies up to the final one for `option`; returns them all. */
export async function readOptionReplies(s: Duplex, option: number): Promise<OptionReply[]> {
  const out: OptionReply[] = [];
  for (;;) {
    const head = await readExactly(s, 20);
    if (head.readBigUInt64BE(0) !== p.NBD_OPTION_REPLY_MAGIC || head.readUInt32BE(8) !== option) throw new Error('not a reply to the option sent');
    const length = head.readUInt32BE(16);
    const reply = { option, type: head.readUInt32BE(12), data: length > 0 ? await readExactly(s, length) : Buffer.alloc(0) };
    out.push(reply);
    if (reply.type === p.NBD_REP.ACK || reply.type >= 2 ** 31) return out;
  }
}

export interface RawClientOptions {
  /** Upgrade with STARTTLS and TLS-PSK as this identity first. */
  readonly psk?: { readonly identity: string; readonly key: Buffer };
  readonly localAddress?: string;
  /** Stop once TLS is up (or after the greeting without `psk`) instead of opening an export. */
  readonly optionMode?: boolean;
}

/**
 * A client that negotiates by hand, as real ones do: fixed newstyle, STARTTLS and TLS-PSK when
 * asked, then NBD_OPT_GO `exportName` (plain replies). Returns the stream, paused, in
 * transmission (or in option mode); rejects if the server refuses or hangs up.
 */
export async function rawClient(port: number, exportName: string, o: RawClientOptions = {}): Promise<Socket> {
  const socket = connect({ host: '127.0.0.1', port, ...(o.localAddress === undefined ? {} : { localAddress: o.localAddress }) });
  socket.on('error', () => undefined); // a reset shows as a close, which readExactly reports
  let stream: Socket = socket;
  try {
    await once(socket, 'connect');
    const greeting = await readExactly(socket, 18);
    if (greeting.readBigUInt64BE(0) !== p.NBD_MAGIC) throw new Error('no NBD greeting');
    socket.write(p.clientFlags(p.NBD_FLAG_C_FIXED_NEWSTYLE | p.NBD_FLAG_C_NO_ZEROES));
    if (o.psk !== undefined) {
      socket.write(p.clientOption(p.NBD_OPT.STARTTLS));
      const [ack] = await readOptionReplies(socket, p.NBD_OPT.STARTTLS);
      if (ack?.type !== p.NBD_REP.ACK) throw new Error('STARTTLS refused');
      const psk = o.psk;
      const secure = tlsConnect({ socket, pskCallback: () => ({ identity: psk.identity, psk: psk.key }), ciphers: DEFAULT_PSK_CIPHERS, checkServerIdentity: () => undefined });
      secure.on('error', () => undefined);
      stream = secure;
      await Promise.race([once(secure, 'secureConnect'), once(secure, 'close').then(() => Promise.reject(new Error('TLS refused')))]);
    }
    if (o.optionMode === true) return stream;
    stream.write(p.clientOption(p.NBD_OPT.GO, p.infoRequestData(exportName)));
    const replies = await readOptionReplies(stream, p.NBD_OPT.GO);
    if (replies.at(-1)?.type !== p.NBD_REP.ACK) throw new Error(`NBD_OPT_GO refused (${replies.at(-1)?.type})`);
    return stream;
  } catch (e) {
    stream.destroy();
    socket.destroy();
    throw e;
  }
}

/** Reads `length` bytes at `offset` over an attached raw client (simple replies). */
export async function rawRead(s: Duplex, offset: number, length: number, handle = 1n): Promise<Buffer> {
  s.write(p.clientRequest({ flags: 0, type: p.NBD_CMD.READ, handle, offset, length }));
  const head = await readExactly(s, 16);
  if (head.readUInt32BE(0) !== p.NBD_SIMPLE_REPLY_MAGIC || head.readUInt32BE(4) !== 0) throw new Error(`READ failed (${head.readUInt32BE(4)})`);
  return readExactly(s, length);
}
