/**
 * Crashes on Ceph RBD (issue 13): `prestage serve --driver rbd` on a throwaway single-node cluster
 * (test/helpers/ceph.ts, one for the file, a fresh RBD pool per case) is SIGKILLed at every named
 * crash point (src/domain/failpoint.ts: import, copy, claim and export, release, template build
 * and seal, rollover) through the harness of test/helpers/crash-harness.ts, and once with a plain
 * SIGKILL at a random moment in the middle of a 256 MiB import. Each time it is restarted without
 * the point and checked against the Ceph pool itself (test/helpers/rbd-invariants.ts): no RBD
 * image without its row, no row without its image, no snapshot unprotected while clones depend on
 * it, no protected snapshot without its image row, every ready copy a clone of a sealed snapshot,
 * and every golden snapshot's sha256 the one its row recorded; with the rest of the invariants of
 * test/helpers/invariants.ts. Needs root and Debian's ceph packages; a missing tool fails the
 * test, it never skips it.
 */
import assert from 'node:assert/strict';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { FAILPOINTS, type FailpointName } from '../../src/domain/failpoint.js';
import { makeGptDisk } from '../customize/fixtures.js';
import { startCeph, type CephCluster } from '../helpers/ceph.js';
import { died, has, nbdPort, ok, runCrashPoint, type CrashSources } from '../helpers/crash-harness.js';
import { makeTempDir, sha256File, waitFor, writeRandomFile } from '../helpers/files.js';
import { assertInvariants, collectViolations, listCopies, listEvents, waitSettled } from '../helpers/invariants.js';
import { listRbdPool, rbdVolumes, type RbdPoolListing } from '../helpers/rbd-invariants.js';
import { startServe, type ServeProcess } from '../helpers/server.js';

const MiB = 1 << 20;

/** What a crash left in the pool and the staging directory, before the restart. */
interface Left extends RbdPoolListing {
  readonly names: readonly string[];
  readonly scratch: readonly string[];
}
const count = (f: Left, prefix: string) => f.names.filter((n) => n.startsWith(prefix)).length;
const protectedSnap = (f: Left, image: string) => f.snapshots.some((s) => s.image === image && s.snapshot === 'sealed' && s.protected === 'true');

/**
 * What each crash must have left in Ceph: the test reached the point it means. After the set-up
 * the pool holds `img-` of a and four clones (keep's, rel's, two spares); with the template, also
 * debian, web@1 and web's spare.
 */
const LEFT: Partial<Record<FailpointName, (f: Left) => void>> = {
  'import.after-temp': (f) => {
    const tmp = f.names.filter((n) => n.startsWith('tmp-'));
    assert.equal(tmp.length, 1, 'the import temporary');
    assert.ok(protectedSnap(f, tmp[0]!), 'sealed already: its snapshot is protected');
  },
  'import.after-seal': (f) => assert.equal(count(f, 'img-'), 2, "b's sealed image, with no row"),
  'copy.after-insert': (f) => assert.equal(count(f, 'copy-'), 4, 'no clone made yet'),
  'copy.before-ready': (f) => assert.equal(count(f, 'copy-'), 5, 'the finished clone, its row still making'),
  'claim.after-claim': (f) => assert.equal(count(f, 'copy-'), 4, 'the claimed spare'),
  'export.after-export': (f) => assert.equal(count(f, 'copy-'), 4, 'the claimed and exported spare'),
  'release.after-unmap': (f) => assert.equal(count(f, 'copy-'), 4, "rel's clone, its row releasing"),
  'release.after-remove': (f) => assert.equal(count(f, 'copy-'), 3, "rel's clone removed, its row releasing"),
  'template.after-scratch': (f) => assert.ok(f.scratch.some((n) => n.startsWith('bld-')), 'the working copy in the staging directory'),
  'template.after-seal': (f) => assert.equal(count(f, 'img-'), 4, 'a, debian, web@1 and the sealed build with no row'),
  'rollover.after-discard': (f) => assert.equal(count(f, 'img-'), 2, 'a@1 and a@2'),
};

describe('crashes on Ceph RBD: SIGKILL at every named point and in the middle of an import, restart, the pool agrees with the rows', { concurrency: false }, () => {
  let ceph: CephCluster | undefined;
  let src: CrashSources & { readonly dir: string; readonly big: string };
  const started: ServeProcess[] = [];
  let pools = 0;

  before(async () => {
    const dir = await makeTempDir('prestage-rbdcrash-src-');
    src = { dir, a: join(dir, 'a.raw'), a2: join(dir, 'a2.raw'), b: join(dir, 'b.raw'), big: join(dir, 'big.raw'), debian: makeGptDisk(dir, 'debian.raw') };
    await Promise.all([writeRandomFile(src.a, 2 * MiB), writeRandomFile(src.a2, 2 * MiB), writeRandomFile(src.b, 1 * MiB), writeRandomFile(src.big, 256 * MiB)]);
    // A killed server's watch on an image it had open lapses in 10 s instead of 30: the removals
    // that wait for it (a release's clone, an import's temporary) wait that long.
    ceph = await startCeph({ watchTimeoutSec: 10 });
  });
  after(async () => {
    for (const s of started) await s.kill('SIGKILL');
    await ceph?.stop();
    await rm(src.dir, { recursive: true, force: true });
  });

  /** A case of its own: a fresh RBD pool and data directory, removed when `body` ends. */
  async function inCase(t: TestContext, body: (k: { pool: string; data: string; dir: string; serve: (env?: NodeJS.ProcessEnv) => Promise<ServeProcess> }) => Promise<void>): Promise<void> {
    const c = ceph!;
    const pool = `crash${++pools}`;
    const dir = await makeTempDir('prestage-rbdcrash-');
    const data = join(dir, 'data');
    const t0 = Date.now();
    await c.cli('ceph', 'osd', 'pool', 'create', pool, '8');
    await c.cli('rbd', 'pool', 'init', pool);
    t.diagnostic(`pool ${pool} made in ${Date.now() - t0} ms`);
    const args = ['--driver', 'rbd', '--ceph-conf', c.confPath, '--ceph-pool', pool, '--ceph-id', c.id, '--import-dir', src.dir, '--pool-min', '1', '--pool-max', '1'];
    const serve = async (env: NodeJS.ProcessEnv = {}) => {
      const s = await startServe(data, args, env);
      started.push(s);
      return s;
    };
    try {
      await mkdir(join(dir, 'psk'));
      await body({ pool, data, dir, serve });
    } finally {
      for (const s of started) await s.kill('SIGKILL');
      await c.cli('ceph', 'osd', 'pool', 'delete', pool, pool, '--yes-i-really-really-mean-it');
      await rm(dir, { recursive: true, force: true });
    }
  }

  const leftIn = async (pool: string, data: string): Promise<Left> => {
    const listing = await listRbdPool(ceph!, pool);
    const scratch = await readdir(join(data, 'rbd-staging', 'scratch')).catch(() => [] as string[]);
    return { ...listing, names: [...listing.heads.keys()].sort(), scratch };
  };

  for (const point of FAILPOINTS) {
    it(point, async (t) => {
      await inCase(t, async ({ pool, data, dir, serve }) => {
        const c = { src, mappings: {} as Record<string, string> };
        await runCrashPoint({
          point,
          c,
          serve,
          left: async () => {
            const f = await leftIn(pool, data);
            t.diagnostic(`left: ${JSON.stringify({ images: f.names, snapshots: f.snapshots.map((s) => `${s.image}@${s.snapshot}${s.protected === 'true' ? ' (protected)' : ''}`), scratch: f.scratch })}`);
            LEFT[point]?.(f);
          },
          invariants: async (s) => assertInvariants(s, rbdVolumes(ceph!, pool, join(data, 'rbd-staging')), { mappings: c.mappings, nbdPort: await nbdPort(s), scratchDir: join(dir, 'psk') }),
          log: (m) => t.diagnostic(m),
        });
      });
    });
  }

  it('SIGKILL at a random moment in the middle of a 256 MiB import', async (t) => {
    await inCase(t, async ({ pool, data, dir, serve }) => {
      const t0 = Date.now();
      const lap = (what: string) => t.diagnostic(`${what} at ${Date.now() - t0} ms`);
      let s = await serve();
      await ok(s, 'POST', '/v1/images', { name: 'a', path: src.a }, 201);
      await ok(s, 'POST', '/v1/hosts', { id: 'keep' }, 201);
      const keep = (await ok<{ copyId: string }>(s, 'POST', '/v1/hosts/keep/provision', { source: 'a' }, 200)).copyId;
      await waitSettled(s, 60_000);
      lap('set up');
      const seqBefore = Math.max(0, ...(await listEvents(s)).map((e) => e.seq));

      // Somewhere between a tenth and nine tenths of the way, by the import's own progress.
      const share = 0.1 + Math.random() * 0.8;
      const importing = s.call('POST', '/v1/images', { name: 'big', path: src.big }).catch(() => undefined);
      const done = await waitFor(
        `the import of big to pass ${Math.round(share * 100)}%`,
        async () => {
          const tasks = (await s.call<{ kind: string; subject: string; doneBytes: number; totalBytes: number }[]>('GET', '/v1/tasks')).body;
          const task = tasks.find((x) => x.subject === 'big');
          return task && task.totalBytes > 0 && task.doneBytes >= share * task.totalBytes ? task.doneBytes : undefined;
        },
        60_000,
        10,
      );
      await s.kill('SIGKILL');
      await died(s, undefined, 10_000);
      await importing;
      lap(`killed at ${done} of ${256 * MiB} bytes (aimed at ${Math.round(share * 100)}%)`);
      const f = await leftIn(pool, data);
      t.diagnostic(`left: ${JSON.stringify(f.names)}`);
      assert.equal(count(f, 'tmp-'), 1, 'the kill left the import temporary, as a crash would');
      assert.equal(count(f, 'img-'), 1, 'and no image of big');

      s = await serve();
      lap('restarted');
      await waitSettled(s, 60_000);
      const events = (await listEvents(s, seqBefore)).filter((e) => e.seq > seqBefore);
      assert.equal(has(events, 'reconcile.temp-files'), undefined, JSON.stringify(events.map((e) => [e.type, e.subject])));
      assert.equal((await s.call('GET', '/v1/images/big')).status, 404, 'the interrupted import made no image');
      await assertInvariants(s, rbdVolumes(ceph!, pool, join(data, 'rbd-staging')), { mappings: { keep }, nbdPort: await nbdPort(s), scratchDir: join(dir, 'psk') });

      lap('checked');
      // The same import runs to its end after the restart, sealed with the file's bytes.
      const big = await ok<{ sha256: string }>(s, 'POST', '/v1/images', { name: 'big', path: src.big }, 201);
      assert.equal(big.sha256, await sha256File(src.big));
      await waitSettled(s, 60_000);
      await assertInvariants(s, rbdVolumes(ceph!, pool, join(data, 'rbd-staging')), { mappings: { keep } });
      lap('imported again');

      // The check is not blind: what a broken reconcile would leave, made by hand, is found.
      const spare = (await listCopies(s, 'ready'))[0];
      assert.ok(spare, 'a spare of a');
      const stray = `img-${'e'.repeat(64)}`;
      await ceph!.cli('rbd', 'create', '--size', '4M', `${pool}/tmp-stray`);
      await ceph!.cli('rbd', 'create', '--size', '4M', `${pool}/${stray}`);
      await ceph!.cli('rbd', 'snap', 'create', `${pool}/${stray}@sealed`);
      await ceph!.cli('rbd', 'snap', 'protect', `${pool}/${stray}@sealed`);
      await ceph!.cli('rbd', 'rm', '--no-progress', `${pool}/copy-${spare.id}`);
      const found = await collectViolations(s, rbdVolumes(ceph!, pool, join(data, 'rbd-staging')));
      assert.deepEqual(
        found.sort(),
        [
          `(b) ready copy ${spare.id} has no RBD image ${pool}/copy-${spare.id}`,
          `(c) RBD image ${pool}/${stray} belongs to no image row`,
          `(c) RBD image ${pool}/tmp-stray left (no row names such an image)`,
          `(c) snapshot ${pool}/${stray}@sealed (protected) is on an image no row names`,
        ].sort(),
      );
      await s.kill('SIGTERM');
    });
  });
});
