/**
 * Real disk images for the customize tests, built with the real tools (sfdisk, mke2fs -d,
 * mformat at an offset), and readers that look inside them the same way (debugfs -R, mtools).
 * A missing tool fails the test that needs it, never skips it.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { join } from 'node:path';

export const MiB = 1024 * 1024;
export const SECTOR = 512;

export function sh(cmd: string, opts: { env?: NodeJS.ProcessEnv } = {}): string {
  return execFileSync('bash', ['-euo', 'pipefail', '-c', cmd], { encoding: 'utf8', env: { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin`, ...opts.env } });
}

const PACKAGES: Record<string, string> = {
  sfdisk: 'fdisk',
  mke2fs: 'e2fsprogs',
  debugfs: 'e2fsprogs',
  e2fsck: 'e2fsprogs',
  mformat: 'mtools',
  mcopy: 'mtools',
  mtype: 'mtools',
  mdir: 'mtools',
  xorriso: 'xorriso',
};

/** Fails (never skips) when a tool the test needs is missing. */
export function requireTools(...tools: string[]): void {
  for (const tool of tools) {
    const r = spawnSync('bash', ['-c', `PATH="$PATH:/usr/sbin:/sbin" command -v ${tool}`]);
    assert.equal(r.status, 0, `${tool} is required for this test: apt-get install ${PACKAGES[tool] ?? tool}`);
  }
}

export function sha256(path: string): string {
  return createHash('sha256').update(fs.readFileSync(path)).digest('hex');
}

/** A sparse copy: fs.copyFile would fill the holes. */
export function copyDisk(from: string, to: string): string {
  sh(`cp --sparse=always '${from}' '${to}'`);
  return to;
}

export interface Part {
  readonly start: number; // sectors
  readonly size: number; // sectors
}
export const bytes = (p: Part): { offset: number; size: number } => ({ offset: p.start * SECTOR, size: p.size * SECTOR });

/** GPT, 24 MiB: 1 "root" ext4 (fs label rootfs), 2 "cidata" vfat CIDATA, 3 "isoseed" empty, 4 "tiny" 1 MiB ext4. */
export const GPT = {
  root: { start: 2048, size: 16384 },
  cidata: { start: 18432, size: 16384 },
  isoseed: { start: 34816, size: 8192 },
  tiny: { start: 43008, size: 2048 },
} as const;

/** MBR, 24 MiB: 1 ext4 (mbrroot), 2 vfat DATA, 3 extended holding 5 ext4 (logical) and 6 (empty). */
export const MBR = {
  p1: { start: 2048, size: 16384 },
  p2: { start: 18432, size: 8192 },
  p3: { start: 26624, size: 20480 },
  p5: { start: 28672, size: 12288 },
  p6: { start: 43008, size: 4096 },
} as const;

/** The golden root filesystem's files: what templates edit in the tests. */
export function makeRootTree(dir: string): string {
  const root = join(dir, 'rootfs');
  sh(`rm -rf '${root}'; mkdir -p '${root}'; cd '${root}'
    mkdir -p etc usr/bin var/lib/cloud/instance/sem var/lib/cloud/data home run
    echo golden > etc/hostname
    echo keep > etc/keep
    echo 0123456789abcdef > etc/machine-id
    echo 'nameserver 10.0.0.1' > run/resolv.conf
    ln -s ../run/resolv.conf etc/resolv.conf
    ln -s usr/bin bin
    printf '#!/bin/sh\\necho tool\\n' > usr/bin/tool; chmod 755 usr/bin/tool
    echo obj > var/lib/cloud/instance/obj.pkl
    touch var/lib/cloud/instance/sem/config_ssh var/lib/cloud/data/instance-id
    ln -s /var/lib/cloud/instance var/lib/cloud/link`);
  return root;
}

function mkext(disk: string, p: Part, label: string, tree?: string): void {
  const { offset, size } = bytes(p);
  // Below 4 MiB mke2fs leaves the journal out anyway, and says so on stderr.
  const journal = size < 4 * MiB ? '-O ^has_journal' : '';
  sh(`mke2fs -q -F -t ext4 ${journal} -L '${label}' -E offset=${offset} ${tree ? `-d '${tree}'` : ''} '${disk}' ${size / 1024}k`);
}

function mkvfat(disk: string, p: Part, label: string): void {
  sh(`MTOOLS_SKIP_CHECK=1 mformat -i '${disk}@@${bytes(p).offset}' -T ${p.size} -h 64 -s 32 -v '${label}' ::`);
}

export function makeGptDisk(dir: string, name = 'gpt.img'): string {
  requireTools('sfdisk', 'mke2fs', 'mformat');
  const disk = join(dir, name);
  const tree = makeRootTree(dir);
  const p = GPT;
  sh(`truncate -s 24M '${disk}'
    printf 'label: gpt\\n%s\\n%s\\n%s\\n%s\\n' \\
      'start=${p.root.start}, size=${p.root.size}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="root"' \\
      'start=${p.cidata.start}, size=${p.cidata.size}, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name="cidata"' \\
      'start=${p.isoseed.start}, size=${p.isoseed.size}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="isoseed"' \\
      'start=${p.tiny.start}, size=${p.tiny.size}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="tiny"' | sfdisk -q '${disk}'`);
  mkext(disk, p.root, 'rootfs', tree);
  mkvfat(disk, p.cidata, 'CIDATA');
  mkext(disk, p.tiny, 'tiny');
  return disk;
}

export function makeMbrDisk(dir: string, name = 'mbr.img'): string {
  requireTools('sfdisk', 'mke2fs', 'mformat');
  const disk = join(dir, name);
  const tree = makeRootTree(dir);
  const p = MBR;
  sh(`truncate -s 24M '${disk}'
    printf 'label: dos\\n%s\\n%s\\n%s\\n%s\\n%s\\n' 'start=${p.p1.start}, size=${p.p1.size}, type=83' 'start=${p.p2.start}, size=${p.p2.size}, type=c' \\
      'start=${p.p3.start}, size=${p.p3.size}, type=5' 'start=${p.p5.start}, size=${p.p5.size}, type=83' 'start=${p.p6.start}, size=${p.p6.size}, type=83' | sfdisk -q '${disk}'`);
  mkext(disk, p.p1, 'mbrroot', tree);
  mkvfat(disk, p.p2, 'DATA');
  mkext(disk, p.p5, 'logical');
  return disk;
}

/** `sfdisk -J`: the reference our own parser is checked against. */
export function sfdiskJson(disk: string): { label: string; partitions: { node: string; start: number; size: number; type: string; uuid?: string; name?: string }[] } {
  return (JSON.parse(sh(`sfdisk -J '${disk}'`)) as { partitiontable: ReturnType<typeof sfdiskJson> }).partitiontable;
}

const device = (disk: string, p: Part): string => `${disk}?offset=${bytes(p).offset}`;

/** debugfs -R, read-only. */
function debugfsR(disk: string, p: Part, request: string): Buffer {
  return execFileSync('debugfs', ['-R', request, device(disk, p)], { stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 * MiB, env: { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin`, DEBUGFS_PAGER: '__none__' } });
}

export function extCat(disk: string, p: Part, path: string): Buffer {
  return debugfsR(disk, p, `cat "${path.replaceAll('"', '""')}"`);
}

export interface ExtStat {
  readonly type: string;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly mtime: number;
  readonly ctime: number;
  readonly atime: number;
}

/** The inode of a path (not following a final symlink), or undefined when there is none. */
export function extStat(disk: string, p: Part, path: string): ExtStat | undefined {
  const out = debugfsR(disk, p, `stat "${path.replaceAll('"', '""')}"`).toString('utf8');
  const head = /Inode:\s*\d+\s+Type:\s*(\S+)\s+Mode:\s*([0-7]+)/.exec(out);
  if (!head) return undefined;
  const owner = /User:\s*(\d+)\s+Group:\s*(\d+)/.exec(out)!;
  const time = (field: string): number => parseInt(new RegExp(`\\b${field}: 0x([0-9a-f]+)`).exec(out)![1]!, 16);
  return { type: head[1]!, mode: parseInt(head[2]!, 8), uid: Number(owner[1]), gid: Number(owner[2]), mtime: time('mtime'), ctime: time('ctime'), atime: time('atime') };
}

/** Bytes allocated to a file (debugfs's Blockcount is in 512-byte units). */
export function extAllocated(disk: string, p: Part, path: string): number {
  const out = debugfsR(disk, p, `stat "${path.replaceAll('"', '""')}"`).toString('utf8');
  return Number(/Blockcount: (\d+)/.exec(out)![1]) * 512;
}

/** One debugfs command with write access: a way to damage a filesystem on purpose. */
export function extDamage(disk: string, p: Part, request: string): void {
  execFileSync('debugfs', ['-w', '-R', request, device(disk, p)], { stdio: 'ignore', env: { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` } });
}

/** e2fsck -fn: exit code and output. */
export function e2fsck(disk: string, p: Part): { code: number; output: string } {
  const r = spawnSync('e2fsck', ['-fn', device(disk, p)], { encoding: 'utf8', env: { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` } });
  return { code: r.status ?? -1, output: `${r.stdout}${r.stderr}` };
}

export function mtype(disk: string, p: Part, path: string): string {
  return sh(`MTOOLS_SKIP_CHECK=1 mtype -i '${disk}@@${bytes(p).offset}' '::${path}'`);
}

/** `mdir -/ -b`: every path in a vfat filesystem. */
export function mlist(disk: string, p: Part): string[] {
  const r = spawnSync('mdir', ['-/', '-b', '-a', '-i', `${disk}@@${bytes(p).offset}`, '::/'], { encoding: 'utf8', env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });
  return r.stdout.split('\n').filter(Boolean);
}

/** Files left in a directory: a build must leave none. */
export function leftovers(dir: string): string[] {
  return fs.readdirSync(dir);
}
