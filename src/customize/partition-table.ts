/**
 * Partition tables read by our own code (no sfdisk, no loop devices): MBR with its chain of
 * extended boot records, and GPT behind its protective MBR, both checked hard — a wrong CRC,
 * a partition past the end of the disk or two overlapping partitions make a BadImageError,
 * because a template build that trusted them would write into the wrong bytes.
 * Only 512-byte sectors: that is what disk image files use.
 */
import { BadImageError, InputError, type PartitionSelector } from '../domain/index.js';
import { crc32 } from './crc32.js';
import { readExactly, type DiskReader } from './disk-reader.js';
import { describeKind, detectFilesystem, looksLikeFatBootSector, type FilesystemInfo } from './fs-detect.js';

export interface Partition {
  /** 1–4 primary, 5+ logical (MBR); the entry's index + 1 (GPT); 0 is the whole disk. */
  readonly number: number;
  readonly startBytes: number;
  readonly sizeBytes: number;
  /** MBR: the type byte as two hex digits (`83`); GPT: the type GUID, upper case. */
  readonly type: string;
  /** GPT: the unique partition GUID, upper case. */
  readonly guid?: string;
  /** GPT: the partition name. */
  readonly label?: string;
}

export interface PartitionTable {
  readonly kind: 'mbr' | 'gpt' | 'none';
  readonly sectorSize: 512;
  readonly diskSizeBytes: number;
  /** Partitions that can hold a filesystem, by number. */
  readonly partitions: readonly Partition[];
  /** MBR: the extended partition, a container of the logical ones and no place for a filesystem. */
  readonly extended?: Pick<Partition, 'number' | 'startBytes' | 'sizeBytes'>;
}

const SECTOR = 512;
const MBR_EXTENDED = new Set([0x05, 0x0f, 0x85]);
const MBR_PROTECTIVE = 0xee;
/** Far beyond any real disk (the kernel stops at 256 partitions); a longer chain is a loop or junk. */
const MAX_LOGICAL = 256;
/** 128 entries of 128 bytes is the norm; a header asking for more than this is corrupt. */
const MAX_GPT_ARRAY_BYTES = 1024 * 1024;

export async function readPartitionTable(disk: DiskReader): Promise<PartitionTable> {
  const none: PartitionTable = { kind: 'none', sectorSize: SECTOR, diskSizeBytes: disk.sizeBytes, partitions: [] };
  if (disk.sizeBytes < 2 * SECTOR) return none;
  const mbr = await readExactly(disk, 0, SECTOR, 'the MBR');
  if (mbr[510] !== 0x55 || mbr[511] !== 0xaa) {
    // Some tools write a GPT without a protective MBR; take it, it is unambiguous.
    const lba1 = await readExactly(disk, SECTOR, SECTOR, 'LBA 1');
    return lba1.toString('latin1', 0, 8) === 'EFI PART' ? readGpt(disk) : none;
  }
  // A filesystem made on the whole disk (a "superfloppy") also ends its first sector with 55 AA.
  if (looksLikeFatBootSector(mbr)) return none;
  const entries = [0, 1, 2, 3].map((i) => mbrEntry(mbr, i));
  if (entries.some((e) => e.type === MBR_PROTECTIVE)) return readGpt(disk);
  return readMbr(disk, entries);
}

interface MbrEntry {
  readonly status: number;
  readonly type: number;
  readonly startLba: number;
  readonly sectors: number;
}

function mbrEntry(sector: Buffer, index: number): MbrEntry {
  const at = 446 + 16 * index;
  return { status: sector[at]!, type: sector[at + 4]!, startLba: sector.readUInt32LE(at + 8), sectors: sector.readUInt32LE(at + 12) };
}

const hexByte = (n: number): string => n.toString(16).padStart(2, '0');

async function readMbr(disk: DiskReader, entries: readonly MbrEntry[]): Promise<PartitionTable> {
  const primaries: Partition[] = [];
  let extended: Partition | undefined;
  for (const [i, e] of entries.entries()) {
    if (e.status !== 0 && e.status !== 0x80) {
      throw new BadImageError(`corrupt MBR: entry ${i + 1} has boot flag 0x${hexByte(e.status)} (only 0x00 and 0x80 exist)`, { entry: i + 1 });
    }
    if (e.type === 0 || e.sectors === 0) continue;
    const p = inDisk(disk, { number: i + 1, startBytes: e.startLba * SECTOR, sizeBytes: e.sectors * SECTOR, type: hexByte(e.type) }, 'MBR');
    if (e.startLba === 0) throw new BadImageError(`corrupt MBR: partition ${i + 1} starts at sector 0, on the MBR itself`, { partition: i + 1 });
    if (!MBR_EXTENDED.has(e.type)) primaries.push(p);
    else if (extended) throw new BadImageError(`corrupt MBR: partitions ${extended.number} and ${p.number} are both extended partitions`);
    else extended = p;
  }
  noOverlaps(extended ? [...primaries, extended] : primaries, 'MBR');
  const logicals = extended ? await readLogicals(disk, extended) : [];
  noOverlaps(logicals, 'MBR');
  return {
    kind: 'mbr',
    sectorSize: SECTOR,
    diskSizeBytes: disk.sizeBytes,
    partitions: [...primaries, ...logicals],
    ...(extended ? { extended: { number: extended.number, startBytes: extended.startBytes, sizeBytes: extended.sizeBytes } } : {}),
  };
}

/** Follows the chain of extended boot records: each holds one logical partition and a link to the next. */
async function readLogicals(disk: DiskReader, extended: Partition): Promise<Partition[]> {
  const extStart = extended.startBytes / SECTOR;
  const extEnd = extStart + extended.sizeBytes / SECTOR;
  const logicals: Partition[] = [];
  const seen = new Set<number>();
  for (let ebrLba = extStart; ; ) {
    if (seen.has(ebrLba)) throw new BadImageError(`corrupt MBR: the chain of extended boot records loops back to sector ${ebrLba}`);
    if (seen.size >= MAX_LOGICAL) throw new BadImageError(`corrupt MBR: more than ${MAX_LOGICAL} logical partitions`);
    seen.add(ebrLba);
    const ebr = await readExactly(disk, ebrLba * SECTOR, SECTOR, 'an extended boot record');
    // Like the kernel: an EBR without its signature ends the chain (an empty extended partition).
    if (ebr[510] !== 0x55 || ebr[511] !== 0xaa) break;
    const [here, next] = [mbrEntry(ebr, 0), mbrEntry(ebr, 1)];
    if (here.type !== 0 && here.sectors !== 0) {
      const number = 5 + logicals.length;
      const start = ebrLba + here.startLba;
      if (here.startLba === 0 || start + here.sectors > extEnd) {
        throw new BadImageError(`corrupt MBR: logical partition ${number} (sectors ${start}–${start + here.sectors - 1}) lies outside its extended partition ${extended.number} (sectors ${extStart}–${extEnd - 1})`, {
          partition: number,
        });
      }
      logicals.push(inDisk(disk, { number, startBytes: start * SECTOR, sizeBytes: here.sectors * SECTOR, type: hexByte(here.type) }, 'MBR'));
    }
    if (next.type === 0 || next.sectors === 0) break;
    if (!MBR_EXTENDED.has(next.type)) throw new BadImageError(`corrupt MBR: the extended boot record at sector ${ebrLba} links to a partition of type 0x${hexByte(next.type)}`);
    ebrLba = extStart + next.startLba;
    if (ebrLba >= extEnd) throw new BadImageError(`corrupt MBR: an extended boot record links to sector ${ebrLba}, outside extended partition ${extended.number}`);
  }
  return logicals;
}

async function readGpt(disk: DiskReader): Promise<PartitionTable> {
  const header = await readExactly(disk, SECTOR, SECTOR, 'the GPT header');
  if (header.toString('latin1', 0, 8) !== 'EFI PART') {
    const at4k = disk.sizeBytes >= 4096 + 8 ? (await disk.read(4096, 8)).toString('latin1') : '';
    throw new BadImageError(
      at4k === 'EFI PART'
        ? 'the disk has a GPT for 4096-byte sectors; only 512-byte sectors are supported'
        : 'the protective MBR announces a GPT, but LBA 1 holds no GPT header ("EFI PART")',
    );
  }
  const headerSize = header.readUInt32LE(12);
  if (headerSize < 92 || headerSize > SECTOR) throw new BadImageError(`corrupt GPT: header size ${headerSize} (92–512 expected)`);
  const stored = header.readUInt32LE(16);
  const zeroed = Buffer.from(header.subarray(0, headerSize));
  zeroed.writeUInt32LE(0, 16);
  if (crc32(zeroed) !== stored) throw new BadImageError('corrupt GPT: the header CRC32 does not match (the primary header is damaged)');
  if (header.readBigUInt64LE(24) !== 1n) throw new BadImageError(`corrupt GPT: the primary header says it is at LBA ${header.readBigUInt64LE(24)}, not 1`);
  const firstUsable = header.readBigUInt64LE(40);
  const lastUsable = header.readBigUInt64LE(48);
  const entriesLba = header.readBigUInt64LE(72);
  const count = header.readUInt32LE(80);
  const entrySize = header.readUInt32LE(84);
  if (entrySize < 128 || entrySize > 4096 || (entrySize & (entrySize - 1)) !== 0) throw new BadImageError(`corrupt GPT: partition entry size ${entrySize} (128 × 2ⁿ expected)`);
  const arrayBytes = count * entrySize;
  if (arrayBytes > MAX_GPT_ARRAY_BYTES) throw new BadImageError(`corrupt GPT: ${count} partition entries of ${entrySize} bytes`);
  const arrayAt = sectorsToBytes(entriesLba);
  if (entriesLba < 2n || arrayAt + arrayBytes > disk.sizeBytes) throw new BadImageError(`corrupt GPT: the partition entries at LBA ${entriesLba} lie outside the disk`);
  const array = await readExactly(disk, arrayAt, arrayBytes, 'the GPT partition entries');
  if (crc32(array) !== header.readUInt32LE(88)) throw new BadImageError('corrupt GPT: the partition entries CRC32 does not match the header');

  const partitions: Partition[] = [];
  for (let i = 0; i < count; i++) {
    const e = array.subarray(i * entrySize, (i + 1) * entrySize);
    const type = guidString(e.subarray(0, 16));
    if (type === ZERO_GUID) continue;
    const number = i + 1;
    const first = e.readBigUInt64LE(32);
    const last = e.readBigUInt64LE(40);
    if (last < first) throw new BadImageError(`corrupt GPT: partition ${number} ends (LBA ${last}) before it starts (LBA ${first})`, { partition: number });
    if (first < firstUsable || last > lastUsable) {
      throw new BadImageError(`corrupt GPT: partition ${number} (LBA ${first}–${last}) lies outside the usable area (LBA ${firstUsable}–${lastUsable})`, { partition: number });
    }
    const label = utf16Name(e.subarray(56, 128));
    partitions.push(
      inDisk(
        disk,
        { number, startBytes: sectorsToBytes(first), sizeBytes: sectorsToBytes(last - first + 1n), type, guid: guidString(e.subarray(16, 32)), ...(label ? { label } : {}) },
        'GPT',
      ),
    );
  }
  noOverlaps(partitions, 'GPT');
  return { kind: 'gpt', sectorSize: SECTOR, diskSizeBytes: disk.sizeBytes, partitions };
}

const ZERO_GUID = '00000000-0000-0000-0000-000000000000';

/** GPT GUIDs: the first three fields little-endian, the last two as stored. */
export function guidString(b: Buffer): string {
  const hex = (from: number, to: number): string => b.subarray(from, to).toString('hex');
  const le = (from: number, to: number): string => Buffer.from(b.subarray(from, to)).reverse().toString('hex');
  return `${le(0, 4)}-${le(4, 6)}-${le(6, 8)}-${hex(8, 10)}-${hex(10, 16)}`.toUpperCase();
}

function utf16Name(b: Buffer): string {
  let end = 0;
  while (end + 1 < b.length && (b[end] !== 0 || b[end + 1] !== 0)) end += 2;
  return b.toString('utf16le', 0, end);
}

/** A u64 sector number as bytes, saturating where a JS number would lose precision (past any real disk anyway). */
function sectorsToBytes(lba: bigint): number {
  const bytes = lba * BigInt(SECTOR);
  return bytes > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(bytes);
}

function inDisk(disk: DiskReader, p: Partition, table: string): Partition {
  if (p.startBytes + p.sizeBytes > disk.sizeBytes) {
    throw new BadImageError(`corrupt ${table}: partition ${p.number} ends at byte ${p.startBytes + p.sizeBytes}, past the end of the disk (${disk.sizeBytes} bytes)`, {
      partition: p.number,
      sizeBytes: disk.sizeBytes,
    });
  }
  return p;
}

function noOverlaps(parts: readonly Partition[], table: string): void {
  const sorted = [...parts].sort((a, b) => a.startBytes - b.startBytes);
  for (let i = 1; i < sorted.length; i++) {
    const [prev, cur] = [sorted[i - 1]!, sorted[i]!];
    if (cur.startBytes < prev.startBytes + prev.sizeBytes) {
      throw new BadImageError(`corrupt ${table}: partitions ${prev.number} and ${cur.number} overlap`, { partitions: [prev.number, cur.number] });
    }
  }
}

/** "an MBR with partitions 1, 2", for error messages that say what does exist. */
export function describeTable(table: PartitionTable, detail: (p: Partition) => string = () => ''): string {
  if (table.kind === 'none') return 'no partition table';
  const name = table.kind === 'mbr' ? 'an MBR' : 'a GPT';
  if (table.partitions.length === 0) return `${name} with no partitions`;
  return `${name} with partitions ${table.partitions.map((p) => `${p.number}${detail(p)}`).join(', ')}`;
}

/**
 * The partition a selector names. A label is first a GPT partition name (exact); failing that —
 * and always on an MBR, which has no names — a filesystem label (ext exact; vfat and ISO 9660
 * case-insensitive, as those filesystems treat names). GUIDs compare case-insensitively.
 */
export async function selectPartition(disk: DiskReader, table: PartitionTable, selector: PartitionSelector | 'whole-disk'): Promise<Partition> {
  if (selector === 'whole-disk') {
    if (table.kind !== 'none') throw new BadImageError(`the plan changes the whole disk, but the disk has ${describeTable(table)}; choose a partition`, { table: table.kind });
    return { number: 0, startBytes: 0, sizeBytes: table.diskSizeBytes, type: '' };
  }
  // Selectors come from stored specs and API bodies: check the shape the type promises.
  const fields = selector as Record<string, unknown>;
  const keys = Object.keys(fields).filter((k) => fields[k] !== undefined);
  const [key] = keys;
  const value = key === undefined ? undefined : fields[key];
  if (keys.length === 1 && key === 'number' && typeof value === 'number') return byNumber(table, value);
  if (keys.length === 1 && key === 'guid' && typeof value === 'string') return byGuid(table, value);
  if (keys.length === 1 && key === 'label' && typeof value === 'string') return byLabel(disk, table, value);
  throw new InputError(`a partition selector sets exactly one of number, label or guid (got ${keys.join(', ') || 'none'})`, { selector: keys });
}

function byNumber(table: PartitionTable, number: number): Partition {
  if (!Number.isInteger(number) || number < 1) throw new InputError(`partition number ${number} is not a whole number from 1`);
  const found = table.partitions.find((p) => p.number === number);
  if (found) return found;
  if (table.extended?.number === number) {
    const logicals = table.partitions.filter((p) => p.number >= 5).map((p) => p.number);
    throw new BadImageError(
      `partition ${number} is an extended partition, a container for logical partitions (${logicals.join(', ') || 'none'}), not a filesystem`,
      { partition: number },
    );
  }
  const hint = table.kind === 'none' ? " (for a disk that is one filesystem, a template says 'partition: whole-disk')" : '';
  throw new BadImageError(`partition ${number} not found: the disk has ${describeTable(table)}${hint}`, { partition: number, table: table.kind });
}

function byGuid(table: PartitionTable, guid: string): Partition {
  const want = guid.trim().toUpperCase();
  const found = table.partitions.find((p) => p.guid === want);
  if (found) return found;
  const why = table.kind === 'gpt' ? '' : ' (partition GUIDs exist only in a GPT)';
  throw new BadImageError(`no partition with GUID ${want}: the disk has ${describeTable(table, (p) => (p.guid ? ` (${p.guid})` : ''))}${why}`, { guid: want });
}

async function byLabel(disk: DiskReader, table: PartitionTable, label: string): Promise<Partition> {
  const named = table.partitions.filter((p) => p.label === label);
  if (named.length > 0) return unique(named, `GPT name '${label}'`);
  const filesystems = new Map<number, FilesystemInfo>();
  for (const p of table.partitions) filesystems.set(p.number, await detectFilesystem(disk, p));
  const matches = table.partitions.filter((p) => {
    const fs = filesystems.get(p.number);
    if (fs?.label === undefined) return false;
    return fs.kind === 'ext' ? fs.label === label : fs.label.toLowerCase() === label.toLowerCase();
  });
  if (matches.length > 0) return unique(matches, `filesystem label '${label}'`);
  const detail = (p: Partition): string => {
    const fs = filesystems.get(p.number);
    const parts = [p.label !== undefined ? `name '${p.label}'` : '', fs?.label !== undefined ? `${describeKind(fs.kind)} label '${fs.label}'` : ''].filter(Boolean);
    return parts.length > 0 ? ` (${parts.join(', ')})` : '';
  };
  throw new BadImageError(`no partition labelled '${label}': the disk has ${describeTable(table, detail)}`, { label });
}

function unique(matches: readonly Partition[], what: string): Partition {
  if (matches.length > 1) throw new BadImageError(`${what} is ambiguous: partitions ${matches.map((p) => p.number).join(', ')} have it; choose by number or GUID`);
  return matches[0]!;
}
