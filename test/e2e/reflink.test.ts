import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { makeTempDir, waitFor, writeRandomFile } from '../helpers/files.js';

const GiB = 1 << 30;

/** xfs_io prints each extent's flags in hex; 0x2000 is FIEMAP_EXTENT_SHARED. */
function sharedExtents(path: string): { total: number; shared: number } {
  const out = execFileSync('xfs_io', ['-r', '-c', 'fiemap -v', path], { encoding: 'utf8' });
  const extents = out.split('\n').filter((l) => /^\s*\d+:/.test(l) && !l.includes('hole'));
  const shared = extents.filter((l) => (Number.parseInt(l.trim().split(/\s+/).at(-1)!, 16) & 0x2000) !== 0);
  return { total: extents.length, shared: shared.length };
}

async function usedBytes(path: string): Promise<number> {
  const s = await statfs(path);
  return (s.blocks - s.bfree) * s.bsize;
}

describe('on a loop-mounted XFS with reflink, through the service', () => {
  let root: string;
  let mnt: string;
  let t: TestApp | undefined;
  before(async () => {
    root = await makeTempDir('prestage-xfs-');
    mnt = join(root, 'mnt');
    await mkdir(mnt);
    const img = join(root, 'xfs.img');
    execFileSync('truncate', ['-s', '3G', img]);
    execFileSync('mkfs.xfs', ['-q', '-m', 'reflink=1', img]);
    execFileSync('mount', ['-o', 'loop', img, mnt]);
    t = await startTestApp({ dataDir: join(mnt, 'data') });
  });
  after(async () => {
    await t?.close();
    // On a loaded machine the kernel may still be releasing the last closed files for a moment.
    for (let i = 0; ; i++) {
      try {
        execFileSync('umount', [mnt], { stdio: 'pipe' });
        break;
      } catch (e) {
        if (i >= 20) throw e;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
    await rm(root, { recursive: true, force: true });
  });

  it('a 1 GiB spare is a reflink that shares its blocks, made in milliseconds', async () => {
    const src = join(root, 'golden.raw');
    await writeRandomFile(src, GiB);
    const img = await t!.call<{ volume: string }>('POST', '/v1/images', { name: 'golden', path: src });
    assert.equal(img.status, 201);
    const before = await usedBytes(mnt);
    await t!.call('PUT', '/v1/pools/golden', { min: 3, max: 3 });
    await waitFor('3 spares', async () => (await t!.call<{ ready: number }>('GET', '/v1/pools/golden')).body.ready === 3, 60_000);
    const grew = (await usedBytes(mnt)) - before;
    assert.ok(grew < GiB / 10, `three 1 GiB copies took ${grew} bytes of new space`);
    const copies = (await t!.call<{ id: string; method: string; copyMs: number; volume: string }[]>('GET', '/v1/copies?state=ready')).body;
    assert.equal(copies.length, 3);
    for (const c of copies) {
      assert.equal(c.method, 'reflink');
      const ext = sharedExtents(c.volume);
      assert.ok(ext.total > 0 && ext.shared === ext.total, `copy ${c.id}: ${ext.shared}/${ext.total} extents shared`);
    }
    const ext = sharedExtents(img.body.volume);
    assert.ok(ext.shared === ext.total, 'the golden shares its blocks with the copies');
    console.log(`# 1 GiB reflink copies, ms (clone + fsync + sampled verify): ${copies.map((c) => c.copyMs).join(', ')}`);
    await t!.call('POST', '/v1/hosts', { id: 'r1' });
    const p = await t!.call<{ outcome: string; access: { path: string } }>('POST', '/v1/hosts/r1/provision', { source: 'golden' });
    assert.equal(p.body.outcome, 'warm');
  });
});
