/**
 * What filesystem a partition holds, read from its first sectors: ext2/3/4 (superblock magic),
 * vfat (a FAT boot sector), ISO 9660 (a primary volume descriptor), or unknown. Also the few
 * superblock facts a safe edit needs: the label, the filesystem's own size (an edit must never
 * reach past the partition) and whether an ext journal still waits for recovery.
 */
import { BadImageError, type FilesystemKind } from '../domain/index.js';
import type { DiskReader } from './disk-reader.js';

export type DetectedKind = FilesystemKind | 'iso9660' | 'unknown';

export interface FilesystemInfo {
  readonly kind: DetectedKind;
  /** ext: s_volume_name; vfat: the boot sector's volume label; iso9660: the volume id. */
  readonly label?: string;
  /** The size the filesystem itself records. */
  readonly sizeBytes?: number;
  /** ext only: the journal holds transactions not yet replayed. */
  readonly needsRecovery?: boolean;
}

/** Where a filesystem sits: a partition, or the whole disk (number 0). */
export interface Extent {
  readonly number: number;
  readonly startBytes: number;
  readonly sizeBytes: number;
}

const EXT_SUPER = 1024;
const EXT_MAGIC = 0xef53;
const EXT_INCOMPAT_RECOVER = 0x4;
const EXT_INCOMPAT_64BIT = 0x80;
const ISO_PVD = 32768;
/** Enough bytes for all three probes: boot sector, ext superblock, ISO primary volume descriptor. */
const PROBE_BYTES = ISO_PVD + 2048;

/** A FAT boot sector, strictly enough that an MBR's boot code (GRUB's starts with a jump too) is not one. */
export function looksLikeFatBootSector(sector: Buffer): boolean {
  if (sector.length < 512 || sector[510] !== 0x55 || sector[511] !== 0xaa) return false;
  const bytesPerSector = sector.readUInt16LE(11);
  const sectorsPerCluster = sector[13]!;
  const fats = sector[16]!;
  const saneBpb =
    [512, 1024, 2048, 4096].includes(bytesPerSector) &&
    sectorsPerCluster > 0 &&
    (sectorsPerCluster & (sectorsPerCluster - 1)) === 0 &&
    sector.readUInt16LE(14) >= 1 &&
    (fats === 1 || fats === 2);
  return saneBpb && (ascii(sector, 54, 3) === 'FAT' || ascii(sector, 82, 5) === 'FAT32');
}

/** Reads the partition's first sectors and says what they hold. */
export async function detectFilesystem(disk: DiskReader, extent: Extent): Promise<FilesystemInfo> {
  const head = await disk.read(extent.startBytes, Math.min(PROBE_BYTES, extent.sizeBytes));
  return parseFilesystem(head);
}

/** Pure: the probes on bytes already read from the start of a partition. */
export function parseFilesystem(head: Buffer): FilesystemInfo {
  return parseExt(head) ?? parseVfat(head) ?? parseIso(head) ?? { kind: 'unknown' };
}

function parseExt(head: Buffer): FilesystemInfo | undefined {
  if (head.length < EXT_SUPER + 1024 || head.readUInt16LE(EXT_SUPER + 56) !== EXT_MAGIC) return undefined;
  const logBlockSize = head.readUInt32LE(EXT_SUPER + 24);
  // A magic number alone is two bytes of chance; a block size ext can have makes it a superblock.
  if (logBlockSize > 6) return undefined;
  const incompat = head.readUInt32LE(EXT_SUPER + 96);
  const blocksHi = incompat & EXT_INCOMPAT_64BIT ? head.readUInt32LE(EXT_SUPER + 0x150) : 0;
  const blocks = head.readUInt32LE(EXT_SUPER + 4) + blocksHi * 2 ** 32;
  const label = cString(head.subarray(EXT_SUPER + 120, EXT_SUPER + 136));
  return {
    kind: 'ext',
    sizeBytes: blocks * (1024 << logBlockSize),
    needsRecovery: (incompat & EXT_INCOMPAT_RECOVER) !== 0,
    ...(label ? { label } : {}),
  };
}

function parseVfat(head: Buffer): FilesystemInfo | undefined {
  if (!looksLikeFatBootSector(head)) return undefined;
  const fat32 = ascii(head, 82, 5) === 'FAT32';
  const [sigAt, labelAt] = fat32 ? [66, 71] : [38, 43];
  const total16 = head.readUInt16LE(19);
  const sectors = total16 !== 0 ? total16 : head.readUInt32LE(32);
  // The label field exists only with the extended boot signature; "NO NAME" is FAT's "none".
  const raw = head[sigAt] === 0x29 ? ascii(head, labelAt, 11).trim() : '';
  const label = raw === 'NO NAME' ? '' : raw;
  return { kind: 'vfat', sizeBytes: sectors * head.readUInt16LE(11), ...(label ? { label } : {}) };
}

function parseIso(head: Buffer): FilesystemInfo | undefined {
  if (head.length < ISO_PVD + 2048 || head[ISO_PVD] !== 1 || ascii(head, ISO_PVD + 1, 5) !== 'CD001') return undefined;
  const label = ascii(head, ISO_PVD + 40, 32).trim();
  const sizeBytes = head.readUInt32LE(ISO_PVD + 80) * head.readUInt16LE(ISO_PVD + 128);
  return { kind: 'iso9660', sizeBytes, ...(label ? { label } : {}) };
}

/** How an error message names a kind. */
export function describeKind(kind: DetectedKind): string {
  switch (kind) {
    case 'ext':
      return 'ext2/3/4';
    case 'vfat':
      return 'vfat';
    case 'iso9660':
      return 'an ISO 9660 filesystem';
    case 'unknown':
      return 'no filesystem prestage knows (neither ext2/3/4 nor vfat)';
  }
}

export function describeExtent(extent: Extent): string {
  return extent.number === 0 ? 'the whole disk' : `partition ${extent.number}`;
}

/**
 * The filesystem the plan expects, fitting inside its partition and safe to edit offline.
 * Checked before anything is written, so a wrong partition changes nothing.
 */
export function requireFilesystem(info: FilesystemInfo, expected: FilesystemKind, extent: Extent): void {
  const where = describeExtent(extent);
  if (info.kind !== expected) {
    throw new BadImageError(`${where} holds ${describeKind(info.kind)}, not ${describeKind(expected)}`, {
      partition: extent.number,
      found: info.kind,
      expected,
    });
  }
  if (info.sizeBytes !== undefined && info.sizeBytes > extent.sizeBytes) {
    // Editing it would write past the partition's end, into whatever follows.
    throw new BadImageError(
      `the ${describeKind(info.kind)} filesystem in ${where} says it is ${info.sizeBytes} bytes, larger than the ${extent.sizeBytes} bytes of its partition`,
      { partition: extent.number, filesystemBytes: info.sizeBytes, partitionBytes: extent.sizeBytes },
    );
  }
  if (info.needsRecovery === true) {
    // Changes written beside an unreplayed journal are overwritten when the kernel replays it.
    throw new BadImageError(`the ext filesystem in ${where} needs journal recovery (it was not unmounted cleanly); repair the base image with e2fsck first`, {
      partition: extent.number,
    });
  }
}

function ascii(buf: Buffer, at: number, length: number): string {
  return buf.length < at + length ? '' : buf.toString('latin1', at, at + length);
}

function cString(bytes: Buffer): string {
  const end = bytes.indexOf(0);
  return bytes.toString('utf8', 0, end === -1 ? bytes.length : end);
}
