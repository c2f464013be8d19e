// `prestage demo-image` as the README tour uses it: the `prestage` binary (a child process) builds
// a demo golden with the real tools (sfdisk, mke2fs, debugfs), read back with sfdisk --json and
// debugfs; a real `prestage serve` imports it as debian-12 and builds examples/templates/web.yaml
// on it as written (files, removes, the seed ISO in the cidata partition); the --bootable one
// (cloud kernel, busybox initramfs) boots a provisioned copy of that template over NBD with
// TLS-PSK in qemu (tcg), using the qemu command line the CLI printed with its placeholders filled.
// Also: an existing OUT is refused without --force and replaced with it; a missing tool is named
// with its apt package; a failed build leaves nothing behind. A missing tool fails, never skips.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { chmod, mkdir, open, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { after, before, describe } from 'node:test';
import { EXIT_CODES } from '../../src/cli/exit-codes.js';
import { buildDemoDisk, DEMO_CONSOLE, type DemoDiskResult } from '../../src/customize/demo-disk.js';
import { e2fsck, extCat, extStat, requireTools, sfdiskJson, sha256, type Part } from '../customize/fixtures.js';
import { checkBootTools } from '../helpers/boot-image.js';
import { assertOneErrorLine, parse, prestage, type Run } from '../helpers/cli-run.js';
import { makeTempDir, waitFor } from '../helpers/files.js';
import { startServe, type ServeProcess } from '../helpers/server.js';
import { guardedSteps } from '../helpers/steps.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const SBIN_PATH = `${process.env.PATH ?? ''}:/usr/sbin:/sbin`;

/** The root partition (1) and the seed partition (2) of a 256 MiB demo disk, in sectors. */
const ROOT: Part = { start: 2048, size: 512000 };
const CIDATA: Part = { start: 514048, size: 8192 };

interface Made extends DemoDiskResult {
  next: string[];
  qemu?: string;
}
interface Template {
  versions: { ref: string; sha256: string; volume: string }[];
}
interface Provision {
  copyId: string;
  access: { uri: string; exportName: string };
}

/** `bin/prestage.js` runs dist/: build it when dist/.built is older than a source (bin/ warns on stderr then). */
function ensureBuilt(): void {
  const info = join(REPO, 'dist/.built');
  const built = existsSync(info) ? statSync(info).mtimeMs : 0;
  const newer = (d: string): boolean =>
    readdirSync(d, { withFileTypes: true }).some((e) => (e.isDirectory() ? newer(join(d, e.name)) : e.name.endsWith('.ts') && statSync(join(d, e.name)).mtimeMs > built));
  if (!existsSync(join(REPO, 'dist/cli/commands/demo-image.js')) || newer(join(REPO, 'src'))) execFileSync('npm', ['run', 'build', '--silent'], { cwd: REPO, stdio: 'inherit' });
}

/** The ISO 9660 volume id at the start of a partition ('' when there is none). */
async function isoVolumeId(disk: string, p: Part): Promise<string> {
  const fh = await open(disk, 'r');
  try {
    const pvd = Buffer.alloc(2048);
    await fh.read(pvd, 0, 2048, p.start * 512 + 32768);
    return pvd.toString('latin1', 1, 6) === 'CD001' ? pvd.toString('latin1', 40, 72).trim() : '';
  } finally {
    await fh.close();
  }
}

/** Names in a gzip'd newc cpio archive. */
function cpioNames(gz: Buffer): string[] {
  const b = gunzipSync(gz);
  const names: string[] = [];
  for (let off = 0; off + 110 <= b.length; ) {
    assert.equal(b.toString('latin1', off, off + 6), '070701', `a newc header at ${off}`);
    const field = (i: number) => parseInt(b.toString('latin1', off + 6 + i * 8, off + 14 + i * 8), 16);
    const [size, nameSize] = [field(6), field(11)];
    const name = b.toString('latin1', off + 110, off + 110 + nameSize - 1);
    if (name === 'TRAILER!!!') break;
    names.push(name);
    off = Math.ceil((off + 110 + nameSize) / 4) * 4;
    off = Math.ceil((off + size) / 4) * 4;
  }
  return names;
}

describe('prestage demo-image: a demo golden that examples/templates/web.yaml builds on and qemu boots', () => {
  let dir: string;
  let serve: ServeProcess | undefined;
  let kernelFile: string;
  const { setupFailed, step } = guardedSteps();

  /** `prestage ARGS` in the test's folder, against the server when there is one. */
  const cli = (args: readonly string[], cwd = dir): Promise<Run> => prestage(args, { cwd, env: { PRESTAGE_URL: serve?.url, PRESTAGE_TOKEN: serve?.token } });
  const ok = async (args: readonly string[], cwd = dir): Promise<string> => {
    const r = await cli(args, cwd);
    assert.equal(r.code, 0, `prestage ${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
    return r.stdout;
  };
  const template = async (): Promise<Template> => {
    const r = await serve!.call<Template>('GET', '/v1/templates/web-berlin');
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body;
  };
  /** Only the outputs asked for: no staging directory or partial file is left. */
  const assertOnly = (names: string[]) => assert.deepEqual(readdirSync(dir).filter((n) => n !== 'data' && n !== 'keys').sort(), [...names].sort());

  before(async () => {
    try {
      requireTools('sfdisk', 'mke2fs', 'debugfs', 'e2fsck', 'xorriso');
      kernelFile = (await checkBootTools()).vmlinuz; // qemu, busybox-static, the cloud kernel, kmod
      ensureBuilt();
      dir = await makeTempDir('prestage-demo-');
      serve = await startServe(join(dir, 'data'));
    } catch (e) {
      setupFailed(e);
    }
  });

  after(async () => {
    await serve?.kill('SIGTERM');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  step('builds a sparse 256 MiB GPT disk: partition 1 ext4 rootfs with a Debian-like tree, partition 2 cidata empty', async () => {
    const made = parse<Made>(await cli(['demo-image', 'demo.raw', '--json']));
    const disk = join(dir, 'demo.raw');
    assert.equal(made.path, disk);
    assert.equal(made.sizeBytes, 256 << 20);
    assert.equal(statSync(disk).size, 256 << 20);
    assert.ok(statSync(disk).blocks * 512 < 64 << 20, 'sparse');
    assert.equal(made.bootable, false);
    assert.deepEqual(made.next, ['prestage image import debian-12 demo.raw', 'prestage template apply examples/templates/web.yaml']);
    assert.equal(made.qemu, undefined);

    const table = sfdiskJson(disk);
    assert.equal(table.label, 'gpt');
    assert.deepEqual(
      table.partitions.map((p) => [p.start, p.size, p.name]),
      [
        [ROOT.start, ROOT.size, 'root'],
        [CIDATA.start, CIDATA.size, 'cidata'],
      ],
    );
    assert.deepEqual(
      made.partitions.map((p) => [p.number, p.name, p.startBytes, p.sizeBytes, p.filesystem, p.label]),
      [
        [1, 'root', ROOT.start * 512, ROOT.size * 512, 'ext', 'rootfs'],
        [2, 'cidata', CIDATA.start * 512, CIDATA.size * 512, 'unknown', undefined],
      ],
    );

    assert.match(extCat(disk, ROOT, '/etc/os-release').toString(), /^PRETTY_NAME="prestage demo image \(Debian 12 layout\)"$/m);
    assert.match(extCat(disk, ROOT, '/etc/machine-id').toString(), /^[0-9a-f]{32}\n$/);
    for (const f of ['/etc/hostname', '/etc/ssh/ssh_host_ed25519_key', '/etc/ssh/ssh_host_rsa_key.pub', '/etc/systemd/timesyncd.conf', '/etc/resolv.conf']) {
      assert.equal(extStat(disk, ROOT, f)?.type, 'regular', f);
    }
    assert.deepEqual([extStat(disk, ROOT, '/root/.ssh')?.type, extStat(disk, ROOT, '/root/.ssh')?.mode], ['directory', 0o700]);
    assert.equal(extStat(disk, ROOT, '/var/lib/cloud')?.type, 'directory');
    assert.equal(extStat(disk, ROOT, '/var/lib/dbus/machine-id')?.type, 'symlink');
    const key = extStat(disk, ROOT, '/etc/ssh/ssh_host_ed25519_key');
    assert.deepEqual([key?.mode, key?.uid, key?.gid], [0o600, 0, 0], 'owned by root whoever built it');
    assert.equal(e2fsck(disk, ROOT).code, 0);
    assertOnly(['demo.raw']);

    // Without --json: what was made, in words.
    const text = await ok(['demo-image', 'text.raw']);
    assert.match(text, /^made text\.raw: 256\.0 MiB sparse raw disk \([0-9.]+ MiB allocated\), GPT$/m);
    assert.match(text, /^\s+1\s+root\s+1\.0 MiB\s+250\.0 MiB\s+ext4 'rootfs'\s+root filesystem/m);
    assert.match(text, /^\s+2\s+cidata\s+251\.0 MiB\s+4\.0 MiB\s+none yet\s+empty, for the seed ISO/m);
    assert.match(text, /^ {2}prestage image import debian-12 text\.raw$/m);
    await rm(join(dir, 'text.raw'));
  });

  step('is the debian-12 that examples/templates/web.yaml builds on, as the README applies it', async () => {
    const disk = join(dir, 'demo.raw');
    const goldenSha = sha256(disk);
    assert.match(await ok(['image', 'import', 'debian-12', 'demo.raw']), /^imported debian-12@1 /);
    // From the repository's root, the path as the README writes it.
    assert.match(await ok(['template', 'apply', 'examples/templates/web.yaml'], REPO), /^built web-berlin@1 in \d+ ms\n$/);
    const built = (await template()).versions[0]!.volume;
    assert.equal(extCat(built, ROOT, '/etc/resolv.conf').toString(), 'search ber.example.net\nnameserver 10.40.0.53\nnameserver 10.40.1.53\noptions timeout:2 attempts:2\n');
    assert.match(extCat(built, ROOT, '/root/.ssh/authorized_keys').toString(), /^ssh-ed25519 \S+ ops@ber\.example\.net\n$/);
    assert.match(extCat(built, ROOT, '/etc/cloud/cloud.cfg.d/90-prestage.cfg').toString(), /datasource_list: \[NoCloud, None\]/);
    for (const gone of ['/etc/machine-id', '/var/lib/dbus/machine-id', '/etc/ssh/ssh_host_ed25519_key', '/etc/ssh/ssh_host_rsa_key.pub']) assert.equal(extStat(built, ROOT, gone), undefined, gone);
    assert.equal(await isoVolumeId(built, CIDATA), 'cidata', 'the seed ISO went to the cidata partition');
    assert.equal(e2fsck(built, ROOT).code, 0);
    assert.equal(sha256(disk), goldenSha, 'the local file is untouched');
  });

  step('--bootable: the kernel and initramfs next to OUT, and the qemu command it prints boots a provisioned copy', async () => {
    const made = parse<Made>(await cli(['demo-image', '--bootable', 'boot.raw', '--json']));
    assert.equal(made.bootable, true);
    assert.deepEqual([made.kernel?.path, made.initrd?.path], [join(dir, 'boot.raw.vmlinuz'), join(dir, 'boot.raw.initrd')]);
    assert.deepEqual(await readFile(join(dir, 'boot.raw.vmlinuz')), await readFile(kernelFile), 'the installed cloud kernel');
    const names = cpioNames(await readFile(join(dir, 'boot.raw.initrd')));
    for (const n of ['init', 'bin/busybox', 'dev/console', 'lib/modules/virtio_blk.ko', 'lib/modules/virtio_pci.ko']) assert.ok(names.includes(n), `${n} in ${names.join(' ')}`);
    assert.equal(extStat(join(dir, 'boot.raw'), ROOT, `/boot/${kernelFile.split('/').at(-1)}`)?.type, 'regular', 'the image carries its kernel too');
    assert.equal(made.qemu, [
      'qemu-system-x86_64 -accel tcg -m 512 -nographic -no-reboot -nic none',
      "-kernel boot.raw.vmlinuz -initrd boot.raw.initrd -append 'console=ttyS0 root=/dev/vda1 quiet panic=-1'",
      '-object tls-creds-psk,id=t0,endpoint=client,dir=KEYDIR,username=HOST',
      '-drive driver=nbd,host=ADDR,port=PORT,export=COPY,tls-creds=t0,if=virtio',
    ].join(' '));
    const text = await ok(['demo-image', '--bootable', 'boot.raw', '--force']);
    assert.ok(text.includes(`\n  ${made.qemu}\n`), `the command line, printed for a person too:\n${text}`);
    assertOnly(['demo.raw', 'boot.raw', 'boot.raw.vmlinuz', 'boot.raw.initrd']);

    // The README's flow: a new debian-12 rebuilds web-berlin; a host gets a copy of it and boots it.
    assert.match(await ok(['image', 'import', 'debian-12', 'boot.raw']), /^imported debian-12@2 /);
    await waitFor('web-berlin@2, rebuilt on debian-12@2', async () => (await template()).versions.some((v) => v.ref === 'web-berlin@2'), 60_000, 100);
    await ok(['host', 'add', 'web-017', '--var', 'hostname=web-017', '--var', 'address=10.40.8.17/24', '--var', 'ssh_key=ssh-ed25519 AAAA team@example']);
    const p = parse<Provision>(await cli(['provision', 'web-017', 'web-berlin@2', '--json']));
    await mkdir(join(dir, 'keys'));
    await ok(['host', 'key', 'web-017', '--out', join('keys', 'keys.psk')]);
    const u = new URL(p.access.uri);
    const qemu = made.qemu
      .replace('dir=KEYDIR', 'dir=keys')
      .replace('username=HOST', 'username=web-017')
      .replace('host=ADDR', `host=${u.hostname}`)
      .replace('port=PORT', `port=${u.port}`)
      .replace('export=COPY', `export=${p.access.exportName}`);
    const boot = spawnSync('bash', ['-c', `timeout --kill-after=5 120 ${qemu}`], { cwd: dir, encoding: 'utf8', env: { ...process.env, PATH: SBIN_PATH } });
    const out = `${boot.stdout}${boot.stderr}`.replace(/\r/g, '');
    assert.equal(boot.status, 0, `qemu exit ${boot.status}:\n${out}`);
    assert.ok(out.includes(DEMO_CONSOLE.done), out);
    assert.match(out, /^PRETTY_NAME="prestage demo image \(Debian 12 layout\)"$/m);
    assert.match(out, /^---- \/etc\/resolv\.conf\nsearch ber\.example\.net\nnameserver 10\.40\.0\.53$/m, 'the file the template wrote');
    assert.match(out, /^---- \/etc\/machine-id: absent/m, 'removed by the template');
    assert.match(out, /^---- cloud-init seed on \/dev\/vda2: meta-data user-data $/m);
    assert.match(out, /^timezone: Europe\/Berlin$/m, "the seed's user-data");
    assert.match(out, /^==== this disk has now been booted 1 time\(s\)/m);
  });

  step('refuses an existing OUT without --force (exit 4, nothing changed) and replaces it with --force', async () => {
    const disk = join(dir, 'demo.raw');
    const before = sha256(disk);
    const r = await cli(['demo-image', 'demo.raw']);
    assert.equal(r.code, EXIT_CODES.PRESTAGE_CONFLICT);
    assertOneErrorLine(r, /demo\.raw already exists: give --force to replace it$/);
    assert.equal(sha256(disk), before);
    // --bootable also counts the kernel and initrd it would write.
    await writeFile(join(dir, 'other.raw.initrd'), 'mine');
    const b = await cli(['demo-image', '--bootable', 'other.raw']);
    assert.equal(b.code, EXIT_CODES.PRESTAGE_CONFLICT);
    assertOneErrorLine(b, /other\.raw\.initrd already exists/);
    assert.equal(existsSync(join(dir, 'other.raw')), false);
    await rm(join(dir, 'other.raw.initrd'));

    const machineId = extCat(disk, ROOT, '/etc/machine-id').toString();
    await ok(['demo-image', 'demo.raw', '--force']);
    assert.notEqual(extCat(disk, ROOT, '/etc/machine-id').toString(), machineId, 'a new image, with its own machine-id');
    assert.equal(e2fsck(disk, ROOT).code, 0);

    const small = await cli(['demo-image', '--size', '10MiB', 'small.raw']);
    assert.equal(small.code, EXIT_CODES.PRESTAGE_INPUT);
    assertOneErrorLine(small, /--size: the demo disk must be between 64 MiB and 1 TiB/);
    assertOnly(['demo.raw', 'boot.raw', 'boot.raw.vmlinuz', 'boot.raw.initrd']);
  });

  step('names the apt package of a missing tool, kernel or busybox; a failing tool leaves nothing behind', async () => {
    const empty = join(dir, 'empty-bin');
    await mkdir(empty);
    const out = join(dir, 'missing.raw');
    await assert.rejects(buildDemoDisk({ out, toolDirs: [empty] }), { code: 'PRESTAGE_UNAVAILABLE', message: 'sfdisk, mke2fs, debugfs not installed: apt-get install fdisk e2fsprogs' });
    await assert.rejects(buildDemoDisk({ out, bootable: true, bootDir: empty }), { code: 'PRESTAGE_UNAVAILABLE', message: /cloud-amd64\) is not installed: apt-get install linux-image-cloud-amd64$/ });
    await assert.rejects(buildDemoDisk({ out, bootable: true, busybox: join(empty, 'busybox') }), { code: 'PRESTAGE_UNAVAILABLE', message: /apt-get install busybox-static$/ });

    // mke2fs fails after the table is written: no OUT, no staging directory.
    const fake = join(dir, 'fake-bin');
    await mkdir(fake);
    for (const tool of ['sfdisk', 'debugfs']) await symlink(execFileSync('bash', ['-c', `PATH="${SBIN_PATH}" command -v ${tool}`], { encoding: 'utf8' }).trim(), join(fake, tool));
    await writeFile(join(fake, 'mke2fs'), '#!/bin/sh\necho "mke2fs: simulated failure" >&2\nexit 1\n');
    await chmod(join(fake, 'mke2fs'), 0o755);
    await assert.rejects(buildDemoDisk({ out, toolDirs: [fake] }), { code: 'PRESTAGE_INTERNAL', message: 'mke2fs failed (exit 1): mke2fs: simulated failure' });
    await rm(empty, { recursive: true });
    await rm(fake, { recursive: true });
    assertOnly(['demo.raw', 'boot.raw', 'boot.raw.vmlinuz', 'boot.raw.initrd']);
  });
});
