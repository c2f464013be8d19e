/**
 * customizeDisk on ext4 partitions of real GPT and MBR disk images: written bytes, modes,
 * owners and dates read back with debugfs, removals, symlinked parents, e2fsck clean, the same
 * sha256 from two builds, partition selection, and the errors (with the disk left unchanged
 * where the build could tell in advance). Needs e2fsprogs, fdisk and mtools; never skips.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { BadImageError, InputError, NoSpaceError, type CustomizePlan } from '../../src/domain/index.js';
import { customizeDisk } from '../../src/customize/index.js';
import { makeTempDir } from '../helpers/files.js';
import { GPT, MBR, MiB, bytes, copyDisk, e2fsck, extAllocated, extCat, extDamage, extStat, leftovers, makeGptDisk, makeMbrDisk, requireTools, sfdiskJson, sh, sha256 } from './fixtures.js';

const EPOCH = 1_700_000_000;
const text = (s: string): Buffer => Buffer.from(s);

function plan(over: Partial<CustomizePlan>): CustomizePlan {
  return { partition: { number: 1 }, filesystem: 'ext', writes: [], removes: [], epoch: EPOCH, ...over };
}

/** A template's typical edit: replace, create deep, write through a symlinked dir, replace a symlink, odd names, removals. */
const TYPICAL = plan({
  partition: { label: 'root' },
  writes: [
    { path: '/etc/hostname', mode: 0o644, uid: 0, gid: 0, content: text('template\n') },
    { path: '/etc/ssh/sshd_config.d/10-prestage.conf', mode: 0o600, uid: 0, gid: 0, content: text('PasswordAuthentication no\n') },
    { path: '/home/alice/.ssh/authorized_keys', mode: 0o600, uid: 1000, gid: 1000, content: text('ssh-ed25519 AAAA alice\n') },
    { path: '/bin/hello', mode: 0o4755, uid: 0, gid: 50, content: text('#!/bin/sh\necho hello\n') },
    { path: '/etc/resolv.conf', mode: 0o644, uid: 0, gid: 0, content: text('nameserver 192.0.2.53\n') },
    { path: '/etc/odd name "quoted" #1.txt', mode: 0o640, uid: 7, gid: 8, content: text('odd\n') },
    { path: '/var/lib/cloud/seed/marker', mode: 0o644, uid: 0, gid: 0, content: Buffer.alloc(0) },
  ],
  removes: ['/etc/machine-id', '/var/lib/cloud', '/does/not/exist', '/var/lib/cloud/data'],
});

describe('customize: ext', () => {
  let dir: string;
  let gpt: string;
  let mbr: string;

  before(async () => {
    requireTools('sfdisk', 'mke2fs', 'mformat', 'debugfs', 'e2fsck');
    dir = await makeTempDir('prestage-customize-ext-');
    gpt = makeGptDisk(dir);
    mbr = makeMbrDisk(dir);
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  let n = 0;
  const copyOf = (disk: string): string => copyDisk(disk, join(dir, `copy-${++n}.img`));

  it('writes files with their bytes, mode, owner and the epoch as every date, and removes what the plan removes', async () => {
    const disk = copyOf(gpt);
    const tmp = fs.mkdtempSync(join(dir, 'tmp-'));
    const log: string[] = [];
    const result = await customizeDisk(disk, TYPICAL, { log: (l) => log.push(l), tmpDir: tmp });

    assert.deepEqual(result, {
      filesWritten: 7,
      filesRemoved: 2,
      partition: { number: 1, startBytes: bytes(GPT.root).offset, sizeBytes: bytes(GPT.root).size, filesystem: 'ext' },
      seed: null,
    });
    for (const w of TYPICAL.writes) {
      // /bin is a symlink to usr/bin: the file lands in /usr/bin.
      const path = w.path === '/bin/hello' ? '/usr/bin/hello' : w.path;
      assert.deepEqual(extCat(disk, GPT.root, path), w.content, path);
      assert.deepEqual(extStat(disk, GPT.root, path), { type: 'regular', mode: w.mode, uid: w.uid, gid: w.gid, mtime: EPOCH, ctime: EPOCH, atime: EPOCH }, path);
    }
    for (const made of ['/etc/ssh', '/etc/ssh/sshd_config.d', '/home/alice', '/home/alice/.ssh', '/var/lib/cloud', '/var/lib/cloud/seed']) {
      assert.deepEqual(extStat(disk, GPT.root, made), { type: 'directory', mode: 0o755, uid: 0, gid: 0, mtime: EPOCH, ctime: EPOCH, atime: EPOCH }, made);
    }
    assert.equal(extStat(disk, GPT.root, '/etc/machine-id'), undefined);
    for (const gone of ['/var/lib/cloud/instance', '/var/lib/cloud/data', '/var/lib/cloud/link']) assert.equal(extStat(disk, GPT.root, gone), undefined, gone);
    assert.equal(extStat(disk, GPT.root, '/bin')?.type, 'symlink', 'the symlinked parent stays a symlink');
    assert.equal(extCat(disk, GPT.root, '/etc/keep').toString(), 'keep\n', 'untouched files stay');
    assert.equal(extCat(disk, GPT.root, '/run/resolv.conf').toString(), 'nameserver 10.0.0.1\n', 'replacing a symlink leaves its target alone');

    const fsck = e2fsck(disk, GPT.root);
    assert.equal(fsck.code, 0, fsck.output);
    assert.deepEqual(leftovers(tmp), [], 'the temp dir is removed');
    assert.ok(log.some((l) => l.startsWith('$ debugfs -w -f')), log.join('\n'));
    assert.ok(log.some((l) => l.startsWith('$ e2fsck -fn')), log.join('\n'));
    assert.ok(log.some((l) => l.includes('debugfs: write content-0 "/etc/./hostname"')), log.join('\n'));
    assert.ok(log.some((l) => /rootfs: \d+\/\d+ files/.test(l)), 'e2fsck summary logged');
  });

  it('gives the same bytes from two builds of the same plan on two copies, seconds apart', async () => {
    const [a, b] = [copyOf(gpt), copyOf(gpt)];
    await customizeDisk(a, TYPICAL);
    await sleep(1100); // a clock that leaked into the image would now differ
    await customizeDisk(b, TYPICAL);
    assert.equal(sha256(a), sha256(b));
    const other = copyOf(gpt);
    await customizeDisk(other, { ...TYPICAL, epoch: EPOCH + 1 });
    assert.notEqual(sha256(other), sha256(a), 'the epoch is what dates the build');
  });

  it('selects the partition by number, GPT name, filesystem label and GUID', async () => {
    const write = { path: '/selected', mode: 0o644, uid: 0, gid: 0, content: text('here\n') };
    const guid = sfdiskJson(gpt).partitions[3]!.uuid!.toLowerCase();
    const cases: [string, CustomizePlan['partition'], (typeof GPT)[keyof typeof GPT] | (typeof MBR)[keyof typeof MBR]][] = [
      [gpt, { number: 4 }, GPT.tiny],
      [gpt, { label: 'root' }, GPT.root],
      [gpt, { label: 'rootfs' }, GPT.root], // not a GPT name: the ext label
      [gpt, { guid }, GPT.tiny],
      [mbr, { number: 1 }, MBR.p1],
      [mbr, { label: 'logical' }, MBR.p5],
    ];
    for (const [base, partition, part] of cases) {
      const disk = copyOf(base);
      const r = await customizeDisk(disk, plan({ partition, writes: [write] }));
      assert.equal(r.partition.startBytes, bytes(part).offset, JSON.stringify(partition));
      assert.equal(extCat(disk, part, '/selected').toString(), 'here\n', JSON.stringify(partition));
    }
  });

  it('changes a filesystem made on the whole disk; leaves the bytes alone when nothing to remove exists', async () => {
    const disk = join(dir, 'whole.img');
    sh(`truncate -s 16M '${disk}'; mke2fs -q -F -t ext4 -L whole '${disk}'`);
    const whole = { start: 0, size: (16 * MiB) / 512 };
    const r = await customizeDisk(disk, plan({ partition: 'whole-disk', writes: [{ path: '/etc/motd', mode: 0o644, uid: 0, gid: 0, content: text('hi\n') }] }));
    assert.deepEqual(r.partition, { number: 0, startBytes: 0, sizeBytes: 16 * MiB, filesystem: 'ext' });
    assert.equal(extCat(disk, whole, '/etc/motd').toString(), 'hi\n');
    const before = sha256(disk);
    const none = await customizeDisk(disk, plan({ partition: 'whole-disk', removes: ['/not/there', '/nor/this'] }));
    assert.equal(none.filesRemoved, 0);
    assert.equal(sha256(disk), before);
    await assert.rejects(customizeDisk(disk, plan({ partition: { number: 1 }, removes: ['/etc/motd'] })), /partition 1 not found: the disk has no partition table \(for a disk that is one filesystem, a template says 'partition: whole-disk'\)/);
  });

  it('stops before changing anything when aborted', async () => {
    const disk = copyOf(gpt);
    const before = sha256(disk);
    await assert.rejects(customizeDisk(disk, TYPICAL, { signal: AbortSignal.abort() }), { name: 'AbortError' });
    assert.equal(sha256(disk), before);
  });

  it('says which partitions exist when the one asked for does not', async () => {
    const disk = copyOf(mbr);
    const before = sha256(disk);
    await assert.rejects(customizeDisk(disk, plan({ partition: { number: 4 }, removes: ['/etc/keep'] })), (e: unknown) => {
      assert.ok(e instanceof BadImageError);
      assert.equal(e.message, 'partition 4 not found: the disk has an MBR with partitions 1, 2, 5, 6');
      return true;
    });
    await assert.rejects(customizeDisk(disk, plan({ partition: { label: 'nope' }, removes: ['/etc/keep'] })), /no partition labelled 'nope': the disk has an MBR with partitions 1 \(ext2\/3\/4 label 'mbrroot'\), 2 \(vfat label 'DATA'\), 5 \(ext2\/3\/4 label 'logical'\), 6$/);
    await assert.rejects(customizeDisk(disk, plan({ partition: 'whole-disk', removes: ['/etc/keep'] })), /the plan changes the whole disk, but the disk has an MBR/);
    assert.equal(sha256(disk), before);
  });

  it('refuses a vfat partition where the plan expects ext, before changing anything', async () => {
    const disk = copyOf(gpt);
    const before = sha256(disk);
    await assert.rejects(customizeDisk(disk, plan({ partition: { number: 2 }, removes: ['/x'] })), (e: unknown) => {
      assert.ok(e instanceof BadImageError);
      assert.equal(e.message, 'partition 2 holds vfat, not ext2/3/4');
      return true;
    });
    await assert.rejects(customizeDisk(disk, plan({ partition: { number: 3 }, removes: ['/x'] })), /partition 3 holds no filesystem prestage knows/);
    assert.equal(sha256(disk), before);
  });

  it('refuses bad paths with an InputError and leaves the disk as it was', async () => {
    const disk = copyOf(gpt);
    const before = sha256(disk);
    const bad = [
      plan({ writes: [{ path: '../x', mode: 0o644, uid: 0, gid: 0, content: text('x') }] }),
      plan({ writes: [{ path: '/etc/../../x', mode: 0o644, uid: 0, gid: 0, content: text('x') }] }),
      plan({ writes: [{ path: '/etc/a\nrm /etc/keep', mode: 0o644, uid: 0, gid: 0, content: text('x') }] }),
      plan({ writes: [{ path: '/etc/a\u0000b', mode: 0o644, uid: 0, gid: 0, content: text('x') }] }),
      plan({ writes: [{ path: `/${Array(20).fill('"'.repeat(200)).join('/')}`, mode: 0o644, uid: 0, gid: 0, content: text('x') }] }), // too long once quoted for debugfs
      plan({ removes: ['/'] }),
      plan({ removes: ['etc/keep'] }),
      plan({ writes: [{ path: '/x', mode: 0o10644, uid: 0, gid: 0, content: text('x') }] }),
      plan({ writes: [{ path: '/x', mode: 0o644, uid: -1, gid: 0, content: text('x') }] }),
      plan({ writes: [{ path: '/x', mode: 0o644, uid: 0, gid: 0, content: text('x') }, { path: '//x/', mode: 0o644, uid: 0, gid: 0, content: text('y') }] }),
      plan({ writes: [{ path: '/x', mode: 0o644, uid: 0, gid: 0, content: text('x') }], removes: ['/x'] }),
      plan({ writes: [{ path: '/x', mode: 0o644, uid: 0, gid: 0, content: text('x') }], epoch: -1 }),
      // Against the image: a file where a directory must be, a directory where the file goes.
      plan({ writes: [{ path: '/etc/hostname/x', mode: 0o644, uid: 0, gid: 0, content: text('x') }] }),
      plan({ writes: [{ path: '/etc', mode: 0o644, uid: 0, gid: 0, content: text('x') }] }),
    ];
    for (const p of bad) await assert.rejects(customizeDisk(disk, p), InputError, JSON.stringify(p.writes[0]?.path ?? p.removes));
    assert.equal(sha256(disk), before);
  });

  it('reports a full filesystem as NoSpaceError; the copy is left partly written and still consistent', async () => {
    const disk = copyOf(gpt);
    const big = Buffer.alloc(3 * 1024 * 1024, 0x5a);
    const full = plan({
      partition: { label: 'tiny' },
      writes: [
        { path: '/first', mode: 0o644, uid: 0, gid: 0, content: text('fits\n') },
        { path: '/big', mode: 0o644, uid: 0, gid: 0, content: big },
      ],
    });
    await assert.rejects(customizeDisk(disk, full), (e: unknown) => {
      assert.ok(e instanceof NoSpaceError, String(e));
      assert.match(e.message, /^the template's filesystem is full \(partition 4\): write \/big failed: .*Could not allocate block/);
      assert.match(e.message, /left partly changed/);
      return true;
    });
    // What "partly" means here: the writes before the failing one are done; the failing file
    // exists with its full size but only the blocks that fitted (the rest reads as zeros).
    assert.equal(extCat(disk, GPT.tiny, '/first').toString(), 'fits\n');
    assert.ok(extAllocated(disk, GPT.tiny, '/big') < big.length);
    assert.equal(e2fsck(disk, GPT.tiny).code, 0, 'debugfs leaves the filesystem consistent');
  });

  it('refuses a base filesystem e2fsck does not pass, before changing it', async () => {
    const disk = copyOf(gpt);
    // Damage: the root inode's link count, which e2fsck checks and debugfs does not.
    extDamage(disk, GPT.tiny, 'sif <2> links_count 9');
    const before = sha256(disk);
    await assert.rejects(customizeDisk(disk, plan({ partition: { number: 4 }, removes: ['/x'], writes: [{ path: '/y', mode: 0o644, uid: 0, gid: 0, content: text('y') }] })), (e: unknown) => {
      assert.ok(e instanceof BadImageError);
      assert.match(e.message, /e2fsck -fn found problems in the filesystem of partition 4 before any change/);
      return true;
    });
    assert.equal(sha256(disk), before);
  });
});
