/**
 * Our MBR/GPT parser against sfdisk's own reading of real disks, the selector rules and their
 * messages, hand-made corruptions, and fast-check: random and mutated bytes never make it
 * throw anything but a PrestageError, and whatever it accepts is a sane table.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { BadImageError, InputError, PrestageError } from '../../src/domain/index.js';
import { bufferDiskReader, readPartitionTable, selectPartition, type DiskReader, type PartitionTable } from '../../src/customize/index.js';
import { crc32 } from '../../src/customize/crc32.js';
import { makeTempDir } from '../helpers/files.js';
import { GPT, MBR, MiB, SECTOR, bytes, makeGptDisk, makeMbrDisk, requireTools, sfdiskJson, sh } from './fixtures.js';

/** The first bytes of a disk, the rest zeros: a big disk's table without holding all of it. */
function headReader(head: Buffer, sizeBytes: number): DiskReader {
  return {
    sizeBytes,
    read: (offset, length) => {
      const n = Math.max(0, Math.min(length, sizeBytes - offset));
      const out = Buffer.alloc(n);
      if (offset < head.length) head.copy(out, 0, offset, Math.min(head.length, offset + n));
      return Promise.resolve(out);
    },
  };
}

/** Makes a mutated GPT consistent again, so the checks behind the CRCs get exercised too. */
function fixGptCrcs(head: Buffer): void {
  const count = head.readUInt32LE(512 + 80);
  const size = head.readUInt32LE(512 + 84);
  const at = Number(head.readBigUInt64LE(512 + 72)) * SECTOR;
  if (count * size <= 64 * 1024 && at + count * size <= head.length) head.writeUInt32LE(crc32(head.subarray(at, at + count * size)), 512 + 88);
  const headerSize = Math.min(Math.max(head.readUInt32LE(512 + 12), 0), 512);
  head.writeUInt32LE(0, 512 + 16);
  head.writeUInt32LE(crc32(head.subarray(512, 512 + headerSize)), 512 + 16);
}

/** What every accepted table must be: partitions inside the disk, none overlapping. */
function assertSane(t: PartitionTable): void {
  const parts = [...t.partitions].sort((a, b) => a.startBytes - b.startBytes);
  for (const [i, p] of parts.entries()) {
    assert.ok(p.startBytes >= 0 && p.sizeBytes > 0 && p.startBytes + p.sizeBytes <= t.diskSizeBytes, JSON.stringify(p));
    const prev = parts[i - 1];
    if (prev) assert.ok(prev.startBytes + prev.sizeBytes <= p.startBytes, `overlap ${JSON.stringify([prev, p])}`);
  }
}

async function parses(reader: DiskReader): Promise<void> {
  try {
    const table = await readPartitionTable(reader);
    assertSane(table);
    for (const p of table.partitions) assert.equal((await selectPartition(reader, table, { number: p.number })).number, p.number);
  } catch (e) {
    if (!(e instanceof PrestageError)) throw e;
  }
}

describe('customize: partition tables', () => {
  let dir: string;
  let gpt: string;
  let mbr: string;
  let gptHead: Buffer;
  let mbrBytes: Buffer;

  before(async () => {
    requireTools('sfdisk', 'mke2fs', 'mformat');
    dir = await makeTempDir('prestage-customize-pt-');
    gpt = makeGptDisk(dir);
    mbr = makeMbrDisk(dir);
    gptHead = fs.readFileSync(gpt).subarray(0, 34 * SECTOR);
    mbrBytes = fs.readFileSync(mbr);
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  const gptReader = (head = gptHead): DiskReader => headReader(head, 24 * MiB);

  it('reads a GPT as sfdisk does: starts, sizes, type and unique GUIDs, names', async () => {
    const ref = sfdiskJson(gpt);
    const table = await readPartitionTable(gptReader());
    assert.equal(table.kind, 'gpt');
    assert.equal(table.sectorSize, 512);
    assert.deepEqual(
      table.partitions,
      ref.partitions.map((p, i) => ({ number: i + 1, startBytes: p.start * SECTOR, sizeBytes: p.size * SECTOR, type: p.type, guid: p.uuid, label: p.name })),
    );
  });

  it('reads an MBR with logical partitions as sfdisk does, the extended one apart', async () => {
    const ref = sfdiskJson(mbr);
    const table = await readPartitionTable(bufferDiskReader(mbrBytes));
    assert.equal(table.kind, 'mbr');
    const number = (node: string): number => Number(/(\d+)$/.exec(node)![1]);
    assert.deepEqual(
      table.partitions,
      ref.partitions.filter((p) => p.type !== '5').map((p) => ({ number: number(p.node), startBytes: p.start * SECTOR, sizeBytes: p.size * SECTOR, type: p.type.padStart(2, '0') })),
    );
    assert.deepEqual(table.extended, { number: 3, startBytes: bytes(MBR.p3).offset, sizeBytes: bytes(MBR.p3).size });
  });

  it('sees no table on a whole-disk ext or vfat filesystem, or on zeros', async () => {
    sh(`cd '${dir}'; truncate -s 8M ext.img; mke2fs -q -F -t ext4 ext.img; truncate -s 8M fat.img; MTOOLS_SKIP_CHECK=1 mformat -i fat.img -T 16384 -h 64 -s 32 ::; truncate -s 8M zero.img`);
    for (const name of ['ext.img', 'fat.img', 'zero.img']) {
      const disk = fs.readFileSync(join(dir, name));
      const table = await readPartitionTable(bufferDiskReader(disk));
      assert.equal(table.kind, 'none', name);
      assert.deepEqual(await selectPartition(bufferDiskReader(disk), table, 'whole-disk'), { number: 0, startBytes: 0, sizeBytes: 8 * MiB, type: '' });
      await assert.rejects(selectPartition(bufferDiskReader(disk), table, { number: 1 }), /^BadImageError: partition 1 not found: the disk has no partition table \(for a disk that is one filesystem, a template says 'partition: whole-disk'\)$/);
    }
    assert.equal((await readPartitionTable(bufferDiskReader(Buffer.alloc(700)))).kind, 'none');
  });

  it('selects by number, GPT name, filesystem label (vfat case-insensitively) and GUID (any case)', async () => {
    const disk = bufferDiskReader(fs.readFileSync(gpt));
    const table = await readPartitionTable(disk);
    const start = async (sel: Parameters<typeof selectPartition>[2]): Promise<number> => (await selectPartition(disk, table, sel)).startBytes;
    assert.equal(await start({ number: 3 }), bytes(GPT.isoseed).offset);
    assert.equal(await start({ label: 'tiny' }), bytes(GPT.tiny).offset);
    assert.equal(await start({ label: 'rootfs' }), bytes(GPT.root).offset);
    assert.equal(await start({ guid: table.partitions[1]!.guid!.toLowerCase() }), bytes(GPT.cidata).offset);
    const m = bufferDiskReader(mbrBytes);
    const mt = await readPartitionTable(m);
    assert.equal((await selectPartition(m, mt, { label: 'data' })).number, 2);
    assert.equal((await selectPartition(m, mt, { label: 'logical' })).number, 5);
    await assert.rejects(selectPartition(m, mt, { label: 'LOGICAL' }), /no partition labelled 'LOGICAL'/, 'ext labels are exact');
  });

  it('says what exists when a selector matches nothing', async () => {
    const disk = bufferDiskReader(fs.readFileSync(gpt));
    const table = await readPartitionTable(disk);
    await assert.rejects(selectPartition(disk, table, { number: 7 }), /^BadImageError: partition 7 not found: the disk has a GPT with partitions 1, 2, 3, 4$/);
    await assert.rejects(
      selectPartition(disk, table, { label: 'nope' }),
      /^BadImageError: no partition labelled 'nope': the disk has a GPT with partitions 1 \(name 'root', ext2\/3\/4 label 'rootfs'\), 2 \(name 'cidata', vfat label 'CIDATA'\), 3 \(name 'isoseed'\), 4 \(name 'tiny', ext2\/3\/4 label 'tiny'\)$/,
    );
    await assert.rejects(selectPartition(disk, table, { guid: '00000000-1111-2222-3333-444444444444' }), /^BadImageError: no partition with GUID 00000000-1111-2222-3333-444444444444: the disk has a GPT with partitions 1 \(/);
    await assert.rejects(selectPartition(disk, table, 'whole-disk'), /the plan changes the whole disk, but the disk has a GPT/);
    await assert.rejects(selectPartition(disk, table, { number: 1, label: 'root' }), InputError);
    await assert.rejects(selectPartition(disk, table, { number: 0 }), InputError);
    const m = bufferDiskReader(mbrBytes);
    const mt = await readPartitionTable(m);
    await assert.rejects(selectPartition(m, mt, { number: 3 }), /^BadImageError: partition 3 is an extended partition, a container for logical partitions \(5, 6\), not a filesystem$/);
    await assert.rejects(selectPartition(m, mt, { guid: 'x' }), /partition GUIDs exist only in a GPT/);
  });

  it('refuses corrupt tables: CRCs, overlaps, partitions past the end, loops, bad boot flags', async () => {
    const corrupt = async (reader: DiskReader, message: RegExp): Promise<void> => {
      await assert.rejects(readPartitionTable(reader), (e: unknown) => e instanceof BadImageError && message.test(e.message));
    };
    const head = (): Buffer => Buffer.from(gptHead);

    let h = head();
    h[512 + 60]! ^= 0xff; // the disk GUID
    await corrupt(gptReader(h), /header CRC32 does not match/);
    h = head();
    h[1024 + 60]! ^= 0xff; // partition 1's name
    await corrupt(gptReader(h), /partition entries CRC32 does not match/);
    h = head();
    h.writeBigUInt64LE(BigInt(GPT.root.start + 100), 1024 + 128 + 32); // partition 2 starts inside 1
    fixGptCrcs(h);
    await corrupt(gptReader(h), /partitions 1 and 2 overlap/);
    h = head();
    h.writeBigUInt64LE(BigInt(GPT.root.start - 1), 1024 + 32); // before the first usable LBA
    fixGptCrcs(h);
    await corrupt(gptReader(h), /partition 1 \(LBA 2047–\d+\) lies outside the usable area/);
    await corrupt(headReader(gptHead, 16 * MiB), /partition 2 ends at byte 17825792, past the end of the disk \(16777216 bytes\)/);
    await corrupt(headReader(gptHead.subarray(0, 512), 24 * MiB), /LBA 1 holds no GPT header/);

    const m = Buffer.from(mbrBytes);
    m[446 + 16] = 0x12; // entry 2's boot flag
    await corrupt(bufferDiskReader(m), /corrupt MBR: entry 2 has boot flag 0x12/);
    const loop = Buffer.from(mbrBytes);
    const ext = MBR.p3.start;
    const second = ext + loop.readUInt32LE(ext * SECTOR + 446 + 16 + 8);
    loop.writeUInt32LE(0, second * SECTOR + 446 + 16 + 8); // the second EBR links back to the first
    loop[second * SECTOR + 446 + 16 + 4] = 0x05;
    loop.writeUInt32LE(1, second * SECTOR + 446 + 16 + 12);
    await corrupt(bufferDiskReader(loop), new RegExp(`loops back to sector ${MBR.p3.start}$`));
    const over = Buffer.from(mbrBytes);
    over.writeUInt32LE(MBR.p1.size + 10, 446 + 12); // partition 1 grows into 2
    await corrupt(bufferDiskReader(over), /partitions 1 and 2 overlap/);
  });

  it('never throws anything but a PrestageError on random bytes (fast-check)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 40 * SECTOR }), async (bytes) => parses(bufferDiskReader(Buffer.from(bytes)))),
      { numRuns: 300 },
    );
    // Random bytes behind a valid signature and protective MBR reach the GPT parser.
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 34 * SECTOR, maxLength: 34 * SECTOR }), fc.boolean(), async (bytes, fix) => {
        const h = Buffer.from(bytes);
        gptHead.copy(h, 0, 0, 512);
        h.write('EFI PART', 512, 'latin1');
        if (fix) fixGptCrcs(h);
        await parses(headReader(h, 24 * MiB));
      }),
      { numRuns: 300 },
    );
  });

  it('never throws anything but a PrestageError on mutated real tables (fast-check)', async () => {
    const mutation = fc.array(fc.record({ at: fc.nat({ max: 34 * SECTOR - 1 }), value: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 8 });
    await fc.assert(
      fc.asyncProperty(mutation, fc.boolean(), async (edits, fix) => {
        const h = Buffer.from(gptHead);
        for (const { at, value } of edits) h[at] = value;
        if (fix) fixGptCrcs(h);
        await parses(gptReader(h));
      }),
      { numRuns: 400 },
    );
    // MBR: the first sector and both EBRs, where the chain is read.
    const ebrs = [0, MBR.p3.start, MBR.p3.start + mbrBytes.readUInt32LE(MBR.p3.start * SECTOR + 446 + 16 + 8)];
    const mbrMutation = fc.array(fc.record({ sector: fc.constantFrom(...ebrs), at: fc.integer({ min: 446, max: 511 }), value: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 6 });
    await fc.assert(
      fc.asyncProperty(mbrMutation, async (edits) => {
        // Only the sectors the parser reads: a copy-on-write view instead of 48 MiB per run.
        const patched = new Map<number, Buffer>();
        for (const { sector, at, value } of edits) {
          const s = patched.get(sector) ?? Buffer.from(mbrBytes.subarray(sector * SECTOR, sector * SECTOR + SECTOR));
          s[at] = value;
          patched.set(sector, s);
        }
        await parses({
          sizeBytes: mbrBytes.length,
          read: (offset, length) => {
            const out = Buffer.from(mbrBytes.subarray(offset, offset + length));
            for (const [sector, s] of patched) if (sector * SECTOR >= offset && sector * SECTOR < offset + out.length) s.copy(out, sector * SECTOR - offset);
            return Promise.resolve(out);
          },
        });
      }),
      { numRuns: 400 },
    );
  });
});
