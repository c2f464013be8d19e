/**
 * A small demo golden image for the tour: a sparse raw GPT disk whose partition 1 ("root") is
 * ext4 labelled `rootfs`, holding a Debian-like tree with the identity files a template removes,
 * and whose partition 2 ("cidata") is an empty spare for the template's NoCloud seed ISO — the
 * layout examples/templates/web.yaml expects of `debian-12`. Built without root and without
 * mounting: sfdisk writes the table, `mke2fs -E offset= -d` the filesystem from a staged tree,
 * `debugfs -w` sets every owner to 0:0 (mke2fs -d copies the builder's uid).
 *
 * Bootable (`bootable: true`): also the installed Debian cloud kernel (linux-image-cloud-amd64)
 * and an initramfs made here from busybox-static and the kernel's virtio modules, written next to
 * the disk as OUT.vmlinuz and OUT.initrd for qemu's -kernel/-initrd (and into the image's /boot).
 * Its /init mounts the root partition read-write, prints os-release, the files a template writes
 * and the seed on the serial console, counts its boots in the filesystem and powers off.
 *
 * Everything is made in a staging directory next to OUT and renamed into place at the end: a
 * failure leaves no partial output, and `force` replaces an old OUT only once the new one is whole.
 */
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { constants } from 'node:fs';
import { access, chmod, copyFile, lstat, mkdir, mkdtemp, open, readdir, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { basename, delimiter, dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { ConflictError, InputError, NoSpaceError, PrestageError, UnavailableError, errnoCode, isNoSpace } from '../domain/index.js';
import { fileDiskReader } from './disk-reader.js';
import { detectFilesystem, type DetectedKind } from './fs-detect.js';
import { CPIO_MODE, cpioNewc, initPrologue, moduleBytes, moduleName, type CpioEntry } from './initramfs.js';
import { readPartitionTable } from './partition-table.js';

const execFileAsync = promisify(execFile);

const MiB = 1 << 20;
const SECTOR = 512;
export const DEMO_DEFAULT_SIZE = 256 * MiB;
export const DEMO_MIN_SIZE = 64 * MiB;
export const DEMO_MAX_SIZE = 2 ** 40;
/** The seed partition: room for an ISO of the largest seed a spec may hold (3 × 256 Ki characters). */
const CIDATA_BYTES = 4 * MiB;
const ALIGN_SECTORS = MiB / SECTOR;

/** GPT type GUIDs: "Linux root (x86-64)" for the root, "Linux filesystem data" for the seed. */
const ROOT_TYPE = '4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709';
const DATA_TYPE = '0FC63DAF-8483-4772-8E79-3D69D8477DE4';
export const ROOT_LABEL = 'rootfs';
export const SEED_LABEL = 'cidata';

/** What /init prints last when all went well, and before the reason when not. */
export const DEMO_CONSOLE = { done: 'PRESTAGE-DEMO:done', failed: 'PRESTAGE-DEMO:failed:' } as const;

/** The apt package of each tool and file the build uses. */
export const DEMO_PACKAGES = {
  sfdisk: 'fdisk',
  mke2fs: 'e2fsprogs',
  debugfs: 'e2fsprogs',
  modprobe: 'kmod',
  busybox: 'busybox-static',
  kernel: 'linux-image-cloud-amd64',
  xz: 'xz-utils',
  zstd: 'zstd',
} as const;

type Tool = 'sfdisk' | 'mke2fs' | 'debugfs' | 'modprobe' | 'xz' | 'zstd';

/** e2fsprogs and fdisk live in sbin, which a normal user's PATH often lacks. */
const EXTRA_DIRS = ['/usr/local/sbin', '/usr/sbin', '/sbin', '/usr/local/bin', '/usr/bin', '/bin'];

export interface DemoDiskOptions {
  /** The disk image to write; with `bootable` also OUT.vmlinuz and OUT.initrd. */
  readonly out: string;
  readonly bootable?: boolean;
  /** Replace existing outputs (only once the new ones are complete). */
  readonly force?: boolean;
  /** Bytes, rounded up to whole MiB. Default 256 MiB. */
  readonly sizeBytes?: number;
  /** One line per step (and, from `verbose`, each tool run). */
  readonly progress?: (line: string) => void;
  readonly verbose?: (line: string) => void;
  /** Where tools are looked for (default PATH, then the usual bin and sbin directories). */
  readonly toolDirs?: readonly string[];
  /** Where the cloud kernel is looked for (default /boot), and busybox (default /bin/busybox). */
  readonly bootDir?: string;
  readonly busybox?: string;
}

export interface DemoPartition {
  readonly number: number;
  readonly name: string;
  readonly type: string;
  readonly startBytes: number;
  readonly sizeBytes: number;
  /** What prestage's own reader finds there: `ext` for the root, `unknown` (empty) for the seed. */
  readonly filesystem: DetectedKind;
  readonly label?: string;
  readonly purpose: string;
}

export interface DemoDiskResult {
  readonly path: string;
  readonly sizeBytes: number;
  /** Bytes the sparse file really occupies. */
  readonly allocatedBytes: number;
  readonly table: 'gpt';
  readonly partitions: readonly DemoPartition[];
  readonly bootable: boolean;
  readonly kernel?: { readonly path: string; readonly version: string; readonly from: string; readonly sizeBytes: number };
  readonly initrd?: { readonly path: string; readonly sizeBytes: number; readonly modules: readonly string[] };
}

/** Rounds up to whole MiB and checks the bounds. */
export function demoDiskSize(sizeBytes: number | undefined): number {
  const size = Math.ceil((sizeBytes ?? DEMO_DEFAULT_SIZE) / MiB) * MiB;
  if (size < DEMO_MIN_SIZE || size > DEMO_MAX_SIZE) {
    throw new InputError(`--size: the demo disk must be between 64 MiB and 1 TiB, not ${size / MiB} MiB`, { sizeBytes: size });
  }
  return size;
}

/** The paths a build writes: OUT, and for a bootable one OUT.vmlinuz and OUT.initrd. */
export function demoOutputs(out: string, bootable: boolean): { disk: string; vmlinuz?: string; initrd?: string } {
  const disk = resolve(out);
  return bootable ? { disk, vmlinuz: `${disk}.vmlinuz`, initrd: `${disk}.initrd` } : { disk };
}

/** Builds the demo disk (and for `bootable` its kernel and initramfs); see the module comment. */
export async function buildDemoDisk(o: DemoDiskOptions): Promise<DemoDiskResult> {
  const bootable = o.bootable === true;
  const size = demoDiskSize(o.sizeBytes);
  const outputs = demoOutputs(o.out, bootable);
  const step = o.progress ?? ((): void => undefined);
  const log = o.verbose ?? ((): void => undefined);
  const dirs = o.toolDirs ?? searchDirs();

  // Everything checked before anything is written.
  const tools = await findTools(['sfdisk', 'mke2fs', 'debugfs'], dirs);
  const boot = bootable ? await findBootParts(o.bootDir ?? '/boot', o.busybox ?? '/bin/busybox', dirs) : undefined;
  await checkOutputs(outputs, o.force === true);

  const outDir = dirname(outputs.disk);
  const stage = await mkdtemp(join(outDir, `.${basename(outputs.disk)}.demo-`)).catch((e: unknown) => {
    throw new InputError(`cannot write in ${outDir}: ${errnoCode(e) ?? String(e)}`, { path: outDir }, { cause: e });
  });
  try {
    const run = (tool: Tool, args: readonly string[], input?: string) => runTool(tools, tool, args, stage, log, input);
    const disk = join(stage, 'disk.raw');
    let initrd: { bytes: Buffer; modules: string[] } | undefined;
    if (boot) {
      step(`making an initramfs: busybox and the virtio modules of kernel ${boot.version}`);
      initrd = await buildDemoInitramfs(boot, (file) => readModule(file, dirs));
      await writeFile(join(stage, 'vmlinuz'), await readFile(boot.vmlinuz));
      await writeFile(join(stage, 'initrd'), initrd.bytes);
    }

    step('staging the root tree');
    const tree = join(stage, 'tree');
    await stageRootTree(tree, boot && initrd ? { vmlinuz: join(stage, 'vmlinuz'), initrd: join(stage, 'initrd'), version: boot.version } : undefined);

    const layout = gptLayout(size);
    step(`partitioning a ${size / MiB} MiB sparse disk (GPT: 1 root, 2 cidata)`);
    const fh = await open(disk, 'wx');
    await fh.truncate(size);
    await fh.close();
    await run('sfdisk', ['--quiet', '--no-reread', '--no-tell-kernel', disk], sfdiskScript(layout));

    step(`making ext4 '${ROOT_LABEL}' in partition 1`);
    const rootOffset = layout.root.start * SECTOR;
    const rootBytes = layout.root.size * SECTOR;
    await run('mke2fs', ['-q', '-F', '-t', 'ext4', '-T', 'default', '-b', '4096', '-L', ROOT_LABEL, '-E', `offset=${rootOffset},root_owner=0:0`, '-d', tree, disk, `${rootBytes / 1024}k`]);
    await chownAll(run, tree, `${disk}?offset=${rootOffset}`, join(stage, 'owners.debugfs'));

    const partitions = await readBack(disk);
    const allocatedBytes = (await stat(disk)).blocks * 512;

    // Into place: the disk first, then what boots it.
    await rename(disk, outputs.disk);
    if (outputs.vmlinuz !== undefined && outputs.initrd !== undefined) {
      await rename(join(stage, 'vmlinuz'), outputs.vmlinuz);
      await rename(join(stage, 'initrd'), outputs.initrd);
    }
    return {
      path: outputs.disk,
      sizeBytes: size,
      allocatedBytes,
      table: 'gpt',
      partitions,
      bootable,
      ...(boot && outputs.vmlinuz !== undefined ? { kernel: { path: outputs.vmlinuz, version: boot.version, from: boot.vmlinuz, sizeBytes: (await stat(outputs.vmlinuz)).size } } : {}),
      ...(initrd && outputs.initrd !== undefined ? { initrd: { path: outputs.initrd, sizeBytes: initrd.bytes.length, modules: initrd.modules } } : {}),
    };
  } catch (e) {
    if (isNoSpace(e) && !(e instanceof PrestageError)) throw new NoSpaceError(`no space left in ${outDir} for the demo disk`, { path: outDir }, { cause: e });
    throw e;
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
}

// The layout ------------------------------------------------------------------------------

interface Extent {
  readonly start: number;
  readonly size: number;
}

/** Sectors: root from 1 MiB up to the seed partition, the seed, then 1 MiB for the backup GPT. */
export function gptLayout(sizeBytes: number): { root: Extent; cidata: Extent } {
  const total = sizeBytes / SECTOR;
  const cidataSize = CIDATA_BYTES / SECTOR;
  const cidataStart = total - ALIGN_SECTORS - cidataSize;
  return { root: { start: ALIGN_SECTORS, size: cidataStart - ALIGN_SECTORS }, cidata: { start: cidataStart, size: cidataSize } };
}

function sfdiskScript(l: { root: Extent; cidata: Extent }): string {
  return [
    'label: gpt',
    'unit: sectors',
    `first-lba: ${ALIGN_SECTORS}`,
    `start=${l.root.start}, size=${l.root.size}, type=${ROOT_TYPE}, name="root"`,
    `start=${l.cidata.start}, size=${l.cidata.size}, type=${DATA_TYPE}, name="${SEED_LABEL}"`,
    '',
  ].join('\n');
}

/** The table and filesystems as prestage's own reader sees them: the build is checked by the code that will use it. */
async function readBack(disk: string): Promise<DemoPartition[]> {
  const fh = await open(disk, 'r');
  try {
    const reader = await fileDiskReader(fh);
    const table = await readPartitionTable(reader);
    if (table.kind !== 'gpt' || table.partitions.length !== 2) throw new PrestageError('PRESTAGE_INTERNAL', `sfdisk wrote ${table.kind} with ${table.partitions.length} partitions, not GPT with 2`);
    const out: DemoPartition[] = [];
    for (const p of table.partitions) {
      const fs = await detectFilesystem(reader, p);
      out.push({
        number: p.number,
        name: p.label ?? '',
        type: p.type,
        startBytes: p.startBytes,
        sizeBytes: p.sizeBytes,
        filesystem: fs.kind,
        ...(fs.label !== undefined ? { label: fs.label } : {}),
        purpose: p.number === 1 ? 'root filesystem (template partition: 1)' : 'empty, for the seed ISO (seed partition: {label: cidata})',
      });
    }
    const [root, seed] = out;
    if (root?.filesystem !== 'ext' || root.label !== ROOT_LABEL || seed?.name !== SEED_LABEL) {
      throw new PrestageError('PRESTAGE_INTERNAL', `the demo disk came out wrong: ${JSON.stringify(out)}`);
    }
    return out;
  } finally {
    await fh.close();
  }
}

// The root tree ---------------------------------------------------------------------------

const OS_RELEASE = `PRETTY_NAME="prestage demo image (Debian 12 layout)"
NAME="prestage demo"
ID=prestage-demo
ID_LIKE=debian
VERSION_ID="12"
VERSION="12 (prestage demo)"
# Made by \`prestage demo-image\`: a small Debian-like tree for trying templates and pools.
# It is not a Debian installation: it has no init and no packages.
`;

const PLACEHOLDER_KEY = (kind: string) =>
  `# placeholder for the ${kind} SSH host key of the prestage demo image (not a real key).\n# A template removes it so that every host makes its own on first boot.\n`;

interface Entry {
  readonly path: string;
  readonly mode: number;
  readonly content?: string | Buffer;
  readonly link?: string;
  /** A file to copy in. */
  readonly from?: string;
}

function rootEntries(machineId: string, boot: { vmlinuz: string; initrd: string; version: string } | undefined): Entry[] {
  const dirs: [string, number][] = [
    ['boot', 0o755], ['dev', 0o755], ['etc', 0o755], ['etc/cloud', 0o755], ['etc/cloud/cloud.cfg.d', 0o755], ['etc/ssh', 0o755],
    ['etc/systemd', 0o755], ['etc/systemd/system', 0o755], ['home', 0o755], ['media', 0o755], ['mnt', 0o755], ['opt', 0o755],
    ['proc', 0o555], ['root', 0o700], ['root/.ssh', 0o700], ['run', 0o755], ['srv', 0o755], ['sys', 0o555], ['tmp', 0o1777],
    ['usr', 0o755], ['usr/bin', 0o755], ['usr/lib', 0o755], ['usr/lib64', 0o755], ['usr/sbin', 0o755], ['usr/share', 0o755],
    ['var', 0o755], ['var/cache', 0o755], ['var/lib', 0o755], ['var/lib/cloud', 0o755], ['var/lib/dbus', 0o755], ['var/log', 0o755], ['var/tmp', 0o1777],
  ];
  const files: Entry[] = [
    { path: 'etc/os-release', mode: 0o644, content: OS_RELEASE },
    { path: 'etc/debian_version', mode: 0o644, content: '12 (prestage demo)\n' },
    { path: 'etc/hostname', mode: 0o644, content: 'prestage-demo\n' },
    { path: 'etc/hosts', mode: 0o644, content: '127.0.0.1\tlocalhost\n127.0.1.1\tprestage-demo\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' },
    { path: 'etc/machine-id', mode: 0o444, content: `${machineId}\n` },
    { path: 'etc/fstab', mode: 0o644, content: `# <file system>\t<mount point>\t<type>\t<options>\t<dump>\t<pass>\nLABEL=${ROOT_LABEL}\t/\text4\terrors=remount-ro\t0\t1\n` },
    { path: 'etc/resolv.conf', mode: 0o644, content: '# the demo image\'s own; a template writes the site\'s\nnameserver 10.0.2.3\n' },
    { path: 'etc/motd', mode: 0o644, content: '\nThe prestage demo image: not yet configured by a template.\n\n' },
    { path: 'etc/passwd', mode: 0o644, content: 'root:x:0:0:root:/root:/bin/sh\n_apt:x:42:65534::/nonexistent:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' },
    { path: 'etc/group', mode: 0o644, content: 'root:x:0:\nadm:x:4:\nsudo:x:27:\nnogroup:x:65534:\n' },
    { path: 'etc/shadow', mode: 0o640, content: 'root:*:19000:0:99999:7:::\n_apt:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n' },
    { path: 'etc/ssh/sshd_config', mode: 0o644, content: 'Include /etc/ssh/sshd_config.d/*.conf\nPermitRootLogin prohibit-password\nKbdInteractiveAuthentication no\nUsePAM yes\n' },
    { path: 'etc/systemd/timesyncd.conf', mode: 0o644, content: '[Time]\n#NTP=\n#FallbackNTP=0.debian.pool.ntp.org 1.debian.pool.ntp.org\n' },
    { path: 'etc/cloud/cloud.cfg', mode: 0o644, content: '# cloud-init is not installed in the demo image; a template\'s seed and cloud.cfg.d files show where they go.\ndatasource_list: [NoCloud, None]\n' },
    { path: 'var/lib/cloud/.keep', mode: 0o644, content: '' },
    { path: 'root/.ssh/.keep', mode: 0o600, content: '' },
    { path: 'root/.profile', mode: 0o644, content: 'PS1="\\h:\\w# "\n' },
  ];
  for (const kind of ['rsa', 'ecdsa', 'ed25519']) {
    files.push({ path: `etc/ssh/ssh_host_${kind}_key`, mode: 0o600, content: PLACEHOLDER_KEY(kind) });
    files.push({ path: `etc/ssh/ssh_host_${kind}_key.pub`, mode: 0o644, content: `ssh-${kind} PLACEHOLDER root@prestage-demo\n` });
  }
  const links: Entry[] = [
    { path: 'bin', mode: 0o777, link: 'usr/bin' },
    { path: 'sbin', mode: 0o777, link: 'usr/sbin' },
    { path: 'lib', mode: 0o777, link: 'usr/lib' },
    { path: 'lib64', mode: 0o777, link: 'usr/lib64' },
    { path: 'var/lib/dbus/machine-id', mode: 0o777, link: '/etc/machine-id' },
  ];
  const bootFiles: Entry[] = boot
    ? [
        { path: `boot/vmlinuz-${boot.version}`, mode: 0o644, from: boot.vmlinuz },
        { path: 'boot/initrd.img-prestage-demo', mode: 0o644, from: boot.initrd },
      ]
    : [];
  return [...dirs.map(([path, mode]) => ({ path, mode })), ...files, ...links, ...bootFiles];
}

async function stageRootTree(tree: string, boot: { vmlinuz: string; initrd: string; version: string } | undefined): Promise<void> {
  await mkdir(tree);
  await chmod(tree, 0o755);
  for (const e of rootEntries(randomBytes(16).toString('hex'), boot)) {
    const path = join(tree, e.path);
    if (e.link !== undefined) {
      await symlink(e.link, path);
      continue;
    }
    if (e.from !== undefined) await copyFile(e.from, path);
    else if (e.content !== undefined) await writeFile(path, e.content);
    else await mkdir(path);
    await chmod(path, e.mode); // not the umask's
  }
}

/** mke2fs -d keeps the builder's uid and gid: set every inode's to 0 with one debugfs run. */
async function chownAll(run: (tool: Tool, args: readonly string[]) => Promise<string>, tree: string, device: string, script: string): Promise<void> {
  const paths: string[] = [];
  const walk = async (dir: string, rel: string): Promise<void> => {
    for (const name of (await readdir(dir)).sort()) {
      const p = `${rel}/${name}`;
      paths.push(p);
      const st = await lstat(join(dir, name));
      if (st.isDirectory()) await walk(join(dir, name), p);
    }
  };
  await walk(tree, '');
  const lines = paths.flatMap((p) => [`sif "${p}" uid 0`, `sif "${p}" gid 0`]);
  await writeFile(script, `${lines.join('\n')}\n`);
  const out = await run('debugfs', ['-w', '-f', script, device]);
  // debugfs echoes each request ("debugfs: sif …") and its banner; anything else is a failed request, and it still exits 0.
  const bad = out.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('debugfs'));
  if (bad.length > 0) throw new PrestageError('PRESTAGE_INTERNAL', `debugfs could not set owners: ${bad.slice(0, 3).join('; ')}`);
}

// Tools -----------------------------------------------------------------------------------

function searchDirs(): string[] {
  return [...(process.env.PATH ?? '').split(delimiter).filter(Boolean), ...EXTRA_DIRS];
}

async function executable(path: string): Promise<boolean> {
  return access(path, constants.X_OK).then(
    () => true,
    () => false,
  );
}

async function findTool(name: Tool, dirs: readonly string[]): Promise<string | undefined> {
  for (const d of dirs) if (await executable(join(d, name))) return join(d, name);
  return undefined;
}

type ToolPaths = ReadonlyMap<Tool, string>;

async function findTools(names: readonly Tool[], dirs: readonly string[]): Promise<ToolPaths> {
  const found = new Map<Tool, string>();
  const missing: Tool[] = [];
  for (const n of names) {
    const p = await findTool(n, dirs);
    if (p === undefined) missing.push(n);
    else found.set(n, p);
  }
  if (missing.length > 0) {
    const packages = [...new Set(missing.map((n) => DEMO_PACKAGES[n]))];
    throw new UnavailableError(`${missing.join(', ')} not installed: apt-get install ${packages.join(' ')}`, { missing, packages });
  }
  return found;
}

/** Runs a tool to its end; resolves to its merged output, or throws naming the tool and what it said. */
async function runTool(tools: ToolPaths, tool: Tool, args: readonly string[], cwd: string, log: (line: string) => void, input?: string): Promise<string> {
  const path = tools.get(tool);
  if (path === undefined) throw new UnavailableError(`${tool} was not looked up (apt-get install ${DEMO_PACKAGES[tool]})`);
  log(`$ ${[tool, ...args].join(' ')}`);
  const child = spawn(path, args, { cwd, env: { ...process.env, PATH: [...searchDirs()].join(':'), LC_ALL: 'C', TZ: 'UTC', DEBUGFS_PAGER: '__none__' }, stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stdin.on('error', () => undefined);
  child.stdin.end(input ?? '');
  const [code, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
  // debugfs echoes every request it reads from its script: not worth a line each.
  for (const l of out.split('\n')) if (l.trim() !== '' && !l.startsWith('debugfs: ')) log(`  ${l.trimEnd()}`);
  if (code !== 0) {
    const said = out.split('\n').map((l) => l.trim()).filter(Boolean).slice(-3).join('; ');
    if (/No space left|ENOSPC/i.test(said)) throw new NoSpaceError(`${tool} ran out of space: ${said}`, { tool });
    throw new PrestageError('PRESTAGE_INTERNAL', `${tool} failed (${signal ?? `exit ${code}`}): ${said || 'no message'}`, { tool });
  }
  return out;
}

// Booting ---------------------------------------------------------------------------------

export interface BootParts {
  readonly version: string;
  readonly vmlinuz: string;
  readonly busybox: string;
  /** Module files to insmod, in load order: virtio (block) always, cdrom+isofs when the kernel has them as modules. */
  readonly modules: readonly string[];
}

/** True when the ELF file asks for no dynamic loader (no PT_INTERP program header). */
function isStaticElf(bytes: Buffer): boolean {
  if (bytes.length < 64 || bytes.readUInt32BE(0) !== 0x7f454c46 || bytes[4] !== 2) return false;
  const phoff = Number(bytes.readBigUInt64LE(0x20));
  const phentsize = bytes.readUInt16LE(0x36);
  const phnum = bytes.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    if (phoff + (i + 1) * phentsize > bytes.length) return false;
    if (bytes.readUInt32LE(phoff + i * phentsize) === 3) return false;
  }
  return true;
}

const missingPart = (what: string, pkg: string, details: Record<string, unknown> = {}) => new UnavailableError(`${what} not installed: apt-get install ${pkg}`, { ...details, packages: [pkg] });

/** The newest installed cloud kernel, its modules and a static busybox; fails naming the package of what is missing. */
export async function findBootParts(bootDir: string, busybox: string, dirs: readonly string[]): Promise<BootParts> {
  const bb = await readFile(busybox).catch(() => undefined);
  if (bb === undefined) throw missingPart(`${busybox} is`, DEMO_PACKAGES.busybox);
  if (!isStaticElf(bb)) throw missingPart(`${busybox} is dynamically linked; a static busybox is`, DEMO_PACKAGES.busybox);
  const versions = (await readdir(bootDir).catch(() => [] as string[]))
    .map((f) => /^vmlinuz-(.+-cloud-amd64)$/.exec(f)?.[1])
    .filter((v): v is string => v !== undefined)
    .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  const version = versions.at(-1);
  if (version === undefined) throw missingPart(`a cloud kernel (${bootDir}/vmlinuz-*-cloud-amd64) is`, DEMO_PACKAGES.kernel);
  const vmlinuz = join(bootDir, `vmlinuz-${version}`);
  await access(vmlinuz, constants.R_OK).catch((e: unknown) => {
    throw new UnavailableError(`${vmlinuz} is not readable by this user (${errnoCode(e) ?? String(e)}): run as a user who can read it, or copy it readable`, { path: vmlinuz });
  });
  const tools = await findTools(['modprobe'], dirs);
  const modprobe = tools.get('modprobe')!;
  const modules: string[] = [];
  const depends = async (top: string, required: boolean): Promise<void> => {
    let stdout: string;
    try {
      ({ stdout } = await execFileAsync(modprobe, ['-S', version, '--show-depends', top], { encoding: 'utf8' }));
    } catch (e) {
      if (!required) return;
      const said = (e as { stderr?: string }).stderr?.trim() ?? String(e);
      throw new UnavailableError(`kernel ${version} has no module ${top} (is ${DEMO_PACKAGES.kernel} installed completely?): ${said}`, { version, module: top });
    }
    for (const line of stdout.split('\n')) {
      const file = /^insmod (\S+)/.exec(line)?.[1];
      if (file !== undefined && !modules.includes(file)) modules.push(file);
    }
  };
  // --show-depends lists each module after what it needs; `builtin NAME` lines need nothing loaded.
  for (const top of ['virtio_pci', 'virtio_blk']) await depends(top, true);
  for (const top of ['isofs']) await depends(top, false);
  return { version, vmlinuz, busybox, modules };
}

/** A module's bytes; xz and zstd through the tool found on the search path. */
function readModule(file: string, dirs: readonly string[]): Promise<Buffer> {
  return moduleBytes(file, async (tool, f) => {
    const path = (await findTools([tool], dirs)).get(tool)!;
    return (await execFileAsync(path, ['-dc', f], { encoding: 'buffer', maxBuffer: 64 * MiB })).stdout;
  });
}

/** Files /init prints when they exist: what web.yaml and most templates write. */
const SHOWN = ['/etc/os-release', '/etc/hostname', '/etc/motd', '/etc/resolv.conf', '/etc/systemd/timesyncd.conf', '/etc/cloud/cloud.cfg.d/90-prestage.cfg', '/root/.ssh/authorized_keys'];

/** The demo's /init: modules, the root partition read-write, what it holds, the seed, a boot count, power off. */
export function demoInitScript(modules: readonly string[]): string {
  const insmods = modules.map((m) => `insmod /lib/modules/${m}.ko 2>/dev/null || echo "(module ${m} not loaded)"`).join('\n');
  return `${initPrologue(DEMO_CONSOLE.failed)}${insmods}
root=/dev/vda1
for w in $(cat /proc/cmdline); do case "$w" in root=/dev/*) root="\${w#root=}" ;; esac; done
i=0
while [ ! -b "$root" ]; do
  i=$((i + 1)); [ $i -gt 300 ] && fail "no-$root"
  sleep 0.1
done
mount -t ext4 -o rw "$root" /mnt || fail "mount-$root"
echo "==== prestage demo: $root mounted read-write"
for f in ${SHOWN.join(' ')}; do
  if [ -f "/mnt$f" ]; then echo "---- $f"; cat "/mnt$f"; else echo "---- $f: absent"; fi
done
echo "---- /etc/machine-id: $([ -e /mnt/etc/machine-id ] && echo present || echo 'absent (each host makes its own)')"
keys=$(cd /mnt/etc/ssh 2>/dev/null && ls ssh_host_* 2>/dev/null | tr '\\n' ' ')
echo "---- /etc/ssh host keys: \${keys:-none (each host makes its own)}"
seed=
for d in /dev/vda[2-9]; do
  [ -b "$d" ] || continue
  if mount -t iso9660 -o ro "$d" /seed 2>/dev/null; then seed=$d; break; fi
done
if [ -n "$seed" ]; then
  echo "---- cloud-init seed on $seed: $(ls /seed | tr '\\n' ' ')"
  cat /seed/user-data
  umount /seed
else
  echo "---- cloud-init seed: none (a template with seed: writes one)"
fi
mkdir -p /mnt/var/lib/prestage-demo
n=$(cat /mnt/var/lib/prestage-demo/boots 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > /mnt/var/lib/prestage-demo/boots || fail write
echo "==== this disk has now been booted $n time(s) (count kept in /var/lib/prestage-demo/boots)"
umount /mnt || fail umount
sync
echo "${DEMO_CONSOLE.done}"
poweroff -f
`;
}

const { dir: DIR, file: FILE, exec: EXEC, link: LINK } = CPIO_MODE;

/** A gzip'd newc initramfs: busybox, the modules (decompressed) and /init. */
export async function buildDemoInitramfs(boot: BootParts, read: (file: string) => Promise<Buffer>): Promise<{ bytes: Buffer; modules: string[] }> {
  const entries: CpioEntry[] = ['bin', 'sbin', 'usr', 'usr/bin', 'usr/sbin', 'dev', 'proc', 'sys', 'mnt', 'seed', 'lib', 'lib/modules'].map((name) => ({ name, mode: DIR }));
  entries.push({ name: 'dev/console', mode: 0o020600, rdev: [5, 1] }, { name: 'dev/null', mode: 0o020666, rdev: [1, 3] });
  entries.push({ name: 'bin/busybox', mode: EXEC, data: await readFile(boot.busybox) }, { name: 'bin/sh', mode: LINK, data: Buffer.from('busybox') });
  const names: string[] = [];
  for (const file of boot.modules) {
    names.push(moduleName(file));
    entries.push({ name: `lib/modules/${moduleName(file)}.ko`, mode: FILE, data: await read(file) });
  }
  entries.push({ name: 'init', mode: EXEC, data: Buffer.from(demoInitScript(names)) });
  return { bytes: gzipSync(cpioNewc(entries), { level: 9 }), modules: names };
}

// Outputs ---------------------------------------------------------------------------------

async function checkOutputs(outputs: { disk: string; vmlinuz?: string; initrd?: string }, force: boolean): Promise<void> {
  const dir = dirname(outputs.disk);
  const dirSt = await stat(dir).catch(() => undefined);
  if (!dirSt?.isDirectory()) throw new InputError(`${dir} is not a directory`, { path: dir });
  const existing: string[] = [];
  for (const p of [outputs.disk, outputs.vmlinuz, outputs.initrd]) {
    if (p === undefined) continue;
    const st = await lstat(p).catch(() => undefined);
    if (st === undefined) continue;
    if (!st.isFile()) throw new InputError(`${p} exists and is not a regular file`, { path: p });
    existing.push(p);
  }
  if (existing.length > 0 && !force) {
    throw new ConflictError(`${existing.join(', ')} already exist${existing.length === 1 ? 's' : ''}: give --force to replace ${existing.length === 1 ? 'it' : 'them'}`, { paths: existing });
  }
}

