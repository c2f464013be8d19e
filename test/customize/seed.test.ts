/**
 * cloud-init NoCloud seeds on a real GPT disk: an ISO (xorriso) written over a partition, read
 * back with xorriso and by its volume id; vfat seed files (mtools) in the CIDATA partition;
 * both reproducible; and the refusals, all made before the disk changes. Needs fdisk,
 * e2fsprogs, mtools and xorriso; never skips.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BadImageError, InputError, NoSpaceError, type CustomizePlan } from '../../src/domain/index.js';
import { customizeDisk } from '../../src/customize/index.js';
import { makeTempDir } from '../helpers/files.js';
import { GPT, MiB, bytes, copyDisk, extCat, makeGptDisk, makeMbrDisk, mtype, requireTools, sh, sha256 } from './fixtures.js';

const EPOCH = 1_700_000_000;
const FILES = {
  'user-data': Buffer.from('#cloud-config\nhostname: seeded\n'),
  'meta-data': Buffer.from('instance-id: iid-template\n'),
  'network-config': Buffer.from('version: 2\nethernets: {}\n'),
};

function plan(seed: CustomizePlan['seed'], over: Partial<CustomizePlan> = {}): CustomizePlan {
  return {
    partition: { label: 'root' },
    filesystem: 'ext',
    writes: [{ path: '/etc/hostname', mode: 0o644, uid: 0, gid: 0, content: Buffer.from('template\n') }],
    removes: [],
    epoch: EPOCH,
    ...(seed ? { seed } : {}),
    ...over,
  };
}

describe('customize: cloud-init seed', () => {
  let dir: string;
  let gpt: string;
  let mbr: string;

  before(async () => {
    requireTools('sfdisk', 'mke2fs', 'mformat', 'debugfs', 'e2fsck', 'mcopy', 'mtype', 'xorriso');
    dir = await makeTempDir('prestage-customize-seed-');
    gpt = makeGptDisk(dir);
    mbr = makeMbrDisk(dir);
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  let n = 0;
  const copyOf = (disk: string): string => copyDisk(disk, join(dir, `copy-${++n}.img`));

  /** The seed partition's first `length` bytes, as a file xorriso can read. */
  function extract(disk: string, length: number): string {
    const out = join(dir, `extract-${++n}.iso`);
    const fd = fs.openSync(disk, 'r');
    const buf = Buffer.alloc(length);
    fs.readSync(fd, buf, 0, length, bytes(GPT.isoseed).offset);
    fs.closeSync(fd);
    fs.writeFileSync(out, buf);
    return out;
  }

  it('writes an ISO labelled cidata into the seed partition, readable by xorriso', async () => {
    const disk = copyOf(gpt);
    const r = await customizeDisk(disk, plan({ as: 'iso', partition: { label: 'isoseed' }, files: FILES }));
    assert.equal(r.filesWritten, 1);
    assert.ok(r.seed);
    assert.deepEqual({ ...r.seed, isoBytes: undefined }, {
      as: 'iso',
      partition: 3,
      startBytes: bytes(GPT.isoseed).offset,
      sizeBytes: bytes(GPT.isoseed).size,
      files: ['meta-data', 'network-config', 'user-data'],
      isoBytes: undefined,
    });
    const isoBytes = r.seed.isoBytes!;
    assert.ok(isoBytes > 0 && isoBytes % 2048 === 0, String(isoBytes));

    const volumeId = Buffer.alloc(32);
    const fd = fs.openSync(disk, 'r');
    fs.readSync(fd, volumeId, 0, 32, bytes(GPT.isoseed).offset + 32768 + 40);
    fs.closeSync(fd);
    assert.equal(volumeId.toString('latin1').trim(), 'cidata');

    const iso = extract(disk, isoBytes);
    const listing = sh(`xorriso -no_rc -indev '${iso}' -ls / 2>/dev/null`);
    assert.deepEqual(listing.split('\n').filter(Boolean).sort(), ["'meta-data'", "'network-config'", "'user-data'"]);
    const out = join(dir, 'extracted');
    fs.mkdirSync(out);
    sh(`xorriso -no_rc -osirrox on -indev '${iso}' -extract / '${out}' 2>/dev/null`);
    for (const [name, content] of Object.entries(FILES)) assert.deepEqual(fs.readFileSync(join(out, name)), content, name);
    assert.equal(extCat(disk, GPT.root, '/etc/hostname').toString(), 'template\n', 'the plan ran too');
  });

  it('builds the same ISO, and the same disk, every time', async () => {
    const seed: CustomizePlan['seed'] = { as: 'iso', partition: { number: 3 }, files: FILES };
    const [a, b] = [copyOf(gpt), copyOf(gpt)];
    const ra = await customizeDisk(a, plan(seed));
    await new Promise((r) => setTimeout(r, 1100));
    await customizeDisk(b, plan(seed));
    assert.equal(sha256(extract(a, ra.seed!.isoBytes!)), sha256(extract(b, ra.seed!.isoBytes!)));
    assert.equal(sha256(a), sha256(b));
  });

  it('adds the empty meta-data or user-data NoCloud needs, and can change only the seed', async () => {
    const disk = copyOf(gpt);
    const r = await customizeDisk(disk, plan({ as: 'iso', partition: { number: 3 }, files: { 'user-data': FILES['user-data'] } }, { writes: [] }));
    assert.deepEqual(r.seed?.files, ['meta-data', 'user-data']);
    assert.equal(r.filesWritten, 0);
  });

  it('refuses an ISO that does not fit, or that would overwrite an ext filesystem, before changing anything', async () => {
    const disk = copyOf(gpt);
    const before = sha256(disk);
    const huge = { ...FILES, 'user-data': randomBytes(5 * MiB) };
    await assert.rejects(customizeDisk(disk, plan({ as: 'iso', partition: { number: 3 }, files: huge })), (e: unknown) => {
      assert.ok(e instanceof NoSpaceError, String(e));
      assert.match(e.message, /^the seed ISO \(\d+ bytes\) does not fit partition 3 \(4194304 bytes\)$/);
      return true;
    });
    await assert.rejects(customizeDisk(disk, plan({ as: 'iso', partition: { label: 'tiny' }, files: FILES })), /partition 4 holds ext2\/3\/4; an ISO seed would destroy it/);
    await assert.rejects(customizeDisk(disk, plan({ as: 'iso', partition: { number: 1 }, files: FILES })), InputError);
    await assert.rejects(customizeDisk(disk, plan({ as: 'iso', partition: { number: 3 }, files: { 'user-data': FILES['user-data'], 'evil/../x': Buffer.alloc(1) } })), InputError);
    assert.equal(sha256(disk), before);
  });

  it('copies seed files into the CIDATA vfat partition, the same bytes each time', async () => {
    const seed: CustomizePlan['seed'] = { as: 'vfat', partition: { label: 'CIDATA' }, files: FILES };
    const [a, b] = [copyOf(gpt), copyOf(gpt)];
    const r = await customizeDisk(a, plan(seed));
    assert.deepEqual(r.seed, { as: 'vfat', partition: 2, startBytes: bytes(GPT.cidata).offset, sizeBytes: bytes(GPT.cidata).size, files: ['meta-data', 'network-config', 'user-data'] });
    for (const [name, content] of Object.entries(FILES)) assert.equal(mtype(a, GPT.cidata, `/${name}`), content.toString(), name);
    await customizeDisk(b, plan(seed)); // the vfat tests prove the dates do not follow the clock

    assert.equal(sha256(a), sha256(b));
  });

  it('refuses a vfat seed partition cloud-init would not find, or one that is not vfat', async () => {
    const disk = copyOf(mbr);
    const before = sha256(disk);
    await assert.rejects(customizeDisk(disk, plan({ as: 'vfat', partition: { number: 2 }, files: FILES }, { partition: { number: 1 } })), (e: unknown) => {
      assert.ok(e instanceof BadImageError);
      assert.equal(e.message, "the vfat filesystem in partition 2 is labelled 'DATA', not CIDATA: cloud-init would not find the seed");
      return true;
    });
    await assert.rejects(customizeDisk(disk, plan({ as: 'vfat', partition: { number: 5 }, files: FILES }, { partition: { number: 1 } })), /partition 5 holds ext2\/3\/4, not vfat/);
    assert.equal(sha256(disk), before);
  });
});
