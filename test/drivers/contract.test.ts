/**
 * The VolumeDriver contract, one test body run on every driver: the file driver on this machine's
 * /tmp and the RBD driver on a throwaway single-node Ceph cluster (test/helpers/ceph.ts). What the
 * core relies on, whatever stores the volumes: imports hash and deduplicate, copies read as their
 * image and never write through to it, devices read back what was written, scratch files are local
 * and removed like copies, bad input leaves nothing behind.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BadImageError, ConflictError, type BlockDevice, type ImportedVolume, type VolumeDriver } from '../../src/domain/index.js';
import { FileDriver } from '../../src/drivers/index.js';
import { RbdDriver } from '../../src/drivers/rbd/index.js';
import { startCeph, type CephCluster } from '../helpers/ceph.js';
import { makeTempDir, sha256File, writeSparseFile } from '../helpers/files.js';

const MiB = 1024 * 1024;

interface DriverUnderTest {
  readonly driver: VolumeDriver;
  close(): Promise<void>;
}

const DRIVERS: readonly { readonly name: string; open(dir: string): Promise<DriverUnderTest> }[] = [
  {
    name: 'file',
    async open(dir) {
      const driver = await FileDriver.open({ dataDir: join(dir, 'data'), reflink: 'never' });
      return { driver, close: () => driver.close() };
    },
  },
  {
    name: 'rbd',
    async open(dir) {
      const ceph: CephCluster = await startCeph();
      try {
        const driver = await RbdDriver.open({ confPath: ceph.confPath, pool: ceph.pool, id: ceph.id, stagingDir: join(dir, 'staging') });
        return {
          driver,
          close: async () => {
            await driver.close();
            await ceph.stop();
          },
        };
      } catch (e) {
        await ceph.stop();
        throw e;
      }
    },
  },
];

/** sha256 of a device's bytes, read through the device in 1 MiB requests (the last one short). */
async function deviceSha256(device: BlockDevice): Promise<string> {
  const hash = createHash('sha256');
  for (let off = 0; off < device.size; off += MiB) {
    const chunk = Buffer.alloc(Math.min(MiB, device.size - off));
    await device.read(chunk, off);
    hash.update(chunk);
  }
  return hash.digest('hex');
}

for (const kind of DRIVERS) {
  describe(`VolumeDriver contract: ${kind.name}`, { concurrency: false }, () => {
    let dir: string;
    let under: DriverUnderTest;
    let driver: VolumeDriver;
    let src: string;
    let image: ImportedVolume;

    before(async () => {
      dir = await makeTempDir(`prestage-contract-${kind.name}-`);
      under = await kind.open(dir);
      driver = under.driver;
      src = join(dir, 'golden.raw');
      // Sparse, with data at both ends and an odd tail: size not a multiple of 1 MiB.
      await writeSparseFile(src, 24 * MiB + 12_288, [
        { offset: 0, length: MiB },
        { offset: 9 * MiB + 512, length: 300_000 },
        { offset: 24 * MiB, length: 12_288 },
      ]);
    });
    after(async () => {
      await under?.close();
      await rm(dir, { recursive: true, force: true });
    });

    it('imports an image: its sha256, its size, deduplicated by content', async () => {
      const progress: number[] = [];
      image = await driver.importImage(src, (p) => progress.push(p.doneBytes));
      assert.equal(image.sha256, await sha256File(src));
      assert.equal(image.sizeBytes, 24 * MiB + 12_288);
      assert.equal(image.format, 'raw');
      assert.ok(await driver.volumeExists(image.volume));
      assert.ok((await driver.listImageVolumes()).includes(image.volume));
      assert.ok(progress.length > 0 && progress.every((n, i) => i === 0 || n >= progress[i - 1]!), 'progress is monotonic');
      const again = await driver.importImage(src);
      assert.equal(again.volume, image.volume);
      assert.equal((await driver.listImageVolumes()).filter((v) => v === image.volume).length, 1);
    });

    it('makes a copy that reads as its image; writes to it reach neither the image nor another copy', async () => {
      const a = await driver.makeCopy(image, 'contract-a');
      await driver.makeCopy(image, 'contract-b');
      assert.ok(typeof a.method === 'string' && a.method !== '');
      const volA = driver.copyVolumeFor('contract-a', image);
      const devA = await driver.openVolume(volA, { readOnly: false });
      try {
        assert.equal(devA.size, image.sizeBytes);
        assert.equal(await deviceSha256(devA), image.sha256);
        const data = randomBytes(8192);
        await devA.write(data, 4 * MiB);
        await devA.zero(0, 65_536, true);
        await devA.flush();
        const back = Buffer.alloc(8192);
        await devA.read(back, 4 * MiB);
        assert.deepEqual(back, data);
        const zeros = Buffer.alloc(65_536, 1);
        await devA.read(zeros, 0);
        assert.ok(zeros.every((b) => b === 0), 'zeroed range reads as zeros');
        const extents = await devA.extents(0, devA.size, 64);
        assert.ok(extents.length >= 1 && extents.length <= 64 && extents.every((e) => e.length > 0));
        assert.ok(extents.reduce((n, e) => n + e.length, 0) <= devA.size);
      } finally {
        await devA.close();
      }
      // Reopened: the write is there; the other copy and a fresh scratch file of the image are untouched.
      const again = await driver.openVolume(volA, { readOnly: true });
      try {
        const back = Buffer.alloc(16);
        await again.read(back, 4 * MiB);
        assert.notDeepEqual(back, Buffer.alloc(16));
      } finally {
        await again.close();
      }
      const devB = await driver.openVolume(driver.copyVolumeFor('contract-b', image), { readOnly: true });
      try {
        assert.equal(await deviceSha256(devB), image.sha256);
      } finally {
        await devB.close();
      }
      const scratch = await driver.scratchFile(image, 'contract-scratch');
      assert.equal(await sha256File(scratch.path), image.sha256, 'the image kept its bytes');
      await writeFile(scratch.path, 'changed', { flag: 'r+' });
      await driver.removeCopy('contract-scratch');
      await assert.rejects(sha256File(scratch.path), /ENOENT/);
    });

    it('refuses a copy id that exists, and lists and removes copies (absent is fine)', async () => {
      await assert.rejects(driver.makeCopy(image, 'contract-a'), ConflictError);
      const listed = (await driver.listCopyVolumes()).map((v) => v.copyId).sort();
      assert.deepEqual(listed.filter((id) => id.startsWith('contract-')), ['contract-a', 'contract-b']);
      await driver.removeCopy('contract-a');
      await driver.removeCopy('contract-b');
      await driver.removeCopy('contract-never');
      assert.deepEqual((await driver.listCopyVolumes()).filter((v) => v.copyId.startsWith('contract-')), []);
      assert.equal(await driver.volumeExists(driver.copyVolumeFor('contract-a', image)), false);
    });

    it('answers space questions with numbers that make sense', async () => {
      const space = await driver.freeSpace();
      assert.ok(space.totalBytes > 0 && space.freeBytes >= 0 && space.freeBytes <= space.totalBytes, JSON.stringify(space));
      const need = await driver.copyBytes(image);
      assert.ok(need >= 0 && need <= image.sizeBytes, `one copy needs ${need}`);
    });

    it('a bad image file is a BadImageError and leaves nothing behind', async () => {
      const before = await driver.listImageVolumes();
      const bad = join(dir, 'bad.qcow2');
      // A qcow2 header that claims a disk its file does not hold.
      const header = Buffer.alloc(512);
      header.write('QFI\xfb', 0, 'latin1');
      header.writeUInt32BE(3, 4);
      header.writeBigUInt64BE(1n << 40n, 24);
      await writeFile(bad, header);
      await assert.rejects(driver.importImage(bad), BadImageError);
      const folder = join(dir, 'a-directory');
      await mkdir(folder);
      await assert.rejects(driver.importImage(folder), BadImageError);
      assert.deepEqual(await driver.listImageVolumes(), before);
      assert.deepEqual(await driver.removeTempFiles(), []);
    });

    it('removes an image once no copy uses it', async () => {
      await driver.removeImage(image.volume);
      assert.equal(await driver.volumeExists(image.volume), false);
      assert.ok(!(await driver.listImageVolumes()).includes(image.volume));
    });
  });
}
