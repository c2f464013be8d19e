/**
 * Filesystem detection on real partitions (mke2fs, mformat, xorriso) and the checks made before
 * an edit: the kind the plan expects, a filesystem no larger than its partition, no journal
 * waiting for recovery.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BadImageError } from '../../src/domain/index.js';
import { bufferDiskReader, detectFilesystem } from '../../src/customize/index.js';
import { parseFilesystem, requireFilesystem } from '../../src/customize/fs-detect.js';
import { makeTempDir } from '../helpers/files.js';
import { GPT, MiB, bytes, makeGptDisk, requireTools, sh } from './fixtures.js';

describe('customize: filesystem detection', () => {
  let dir: string;
  let disk: Buffer;
  const part = (p: { start: number; size: number }): { number: number; startBytes: number; sizeBytes: number } => ({ number: 9, startBytes: bytes(p).offset, sizeBytes: bytes(p).size });

  before(async () => {
    requireTools('sfdisk', 'mke2fs', 'mformat', 'xorriso');
    dir = await makeTempDir('prestage-customize-fs-');
    disk = fs.readFileSync(makeGptDisk(dir));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('tells ext, vfat, ISO 9660 and nothing apart, with labels and sizes', async () => {
    const reader = bufferDiskReader(disk);
    assert.deepEqual(await detectFilesystem(reader, part(GPT.root)), { kind: 'ext', label: 'rootfs', sizeBytes: 8 * MiB, needsRecovery: false });
    assert.deepEqual(await detectFilesystem(reader, part(GPT.cidata)), { kind: 'vfat', label: 'CIDATA', sizeBytes: 8 * MiB });
    assert.deepEqual(await detectFilesystem(reader, part(GPT.isoseed)), { kind: 'unknown' });
    assert.deepEqual(await detectFilesystem(reader, part(GPT.tiny)), { kind: 'ext', label: 'tiny', sizeBytes: 1 * MiB, needsRecovery: false });
    sh(`cd '${dir}'; echo hi > f; xorriso -no_rc -as mkisofs -quiet -output x.iso -volid cidata f 2>/dev/null`);
    const iso = parseFilesystem(fs.readFileSync(join(dir, 'x.iso')));
    assert.equal(iso.kind, 'iso9660');
    assert.equal(iso.label, 'cidata');
    sh(`cd '${dir}'; truncate -s 40M fat32.img; MTOOLS_SKIP_CHECK=1 mformat -F -i fat32.img -T 81920 -h 64 -s 32 -v BIGFAT ::`);
    assert.deepEqual(parseFilesystem(fs.readFileSync(join(dir, 'fat32.img')).subarray(0, 40000)), { kind: 'vfat', label: 'BIGFAT', sizeBytes: 40 * MiB });
  });

  it('refuses the wrong kind, a filesystem larger than its partition, and an unreplayed journal', () => {
    const ext = parseFilesystem(disk.subarray(bytes(GPT.root).offset, bytes(GPT.root).offset + 40000));
    const vfat = parseFilesystem(disk.subarray(bytes(GPT.cidata).offset, bytes(GPT.cidata).offset + 40000));
    const at = { number: 2, startBytes: 0, sizeBytes: 8 * MiB };
    assert.throws(() => requireFilesystem(vfat, 'ext', at), (e: unknown) => e instanceof BadImageError && e.message === 'partition 2 holds vfat, not ext2/3/4');
    assert.throws(() => requireFilesystem(ext, 'vfat', at), /^BadImageError: partition 2 holds ext2\/3\/4, not vfat$/);
    assert.throws(() => requireFilesystem({ kind: 'unknown' }, 'ext', { ...at, number: 0 }), /^BadImageError: the whole disk holds no filesystem prestage knows/);
    assert.throws(() => requireFilesystem(ext, 'ext', { ...at, sizeBytes: 4 * MiB }), /says it is 8388608 bytes, larger than the 4194304 bytes of its partition/);
    requireFilesystem(ext, 'ext', at);

    const head = Buffer.from(disk.subarray(bytes(GPT.root).offset, bytes(GPT.root).offset + 40000));
    head.writeUInt32LE(head.readUInt32LE(1024 + 96) | 0x4, 1024 + 96); // INCOMPAT_RECOVER
    assert.throws(() => requireFilesystem(parseFilesystem(head), 'ext', at), /needs journal recovery/);
  });
});
