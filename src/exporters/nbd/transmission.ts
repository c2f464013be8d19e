/**
 * The transmission phase: one request in, the bytes of its reply out. The storage is behind the
 * `BlockDevice` interface (a file in production, memory in the property tests); the socket layer
 * decides when to read the next request and writes each reply whole, so replies to one socket
 * never interleave while requests still run concurrently and may finish out of order.
 */
import { errnoCode } from '../../domain/index.js';
import {
  NBD_CMD,
  NBD_CMD_FLAG,
  NBD_E,
  type Extent,
  type NbdRequest,
  blockStatusReply,
  offsetDataHeader,
  simpleReply,
  structuredError,
} from './protocol.js';

/** The storage behind an export. Offsets and lengths are already checked against `size`. */
export interface BlockDevice {
  readonly size: number;
  read(into: Buffer, offset: number): Promise<void>;
  write(data: Buffer, offset: number): Promise<void>;
  /** Makes every completed write durable. */
  flush(): Promise<void>;
  /** A hint that the range is no longer needed; may do nothing. */
  trim(offset: number, length: number): Promise<void>;
  /** Makes the range read as zeros; `mayPunch` allows doing it by deallocating. */
  zero(offset: number, length: number, mayPunch: boolean): Promise<void>;
  /** `base:allocation` extents from `offset`: at least one, at most `max`, within the range. */
  extents(offset: number, length: number, max: number): Promise<Extent[]>;
}

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
  if (problem) return errorReply(req, ctx, problem.error, problem.message);
  const { device } = ctx;
  const fua = (req.flags & NBD_CMD_FLAG.FUA) !== 0;
  try {
    switch (req.type) {
      case NBD_CMD.READ: {
        const data = Buffer.allocUnsafe(req.length);
        await device.read(data, req.offset);
        const head = ctx.structuredReplies ? offsetDataHeader(req.handle, req.offset, req.length, true) : simpleReply(req.handle, 0);
        return [head, data];
      }
      case NBD_CMD.WRITE:
        await device.write(req.data ?? Buffer.alloc(0), req.offset);
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
