/**
 * The transmission phase: one request in, the bytes of its reply out. The storage is behind the
 * `BlockDevice` interface (a file in production, memory in the property tests); the socket layer
 * decides when to read the next request and writes each reply whole, so replies to one socket
 * never interleave while requests still run concurrently and may finish out of order.
 */
import { errnoCode, type BlockDevice } from '../../domain/index.js';
import type { NbdStats } from './stats.js';
import {
  NBD_CMD,
  NBD_CMD_FLAG,
  NBD_E,
  type NbdRequest,
  OFFSET_DATA_HEADER_LENGTH,
  SIMPLE_REPLY_LENGTH,
  blockStatusReply,
  simpleReply,
  structuredError,
  writeOffsetDataHeader,
  writeSimpleReply,
} from './protocol.js';

/** The storage behind an export (a port of the domain: any volume a driver opens). */
export type { BlockDevice } from '../../domain/index.js';

export interface TransmissionContext {
  readonly device: BlockDevice;
  readonly readOnly: boolean;
  readonly structuredReplies: boolean;
  /** Set when base:allocation was negotiated for this export; BLOCK_STATUS needs it. */
  readonly allocationContextId: number | undefined;
  /** Largest READ or WRITE accepted; the maximum block size we advertise. */
  readonly maxRequestLength: number;
  /** Told about storage errors, which clients only see as an NBD error value. */
  readonly onStorageError?: (error: unknown, req: NbdRequest) => void;
  /** Where READ data goes; without it, a new buffer per request. */
  readonly readBuffers?: ReadBuffers;
  /** Totals to count this request's bytes and errors in. */
  readonly stats?: Pick<NbdStats, 'readBytes' | 'writtenBytes' | 'requestErrors' | 'storageErrors'>;
}

/**
 * Buffers for READ data, taken per request and given back once the reply has left, so a
 * stream of large reads reuses a few buffers instead of allocating one per request: fresh ones
 * cost page faults on first touch and, as external memory, a major GC every few dozen MiB.
 */
export class ReadBuffers {
  /** Free buffers by length; a client mostly reads in one size. */
  private readonly free = new Map<number, Buffer[]>();
  private freeBytes = 0;
  /** Buffers handed out, so that only those come back (never a header or a caller's buffer). */
  private readonly out = new WeakSet<Buffer>();

  constructor(
    /** Free buffers kept, in bytes: memory held beyond what connections have in flight. */
    private readonly maxFreeBytes: number,
    /** Smaller reads come from Node's allocator; larger ones are rare and would pin much memory. */
    private readonly minLength = 4096,
    private readonly maxLength = (4 << 20) + OFFSET_DATA_HEADER_LENGTH,
  ) {}

  take(length: number): Buffer {
    if (length < this.minLength || length > this.maxLength) return Buffer.allocUnsafe(length);
    const b = this.free.get(length)?.pop();
    if (b !== undefined) this.freeBytes -= length;
    const buffer = b ?? Buffer.allocUnsafeSlow(length);
    this.out.add(buffer);
    return buffer;
  }

  /** Takes back a buffer from take() that nothing refers to any more; anything else is ignored. */
  give(buffer: Buffer): void {
    if (!this.out.delete(buffer)) return;
    const length = buffer.length;
    // Room is made by dropping buffers of other lengths first: those of a client that went away.
    for (const [size, list] of this.free) {
      if (this.freeBytes + length <= this.maxFreeBytes) break;
      if (size === length) continue;
      while (list.length > 0 && this.freeBytes + length > this.maxFreeBytes) {
        list.pop();
        this.freeBytes -= size;
      }
      if (list.length === 0) this.free.delete(size);
    }
    if (this.freeBytes + length > this.maxFreeBytes) return;
    let list = this.free.get(length);
    if (list === undefined) this.free.set(length, (list = []));
    list.push(buffer);
    this.freeBytes += length;
  }
}

/** Descriptors per BLOCK_STATUS reply; the spec lets a server return fewer than asked for. */
export const MAX_EXTENTS = 1024;

const COMMAND_FLAGS: Readonly<Record<number, number>> = {
  [NBD_CMD.READ]: NBD_CMD_FLAG.FUA | NBD_CMD_FLAG.DF,
  [NBD_CMD.WRITE]: NBD_CMD_FLAG.FUA,
  [NBD_CMD.FLUSH]: NBD_CMD_FLAG.FUA,
  [NBD_CMD.TRIM]: NBD_CMD_FLAG.FUA,
  [NBD_CMD.WRITE_ZEROES]: NBD_CMD_FLAG.FUA | NBD_CMD_FLAG.NO_HOLE,
  [NBD_CMD.BLOCK_STATUS]: NBD_CMD_FLAG.FUA | NBD_CMD_FLAG.REQ_ONE,
};

/** Why a request cannot run, as an NBD error and a message; undefined when it may. */
export function checkRequest(req: NbdRequest, ctx: TransmissionContext): { error: number; message: string } | undefined {
  const fail = (error: number, message: string) => ({ error, message });
  const allowed = COMMAND_FLAGS[req.type];
  if (allowed === undefined) return fail(NBD_E.INVAL, `unknown command ${req.type}`);
  // FUA is accepted on every command, as the spec requires once SEND_FUA is offered.
  if ((req.flags & ~allowed) !== 0) return fail(NBD_E.INVAL, `flags 0x${req.flags.toString(16)} are not valid for command ${req.type}`);
  if ((req.flags & NBD_CMD_FLAG.DF) !== 0 && !ctx.structuredReplies) return fail(NBD_E.INVAL, 'NBD_CMD_FLAG_DF needs structured replies');
  if (req.type === NBD_CMD.FLUSH) return req.offset === 0 && req.length === 0 ? undefined : fail(NBD_E.INVAL, 'flush takes no offset or length');
  const writes = req.type === NBD_CMD.WRITE || req.type === NBD_CMD.TRIM || req.type === NBD_CMD.WRITE_ZEROES;
  if (writes && ctx.readOnly) return fail(NBD_E.PERM, 'the export is read-only');
  if (req.type === NBD_CMD.BLOCK_STATUS && ctx.allocationContextId === undefined) return fail(NBD_E.INVAL, 'no metadata context was negotiated');
  if (req.length === 0) return fail(NBD_E.INVAL, 'zero-length request');
  if ((req.type === NBD_CMD.READ || req.type === NBD_CMD.WRITE) && req.length > ctx.maxRequestLength) {
    return fail(NBD_E.INVAL, `requests are limited to ${ctx.maxRequestLength} bytes`);
  }
  if (req.offset + req.length > ctx.device.size) {
    // Writing past the end is "no space"; reading, trimming or querying past it is invalid.
    const error = req.type === NBD_CMD.WRITE || req.type === NBD_CMD.WRITE_ZEROES ? NBD_E.NOSPC : NBD_E.INVAL;
    return fail(error, `request ends past the end of the export (${ctx.device.size} bytes)`);
  }
  return undefined;
}

/**
 * Runs one request (anything but NBD_CMD_DISC, which has no reply) and returns its reply,
 * as buffers to write back to back. Never throws: storage errors become NBD error replies.
 */
export async function execute(req: NbdRequest, ctx: TransmissionContext): Promise<Buffer[]> {
  const problem = checkRequest(req, ctx);
  const { device, stats } = ctx;
  if (problem) {
    if (stats) stats.requestErrors++;
    return errorReply(req, ctx, problem.error, problem.message);
  }
  const fua = (req.flags & NBD_CMD_FLAG.FUA) !== 0;
  try {
    switch (req.type) {
      case NBD_CMD.READ: {
        // The header goes in front of the data, in one buffer: a TLS socket copies the parts of
        // a reply written in several buffers into one before encrypting them.
        const headLength = ctx.structuredReplies ? OFFSET_DATA_HEADER_LENGTH : SIMPLE_REPLY_LENGTH;
        // A buffer whose read failed is not given back: the storage might still be writing into it.
        const reply = ctx.readBuffers?.take(headLength + req.length) ?? Buffer.allocUnsafe(headLength + req.length);
        await device.read(reply.subarray(headLength), req.offset);
        if (stats) stats.readBytes += req.length;
        if (ctx.structuredReplies) writeOffsetDataHeader(reply, req.handle, req.offset, req.length, true);
        else writeSimpleReply(reply, req.handle, 0);
        return [reply];
      }
      case NBD_CMD.WRITE:
        await device.write(req.data ?? Buffer.alloc(0), req.offset);
        if (stats) stats.writtenBytes += req.length;
        break;
      case NBD_CMD.FLUSH:
        await device.flush();
        return ok(req);
      case NBD_CMD.TRIM:
        await device.trim(req.offset, req.length);
        break;
      case NBD_CMD.WRITE_ZEROES:
        await device.zero(req.offset, req.length, (req.flags & NBD_CMD_FLAG.NO_HOLE) === 0);
        break;
      case NBD_CMD.BLOCK_STATUS: {
        const max = (req.flags & NBD_CMD_FLAG.REQ_ONE) !== 0 ? 1 : MAX_EXTENTS;
        const extents = await device.extents(req.offset, req.length, max);
        return [blockStatusReply(req.handle, ctx.allocationContextId ?? 0, extents)];
      }
      default:
        return errorReply(req, ctx, NBD_E.INVAL, `unknown command ${req.type}`);
    }
    if (fua) await device.flush();
    return ok(req);
  } catch (e) {
    if (stats) stats.storageErrors++;
    ctx.onStorageError?.(e, req);
    // The client gets the error's code only: a message could name files on this machine.
    return errorReply(req, ctx, nbdErrno(e), `storage error ${errnoCode(e) ?? ''}`.trim());
  }
}

function ok(req: NbdRequest): Buffer[] {
  // A simple reply is allowed for any payload-less success, structured replies or not.
  return [simpleReply(req.handle, 0)];
}

function errorReply(req: NbdRequest, ctx: TransmissionContext, error: number, message: string): Buffer[] {
  // With structured replies a READ must not get a simple reply, and errors may carry a message.
  return [ctx.structuredReplies ? structuredError(req.handle, error, message) : simpleReply(req.handle, error)];
}

const ERRNO_TO_NBD: Readonly<Record<string, number>> = {
  ENOSPC: NBD_E.NOSPC,
  EDQUOT: NBD_E.NOSPC,
  EFBIG: NBD_E.NOSPC,
  EPERM: NBD_E.PERM,
  EACCES: NBD_E.PERM,
  EROFS: NBD_E.PERM,
  EINVAL: NBD_E.INVAL,
};

/** Maps a storage error to the few values the spec allows; anything unexpected is EIO. */
export function nbdErrno(e: unknown): number {
  return ERRNO_TO_NBD[errnoCode(e) ?? ''] ?? NBD_E.IO;
}
