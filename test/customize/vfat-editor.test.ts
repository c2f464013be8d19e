/**
 * customizeDisk on a vfat partition of a real GPT disk (mtools): files in with their bytes and
 * the epoch as date, removals, one sha256 from two builds, and the refusals (names FAT or mtools
 * cannot take, a file where a directory must be, a full filesystem). Needs fdisk, e2fsprogs and
 * mtools; never skips.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { InputError, NoSpaceError, type CustomizePlan } from '../../src/domain/index.js';
import { customizeDisk } from '../../src/customize/index.js';
import { makeTempDir } from '../helpers/files.js';
import { GPT, MiB, bytes, copyDisk, leftovers, makeGptDisk, mlist, mtype, requireTools, sh, sha256 } from './fixtures.js';

const EPOCH = 1_700_000_000; // 2023-11-14 22:13:20 UTC
const text = (s: string): Buffer => Buffer.from(s);
const file = (path: string, content: string | Buffer): CustomizePlan['writes'][number] => ({ path, mode: 0o600, uid: 1000, gid: 1000, content: typeof content === 'string' ? text(content) : content });

function plan(over: Partial<CustomizePlan>): CustomizePlan {
  return { partition: { label: 'CIDATA' }, filesystem: 'vfat', writes: [], removes: [], epoch: EPOCH, ...over };
}

const TYPICAL = plan({
  writes: [file('/EFI/BOOT/grub.cfg', 'set timeout=0\n'), file('/user-data', '#cloud-config\nhostname: t\n'), file('/README.TXT', 'readme\n'), file('/efi/boot/Second File.cfg', 'two\n')],
  removes: ['/old.txt', '/OldDir', '/missing'],
});

describe('customize: vfat', () => {
  let dir: string;
  let base: string;

  before(async () => {
    requireTools('sfdisk', 'mke2fs', 'mformat', 'mcopy', 'mdir', 'mtype');
    dir = await makeTempDir('prestage-customize-vfat-');
    base = makeGptDisk(dir);
    const at = `${base}@@${bytes(GPT.cidata).offset}`;
    sh(`cd '${dir}'; export MTOOLS_SKIP_CHECK=1; echo old > old.txt; echo seed > user-data; mkdir -p OldDir/sub; echo x > OldDir/sub/x.txt
      mcopy -i '${at}' old.txt user-data ::/; mcopy -s -i '${at}' OldDir ::/`);
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  let n = 0;
  const copy = (): string => copyDisk(base, join(dir, `copy-${++n}.img`));

  it('copies files in (new directories made, same-named files replaced) and removes files and trees', async () => {
    const disk = copy();
    const tmp = fs.mkdtempSync(join(dir, 'tmp-'));
    const result = await customizeDisk(disk, TYPICAL, { tmpDir: tmp });
    assert.deepEqual(result, {
      filesWritten: 4,
      filesRemoved: 2,
      partition: { number: 2, startBytes: bytes(GPT.cidata).offset, sizeBytes: bytes(GPT.cidata).size, filesystem: 'vfat' },
      seed: null,
    });
    assert.equal(mtype(disk, GPT.cidata, '/EFI/BOOT/grub.cfg'), 'set timeout=0\n');
    assert.equal(mtype(disk, GPT.cidata, '/EFI/BOOT/Second File.cfg'), 'two\n');
    assert.equal(mtype(disk, GPT.cidata, '/user-data'), '#cloud-config\nhostname: t\n');
    assert.deepEqual(mlist(disk, GPT.cidata).sort(), ['::/EFI/', '::/EFI/BOOT/', '::/EFI/BOOT/Second File.cfg', '::/EFI/BOOT/grub.cfg', '::/README.TXT', '::/user-data'].sort());
    // Every new entry, directories too, is dated with the epoch (FAT keeps local time: UTC here).
    const listing = sh(`MTOOLS_SKIP_CHECK=1 mdir -i '${disk}@@${bytes(GPT.cidata).offset}' ::/EFI/BOOT`);
    for (const line of listing.split('\n').filter((l) => /^(\.|GRUB|SECOND)/i.test(l))) assert.match(line, /2023-11-14 +22:13/, line);
    assert.deepEqual(leftovers(tmp), []);
  });

  it('gives the same bytes from two builds on two copies, seconds apart', async () => {
    const [a, b] = [copy(), copy()];
    await customizeDisk(a, TYPICAL);
    await sleep(2100); // FAT dates have 2-second steps
    await customizeDisk(b, TYPICAL);
    assert.equal(sha256(a), sha256(b));
    const other = copy();
    await customizeDisk(other, { ...TYPICAL, epoch: EPOCH + 86_400 });
    assert.notEqual(sha256(other), sha256(a));
  });

  it('refuses names vfat or mtools cannot take, and paths the filesystem contradicts, changing nothing', async () => {
    const disk = copy();
    const before = sha256(disk);
    const bad = ['/a*b', '/what?', '/x:y', '/ünï', '/trailing.', '/br[ack]et', '/old.txt/inside', '/OLDDIR'];
    for (const path of bad) await assert.rejects(customizeDisk(disk, plan({ writes: [file(path, 'x')] })), InputError, path);
    await assert.rejects(customizeDisk(disk, plan({ writes: [file('/A', 'x'), file('/a', 'y')] })), /writes \/a twice/);
    assert.equal(sha256(disk), before);
  });

  it('reports a full filesystem as NoSpaceError', async () => {
    const disk = copy();
    await assert.rejects(customizeDisk(disk, plan({ writes: [file('/big.bin', Buffer.alloc(9 * MiB, 1))] })), (e: unknown) => {
      assert.ok(e instanceof NoSpaceError, String(e));
      assert.match(e.message, /^the template's filesystem is full \(partition 2\): write \/big.bin failed: .*Disk full/);
      return true;
    });
  });
});
