/**
 * The qcow2 header, read by us before qemu-img sees the file: an image that names a backing file
 * (a path, or a URL such as nbd://… or http://…) or an external data file would make qemu-img
 * open something outside the file we were given — a local secret, or a connection to a port of
 * the uploader's choosing. Those are refused here, so qemu-img only ever opens self-contained
 * images. Pure: it reads a buffer (the first 512 bytes hold every field it needs).
 */

export const QCOW2_MAGIC = Buffer.from([0x51, 0x46, 0x49, 0xfb]);
/** Bytes of the header this reads: version 3 headers are at least 104 bytes. */
export const QCOW2_HEADER_BYTES = 512;

/** incompatible_features bits qemu defines: dirty, corrupt, external data file, compression type, extended L2. */
const DIRTY = 1n << 0n;
const CORRUPT = 1n << 1n;
const DATA_FILE = 1n << 2n;
const KNOWN = DIRTY | CORRUPT | DATA_FILE | (1n << 3n) | (1n << 4n);

export type Qcow2Verdict = { readonly ok: true; readonly version: 2 | 3; readonly virtualSize: number } | { readonly ok: false; readonly reason: string };

/** Whether the header describes a self-contained qcow2 that qemu-img may open. */
export function checkQcow2Header(head: Buffer): Qcow2Verdict {
  if (head.length < 72 || !head.subarray(0, 4).equals(QCOW2_MAGIC)) return { ok: false, reason: 'not a qcow2 header' };
  const version = head.readUInt32BE(4);
  if (version !== 2 && version !== 3) return { ok: false, reason: `qcow2 version ${version} is not supported (2 or 3)` };
  const backingOffset = head.readBigUInt64BE(8);
  const backingSize = head.readUInt32BE(16);
  if (backingOffset !== 0n || backingSize !== 0) return { ok: false, reason: 'it has a backing file; import a flattened image (qemu-img convert -O qcow2)' };
  const virtualSize = head.readBigUInt64BE(24);
  if (virtualSize > BigInt(Number.MAX_SAFE_INTEGER)) return { ok: false, reason: 'its virtual size is out of range' };
  if (version === 3) {
    if (head.length < 104) return { ok: false, reason: 'the qcow2 v3 header is truncated' };
    const incompatible = head.readBigUInt64BE(72);
    if (incompatible & DATA_FILE) return { ok: false, reason: 'it uses an external data file; import a self-contained image' };
    if (incompatible & CORRUPT) return { ok: false, reason: 'it is marked corrupt' };
    if (incompatible & ~KNOWN) return { ok: false, reason: `it uses qcow2 features this version does not know (0x${incompatible.toString(16)})` };
  }
  return { ok: true, version, virtualSize: Number(virtualSize) };
}
