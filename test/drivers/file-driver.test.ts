/**
 * The file driver against real files: ext4 under /tmp for sparse copies, a loop-mounted XFS for
 * reflinks, a tiny tmpfs for a full disk. Needs root, qemu-utils and xfsprogs; a missing tool
 * fails the test, it never skips it.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, describe, it } from 'node:test';
import { BadImageError, ConflictError, InputError, NoSpaceError, PrestageError, type Progress } from '../../src/domain/index.js';
import { FileDriver } from '../../src/drivers/index.js';
import { CopyWorkers, WorkerJobError } from '../../src/drivers/file/copy-workers.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const root = fs.mkdtempSync(join(os.tmpdir(), 'prestage-drivers-'));

function sh(cmd: string): string {
  return execFileSync('bash', ['-euo', 'pipefail', '-c', cmd], { encoding: 'utf8' });
}

/** Fails (never skips) when a tool the test needs is missing. */
function requireTool(tool: string, pkg: string): void {
  const r = spawnSync('bash', ['-c', `command -v ${tool}`]);
  assert.equal(r.status, 0, `${tool} is required for this test: apt-get install ${pkg}`);
}

function sha256sum(path: string): string {
  return sh(`sha256sum '${path}'`).split(' ')[0]!;
}

/** The same by a plain read of every byte; for the GiB files, where coreutils is ~6x slower here. */
function readSha256(path: string): string {
  const hash = createHash('sha256');
  const buf = Buffer.alloc(4 * MiB);
  const fd = fs.openSync(path, 'r');
  try {
    for (let n; (n = fs.readSync(fd, buf)) > 0; ) hash.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return hash.digest('hex');
}

/** Nice values of this process's threads (field 19 of /proc/self/task/TID/stat). */
function threadNices(): number[] {
  return ls('/proc/self/task').map((tid) => {
    const stat = fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
  });
}

const allocated = (path: string): number => fs.statSync(path).blocks * 512;
const ls = (dir: string): string[] => fs.readdirSync(dir);

/**
 * A sparse file of `size` bytes with random data of the given lengths at the given (ascending)
 * offsets. Returns its sha256, computed as it is written: reading GiBs of holes back is slow here.
 */
function sparseFile(path: string, size: number, data: Array<[offset: number, length: number]>): string {
  const hash = createHash('sha256');
  const zeros = Buffer.alloc(4 * MiB);
  const hashZeros = (n: number): void => {
    for (let left = n; left > 0; left -= zeros.length) hash.update(zeros.subarray(0, Math.min(left, zeros.length)));
  };
  const fd = fs.openSync(path, 'w');
  let pos = 0;
  try {
    fs.ftruncateSync(fd, size);
    for (const [offset, length] of data) {
      const bytes = randomFillSync(Buffer.alloc(length));
      fs.writeSync(fd, bytes, 0, length, offset);
      hashZeros(offset - pos);
      hash.update(bytes);
      pos = offset + length;
    }
  } finally {
    fs.closeSync(fd);
  }
  hashZeros(size - pos);
  return hash.digest('hex');
}

/** A fully allocated file of random bytes, written 16 MiB at a time. */
function randomFile(path: string, size: number): void {
  const fd = fs.openSync(path, 'w');
  const chunk = Buffer.alloc(16 * MiB);
  try {
    for (let off = 0; off < size; off += chunk.length) {
      const n = Math.min(chunk.length, size - off);
      fs.writeSync(fd, randomFillSync(chunk, 0, n), 0, n, off);
    }
  } finally {
    fs.closeSync(fd);
  }
}

let randomGiB = '';
before(() => {
  randomGiB = join(root, 'random-1g.raw');
  randomFile(randomGiB, GiB);
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

describe('FileDriver on ext4', () => {
  const dataDir = join(root, 'data');
  let drv: FileDriver;
  before(async () => {
    drv = await FileDriver.open({ dataDir });
  });
  after(() => drv.close());

  it('creates its layout', () => {
    assert.deepEqual(ls(dataDir).sort(), ['copies', 'images', 'tmp']);
  });

  it('imports a raw image: sha256 as sha256sum, sealed 0400, content-addressed, deduplicated', async () => {
    const src = join(root, 'small.raw');
    randomFile(src, 8 * MiB);
    const events: Progress[] = [];
    const im = await drv.importImage(src, (p) => events.push(p));
    assert.equal(im.sha256, sha256sum(src));
    assert.equal(im.sizeBytes, 8 * MiB);
    assert.equal(im.format, 'raw');
    assert.equal(im.volume, join(dataDir, 'images', `${im.sha256}.raw`));
    assert.equal(fs.statSync(im.volume).mode & 0o777, 0o400);
    assert.deepEqual(events.at(-1), { doneBytes: 8 * MiB, totalBytes: 8 * MiB });
    assert.ok(events.every((e, i) => i === 0 || e.doneBytes >= events[i - 1]!.doneBytes), 'progress is monotonic');

    const again = await drv.importImage(src);
    assert.equal(again.volume, im.volume);
    assert.deepEqual(await drv.listImageVolumes(), [im.volume]);
    assert.deepEqual(ls(join(dataDir, 'tmp')), []);
    assert.ok(await drv.volumeExists(im.volume));
  });

  it('imports a qcow2 as the raw it converts to', async () => {
    requireTool('qemu-img', 'qemu-utils');
    requireTool('qemu-io', 'qemu-utils');
    const q = join(root, 'disk.qcow2');
    sh(`qemu-img create -q -f qcow2 '${q}' 16M && qemu-io -c 'write -q -P 0xab 0 1M' '${q}' >/dev/null`);
    sh(`qemu-img convert -f qcow2 -O raw '${q}' '${root}/disk-expected.raw'`);
    const im = await drv.importImage(q);
    assert.equal(im.format, 'qcow2');
    assert.equal(im.sizeBytes, 16 * MiB);
    assert.equal(im.sha256, sha256sum(`${root}/disk-expected.raw`));
    assert.equal(sha256sum(im.volume), im.sha256);
    assert.ok(allocated(im.volume) <= 2 * MiB, 'the converted raw stays sparse');
    assert.deepEqual(ls(join(dataDir, 'tmp')), []);
  });

  it('keeps a sparse 1 GiB image sparse through import and copy', async () => {
    const src = join(root, 'sparse-1g.raw');
    const segment = 2.5 * MiB;
    const sha = sparseFile(src, GiB, [[0, segment], [300 * MiB, segment], [700 * MiB + 4096, segment], [GiB - segment, segment]]);
    const im = await drv.importImage(src);
    assert.equal(im.sha256, sha);
    assert.ok(allocated(im.volume) < 16 * MiB, `image allocates ${allocated(im.volume)} bytes`);

    // A byte copy keeps the holes: what one needs up front is what the image has allocated.
    assert.equal(await drv.copyBytes(im), allocated(im.volume));
    const space = await drv.freeSpace();
    assert.ok(space.freeBytes > 0 && space.freeBytes < space.totalBytes, JSON.stringify(space));

    const progress: Progress[] = [];
    const copy = await drv.makeCopy(im, 'sparse-1', (p) => progress.push(p));
    const path = drv.copyVolumeFor('sparse-1');
    assert.equal(copy.method, 'sparse-copy');
    assert.equal(copy.verified, 'full');
    assert.ok(copy.allocatedBytes < 16 * MiB, `copy allocates ${copy.allocatedBytes} bytes`);
    assert.equal(allocated(path), copy.allocatedBytes);
    assert.equal(readSha256(path), im.sha256);
    assert.equal(fs.statSync(path).size, GiB);
    const last = progress.at(-1)!;
    assert.equal(last.doneBytes, last.totalBytes);
    assert.deepEqual(await drv.listCopyVolumes(), [{ copyId: 'sparse-1', volume: path, partial: false }]);
    console.log(`sparse 1 GiB (10 MiB data) copy: ${copy.durationMs} ms`);
    await drv.removeCopy('sparse-1');
    assert.deepEqual(await drv.listCopyVolumes(), []);
  });

  it('copies 1 GiB of random data (timed)', async () => {
    const im = await drv.importImage(randomGiB);
    const copy = await drv.makeCopy(im, 'random-1');
    assert.equal(copy.method, 'sparse-copy');
    assert.equal(copy.verified, 'full');
    assert.ok(copy.allocatedBytes >= GiB);
    console.log(`1 GiB random-data sparse-copy (copy_file_range + fsync + full sha256 verify): ${copy.durationMs} ms`);
    await drv.removeCopy('random-1');
    await drv.removeImage(im.volume);
    assert.equal(await drv.volumeExists(im.volume), false);
  });

  it('fails a copy that does not verify, leaving no file', async () => {
    const src = join(root, 'verify.raw');
    randomFile(src, 4 * MiB);
    const im = await drv.importImage(src);
    await assert.rejects(drv.makeCopy({ ...im, sha256: '0'.repeat(64) }, 'bad-1'), (e: unknown) => {
      assert.ok(e instanceof PrestageError);
      assert.equal(e.code, 'PRESTAGE_INTERNAL');
      assert.match(e.message, /verification failed/);
      return true;
    });
    await assert.rejects(drv.makeCopy({ ...im, sizeBytes: im.sizeBytes + 512 }, 'bad-2'), /verification failed/);
    assert.deepEqual(ls(join(dataDir, 'copies')), []);
  });

  it('refuses a copy id that exists or is being made, and leaves the other file alone', async () => {
    const im = (await drv.listImageVolumes())[0]!;
    const image = { volume: im, sha256: im.slice(-68, -4), sizeBytes: fs.statSync(im).size };
    const partial = `${drv.copyVolumeFor('dup')}.partial`;
    fs.writeFileSync(partial, 'someone else');
    await assert.rejects(drv.makeCopy(image, 'dup'), ConflictError);
    assert.equal(fs.readFileSync(partial, 'utf8'), 'someone else');
    assert.deepEqual(await drv.listCopyVolumes(), [{ copyId: 'dup', volume: partial, partial: true }]);
    await drv.removeCopy('dup');
    assert.deepEqual(ls(join(dataDir, 'copies')), []);

    const a = drv.makeCopy(image, 'twice');
    await assert.rejects(drv.makeCopy(image, 'twice'), ConflictError);
    await a;
    await drv.removeCopy('twice');
  });

  it('rejects bad ids and foreign volumes', async () => {
    assert.throws(() => drv.copyVolumeFor('../x'), InputError);
    assert.throws(() => drv.copyVolumeFor(''), InputError);
    await assert.rejects(drv.removeImage('/etc/passwd'), InputError);
    await assert.rejects(drv.removeImage(join(dataDir, 'copies', `${'a'.repeat(64)}.raw`)), InputError);
  });
});

describe('FileDriver with --copy-rate', () => {
  const dataDir = join(root, 'data-rate');
  const rate = 32 * MiB;
  let drv: FileDriver;
  before(async () => {
    drv = await FileDriver.open({ dataDir, workers: 2, copyRateBytesPerSec: rate });
  });
  after(() => drv.close());

  it('two copies at once move no more than the cap together (copy and verification), and still verify', async () => {
    const src = join(root, 'rate.raw');
    randomFile(src, 16 * MiB);
    const im = await drv.importImage(src); // imports are not capped: the operator asked for them
    const t0 = performance.now();
    const copies = await Promise.all([drv.makeCopy(im, 'rate-1'), drv.makeCopy(im, 'rate-2')]);
    const seconds = (performance.now() - t0) / 1000;
    for (const c of copies) assert.equal(c.verified, 'full');
    for (const id of ['rate-1', 'rate-2']) assert.equal(readSha256(drv.copyVolumeFor(id)), im.sha256);
    // 2 copies × (16 MiB copied + 16 MiB hashed) = 64 MiB; the first chunk of each worker is free.
    const capped = (64 * MiB - 2 * 16 * MiB) / rate;
    assert.ok(seconds >= capped * 0.95, `64 MiB moved in ${seconds.toFixed(2)} s under a ${rate / MiB} MiB/s cap (at least ${capped} s)`);
    console.log(`2 × 16 MiB copies at --copy-rate 32MiB: ${seconds.toFixed(2)} s`);
  });
});

describe('FileDriver rejects bad image files', () => {
  const dataDir = join(root, 'bad-data');
  const dir = join(root, 'bad');
  let drv: FileDriver;
  before(async () => {
    requireTool('qemu-img', 'qemu-utils');
    requireTool('qemu-io', 'qemu-utils');
    fs.mkdirSync(dir);
    drv = await FileDriver.open({ dataDir });
    fs.writeFileSync(join(dir, 'truncated.raw'), Buffer.alloc(1000, 1));
    fs.writeFileSync(join(dir, 'empty.raw'), '');
    fs.mkdirSync(join(dir, 'a-directory'));
    const q = join(dir, 'whole.qcow2');
    sh(`qemu-img create -q -f qcow2 '${q}' 16M && qemu-io -c 'write -q -P 0xab 0 1M' '${q}' >/dev/null`);
    sh(`head -c 300000 '${q}' > '${dir}/truncated.qcow2' && head -c 100 '${q}' > '${dir}/header.qcow2'`);
    sh(`qemu-img create -q -f qcow2 -b '${q}' -F qcow2 '${dir}/overlay.qcow2'`);
  });
  after(() => drv.close());

  const cases: Array<[string, RegExp]> = [
    ['truncated.raw', /not a multiple of 512.*truncated/],
    ['missing.raw', /no such file/],
    ['a-directory', /not a regular file/],
    ['empty.raw', /empty/],
    ['truncated.qcow2', /qemu-img check: ERROR.*exceeding the end of the file/],
    ['header.qcow2', /qcow2 v3 header is truncated/],
    ['overlay.qcow2', /backing file/],
  ];
  for (const [name, message] of cases) {
    it(`${name} → BadImageError, nothing left behind`, async () => {
      await assert.rejects(drv.importImage(join(dir, name)), (e: unknown) => {
        assert.ok(e instanceof BadImageError, String(e));
        assert.match(e.message, message);
        return true;
      });
      assert.deepEqual(ls(join(dataDir, 'tmp')), []);
      assert.deepEqual(ls(join(dataDir, 'images')), []);
    });
  }
});

describe('FileDriver on XFS with reflink', () => {
  const img = join(root, 'xfs.img');
  const mnt = join(root, 'xfs');
  let mounted = false;
  let drv: FileDriver | undefined;
  before(async () => {
    requireTool('mkfs.xfs', 'xfsprogs');
    requireTool('xfs_io', 'xfsprogs');
    fs.mkdirSync(mnt);
    sh(`truncate -s 2G '${img}' && mkfs.xfs -q -m reflink=1 '${img}' && mount -o loop '${img}' '${mnt}'`);
    mounted = true;
    drv = await FileDriver.open({ dataDir: join(mnt, 'data') });
  });
  after(async () => {
    await drv?.close();
    if (mounted) sh(`umount '${mnt}'`);
    fs.rmSync(img, { force: true });
  });

  it('clones 1 GiB: method reflink, extents shared, sampled verification', async () => {
    const im = await drv!.importImage(randomGiB);
    // A clone shares the image's blocks: it needs next to nothing before it is ready.
    assert.ok((await drv!.copyBytes(im)) <= MiB, 'a clone is counted as metadata only');
    assert.deepEqual(fs.readdirSync(join(mnt, 'data', 'copies')), [], 'the reflink probe left nothing');
    const copy = await drv!.makeCopy(im, 'clone-1');
    const path = drv!.copyVolumeFor('clone-1');
    assert.equal(copy.method, 'reflink');
    assert.equal(copy.verified, 'sample');
    // xfs_io fiemap -v prints each extent's flags in hex; 0x2000 is FIEMAP_EXTENT_SHARED.
    const extents = sh(`xfs_io -r -c 'fiemap -v' '${path}'`).split('\n').filter((l) => /^\s*\d+:/.test(l) && !l.includes('hole'));
    assert.ok(extents.length > 0, 'the copy has extents');
    for (const line of extents) {
      const flags = Number.parseInt(line.trim().split(/\s+/).at(-1)!, 16);
      assert.ok((flags & 0x2000) !== 0, `extent not shared: ${line}`);
    }
    assert.equal(readSha256(path), im.sha256);
    console.log(`1 GiB reflink copy (FICLONE + fsync + sampled verify): ${copy.durationMs} ms`);
  });
});

describe('FileDriver on a full disk (48 MiB tmpfs)', () => {
  const mnt = join(root, 'tmpfs');
  const dataDir = join(mnt, 'data');
  let mounted = false;
  let drv: FileDriver | undefined;
  before(async () => {
    fs.mkdirSync(mnt);
    sh(`mount -t tmpfs -o size=48m tmpfs '${mnt}'`);
    mounted = true;
    drv = await FileDriver.open({ dataDir });
  });
  after(async () => {
    await drv?.close();
    if (mounted) sh(`umount '${mnt}'`);
  });

  let keep = '(none)'; // the one image that fits, imported on purpose
  const assertEmpty = (): void => {
    for (const sub of ['tmp', 'images', 'copies']) {
      const left = ls(join(dataDir, sub)).filter((n) => !(sub === 'images' && n.startsWith(keep)));
      assert.deepEqual(left, [], `${sub}/ is clean`);
    }
  };

  it('an import that does not fit → NoSpaceError, nothing left', async () => {
    const src = join(root, 'big-64m.raw');
    randomFile(src, 64 * MiB);
    await assert.rejects(drv!.importImage(src), NoSpaceError);
    assertEmpty();
  });

  it('a copy that does not fit → NoSpaceError, no partial left', async () => {
    const src = join(root, 'mid-30m.raw');
    randomFile(src, 30 * MiB);
    const im = await drv!.importImage(src);
    keep = im.sha256;
    await assert.rejects(drv!.makeCopy(im, 'full-1'), NoSpaceError);
    assertEmpty();
    assert.deepEqual(await drv!.listCopyVolumes(), []);
  });

  it('a qcow2 whose conversion does not fit → NoSpaceError, nothing left', async () => {
    requireTool('qemu-img', 'qemu-utils');
    const q = join(root, 'big.qcow2');
    sh(`qemu-img create -q -f qcow2 '${q}' 64M && qemu-io -c 'write -q -P 0xcd 0 40M' '${q}' >/dev/null`);
    await assert.rejects(drv!.importImage(q), NoSpaceError);
    assertEmpty();
  });
});

describe('CopyWorkers', () => {
  const workerUrl = new URL('./fixtures/fake-worker.ts', import.meta.url);
  const job = (source: string, ms = 0) => ({ kind: 'import', source, tmp: String(ms) }) as const;

  it('runs jobs FIFO when every worker is busy, with progress', async () => {
    const pool = new CopyWorkers({ size: 1, workerUrl });
    try {
      const order: string[] = [];
      const progress: Progress[] = [];
      const runs = ['a', 'b', 'c'].map((s) => pool.run(job(s, 20), (p) => progress.push(p)).then((r) => order.push(r.sha256.split('@')[0]!)));
      await Promise.all(runs);
      assert.deepEqual(order, ['a', 'b', 'c']);
      assert.equal(progress.length, 3);
    } finally {
      await pool.close();
    }
  });

  it('replaces a crashed worker and rejects only its job', async () => {
    const pool = new CopyWorkers({ size: 1, workerUrl });
    try {
      const first = await pool.run(job('before'));
      const crashed = pool.run(job('crash'));
      const queued = pool.run(job('after'));
      await assert.rejects(crashed, /copy worker died: boom/);
      const second = await queued;
      assert.notEqual(second.sha256.split('@')[1], first.sha256.split('@')[1], 'a new worker thread ran it');
    } finally {
      await pool.close();
    }
  });

  it('close() rejects queued and running jobs', async () => {
    const pool = new CopyWorkers({ size: 1, workerUrl });
    const running = assert.rejects(pool.run(job('slow', 5000)), /closed/);
    const queued = assert.rejects(pool.run(job('queued')), /closed/);
    await new Promise((r) => setTimeout(r, 50));
    await pool.close();
    await Promise.all([running, queued]);
    await assert.rejects(pool.run(job('late')), /closed/);
  });

  it('runs the real worker at nice 10 and reports a failed job with its errno code', async () => {
    const before = threadNices().filter((n) => n === 10).length;
    const pool = new CopyWorkers({ size: 1 });
    try {
      await assert.rejects(pool.run({ kind: 'import', source: join(root, 'nope'), tmp: join(root, 'nope.tmp') }), (e: unknown) => {
        assert.ok(e instanceof WorkerJobError);
        assert.equal(e.code, 'ENOENT');
        return true;
      });
      assert.equal(threadNices().filter((n) => n === 10).length, before + 1, 'the worker thread runs at nice 10');
    } finally {
      await pool.close();
    }
  });

  it('starts TypeScript workers from a process that registered tsx through tsx/esm/api (bin/ style)', () => {
    const src = join(root, 'bin-style.raw');
    const sha = sparseFile(src, 4 * MiB, [[MiB, MiB]]);
    const driverUrl = new URL('../../src/drivers/index.ts', import.meta.url).href;
    const script = `
      import { register } from 'tsx/esm/api';
      register();
      const { FileDriver } = await import(${JSON.stringify(driverUrl)});
      const drv = await FileDriver.open({ dataDir: ${JSON.stringify(join(root, 'bin-data'))} });
      const im = await drv.importImage(${JSON.stringify(src)});
      const copy = await drv.makeCopy(im, 'bin-1');
      await drv.close();
      console.log(JSON.stringify({ sha256: im.sha256, method: copy.method }));`;
    const env = { ...process.env };
    delete env.NODE_OPTIONS;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: new URL('../..', import.meta.url).pathname, env, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { sha256: sha, method: 'sparse-copy' });
  });
});
