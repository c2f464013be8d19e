/**
 * A realistic golden image for the template bench: a GPT raw disk whose first partition
 * ("root") holds an ext4 root filesystem made with `mke2fs -d` from a staged tree — a generated
 * /etc (os-release, machine-id, SSH host keys, resolv.conf as a symlink into /run, …) and a
 * slice of this machine's own /usr/bin, /usr/lib and /usr/share up to a byte budget — and whose
 * last partition ("cidata") is a small empty one a template's cloud-init seed can be written to.
 *
 * A new golden version is the same disk with a few files changed in place with `debugfs -w`,
 * as a package update would.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, open, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const SECTOR = 512;
const TOOL_ENV = { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin`, DEBUGFS_PAGER: '__none__', MTOOLS_SKIP_CHECK: '1' };

/** Runs a bash script (errexit, pipefail); its output comes back, its failure throws with stderr. */
async function sh(script: string): Promise<string> {
  try {
    const { stdout } = await run('bash', ['-euo', 'pipefail', '-c', script], { env: TOOL_ENV, maxBuffer: 64 * MiB });
    return stdout;
  } catch (e) {
    const err = e as { stderr?: string; message?: string };
    throw new Error(`${script.split('\n')[0]}…: ${(err.stderr ?? '').trim() || err.message}`, { cause: e });
  }
}

export interface Partition {
  /** Byte offset and size inside the disk. */
  readonly offset: number;
  readonly size: number;
}

export interface GoldenDisk {
  readonly path: string;
  readonly sizeBytes: number;
  readonly root: Partition;
  readonly cidata: Partition;
  /** Bytes and count of the files staged into the root filesystem. */
  readonly contentBytes: number;
  readonly files: number;
}

export interface GoldenOptions {
  readonly diskMiB: number;
  /** Bytes of files (roughly) in the root filesystem. */
  readonly contentMiB: number;
  /** What /etc/golden-release says (the version the bench gives it). */
  readonly release: string;
}

/** Where the content comes from, and the share of the budget each gets. */
const SOURCES: readonly (readonly [string, number])[] = [
  ['/usr/bin', 0.15],
  ['/usr/lib', 0.45],
  ['/usr/share', 0.4],
];

/**
 * Regular files and symlinks under `dir`, walked in name order (so one machine gives one list),
 * until `budget` bytes; unreadable directories are skipped. Paths are relative to /.
 */
async function collect(dir: string, budget: number, out: string[]): Promise<number> {
  let used = 0;
  const walk = async (d: string): Promise<boolean> => {
    let names: string[];
    try {
      names = (await readdir(d)).sort();
    } catch {
      return true;
    }
    for (const name of names) {
      const p = join(d, name);
      let st;
      try {
        st = await lstat(p);
      } catch {
        continue;
      }
      if (st.isDirectory()) {
        if (!(await walk(p))) return false;
      } else if (st.isSymbolicLink() || st.isFile()) {
        if (st.isFile() && used + st.size > budget) {
          if (used >= budget * 0.98) return false;
          continue;
        }
        out.push(p.slice(1));
        used += st.isFile() ? st.size : 0;
      }
    }
    return true;
  };
  await walk(dir);
  return used;
}

/** The generated part of the tree: what a cloud image's /etc, /root and /var hold that a template changes. */
async function writeEtc(root: string, release: string): Promise<void> {
  const file = async (path: string, content: string | Buffer, mode = 0o644) => {
    const p = join(root, path);
    await mkdir(join(p, '..'), { recursive: true });
    await writeFile(p, content, { mode });
  };
  await file('etc/os-release', 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nVERSION="12 (bookworm)"\nID=debian\n');
  await file('etc/golden-release', `${release}\n`);
  await file('etc/hostname', 'debian\n');
  await file('etc/hosts', '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n');
  await file('etc/machine-id', `${randomBytes(16).toString('hex')}\n`, 0o444);
  await file('var/lib/dbus/machine-id', `${randomBytes(16).toString('hex')}\n`, 0o444);
  await file('etc/passwd', 'root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n_chrony:x:100:101::/var/lib/chrony:/usr/sbin/nologin\n');
  await file('etc/group', 'root:x:0:\ndaemon:x:1:\nsudo:x:27:\n_chrony:x:101:\n');
  await file('etc/shadow', 'root:*:19700:0:99999:7:::\ndaemon:*:19700:0:99999:7:::\n', 0o640);
  await file('etc/motd', '\nThe programs included with the Debian GNU/Linux system are free software.\n');
  await file('etc/systemd/timesyncd.conf', '[Time]\n#NTP=\n#FallbackNTP=0.debian.pool.ntp.org 1.debian.pool.ntp.org\n');
  await file('etc/chrony/chrony.conf', 'pool 2.debian.pool.ntp.org iburst\ndriftfile /var/lib/chrony/chrony.drift\nmakestep 1 3\nrtcsync\n');
  await file('etc/cloud/cloud.cfg', 'users:\n  - default\ndisable_root: true\npreserve_hostname: false\n');
  await file('etc/ssh/sshd_config', 'Include /etc/ssh/sshd_config.d/*.conf\nKbdInteractiveAuthentication no\nUsePAM yes\nX11Forwarding yes\n');
  for (const type of ['rsa', 'ecdsa', 'ed25519']) {
    const key = randomBytes(type === 'rsa' ? 1200 : 120).toString('base64');
    await file(`etc/ssh/ssh_host_${type}_key`, `-----BEGIN OPENSSH PRIVATE KEY-----\n${key.replace(/(.{70})/g, '$1\n')}\n-----END OPENSSH PRIVATE KEY-----\n`, 0o600);
    await file(`etc/ssh/ssh_host_${type}_key.pub`, `ssh-${type} ${randomBytes(type === 'rsa' ? 270 : 51).toString('base64')} root@debian\n`);
  }
  await file('run/resolv.conf', 'nameserver 10.0.2.3\n');
  await symlink('../run/resolv.conf', join(root, 'etc/resolv.conf'));
  await mkdir(join(root, 'root'), { recursive: true, mode: 0o700 });
  for (const d of ['home', 'tmp', 'var/log', 'var/lib/cloud', 'proc', 'sys', 'dev']) await mkdir(join(root, d), { recursive: true });
}

/** GPT: 1 "root" (Linux filesystem) from 1 MiB up to the 8 MiB "cidata" partition at the end. */
function layout(diskMiB: number): { root: Partition; cidata: Partition } {
  const total = (diskMiB * MiB) / SECTOR;
  const cidataSectors = (8 * MiB) / SECTOR;
  // Room for the backup GPT (33 sectors) after the last partition; starts aligned to 1 MiB.
  const cidataStart = Math.floor((total - 34 - cidataSectors) / 2048) * 2048;
  return {
    root: { offset: 2048 * SECTOR, size: (cidataStart - 2048) * SECTOR },
    cidata: { offset: cidataStart * SECTOR, size: cidataSectors * SECTOR },
  };
}

/** Builds the golden disk `path`; its staging tree is made in `workDir` and removed. */
export async function makeGoldenDisk(path: string, workDir: string, o: GoldenOptions): Promise<GoldenDisk> {
  const stage = join(workDir, 'rootfs');
  await rm(stage, { recursive: true, force: true });
  await mkdir(stage, { recursive: true });
  try {
    const list: string[] = [];
    let contentBytes = 0;
    for (const [dir, share] of SOURCES) contentBytes += await collect(dir, o.contentMiB * MiB * share, list);
    const listFile = join(workDir, 'rootfs.list');
    await writeFile(listFile, list.map((p) => `${p}\0`).join(''));
    await sh(`tar -C / --null --no-recursion -T '${listFile}' -cf - | tar -C '${stage}' -xf -`);
    await rm(listFile);
    await writeEtc(stage, o.release);

    const { root, cidata } = layout(o.diskMiB);
    await sh(`rm -f '${path}'; truncate -s ${o.diskMiB}M '${path}'
      printf 'label: gpt\\n%s\\n%s\\n' \\
        'start=${root.offset / SECTOR}, size=${root.size / SECTOR}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="root"' \\
        'start=${cidata.offset / SECTOR}, size=${cidata.size / SECTOR}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="cidata"' | sfdisk -q '${path}'
      mke2fs -q -F -t ext4 -L rootfs -E offset=${root.offset} -d '${stage}' '${path}' ${root.size / 1024}k`);
    return { path, sizeBytes: o.diskMiB * MiB, root, cidata, contentBytes, files: list.length };
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
}

const device = (disk: string, p: Partition) => `${disk}?offset=${p.offset}`;

/**
 * The next golden version: a sparse copy of `from` with /etc/golden-release and an updated
 * "package" file rewritten in place, as an update would; `e2fsck -fn` checks the result.
 */
export async function nextGoldenVersion(from: GoldenDisk, path: string, workDir: string, release: string): Promise<GoldenDisk> {
  const rel = join(workDir, 'golden-release');
  const pkg = join(workDir, 'update.bin');
  const cmds = join(workDir, 'update.debugfs');
  await writeFile(rel, `${release}\n`);
  await writeFile(pkg, randomBytes(4 * MiB));
  await writeFile(
    cmds,
    ['rm /etc/golden-release', `write ${rel} /etc/golden-release`, 'mkdir /usr/share/bench-update', `write ${pkg} /usr/share/bench-update/${release}.bin`, ''].join('\n'),
  );
  const dev = device(path, from.root);
  await sh(`rm -f '${path}'; cp --sparse=always '${from.path}' '${path}'
    debugfs -w -f '${cmds}' '${dev}' >/dev/null
    e2fsck -fn '${dev}' >/dev/null`);
  await Promise.all([rel, pkg, cmds].map((f) => rm(f)));
  return { ...from, path };
}

/** A file of an ext filesystem inside a disk (debugfs cat), or undefined when it is not there. */
export async function extRead(disk: string, p: Partition, file: string): Promise<string | undefined> {
  const out = await sh(`debugfs -R 'stat "${file}"' '${device(disk, p)}' 2>/dev/null | head -1`);
  if (!/^Inode:/.test(out)) return undefined;
  return sh(`debugfs -R 'cat "${file}"' '${device(disk, p)}' 2>/dev/null`);
}

/** The volume label of an ISO 9660 image written at the partition's start, or undefined. */
export async function isoLabel(disk: string, p: Partition): Promise<string | undefined> {
  const fh = await open(disk, 'r');
  try {
    const pvd = Buffer.alloc(2048);
    await fh.read(pvd, 0, pvd.length, p.offset + 16 * 2048);
    if (pvd[0] !== 1 || pvd.toString('latin1', 1, 6) !== 'CD001') return undefined;
    return pvd.toString('latin1', 40, 72).trim();
  } finally {
    await fh.close();
  }
}
