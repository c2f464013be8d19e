// A BIOS-bootable golden disk, built without mounts or root: an MBR partition table (sfdisk), one
// active FAT16 partition (mtools' mformat at an offset) with syslinux installed in it (`syslinux
// --offset`, which works on an image file) and syslinux's MBR code written into sector 0. The
// partition carries the Debian cloud kernel, a tiny busybox initramfs and syslinux.cfg (serial 0,
// console=ttyS0). The golden's random marker rides on the kernel command line syslinux.cfg gives,
// so a host that prints it booted this disk's own boot loader and configuration, through whatever
// carried the disk's sectors to the BIOS: a local drive or iPXE's `sanboot` over iSCSI.
//
// The initramfs prints CONSOLE.marker + the marker, then finds its disk again from Linux: after an
// iPXE sanboot through the iBFT iPXE leaves (iscsi_ibft; open-iscsi's `iscsistart -N` sets up the
// NIC, `iscsistart -b` logs in with the iBFT's initiator name and CHAP; the kernel's iscsi_tcp
// gives /dev/sda), after a local boot through ata_piix. It mounts partition 1 (vfat), prints
// CONSOLE.hostWrote + /hostwr (`none` when absent), writes a new random /hostwr, prints
// CONSOLE.wrote + it, and powers off: a second host that boots its own copy must print `none`.
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { CPIO_MODE, cpioNewc, initPrologue, moduleName, type CpioEntry } from '../../src/customize/initramfs.js';
import { checkBootTools, consoleFindings, CONSOLE, type CloudKernel } from './boot-image.js';

const MiB = 1 << 20;
const SECTOR = 512;
/** Where partition 1 starts: 1 MiB, the usual alignment. */
export const PARTITION_START_SECTOR = 2048;
export const PARTITION_OFFSET = PARTITION_START_SECTOR * SECTOR;

/** syslinux's BIOS files (Debian: syslinux and syslinux-common) and the tools, with their packages. */
export const BIOS_TOOLS = {
  syslinux: 'syslinux',
  mformat: 'mtools',
  mcopy: 'mtools',
  sfdisk: 'fdisk',
  iscsistart: 'open-iscsi',
} as const;
const ISCSISTART = '/usr/sbin/iscsistart';
/** What the initramfs loads (with their dependencies, from modprobe): the NIC, iSCSI and the iBFT, a local disk, vfat. */
const MODULES = ['virtio_pci', 'virtio_net', 'iscsi_tcp', 'iscsi_ibft', 'sd_mod', 'ata_piix', 'vfat', 'nls_cp437', 'nls_ascii'] as const;
const execFileP = promisify(execFile);
export const SYSLINUX_MBR = '/usr/lib/syslinux/mbr/mbr.bin';
const BUSYBOX = '/bin/busybox';

export interface BiosGolden {
  /** The raw disk image (MBR, FAT16 partition 1 with syslinux, the kernel and the initramfs). */
  readonly disk: string;
  readonly kernel: CloudKernel;
  /** The random text the booted host prints after CONSOLE.marker. */
  readonly marker: string;
  readonly sizeBytes: number;
}

interface Ran {
  code: number | null;
  out: string;
}

function runTool(cmd: string, args: readonly string[], input?: string): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (s: string) => (out += s));
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (out += s));
    child.on('error', (e: NodeJS.ErrnoException) => {
      const pkg = (BIOS_TOOLS as Record<string, string>)[cmd];
      reject(e.code === 'ENOENT' ? new Error(`${cmd} is missing${pkg ? `: apt-get install ${pkg}` : ''} (scripts/install.sh lists it)`) : e);
    });
    if (input !== undefined) child.stdin!.end(input);
    child.on('close', (code) => resolve({ code, out }));
  });
}

async function must(cmd: string, args: readonly string[], input?: string): Promise<void> {
  const r = await runTool(cmd, args, input);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.out}`);
}

/** The module files for MODULES and their dependencies, in load order. */
async function moduleFiles(kernel: CloudKernel): Promise<string[]> {
  const files: string[] = [];
  for (const m of MODULES) {
    const { stdout } = await execFileP('modprobe', ['-S', kernel.version, '--show-depends', m]);
    for (const line of stdout.split('\n')) {
      const f = /^insmod (\S+)/.exec(line)?.[1];
      if (f !== undefined && !files.includes(f)) files.push(f);
    }
  }
  return files;
}

/** A dynamic executable's shared libraries and loader, as ldd lists them (absolute paths). */
async function sharedLibraries(exe: string): Promise<string[]> {
  const { stdout } = await execFileP('ldd', [exe]);
  return [...stdout.matchAll(/(?:=>\s*)?(\/\S+)\s+\(0x/g)].map((m) => m[1]!);
}

/** The initramfs: busybox-static, iscsistart with its libraries, the modules and /init (see the top). */
export async function biosInitramfs(kernel: CloudKernel): Promise<Buffer> {
  const iscsistart = await readFile(ISCSISTART).catch(() => {
    throw new Error(`${ISCSISTART} is missing: apt-get install open-iscsi (scripts/install.sh lists it)`);
  });
  const modules = await moduleFiles(kernel);
  const { dir, exec, file, link, chr } = CPIO_MODE;
  const dirs = new Set(['bin', 'sbin', 'usr', 'usr/bin', 'usr/sbin', 'dev', 'proc', 'sys', 'mnt', 'tmp', 'run', 'etc', 'etc/iscsi', 'var', 'var/lib', 'var/lib/iscsi', 'lib', 'lib/modules']);
  const libs = await sharedLibraries(ISCSISTART);
  for (const l of libs) {
    const parts = l.slice(1).split('/').slice(0, -1);
    for (let i = 1; i <= parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
  }
  const entries: CpioEntry[] = [...dirs].sort().map((name) => ({ name, mode: dir }));
  entries.push({ name: 'dev/console', mode: chr, rdev: [5, 1] }, { name: 'dev/null', mode: 0o020666, rdev: [1, 3] });
  entries.push({ name: 'bin/busybox', mode: exec, data: await readFile(BUSYBOX) }, { name: 'bin/sh', mode: link, data: Buffer.from('busybox') });
  entries.push({ name: 'sbin/iscsistart', mode: exec, data: iscsistart });
  for (const l of libs) entries.push({ name: l.slice(1), mode: exec, data: await readFile(l) });
  // iscsistart wants a name of its own; the iBFT's (the one iPXE logged in with) is the one used.
  entries.push({ name: 'etc/iscsi/initiatorname.iscsi', mode: file, data: Buffer.from('InitiatorName=iqn.2026-12.io.prestage.initramfs:unused\n') });
  for (const f of modules) entries.push({ name: `lib/modules/${moduleName(f)}.ko`, mode: file, data: await readFile(f) });
  const insmods = modules.map((f) => `insmod /lib/modules/${moduleName(f)}.ko || fail insmod-${moduleName(f)}`).join('\n');
  const init = `${initPrologue(CONSOLE.failed)}m=$(sed -n 's/.*prestage\\.marker=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
[ -n "$m" ] || fail no-marker
echo "${CONSOLE.marker}$m"
${insmods}
if [ -d /sys/firmware/ibft/target0 ]; then
  iscsistart -N || fail iscsistart-N
  iscsistart -b || fail iscsistart-b
fi
i=0
while [ ! -b /dev/sda1 ]; do
  i=$((i + 1)); [ $i -gt 200 ] && fail no-sda1
  sleep 0.1
done
mount -t vfat /dev/sda1 /mnt || fail mount
if [ -e /mnt/hostwr ]; then echo "${CONSOLE.hostWrote}$(cat /mnt/hostwr)"; else echo "${CONSOLE.hostWrote}none"; fi
w="boot-$(cat /proc/sys/kernel/random/uuid)"
echo "$w" > /mnt/hostwr || fail write
umount /mnt || fail umount
sync
echo "${CONSOLE.wrote}$w"
echo "${CONSOLE.done}"
poweroff -f
`;
  entries.push({ name: 'init', mode: exec, data: Buffer.from(init) });
  return gzipSync(cpioNewc(entries), { level: 6 });
}

/** syslinux.cfg: serial console on COM1, one entry, no prompt. */
export function syslinuxCfg(marker: string): string {
  return ['SERIAL 0 115200', 'DEFAULT linux', 'PROMPT 0', 'TIMEOUT 1', 'LABEL linux', '  KERNEL vmlinuz', '  INITRD initrd.gz', `  APPEND console=ttyS0 quiet panic=-1 prestage.marker=${marker}`, ''].join('\n');
}

/** Builds the BIOS-bootable golden in `dir` (48 MiB by default). Checks every tool first. */
export async function buildBiosGolden(dir: string, sizeMiB = 48): Promise<BiosGolden> {
  if (sizeMiB > 64 || sizeMiB < 32) throw new Error(`sizeMiB: ${sizeMiB}, expected 32..64`);
  const kernel = await checkBootTools();
  const mbr = await readFile(SYSLINUX_MBR).catch(() => {
    throw new Error(`${SYSLINUX_MBR} is missing: apt-get install syslinux-common (scripts/install.sh lists it)`);
  });
  await mkdir(dir, { recursive: true });
  const marker = `bios-golden-${randomBytes(12).toString('hex')}`;
  const disk = join(dir, 'bios-golden.raw');
  const sizeBytes = sizeMiB * MiB;
  const fh = await open(disk, 'wx');
  await fh.truncate(sizeBytes);
  await fh.close();
  const sectors = sizeBytes / SECTOR - PARTITION_START_SECTOR;
  // type 6: FAT16 (> 32 MiB); bootable: the MBR code chains to the active partition.
  await must('sfdisk', ['--quiet', '--no-reread', '--no-tell-kernel', disk], `label: dos\nstart=${PARTITION_START_SECTOR}, size=${sectors}, type=6, bootable\n`);
  const img = `${disk}@@${PARTITION_OFFSET}`;
  // -T total sectors of the partition, -H hidden sectors before it (the BIOS parameter block says where it lies).
  await must('mformat', ['-i', img, '-T', String(sectors), '-H', String(PARTITION_START_SECTOR), '-h', '64', '-s', '32', '-v', 'GOLDEN', '::']);
  const files = join(dir, 'boot-files');
  await mkdir(files, { recursive: true });
  await writeFile(join(files, 'initrd.gz'), await biosInitramfs(kernel));
  await writeFile(join(files, 'syslinux.cfg'), syslinuxCfg(marker));
  await must('mcopy', ['-i', img, kernel.vmlinuz, '::vmlinuz']);
  await must('mcopy', ['-i', img, join(files, 'initrd.gz'), join(files, 'syslinux.cfg'), '::']);
  await must('syslinux', ['--offset', String(PARTITION_OFFSET), '--install', disk]);
  // The first 440 bytes: boot code only, the partition table after it stays.
  const d = await open(disk, 'r+');
  try {
    await d.write(mbr.subarray(0, 440), 0, 440, 0);
  } finally {
    await d.close();
  }
  return { disk, kernel, marker, sizeBytes };
}

/** What a boot printed: the marker, done, and the whole console. */
export interface BiosBoot {
  readonly code: number | null;
  readonly output: string;
  readonly ms: number;
  readonly marker: string | undefined;
  /** What /hostwr held when the host booted (`none`: absent), and what it wrote there. */
  readonly hostWrote: string | undefined;
  readonly wrote: string | undefined;
  readonly done: boolean;
}

/**
 * Runs `timeout qemu-system-x86_64 -accel tcg -nographic -no-reboot -m 256 ARGS`, collecting the
 * console; stopped early (SIGTERM, which `timeout` passes on) once the console shows `stopOn`.
 */
export async function runQemu(args: readonly string[], timeoutSec = 120, stopOn?: string): Promise<BiosBoot> {
  const started = Date.now();
  const child = spawn('timeout', ['--kill-after=5', String(timeoutSec), 'qemu-system-x86_64', '-accel', 'tcg', '-nographic', '-no-reboot', '-m', '256', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const seen = (s: string) => {
    output += s;
    if (stopOn !== undefined && output.includes(stopOn)) child.kill('SIGTERM');
  };
  child.stdout.setEncoding('utf8').on('data', seen);
  child.stderr.setEncoding('utf8').on('data', seen);
  const [code] = (await once(child, 'close')) as [number | null];
  return { code, output, ms: Date.now() - started, ...consoleFindings(output) };
}

/** Boots the disk directly from a local drive (BIOS → MBR → syslinux → kernel). */
export function bootBiosDisk(disk: string, timeoutSec = 120): Promise<BiosBoot> {
  return runQemu(['-nic', 'none', '-drive', `file=${disk},format=raw`], timeoutSec);
}
