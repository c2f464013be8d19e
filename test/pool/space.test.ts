// Pools that know about space, on a small loop-mounted XFS without reflink (so every copy takes
// its real size), through the real service: a pool that is short of space says so (pools,
// status, healthz, the CLI), never has more copies in flight than the free space holds, and
// starts one as soon as space is freed, by a release or by someone else deleting a file.
// Needs root, xfsprogs and mount; a missing tool fails the test.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { newId, staticPolicy, type Image, type Store, type VolumeDriver } from '../../src/domain/index.js';
import { FileDriver } from '../../src/drivers/index.js';
import { Replenisher } from '../../src/pool/index.js';
import { openSqliteStore } from '../../src/store/index.js';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { prestage } from '../helpers/cli-run.js';
import { makeTempDir, waitFor, writeRandomFile } from '../helpers/files.js';

const MiB = 1 << 20;
const IMAGE_BYTES = 100 * MiB;

interface Shortage {
  kind: string;
  neededBytes: number;
  freeBytes: number;
  marginBytes: number;
  since: string;
}
interface PoolBody {
  ready: number;
  making: number;
  mapped: number;
  target: number;
  shortage: Shortage | null;
  plan: { reason: string } | null;
}
interface Health {
  ok: boolean;
  status: string;
  replenisher: string;
  problems: (Shortage & { source: string; message: string })[];
}
interface Event {
  seq: number;
  at: string;
  type: string;
  subject: string;
  data: Record<string, unknown>;
}

async function freeBytes(path: string): Promise<number> {
  const s = await statfs(path);
  return s.bavail * s.bsize;
}

/** A fresh XFS without reflink in a file under `root`, mounted on root/mnt; returns the unmount. */
async function mountXfs(root: string, size: string): Promise<{ mnt: string; unmount: () => void }> {
  const mnt = join(root, 'mnt');
  await mkdir(mnt);
  const img = join(root, 'xfs.img');
  execFileSync('truncate', ['-s', size, img]);
  execFileSync('mkfs.xfs', ['-q', '-m', 'reflink=0', img]);
  execFileSync('mount', ['-o', 'loop', img, mnt]);
  return { mnt, unmount: () => execFileSync('umount', [mnt]) };
}

describe('a pool on a filesystem too small for its target', () => {
  let root: string;
  let mnt: string;
  let unmount: (() => void) | undefined;
  let t: TestApp | undefined;
  let maxInFlight = 0;
  let sampler: NodeJS.Timeout | undefined;
  const filler = () => join(mnt, 'filler');

  before(async () => {
    root = await makeTempDir('prestage-space-');
    ({ mnt, unmount } = await mountXfs(root, '400M'));
    t = await startTestApp({ dataDir: join(mnt, 'data'), listen: '127.0.0.1:0' }, { listen: true });
    const app = t.app;
    // Copies last hundreds of milliseconds: a look every millisecond sees every overlap.
    sampler = setInterval(() => (maxInFlight = Math.max(maxInFlight, app.replenisher.copiesInFlight().length)), 1);
    await writeRandomFile(join(root, 'golden.raw'), IMAGE_BYTES);
  });

  after(async () => {
    clearInterval(sampler);
    try {
      await t?.close();
    } finally {
      unmount?.();
      await rm(root, { recursive: true, force: true });
    }
  });

  const pool = async () => (await t!.call<PoolBody>('GET', '/v1/pools/golden')).body;
  const events = async () => (await t!.call<Event[]>('GET', '/v1/events?limit=10000')).body;
  const cli = (...args: string[]) => prestage(args, { env: { PRESTAGE_URL: `http://${t!.app.address}`, PRESTAGE_TOKEN: t!.token } });

  it('says it is short of space in /v1/pools, /v1/status, /healthz and the CLI, and starts no copy', async () => {
    assert.equal((await t!.call('POST', '/v1/images', { name: 'golden', path: join(root, 'golden.raw') })).status, 201);
    const free = await freeBytes(mnt);
    // 400 MiB of XFS holds the image and room for one copy with the margin (1 %, at least 32 MiB), not two.
    assert.ok(free > IMAGE_BYTES + 40 * MiB && free < 2 * IMAGE_BYTES + 32 * MiB, `free after the import: ${free / MiB} MiB`);
    // Someone else's file leaves less than one copy's room.
    await writeRandomFile(filler(), free - 60 * MiB);
    assert.equal((await t!.call('PUT', '/v1/pools/golden', { min: 10, max: 10 })).status, 200);

    const p = await waitFor('the pool to report a shortage', async () => {
      const body = await pool();
      return body.shortage !== null && body;
    });
    assert.equal(p.shortage!.kind, 'space');
    assert.ok(p.shortage!.neededBytes >= IMAGE_BYTES && p.shortage!.neededBytes < IMAGE_BYTES + 4 * MiB, `a copy needs ${p.shortage!.neededBytes}`);
    assert.ok(p.shortage!.freeBytes < p.shortage!.neededBytes + p.shortage!.marginBytes);
    assert.match(p.plan!.reason, /^short of space: a copy needs 100\.\d MiB \+ \d+\.\d MiB kept free, \d+\.\d MiB free; /);
    await t!.app.replenisher.whenIdle();
    assert.deepEqual([(await pool()).ready, (await pool()).making], [0, 0], 'no copy started');

    const health = await t!.call<Health>('GET', '/healthz');
    assert.equal(health.status, 200, 'degraded, not down');
    assert.equal(health.body.ok, false);
    assert.equal(health.body.status, 'degraded');
    assert.equal(health.body.replenisher, 'RUNNING');
    assert.deepEqual(
      health.body.problems.map((x) => [x.kind, x.source]),
      [['space', 'golden']],
    );
    assert.match(health.body.problems[0]!.message, /^golden: short of space/);

    const status = (await t!.call<{ problems: unknown[]; pools: PoolBody[] }>('GET', '/v1/status')).body;
    assert.equal(status.problems.length, 1);
    assert.equal(status.pools[0]!.shortage?.kind, 'space');

    const list = await cli('pool', 'list');
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /^golden\s.*short of space: a copy needs 100\.\d MiB/m);
    const human = await cli('status');
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /^degraded: 1 problem /);
    assert.match(human.stdout, /^! golden: short of space: a copy needs 100\.\d MiB/m);
  });

  it('starts a copy at once when someone else frees space', async () => {
    const t0 = Date.now();
    await rm(filler());
    await waitFor('a spare after the filler was deleted', async () => (await pool()).ready >= 1, 30_000, 10);
    const ms = Date.now() - t0;
    console.log(`filler deleted → spare ready: ${ms} ms (a 100 MiB byte copy, flushed and hashed)`);
    await t!.app.replenisher.whenIdle();
    const p = await pool();
    assert.deepEqual([p.ready, p.making], [1, 0], 'room for one copy, not two');
    assert.ok(p.shortage !== null, 'still short: nine copies missing');
  });

  it('refills at once after a release, with no retry back-off', async () => {
    assert.equal((await t!.call('POST', '/v1/hosts', { id: 'h1' })).status, 201);
    const prov = await t!.call<{ outcome: string }>('POST', '/v1/hosts/h1/provision', { source: 'golden' });
    assert.equal(prov.body.outcome, 'warm');
    await t!.app.replenisher.whenIdle();
    assert.deepEqual([(await pool()).ready, (await pool()).making, (await pool()).mapped], [0, 0, 1], 'the mapped copy holds the room');

    const t0 = Date.now();
    assert.equal((await t!.call('POST', '/v1/hosts/h1/release')).status, 200);
    await waitFor('a spare after the release', async () => (await pool()).ready >= 1, 30_000, 10);
    const ms = Date.now() - t0;
    console.log(`release → spare ready: ${ms} ms`);
    // No copy ever failed, so no back-off was armed: the refill is the first copy made after the release.
    const ev = await events();
    const released = ev.findLast((e) => e.type === 'host.released')!;
    const next = ev.find((e) => e.seq > released.seq && (e.type === 'copy.ready' || e.type === 'copy.failed'));
    assert.equal(next?.type, 'copy.ready');
    assert.deepEqual(ev.filter((e) => e.type === 'copy.failed'), []);
  });

  it('ends the shortage when the target is lowered, with one event each way', async () => {
    assert.equal((await t!.call('PUT', '/v1/pools/golden', { min: 1, max: 1 })).status, 200);
    await waitFor('the shortage to end', async () => (await pool()).shortage === null, 10_000, 10);
    const health = (await t!.call<Health>('GET', '/healthz')).body;
    assert.deepEqual([health.ok, health.status, health.problems], [true, 'ok', []]);
    const space = (await events()).filter((e) => e.type === 'pool.short-of-space' || e.type === 'pool.space-ok').map((e) => [e.type, e.subject]);
    assert.deepEqual(space, [
      ['pool.short-of-space', 'golden'],
      ['pool.space-ok', 'golden'],
    ]);
  });

  it('never had more copies in flight than the free space held, and no copy ran out of space', async () => {
    assert.equal(maxInFlight, 1, `at most one 100 MiB copy fits; ${maxInFlight} were in flight at once`);
    const failed = (await events()).filter((e) => e.type === 'copy.failed');
    assert.deepEqual(failed, []);
  });
});

describe('a copy that runs out of space although it was counted in', () => {
  let root: string;
  let mnt: string;
  let unmount: (() => void) | undefined;
  let store: Store | undefined;
  let driver: FileDriver | undefined;
  let r: Replenisher | undefined;

  before(async () => {
    root = await makeTempDir('prestage-enospc-');
    ({ mnt, unmount } = await mountXfs(root, '400M'));
    store = await openSqliteStore({ file: join(root, 'state.db') });
    driver = await FileDriver.open({ dataDir: join(mnt, 'data'), logger: pino({ level: 'silent' }) });
  });

  after(async () => {
    try {
      await r?.drain(10_000);
      await driver?.close();
      await store?.close();
    } finally {
      unmount?.();
      await rm(root, { recursive: true, force: true });
    }
  });

  it('marks the pool short instead of backing off, and tries again as soon as space is freed', async () => {
    await writeRandomFile(join(root, 'golden.raw'), IMAGE_BYTES);
    const vol = await driver!.importImage(join(root, 'golden.raw'));
    const image: Image = { id: newId('img'), name: 'golden', version: 1, sha256: vol.sha256, sizeBytes: vol.sizeBytes, volume: vol.volume, state: 'ready', createdAt: new Date().toISOString(), kind: 'golden', baseImageId: null };
    await store!.insertImage(image, { type: 'image.imported', subject: 'golden' });
    // Leave room for one copy but not two, while the driver below counts half a copy each: both start.
    const free = await freeBytes(mnt);
    await writeRandomFile(join(mnt, 'filler'), free - 150 * MiB);
    // The disk is real; only the estimate is short, as when someone else writes while a copy runs.
    const counted: VolumeDriver = Object.assign(Object.create(driver!) as FileDriver, { copyBytes: () => Promise.resolve(IMAGE_BYTES / 2) });
    // A back-off would wait a minute: a retry within seconds did not come from it.
    r = new Replenisher({ store: store!, driver: counted, logger: pino({ level: 'silent' }), concurrency: 2, retryBaseMs: 60_000 });
    await store!.upsertPool('golden', staticPolicy(3, 3), { type: 'pool.set', subject: 'golden' });
    r.start();
    const failures = async () => (await store!.listEvents({ limit: 10000 })).filter((e) => e.type === 'copy.failed');
    await waitFor('a copy to run out of space', async () => (await failures()).length > 0, 30_000);
    await r.whenIdle();
    assert.match(String((await failures())[0]!.data.error), /no space/i);
    assert.equal(r.shortageOf('golden')?.kind, 'space');
    // It waits for space to be freed: no copy tried again and again on the same full disk.
    const failed = (await failures()).length;
    await new Promise((res) => setTimeout(res, 1000));
    assert.equal((await failures()).length, failed, 'no retry while nothing was freed');
    assert.equal(r.copiesInFlight().length, 0);

    const ready = (await store!.countCopies(image.id, 'golden')).ready;
    const t0 = Date.now();
    await rm(join(mnt, 'filler'));
    await waitFor('a spare after space was freed', async () => (await store!.countCopies(image.id, 'golden')).ready > ready, 10_000, 10);
    console.log(`ENOSPC, then the filler deleted → spare ready: ${Date.now() - t0} ms (the back-off would have been 60 s)`);
  });
});
