/**
 * The pieces of a small initramfs made without root or a cpio tool: the "newc" archive format
 * (device nodes as plain entries), the modes of its entries, and kernel modules read whatever
 * their compression. The demo image and the boot tests build theirs from these.
 */
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { gunzipSync } from 'node:zlib';

export interface CpioEntry {
  readonly name: string;
  readonly mode: number;
  readonly data?: Buffer;
  readonly rdev?: readonly [number, number];
}

export const CPIO_MODE = { dir: 0o040755, file: 0o100644, exec: 0o100755, link: 0o120777, chr: 0o020600 } as const;

/** The archive, entries in order, with its trailer. */
export function cpioNewc(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let size = 0;
  const push = (b: Buffer) => {
    parts.push(b);
    size += b.length;
    const pad = (4 - (size % 4)) % 4;
    if (pad) {
      parts.push(Buffer.alloc(pad));
      size += pad;
    }
  };
  [...entries, { name: 'TRAILER!!!', mode: 0 }].forEach((e: CpioEntry, i) => {
    const data = e.data ?? Buffer.alloc(0);
    const hex = (n: number) => n.toString(16).padStart(8, '0');
    const name = Buffer.from(`${e.name}\0`);
    const fields = [i + 1, e.mode, 0, 0, e.mode & 0o040000 ? 2 : 1, 0, data.length, 0, 0, e.rdev?.[0] ?? 0, e.rdev?.[1] ?? 0, name.length, 0];
    push(Buffer.concat([Buffer.from(`070701${fields.map(hex).join('')}`), name]));
    if (data.length) push(data);
  });
  return Buffer.concat(parts);
}

/** `virtio_blk` of `/lib/modules/…/virtio_blk.ko.xz`. */
export const moduleName = (file: string): string => basename(file).replace(/\.ko(\.(xz|zst|gz))?$/, '');

/**
 * A module's bytes, decompressed: gzip here, xz and zstd by their tool, which `decompress` runs
 * (`-dc FILE`) and reports missing in its caller's words.
 */
export async function moduleBytes(file: string, decompress: (tool: 'xz' | 'zstd', file: string) => Promise<Buffer>): Promise<Buffer> {
  if (file.endsWith('.ko')) return readFile(file);
  if (file.endsWith('.ko.gz')) return gunzipSync(await readFile(file));
  if (file.endsWith('.ko.xz')) return decompress('xz', file);
  if (file.endsWith('.ko.zst')) return decompress('zstd', file);
  throw new Error(`unknown module compression: ${file}`);
}

/**
 * The start of an /init: busybox's applets, the kernel filesystems, the console, and `fail MSG`,
 * which prints `failedMarker` + MSG and powers off (what a test or a person reads on the console).
 */
export function initPrologue(failedMarker: string): string {
  return `#!/bin/sh
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
echo
fail() { echo "${failedMarker}$1"; poweroff -f; sleep 60; }
`;
}
