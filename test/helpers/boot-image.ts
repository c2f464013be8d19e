// A tiny bootable golden image and a real (emulated) host that boots from it over NBD.
//
// The disk: raw, MBR (sfdisk), partition 1 ext4 (mke2fs -E offset= -d, no mounts, no root needed)
// holding a random marker. The host: the installed Debian cloud kernel plus an initramfs made
// here from busybox-static and the kernel's virtio modules (the cloud kernel builds ext4 in but
// virtio as modules). Its /init prints what it finds on the disk to the serial console,
// optionally writes a file of its own, syncs and powers off, so a test reads the console and
// knows what the host saw.
//
// A second initramfs (buildNetInitramfs) also brings up the network (virtio_net on qemu's
// user-mode network, where the host's 127.0.0.1 is 10.0.2.2) and, as the kernel command line
// asks, prints files of the disk, runs scripts from it and fetches URLs, each between markers
// (readConsole parses them), the way a host's early boot fetches its per-host data.
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { access, chmod, constants, mkdir, open, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { CPIO_MODE, cpioNewc, initPrologue, moduleBytes, moduleName, type CpioEntry } from '../../src/customize/initramfs.js';

const run = promisify(execFile);
const MiB = 1 << 20;

/** The apt package that brings each tool the boot test needs. */
export const BOOT_TOOLS = {
  'qemu-system-x86_64': 'qemu-system-x86',
  sfdisk: 'fdisk',
  'mke2fs': 'e2fsprogs',
  modprobe: 'kmod',
  timeout: 'coreutils',
} as const;
const BUSYBOX = '/bin/busybox';
const KERNEL_PACKAGE = 'linux-image-cloud-amd64';
const BUSYBOX_PACKAGE = 'busybox-static';

/** The virtio modules the initramfs loads, in this order, before /dev/vda appears. */
export const VIRTIO_MODULES = ['virtio_ring', 'virtio', 'virtio_pci_modern_dev', 'virtio_pci_legacy_dev', 'virtio_pci', 'virtio_blk'] as const;

/** What the host's /init prints on the console. */
export const CONSOLE = {
  marker: 'MARKER:',
  hostWrote: 'HOST-WROTE:',
  wrote: 'WROTE:',
  done: 'PRESTAGE-BOOT:done',
  failed: 'PRESTAGE-BOOT:failed:',
} as const;

class MissingTool extends Error {
  constructor(what: string, pkg: string) {
    super(`${what} is missing: apt-get install ${pkg} (scripts/install.sh lists it)`);
    this.name = 'MissingTool';
  }
}

async function onPath(cmd: string): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(':').concat(['/usr/sbin', '/sbin'])) {
    const p = join(dir, cmd);
    if (await access(p, constants.X_OK).then(() => true, () => false)) return p;
  }
  return undefined;
}

/** True when the ELF file asks for no dynamic loader (no PT_INTERP program header). */
function isStaticElf(bytes: Buffer): boolean {
  if (bytes.length < 64 || bytes.readUInt32BE(0) !== 0x7f454c46 || bytes[4] !== 2) return false; // ELF64 only
  const phoff = Number(bytes.readBigUInt64LE(0x20));
  const phentsize = bytes.readUInt16LE(0x36);
  const phnum = bytes.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) if (bytes.readUInt32LE(phoff + i * phentsize) === 3) return false; // PT_INTERP
  return true;
}

export interface CloudKernel {
  readonly version: string;
  readonly vmlinuz: string;
  /** The module files for VIRTIO_MODULES, in load order. */
  readonly modules: readonly string[];
}

/** The installed Debian cloud kernel and its virtio modules; fails naming the package when absent. */
export async function findCloudKernel(): Promise<CloudKernel> {
  const versions = (await readdir('/boot').catch(() => [] as string[]))
    .map((f) => /^vmlinuz-(.+-cloud-amd64)$/.exec(f)?.[1])
    .filter((v): v is string => v !== undefined)
    .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  const version = versions.at(-1);
  if (version === undefined) throw new MissingTool('a cloud kernel (/boot/vmlinuz-*-cloud-amd64)', KERNEL_PACKAGE);
  const vmlinuz = `/boot/vmlinuz-${version}`;
  await access(vmlinuz, constants.R_OK).catch(() => {
    throw new Error(`${vmlinuz} is not readable by this user`);
  });
  if (!(await onPath('modprobe'))) throw new MissingTool('modprobe', BOOT_TOOLS.modprobe);
  const modules: string[] = [];
  for (const top of ['virtio_pci', 'virtio_blk']) {
    const { stdout } = await run('modprobe', ['-S', version, '--show-depends', top]).catch((e: Error) => {
      throw new Error(`modprobe -S ${version} --show-depends ${top} failed (is ${KERNEL_PACKAGE} installed completely?): ${e.message}`);
    });
    for (const line of stdout.split('\n')) {
      const file = /^insmod (\S+)/.exec(line)?.[1];
      if (file !== undefined && !modules.includes(file)) modules.push(file);
    }
  }
  const byName = new Map(modules.map((f) => [f.split('/').at(-1)!.replace(/\.ko(\.(xz|zst|gz))?$/, ''), f]));
  const ordered = VIRTIO_MODULES.filter((m) => byName.has(m)).map((m) => byName.get(m)!);
  if (!byName.has('virtio_blk') || !byName.has('virtio_pci')) throw new Error(`kernel ${version} has no virtio_pci/virtio_blk modules: ${modules.join(' ')}`);
  return { version, vmlinuz, modules: ordered };
}

/** Fails, naming the apt package, unless every tool the boot test needs is here. */
export async function checkBootTools(): Promise<CloudKernel> {
  for (const [cmd, pkg] of Object.entries(BOOT_TOOLS)) if (!(await onPath(cmd))) throw new MissingTool(cmd, pkg);
  const bb = await readFile(BUSYBOX).catch(() => undefined);
  if (bb === undefined) throw new MissingTool(BUSYBOX, BUSYBOX_PACKAGE);
  if (!isStaticElf(bb)) throw new MissingTool(`a statically linked ${BUSYBOX} (this one is dynamic)`, BUSYBOX_PACKAGE);
  return findCloudKernel();
}

/** A module's bytes; xz and zstd need their tool, named with its package when missing. */
function readModule(file: string): Promise<Buffer> {
  return moduleBytes(file, async (tool, f) => {
    const pkg = tool === 'xz' ? 'xz-utils' : 'zstd';
    if (!(await onPath(tool))) throw new MissingTool(`${tool} (to decompress ${f})`, pkg);
    return (await run(tool, ['-dc', f], { encoding: 'buffer', maxBuffer: 64 * MiB })).stdout;
  });
}

const { dir: DIR, file: FILE, exec: EXEC, link: LINK, chr: CHR } = CPIO_MODE;

/** The start of every /init: busybox applets, the kernel filesystems, the console, and how to fail. */
const INIT_PROLOGUE = initPrologue(CONSOLE.failed);

function initScript(modules: readonly string[]): string {
  const insmods = modules.map((m) => `insmod /lib/modules/${m}.ko || fail insmod-${m}`).join('\n');
  return `${INIT_PROLOGUE}${insmods}
i=0
while [ ! -b /dev/vda1 ]; do
  i=$((i + 1)); [ $i -gt 200 ] && fail no-vda1
  sleep 0.1
done
mount -t ext4 /dev/vda1 /mnt || fail mount
echo "${CONSOLE.marker}$(cat /mnt/marker)"
if [ -e /mnt/host-wrote ]; then echo "${CONSOLE.hostWrote}$(cat /mnt/host-wrote)"; else echo "${CONSOLE.hostWrote}none"; fi
write=$(sed -n 's/.*prestage\\.write=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
if [ -n "$write" ]; then
  echo "$write" > /mnt/host-wrote || fail write
  sync
  echo "${CONSOLE.wrote}$write"
fi
umount /mnt || fail umount
sync
echo "${CONSOLE.done}"
poweroff -f
`;
}

/** A gzip'd newc initramfs: busybox-static, the virtio modules (decompressed) and /init. */
export async function buildInitramfs(kernel: CloudKernel): Promise<Buffer> {
  const entries: CpioEntry[] = ['bin', 'sbin', 'usr', 'usr/bin', 'usr/sbin', 'dev', 'proc', 'sys', 'mnt', 'lib', 'lib/modules'].map((name) => ({ name, mode: DIR }));
  entries.push({ name: 'dev/console', mode: CHR, rdev: [5, 1] }, { name: 'dev/null', mode: 0o020666, rdev: [1, 3] });
  entries.push({ name: 'bin/busybox', mode: EXEC, data: await readFile(BUSYBOX) }, { name: 'bin/sh', mode: LINK, data: Buffer.from('busybox') });
  const names: string[] = [];
  for (const file of kernel.modules) {
    const name = file.split('/').at(-1)!.replace(/\.ko(\.(xz|zst|gz))?$/, '');
    names.push(name);
    entries.push({ name: `lib/modules/${name}.ko`, mode: FILE, data: await readModule(file) });
  }
  entries.push({ name: 'init', mode: EXEC, data: Buffer.from(initScript(names)) });
  return gzipSync(cpioNewc(entries), { level: 6 });
}

export interface BootGolden {
  /** The raw disk image to import as a golden. */
  readonly disk: string;
  readonly initrd: string;
  readonly kernel: CloudKernel;
  /** The random text in /marker on partition 1. */
  readonly marker: string;
  readonly sizeBytes: number;
}

/** Builds the bootable golden (disk + initramfs) in `dir`. Checks every tool first. */
export async function buildBootGolden(dir: string, sizeMiB = 64): Promise<BootGolden> {
  const kernel = await checkBootTools();
  await mkdir(dir, { recursive: true });
  const marker = `golden-${randomBytes(12).toString('hex')}`;
  const root = join(dir, 'rootfs');
  await mkdir(root);
  await writeFile(join(root, 'marker'), `${marker}\n`);

  const disk = join(dir, 'boot-golden.raw');
  const sizeBytes = sizeMiB * MiB;
  const fh = await open(disk, 'wx');
  await fh.truncate(sizeBytes);
  await fh.close();
  const startSector = 2048;
  const sectors = sizeBytes / 512 - startSector;
  await feed('sfdisk', ['--quiet', '--no-reread', '--no-tell-kernel', disk], `label: dos\nstart=${startSector}, size=${sectors}, type=83\n`);
  await run('mke2fs', ['-q', '-F', '-t', 'ext4', '-L', 'golden', '-E', `offset=${startSector * 512}`, '-d', root, disk, `${(sectors * 512) / 1024}k`]);

  const initrd = join(dir, 'initrd.gz');
  await writeFile(initrd, await buildInitramfs(kernel));
  return { disk, initrd, kernel, marker, sizeBytes };
}

async function feed(cmd: string, args: readonly string[], input: string): Promise<void> {
  const child = spawn(cmd, args, { stdio: ['pipe', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
  child.stdin.end(input);
  const [code] = (await once(child, 'close')) as [number | null];
  if (code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${code}: ${err}`);
}

/** Writes the host's key line (`identity:hexkey`) as `DIR/keys.psk`, where qemu's tls-creds-psk looks. */
export async function writeQemuPskDir(dir: string, pskFileLine: string): Promise<string> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, 'keys.psk');
  await writeFile(file, `${pskFileLine.trim()}\n`, { mode: 0o600 });
  await chmod(file, 0o600);
  return dir;
}

export interface BootOptions {
  readonly kernel: CloudKernel;
  readonly initrd: string;
  readonly host: string;
  readonly port: number;
  readonly exportName: string;
  /** A directory holding keys.psk, and the PSK identity (the host id) to use from it. */
  readonly pskDir: string;
  readonly username: string;
  /** Text the host writes to /host-wrote on its disk ([A-Za-z0-9_-], no spaces). */
  readonly write?: string;
  readonly timeoutSec?: number;
  /** A virtio NIC on qemu's user-mode network (GUEST_NET); without it the host has no network. */
  readonly net?: boolean;
  /** More kernel parameters, e.g. guestParams.show(…) for the network initramfs; no spaces or quotes. */
  readonly append?: readonly string[];
}

export interface BootResult {
  /** The exit status of `timeout qemu…` (124: it ran out of time). */
  readonly code: number | null;
  /** Serial console and qemu's own messages, interleaved. */
  readonly output: string;
  readonly ms: number;
  /** What the host found: the marker, and /host-wrote (`none` when absent). */
  readonly marker: string | undefined;
  readonly hostWrote: string | undefined;
  readonly wrote: string | undefined;
  readonly done: boolean;
  /** What the network initramfs printed between markers, and how each step ended (readConsole). */
  readonly sections: ReadonlyMap<string, string>;
  readonly statuses: ReadonlyMap<string, string>;
}

// The console interleaves firmware text and terminal resets (ESC c, ESC [2J …) with what /init
// prints, sometimes on one line ("Booting from ROM..MARKER:…"): drop the escapes and look for the
// prefix anywhere, except inside a longer word (WROTE: is not HOST-WROTE:).
// eslint-disable-next-line no-control-regex
const stripEscapes = (s: string) => s.replace(/\x1b(\[[0-9;?]*[A-Za-z]|[^[])/g, '');
const grab = (out: string, prefix: string) => new RegExp(`(?<![A-Za-z-])${prefix}(\\S*)`).exec(stripEscapes(out))?.[1];

/** What /init of the boot initramfs printed on a console: the marker, what /host-wrote held (`none`: absent), what it wrote, and whether it finished. */
export function consoleFindings(output: string): { marker: string | undefined; hostWrote: string | undefined; wrote: string | undefined; done: boolean } {
  return { marker: grab(output, CONSOLE.marker), hostWrote: grab(output, CONSOLE.hostWrote), wrote: grab(output, CONSOLE.wrote), done: output.includes(CONSOLE.done) };
}

/** Boots an emulated host (tcg; KVM hangs here) from an NBD export over TLS-PSK, always under `timeout`. */
export async function bootFromNbd(o: BootOptions): Promise<BootResult> {
  if (o.write !== undefined && !/^[A-Za-z0-9_-]+$/.test(o.write)) throw new Error(`write: ${o.write} is not [A-Za-z0-9_-]+`);
  for (const p of o.append ?? []) if (!/^[^\s"]+$/.test(p)) throw new Error(`append: ${JSON.stringify(p)} must have no spaces or quotes`);
  const append = ['console=ttyS0', 'quiet', 'panic=-1', ...(o.write !== undefined ? [`prestage.write=${o.write}`] : []), ...(o.append ?? [])].join(' ');
  // The kernel keeps COMMAND_LINE_SIZE (2048 on x86) bytes and silently drops the rest.
  if (append.length >= 2048) throw new Error(`the kernel command line is ${append.length} bytes, at most 2047`);
  const args = [
    '--kill-after=5',
    String(o.timeoutSec ?? 120),
    'qemu-system-x86_64',
    '-accel', 'tcg',
    '-nographic',
    '-no-reboot',
    ...(o.net === true ? ['-netdev', 'user,id=n0', '-device', 'virtio-net-pci,netdev=n0,romfile='] : ['-nic', 'none']),
    '-m', '256',
    '-kernel', o.kernel.vmlinuz,
    '-initrd', o.initrd,
    '-append', append,
    '-object', `tls-creds-psk,id=t0,endpoint=client,dir=${o.pskDir},username=${o.username}`,
    '-drive', `driver=nbd,host=${o.host},port=${o.port},export=${o.exportName},tls-creds=t0,if=virtio`,
  ];
  const started = Date.now();
  const child = spawn('timeout', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (output += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (output += s));
  const [code] = (await once(child, 'close')) as [number | null];
  return {
    code,
    output,
    ms: Date.now() - started,
    ...consoleFindings(output),
    ...readConsole(output),
  };
}

// The network initramfs ---------------------------------------------------------------------

/** qemu's user-mode network as the guest sees it: the host's 127.0.0.1 answers at `hostLoopback`. */
export const GUEST_NET = { address: '10.0.2.15', prefix: 24, gateway: '10.0.2.2', hostLoopback: '10.0.2.2' } as const;

/** The network card's module: its dependencies after VIRTIO_MODULES come from modprobe. */
export const NET_MODULE = 'virtio_net';

/**
 * What the network initramfs prints besides CONSOLE: `net` once the address is set; for each step
 * of the kernel command line `begin` NAME, what the step printed, `end` NAME, then `status`
 * NAME=STATUS (`0` or an exit code for show and run; `ok` or `failed:` and wget's error for fetch).
 * NAME is `show:PATH`, `run:PATH` or `fetch:LABEL`. Scripts run from the disk may print sections
 * of their own with `begin`/`end`.
 */
export const NET_CONSOLE = {
  net: 'PRESTAGE-NET:',
  begin: 'PRESTAGE-BEGIN:',
  end: 'PRESTAGE-END:',
  status: 'PRESTAGE-STATUS:',
} as const;

const STEP_NAME = /^[A-Za-z0-9_./-]+$/;

/** Kernel parameters for the network initramfs's steps, done in command-line order after the disk is mounted. */
export const guestParams = {
  /** Print a file of the disk (an absolute path inside partition 1). */
  show: (path: string) => `prestage.show=${checkStep(path, true)}`,
  /** Run a shell script of the disk (absolute path inside partition 1) with the initramfs's busybox. */
  run: (path: string) => `prestage.run=${checkStep(path, true)}`,
  /** GET a URL (Basic auth from its user:password@) and print the body; LABEL names the step. */
  fetch: (label: string, url: string) => `prestage.fetch=${checkStep(label, false)},${url}`,
};

function checkStep(name: string, path: boolean): string {
  if (!STEP_NAME.test(name) || (path && !name.startsWith('/'))) throw new Error(`${path ? 'path' : 'label'} ${JSON.stringify(name)}: expected ${path ? '/' : ''}[A-Za-z0-9_./-]+`);
  return name;
}

/** The files of virtio_net and the modules it needs that VIRTIO_MODULES do not load (failover, net_failover), in load order. */
export async function findNetModules(kernel: CloudKernel): Promise<string[]> {
  const { stdout } = await run('modprobe', ['-S', kernel.version, '--show-depends', NET_MODULE]).catch((e: Error) => {
    throw new Error(`modprobe -S ${kernel.version} --show-depends ${NET_MODULE} failed (is ${KERNEL_PACKAGE} installed completely?): ${e.message}`);
  });
  const loaded = new Set(kernel.modules.map(moduleName));
  const files = stdout
    .split('\n')
    .map((line) => /^insmod (\S+)/.exec(line)?.[1])
    .filter((f): f is string => f !== undefined && !loaded.has(moduleName(f)));
  if (!files.some((f) => moduleName(f) === NET_MODULE)) throw new Error(`kernel ${kernel.version} has no ${NET_MODULE} module: ${stdout}`);
  return files;
}

function netInitScript(modules: readonly string[]): string {
  const insmods = modules.map((m) => `insmod /lib/modules/${m}.ko || fail insmod-${m}`).join('\n');
  const { begin, end, status } = NET_CONSOLE;
  // Each step's output goes to a file first, then between its markers with a line break after
  // the last line, so a marker always starts a line.
  return `${INIT_PROLOGUE}wait_for() {
  i=0
  while [ ! -e "$1" ]; do
    i=$((i + 1)); [ $i -gt 200 ] && fail "no-$2"
    sleep 0.1
  done
}
section() {
  echo "${begin}$1"
  cat /tmp/out
  [ -n "$(tail -c 1 /tmp/out)" ] && echo
  echo "${end}$1"
  echo "${status}$1=$2"
}
set -f
${insmods}
wait_for /sys/class/net/eth0 eth0
ip link set lo up
ip link set eth0 up || fail link-up
ip addr add ${GUEST_NET.address}/${GUEST_NET.prefix} dev eth0 || fail address
ip route add default via ${GUEST_NET.gateway} || fail route
echo "${NET_CONSOLE.net}up ${GUEST_NET.address}"
wait_for /dev/vda1 vda1
mount -t ext4 /dev/vda1 /mnt || fail mount
echo "${CONSOLE.marker}$(cat /mnt/marker)"
for w in $(cat /proc/cmdline); do
  case "$w" in
  prestage.show=*)
    p=\${w#prestage.show=}
    cat "/mnt$p" >/tmp/out 2>&1
    section "show:$p" $?
    ;;
  prestage.run=*)
    p=\${w#prestage.run=}
    timeout 60 sh "/mnt$p" >/tmp/out 2>&1
    section "run:$p" $?
    ;;
  prestage.fetch=*)
    v=\${w#prestage.fetch=}
    l=\${v%%,*}
    : >/tmp/out # wget leaves the file alone when the server refuses
    if timeout 30 wget -q -O /tmp/out "\${v#*,}" 2>/tmp/err; then s=ok; else s="failed:$(tr '\\n' ' ' </tmp/err)"; fi
    section "fetch:$l" "$s"
    ;;
  esac
done
umount /mnt || fail umount
sync
echo "${CONSOLE.done}"
poweroff -f
`;
}

/** A gzip'd newc initramfs like buildInitramfs's, plus the network modules and the steps of NET_CONSOLE. */
export async function buildNetInitramfs(kernel: CloudKernel): Promise<Buffer> {
  const entries: CpioEntry[] = ['bin', 'sbin', 'usr', 'usr/bin', 'usr/sbin', 'dev', 'proc', 'sys', 'mnt', 'tmp', 'lib', 'lib/modules'].map((name) => ({ name, mode: DIR }));
  entries.push({ name: 'dev/console', mode: CHR, rdev: [5, 1] }, { name: 'dev/null', mode: 0o020666, rdev: [1, 3] });
  entries.push({ name: 'bin/busybox', mode: EXEC, data: await readFile(BUSYBOX) }, { name: 'bin/sh', mode: LINK, data: Buffer.from('busybox') });
  const names: string[] = [];
  for (const file of [...kernel.modules, ...(await findNetModules(kernel))]) {
    names.push(moduleName(file));
    entries.push({ name: `lib/modules/${moduleName(file)}.ko`, mode: FILE, data: await readModule(file) });
  }
  entries.push({ name: 'init', mode: EXEC, data: Buffer.from(netInitScript(names)) });
  return gzipSync(cpioNewc(entries), { level: 6 });
}

/** Writes the network initramfs to `path`; returns the path. */
export async function writeNetInitrd(kernel: CloudKernel, path: string): Promise<string> {
  await writeFile(path, await buildNetInitramfs(kernel));
  return path;
}

/**
 * The sections (NAME → the text between `begin` NAME and `end` NAME, each line ending in a line
 * break) and statuses (NAME → STATUS) in a console log. A section inside another is found too.
 */
export function readConsole(output: string): { sections: Map<string, string>; statuses: Map<string, string> } {
  const text = stripEscapes(output).replace(/\r/g, '');
  const sections = new Map<string, string>();
  const statuses = new Map<string, string>();
  for (const m of text.matchAll(new RegExp(`${NET_CONSOLE.begin}([^\\n]*)\\n`, 'g'))) {
    const name = m[1]!;
    const from = m.index + m[0].length;
    const to = text.indexOf(`${NET_CONSOLE.end}${name}\n`, from);
    if (to >= 0 && !sections.has(name)) sections.set(name, text.slice(from, to));
  }
  for (const m of text.matchAll(new RegExp(`${NET_CONSOLE.status}([^=\\n]*)=([^\\n]*)`, 'g'))) statuses.set(m[1]!, m[2]!);
  return { sections, statuses };
}
