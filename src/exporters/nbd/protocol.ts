/**
 * The NBD wire protocol, as written in NetworkBlockDevice/nbd `doc/proto.md`: constants,
 * serializers for every message the server sends, and incremental parsers for every message a
 * client sends. Pure: no sockets, no files, no clocks. All integers are big-endian.
 *
 * Parsers take Buffers split anywhere (`push`) and hand out whole messages (`next`), or throw
 * `NbdProtocolError` when the bytes can never make a valid message; the caller then hangs up.
 */
import { EXTENT_HOLE, EXTENT_ZERO, InputError, type BlockExtent } from '../../domain/index.js';

export const NBD_MAGIC = 0x4e42444d41474943n; // 'NBDMAGIC'
export const NBD_IHAVEOPT = 0x49484156454f5054n; // 'IHAVEOPT'
export const NBD_OPTION_REPLY_MAGIC = 0x3e889045565a9n;
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

/** Handshake flags (server, 16 bits). */
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
/** Client flags (32 bits). */
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

/** Transmission flags (16 bits). */
export const NBD_FLAG = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_RESIZE: 1 << 9,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
} as const;

export const NBD_OPT = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  PEEK_EXPORT: 4,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
} as const;

const ERR = 2 ** 31;
export const NBD_REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: ERR + 1,
  ERR_POLICY: ERR + 2,
  ERR_INVALID: ERR + 3,
  ERR_PLATFORM: ERR + 4,
  ERR_TLS_REQD: ERR + 5,
  ERR_UNKNOWN: ERR + 6,
  ERR_SHUTDOWN: ERR + 7,
  ERR_BLOCK_SIZE_REQD: ERR + 8,
  ERR_TOO_BIG: ERR + 9,
} as const;

export const NBD_INFO = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;

export const NBD_CMD = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
} as const;

export const NBD_CMD_FLAG = { FUA: 1 << 0, NO_HOLE: 1 << 1, DF: 1 << 2, REQ_ONE: 1 << 3, FAST_ZERO: 1 << 4 } as const;

export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  ERROR: 2 ** 15 + 1,
  ERROR_OFFSET: 2 ** 15 + 2,
} as const;

/** Error values of the transmission phase (not the host's errno: the spec fixes them). */
export const NBD_E = {
  PERM: 1,
  IO: 5,
  NOMEM: 12,
  INVAL: 22,
  NOSPC: 28,
  OVERFLOW: 75,
  NOTSUP: 95,
  SHUTDOWN: 108,
} as const;

/** Flags of the `base:allocation` metadata context. */
// The domain's extent bits are NBD's, so extents go on the wire as they are.
export const NBD_STATE_HOLE = EXTENT_HOLE;
export const NBD_STATE_ZERO = EXTENT_ZERO;
export const BASE_ALLOCATION = 'base:allocation';

/** The spec's limit for every string (export names, messages). */
export const NBD_MAX_STRING = 4096;
/** Bytes of zero padding after an NBD_OPT_EXPORT_NAME reply unless NO_ZEROES was agreed. */
const EXPORT_NAME_PADDING = 124;

/** Bytes a client sent that can never form a valid message: the connection must be dropped. */
export class NbdProtocolError extends InputError {
  constructor(message: string) {
    super(`NBD protocol error: ${message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Serializers: server → client

/** The opening of fixed newstyle negotiation: NBDMAGIC, IHAVEOPT, handshake flags. */
export function serverGreeting(flags = NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES): Buffer {
  const b = Buffer.alloc(18);
  b.writeBigUInt64BE(NBD_MAGIC, 0);
  b.writeBigUInt64BE(NBD_IHAVEOPT, 8);
  b.writeUInt16BE(flags, 16);
  return b;
}

/** One option reply: magic, the option it answers, reply type, length, data. */
export function optionReply(option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(20 + data.length);
  b.writeBigUInt64BE(NBD_OPTION_REPLY_MAGIC, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(type, 12);
  b.writeUInt32BE(data.length, 16);
  data.copy(b, 20);
  return b;
}

/** An error reply; the message is for people, so it is cut to the spec's string limit. */
export function optionError(option: number, type: number, message = ''): Buffer {
  return optionReply(option, type, truncateUtf8(message, NBD_MAX_STRING));
}

/** NBD_REP_SERVER: an export's name, then an optional human-readable description. */
export function serverEntry(option: number, name: string, description = ''): Buffer {
  const n = Buffer.from(name, 'utf8');
  const d = Buffer.from(description, 'utf8');
  const data = Buffer.alloc(4 + n.length + d.length);
  data.writeUInt32BE(n.length, 0);
  n.copy(data, 4);
  d.copy(data, 4 + n.length);
  return optionReply(option, NBD_REP.SERVER, data);
}

export function infoExport(option: number, size: number, flags: number): Buffer {
  const data = Buffer.alloc(12);
  data.writeUInt16BE(NBD_INFO.EXPORT, 0);
  data.writeBigUInt64BE(BigInt(size), 2);
  data.writeUInt16BE(flags, 10);
  return optionReply(option, NBD_REP.INFO, data);
}

export function infoName(option: number, name: string): Buffer {
  return infoString(option, NBD_INFO.NAME, name);
}

export function infoDescription(option: number, description: string): Buffer {
  return infoString(option, NBD_INFO.DESCRIPTION, description);
}

function infoString(option: number, type: number, s: string): Buffer {
  const str = Buffer.from(s, 'utf8');
  const data = Buffer.alloc(2 + str.length);
  data.writeUInt16BE(type, 0);
  str.copy(data, 2);
  return optionReply(option, NBD_REP.INFO, data);
}

export function infoBlockSize(option: number, min: number, preferred: number, max: number): Buffer {
  const data = Buffer.alloc(14);
  data.writeUInt16BE(NBD_INFO.BLOCK_SIZE, 0);
  data.writeUInt32BE(min, 2);
  data.writeUInt32BE(preferred, 6);
  data.writeUInt32BE(max, 10);
  return optionReply(option, NBD_REP.INFO, data);
}

export function metaContext(option: number, id: number, name: string): Buffer {
  const n = Buffer.from(name, 'utf8');
  const data = Buffer.alloc(4 + n.length);
  data.writeUInt32BE(id, 0);
  n.copy(data, 4);
  return optionReply(option, NBD_REP.META_CONTEXT, data);
}

/** The answer to NBD_OPT_EXPORT_NAME: size, transmission flags, and (unless NO_ZEROES) padding. */
export function exportNameReply(size: number, flags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(10 + (noZeroes ? 0 : EXPORT_NAME_PADDING));
  b.writeBigUInt64BE(BigInt(size), 0);
  b.writeUInt16BE(flags, 8);
  return b;
}

/** A simple reply header; a successful READ's data follows it on the wire. */
export function simpleReply(handle: bigint, error: number): Buffer {
  return writeSimpleReply(Buffer.alloc(SIMPLE_REPLY_LENGTH), handle, error);
}

export const SIMPLE_REPLY_LENGTH = 16;

/** simpleReply() written into the first bytes of `into`, which it returns. */
export function writeSimpleReply(into: Buffer, handle: bigint, error: number): Buffer {
  into.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  into.writeUInt32BE(error, 4);
  into.writeBigUInt64BE(handle, 8);
  return into;
}

/** The header of one structured reply chunk; `length` bytes of payload follow. */
export function chunkHeader(flags: number, type: number, handle: bigint, length: number): Buffer {
  const b = Buffer.alloc(20);
  writeChunkHeader(b, flags, type, handle, length);
  return b;
}

function writeChunkHeader(b: Buffer, flags: number, type: number, handle: bigint, length: number): void {
  b.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeBigUInt64BE(handle, 8);
  b.writeUInt32BE(length, 16);
}

/**
 * The first 28 bytes of an NBD_REPLY_TYPE_OFFSET_DATA chunk (header and offset); the caller
 * sends the `dataLength` bytes after it, so a large read is never copied into a new buffer.
 */
export function offsetDataHeader(handle: bigint, offset: number, dataLength: number, done: boolean): Buffer {
  return writeOffsetDataHeader(Buffer.alloc(OFFSET_DATA_HEADER_LENGTH), handle, offset, dataLength, done);
}

export const OFFSET_DATA_HEADER_LENGTH = 28;

/** offsetDataHeader() written into the first bytes of `into`, which it returns. */
export function writeOffsetDataHeader(into: Buffer, handle: bigint, offset: number, dataLength: number, done: boolean): Buffer {
  writeChunkHeader(into, done ? NBD_REPLY_FLAG_DONE : 0, NBD_REPLY_TYPE.OFFSET_DATA, handle, 8 + dataLength);
  into.writeBigUInt64BE(BigInt(offset), 20);
  return into;
}

/** An NBD_REPLY_TYPE_OFFSET_HOLE chunk: `length` bytes at `offset` read as zeros. */
export function offsetHole(handle: bigint, offset: number, length: number, done: boolean): Buffer {
  const b = Buffer.alloc(32);
  writeChunkHeader(b, done ? NBD_REPLY_FLAG_DONE : 0, NBD_REPLY_TYPE.OFFSET_HOLE, handle, 12);
  b.writeBigUInt64BE(BigInt(offset), 20);
  b.writeUInt32BE(length, 28);
  return b;
}

/** An NBD_REPLY_TYPE_ERROR_OFFSET chunk: an error at one offset of the request. */
export function structuredErrorOffset(handle: bigint, error: number, offset: number, message = '', done = true): Buffer {
  const msg = truncateUtf8(message, NBD_MAX_STRING);
  const b = Buffer.alloc(20 + 14 + msg.length);
  writeChunkHeader(b, done ? NBD_REPLY_FLAG_DONE : 0, NBD_REPLY_TYPE.ERROR_OFFSET, handle, 14 + msg.length);
  b.writeUInt32BE(error, 20);
  b.writeUInt16BE(msg.length, 24);
  msg.copy(b, 26);
  b.writeBigUInt64BE(BigInt(offset), 26 + msg.length);
  return b;
}

/** A final NBD_REPLY_TYPE_ERROR chunk carrying an NBD error value and a message for people. */
export function structuredError(handle: bigint, error: number, message = ''): Buffer {
  const msg = truncateUtf8(message, NBD_MAX_STRING);
  const b = Buffer.alloc(20 + 6 + msg.length);
  writeChunkHeader(b, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE.ERROR, handle, 6 + msg.length);
  b.writeUInt32BE(error, 20);
  b.writeUInt16BE(msg.length, 24);
  msg.copy(b, 26);
  return b;
}

/** The final NBD_REPLY_TYPE_NONE chunk. */
export function structuredNone(handle: bigint): Buffer {
  return chunkHeader(NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE.NONE, handle, 0);
}

export type Extent = BlockExtent;

/** A final NBD_REPLY_TYPE_BLOCK_STATUS chunk for one metadata context. */
export function blockStatusReply(handle: bigint, contextId: number, extents: readonly Extent[]): Buffer {
  const b = Buffer.alloc(20 + 4 + 8 * extents.length);
  writeChunkHeader(b, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE.BLOCK_STATUS, handle, 4 + 8 * extents.length);
  b.writeUInt32BE(contextId, 20);
  extents.forEach((e, i) => {
    b.writeUInt32BE(e.length, 24 + 8 * i);
    b.writeUInt32BE(e.flags, 28 + 8 * i);
  });
  return b;
}

/** Cuts a string to at most `max` bytes of UTF-8 without splitting a character. */
function truncateUtf8(s: string, max: number): Buffer {
  const b = Buffer.from(s, 'utf8');
  if (b.length <= max) return b;
  let end = max;
  while (end > 0 && ((b[end] ?? 0) & 0xc0) === 0x80) end--; // back off continuation bytes
  return b.subarray(0, end);
}

// ---------------------------------------------------------------------------------------------
// Serializers: client → server (what tests and fuzzers send; the server itself never does)

export function clientFlags(flags: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(flags >>> 0, 0);
  return b;
}

export function clientOption(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(16 + data.length);
  b.writeBigUInt64BE(NBD_IHAVEOPT, 0);
  b.writeUInt32BE(option >>> 0, 8);
  b.writeUInt32BE(data.length, 12);
  data.copy(b, 16);
  return b;
}

/** The data of NBD_OPT_INFO / NBD_OPT_GO: name, then the list of information requests. */
export function infoRequestData(name: string, requests: readonly number[] = []): Buffer {
  const n = Buffer.from(name, 'utf8');
  const b = Buffer.alloc(4 + n.length + 2 + 2 * requests.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  b.writeUInt16BE(requests.length, 4 + n.length);
  requests.forEach((r, i) => b.writeUInt16BE(r, 6 + n.length + 2 * i));
  return b;
}

/** The data of NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT. */
export function metaContextRequestData(exportName: string, queries: readonly string[]): Buffer {
  const parts = [lengthPrefixed(exportName), u32(queries.length), ...queries.map(lengthPrefixed)];
  return Buffer.concat(parts);
}

export interface NbdRequest {
  readonly flags: number;
  readonly type: number;
  readonly handle: bigint;
  /** Past 2^53 the value is rounded, which is still far past the end of any export. */
  readonly offset: number;
  readonly length: number;
  /** The payload of an NBD_CMD_WRITE. */
  readonly data?: Buffer;
}

export function clientRequest(r: NbdRequest): Buffer {
  const payload = r.data ?? Buffer.alloc(0);
  const b = Buffer.alloc(28 + payload.length);
  b.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
  b.writeUInt16BE(r.flags, 4);
  b.writeUInt16BE(r.type, 6);
  b.writeBigUInt64BE(r.handle, 8);
  b.writeBigUInt64BE(BigInt(r.offset), 16);
  b.writeUInt32BE(r.length, 24);
  payload.copy(b, 28);
  return b;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n, 0);
  return b;
}

function lengthPrefixed(s: string): Buffer {
  const b = Buffer.from(s, 'utf8');
  return Buffer.concat([u32(b.length), b]);
}

// ---------------------------------------------------------------------------------------------
// Parsers: client → server

/**
 * Bytes received and not yet parsed, kept as the chunks they came in: a 32 MiB WRITE payload
 * arriving in 64 KiB pieces is copied once, when it is complete, not once per piece.
 */
export class ByteQueue {
  private chunks: Buffer[] = [];
  private bytes = 0;

  get length(): number {
    return this.bytes;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.bytes += chunk.length;
  }

  /** The first `n` bytes (n <= length), without consuming them. */
  peek(n: number): Buffer {
    this.coalesce(n);
    return (this.chunks[0] ?? Buffer.alloc(0)).subarray(0, n);
  }

  /** Removes and returns the first `n` bytes (n <= length). */
  take(n: number): Buffer {
    this.coalesce(n);
    const first = this.chunks[0] ?? Buffer.alloc(0);
    const out = first.subarray(0, n);
    if (first.length === n) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.bytes -= n;
    return out;
  }

  /** Removes and returns everything. */
  drain(): Buffer {
    return this.take(this.bytes);
  }

  /** Makes the first chunk hold at least `n` bytes. */
  private coalesce(n: number): void {
    if (n > this.bytes) throw new RangeError(`need ${n} bytes, have ${this.bytes}`);
    const first = this.chunks[0];
    if (first === undefined || first.length >= n) return;
    let count = 0;
    let got = 0;
    while (got < n) got += this.chunks[count++]?.length ?? 0;
    this.chunks.splice(0, count, Buffer.concat(this.chunks.slice(0, count), got));
  }
}

export type HandshakeMessage =
  | { readonly kind: 'flags'; readonly flags: number }
  | { readonly kind: 'option'; readonly option: number; readonly data: Buffer };

/**
 * Parses what a client sends during negotiation: its 32-bit flags, then options. An option whose
 * data is longer than `maxOptionLength` is refused outright (the spec lets a server hang up on a
 * client it deems a denial of service) rather than buffered.
 */
export class OptionParser {
  private readonly queue = new ByteQueue();
  private gotFlags = false;

  constructor(private readonly maxOptionLength: number) {}

  push(chunk: Buffer): void {
    this.queue.push(chunk);
  }

  next(): HandshakeMessage | undefined {
    if (!this.gotFlags) {
      if (this.queue.length < 4) return undefined;
      this.gotFlags = true;
      return { kind: 'flags', flags: this.queue.take(4).readUInt32BE(0) };
    }
    if (this.queue.length < 16) return undefined;
    const head = this.queue.peek(16);
    if (head.readBigUInt64BE(0) !== NBD_IHAVEOPT) throw new NbdProtocolError('option does not start with IHAVEOPT');
    const option = head.readUInt32BE(8);
    const length = head.readUInt32BE(12);
    if (length > this.maxOptionLength) throw new NbdProtocolError(`option ${option} carries ${length} bytes, over the limit of ${this.maxOptionLength}`);
    if (this.queue.length < 16 + length) return undefined;
    this.queue.take(16);
    return { kind: 'option', option, data: Buffer.from(this.queue.take(length)) };
  }

  /** Bytes received past the last message handed out. */
  rest(): Buffer {
    return this.queue.drain();
  }
}

/**
 * Parses transmission requests. A WRITE longer than `maxPayload` ends the connection: its
 * payload would have to be read to find the next request, and the spec lets a server treat such
 * a write as a denial of service (it must accept anything below 32 MiB).
 */
export class RequestParser {
  private readonly queue = new ByteQueue();

  constructor(private readonly maxPayload: number) {}

  push(chunk: Buffer): void {
    this.queue.push(chunk);
  }

  /** Bytes held, whole requests or not. */
  get buffered(): number {
    return this.queue.length;
  }

  next(): NbdRequest | undefined {
    if (this.queue.length < 28) return undefined;
    const head = this.queue.peek(28);
    if (head.readUInt32BE(0) !== NBD_REQUEST_MAGIC) throw new NbdProtocolError('request does not start with NBD_REQUEST_MAGIC');
    const type = head.readUInt16BE(6);
    const length = head.readUInt32BE(24);
    const payload = type === NBD_CMD.WRITE ? length : 0;
    if (payload > this.maxPayload) throw new NbdProtocolError(`write of ${length} bytes is over the limit of ${this.maxPayload}`);
    if (this.queue.length < 28 + payload) return undefined;
    const request = {
      flags: head.readUInt16BE(4),
      type,
      handle: head.readBigUInt64BE(8),
      offset: Number(head.readBigUInt64BE(16)),
      length,
    };
    this.queue.take(28);
    return payload > 0 ? { ...request, data: this.queue.take(payload) } : request;
  }
}

// ---------------------------------------------------------------------------------------------
// Option data decoders: undefined means "syntactically invalid" (NBD_REP_ERR_INVALID).

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** A string as the spec defines it: valid UTF-8, no NUL, at most 4096 bytes. */
export function decodeString(b: Buffer): string | undefined {
  if (b.length > NBD_MAX_STRING || b.includes(0)) return undefined;
  try {
    return utf8.decode(b);
  } catch {
    return undefined;
  }
}

export interface InfoRequest {
  readonly name: string;
  readonly requests: readonly number[];
}

/** The data of NBD_OPT_INFO / NBD_OPT_GO. */
export function parseInfoRequest(data: Buffer): InfoRequest | undefined {
  if (data.length < 6) return undefined;
  const nameLength = data.readUInt32BE(0);
  if (nameLength > data.length - 6) return undefined;
  const name = decodeString(data.subarray(4, 4 + nameLength));
  const count = data.readUInt16BE(4 + nameLength);
  if (name === undefined || data.length !== 6 + nameLength + 2 * count) return undefined;
  const requests: number[] = [];
  for (let i = 0; i < count; i++) requests.push(data.readUInt16BE(6 + nameLength + 2 * i));
  return { name, requests };
}

export interface MetaContextRequest {
  readonly exportName: string;
  readonly queries: readonly string[];
}

/** The data of NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT. */
export function parseMetaContextRequest(data: Buffer): MetaContextRequest | undefined {
  let pos = 0;
  const readString = (): string | undefined => {
    if (data.length - pos < 4) return undefined;
    const length = data.readUInt32BE(pos);
    if (length > data.length - pos - 4) return undefined;
    pos += 4 + length;
    return decodeString(data.subarray(pos - length, pos));
  };
  const exportName = readString();
  if (exportName === undefined || data.length - pos < 4) return undefined;
  const count = data.readUInt32BE(pos);
  pos += 4;
  // Each query takes at least 4 bytes: a count that cannot fit is invalid, not a long loop.
  if (count > (data.length - pos) / 4) return undefined;
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    const q = readString();
    if (q === undefined) return undefined;
    queries.push(q);
  }
  return pos === data.length ? { exportName, queries } : undefined;
}
