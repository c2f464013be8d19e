/**
 * One request on tgtd's control socket, spoken directly: only for what must not go through
 * tgtadm's command line. `tgtadm --password SECRET` would show a CHAP secret in
 * /proc/PID/cmdline to every local user while it runs; here it travels over a root-only socket.
 *
 * The layout is tgt's `struct tgtadm_req` (usr/tgtadm.h, unchanged since 2012) in the machine's
 * byte order with natural alignment, followed by the parameters as one NUL-terminated string;
 * the reply is `struct tgtadm_rsp { u32 err; u32 len; }` and text (tgt's usr/mgmt.c).
 */
import { connect } from 'node:net';
import { endianness } from 'node:os';

/** tgt's `enum tgtadm_mode`. */
export const TGT_MODE = { system: 0, target: 1, device: 2, portal: 3, lld: 4, session: 5, connection: 6, account: 7 } as const;
/** tgt's `enum tgtadm_op`. */
export const TGT_OP = { new: 0, delete: 1, show: 2, bind: 3, unbind: 4, update: 5, stats: 6, start: 7, stop: 8 } as const;

/** tgt's `enum tgtadm_errno` → its message, as tgtadm prints it (usr/tgtadm.c). */
export const TGTADM_ERRORS: readonly string[] = [
  'success',
  'unknown error',
  'out of memory',
  "can't find the driver",
  "can't find the target",
  "can't find the logical unit",
  "can't find the session",
  "can't find the connection",
  "can't find the binding",
  'this target already exists',
  'this logical unit number already exists',
  'this binding already exists',
  'this access control rule already exists',
  'this access control rule does not exist',
  'this account already exists',
  "can't find the account",
  'too many accounts',
  'invalid request',
  'this target already has an outgoing account',
  'this target is still active',
  'this logical unit is still active',
  'this driver is busy',
  "this operation isn't supported",
  'unknown parameter',
  'this device has Prevent Removal set',
];

const LLD_NAME_LEN = 64;
/** sizeof(struct tgtadm_req): two enums, lld[64], len, tid, then u64 sid and lun (8-aligned at 80), six u32. */
const REQ_SIZE = 120;
const RSP_SIZE = 8;

export interface TgtdRequest {
  readonly mode: number;
  readonly op: number;
  readonly lld?: string;
  /** Default -1 (none), as tgtadm sends it. */
  readonly tid?: number;
  /** Session and connection ids (0 when not given, as tgtadm). */
  readonly sid?: number;
  readonly cid?: number;
  /** Default 2^64 - 1 (none), as tgtadm sends it. */
  readonly lun?: number;
  /** 0 incoming (the initiator proves itself), 1 outgoing (the target does). */
  readonly acDir?: 0 | 1;
  readonly force?: boolean;
  /** `key=value` pairs joined by ',' as tgtadm joins them. */
  readonly params: string;
}

export interface TgtdReply {
  /** 0 on success, else an `enum tgtadm_errno`. */
  readonly err: number;
  readonly message: string;
  readonly text: string;
}

export function encodeRequest(req: TgtdRequest): Buffer {
  const body = Buffer.from(`${req.params}\0`, 'utf8');
  const out = Buffer.alloc(REQ_SIZE + body.length);
  const le = endianness() === 'LE';
  const u32 = (v: number, at: number) => (le ? out.writeUInt32LE(v, at) : out.writeUInt32BE(v, at));
  const u64 = (v: bigint, at: number) => (le ? out.writeBigUInt64LE(v, at) : out.writeBigUInt64BE(v, at));
  u32(req.mode, 0);
  u32(req.op, 4);
  out.write(req.lld ?? 'iscsi', 8, LLD_NAME_LEN - 1, 'latin1');
  u32(out.length, 72);
  if (le) out.writeInt32LE(req.tid ?? -1, 76);
  else out.writeInt32BE(req.tid ?? -1, 76);
  u64(BigInt(req.sid ?? 0), 80);
  u64(req.lun === undefined ? 0xffff_ffff_ffff_ffffn : BigInt(req.lun), 88);
  u32(req.cid ?? 0, 96);
  // host_no (100) and device_type (104, TYPE_DISK) stay 0.
  u32(req.acDir ?? 0, 108);
  // pack (112) stays 0.
  u32(req.force ? 1 : 0, 116);
  body.copy(out, REQ_SIZE);
  return out;
}

export function decodeReply(buf: Buffer): TgtdReply {
  if (buf.length < RSP_SIZE) throw new Error(`tgtd's reply is ${buf.length} bytes, shorter than its header`);
  const le = endianness() === 'LE';
  const err = le ? buf.readUInt32LE(0) : buf.readUInt32BE(0);
  const text = buf.subarray(RSP_SIZE).toString('utf8').replace(/\0+$/, '');
  return { err, message: TGTADM_ERRORS[err] ?? `tgtadm error ${err}`, text };
}

/** Sends one request to the tgtd listening on `socketPath`; rejects only when it cannot be asked. */
export function tgtdRequest(socketPath: string, req: TgtdRequest, timeoutMs = 10_000): Promise<TgtdReply> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = connect(socketPath);
    socket.setTimeout(timeoutMs, () => socket.destroy(Object.assign(new Error(`tgtd did not answer on ${socketPath} within ${timeoutMs} ms`), { code: 'ETIMEDOUT' })));
    socket.on('connect', () => socket.write(encodeRequest(req)));
    socket.on('data', (b: Buffer) => chunks.push(b));
    socket.on('error', reject);
    // tgtd closes the connection once it has written its reply.
    socket.on('end', () => {
      try {
        resolve(decodeReply(Buffer.concat(chunks)));
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
  });
}
