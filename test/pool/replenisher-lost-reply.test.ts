// A copy's state change whose reply is lost (the database connection cut just after the commit,
// or before it) must not leave a row without its volume: a ready row keeps its file, a copy
// recorded failed has its file removed, and while the store cannot be reached the replenisher
// asks again instead of guessing. Real SQLite store and file driver; the store is wrapped (the
// fake is the outage only) so that chosen calls fail after or before they commit.
import assert from 'node:assert/strict';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { UnavailableError, newId, staticPolicy, type CopyState, type Image, type Store } from '../../src/domain/index.js';
import { FileDriver } from '../../src/drivers/index.js';
import { Replenisher } from '../../src/pool/index.js';
import { openSqliteStore } from '../../src/store/index.js';
import { makeTempDir, waitFor, writeRandomFile } from '../helpers/files.js';

const logger = pino({ level: 'silent' });
const lost = () => new UnavailableError('the database connection was cut');

type Outage = (from: CopyState, to: CopyState, commit: () => Promise<boolean>) => Promise<boolean>;

/** The real store, with moveCopy passed through `outage` (which decides whether to commit and whether to answer). */
function withOutage(store: Store, outage: { current: Outage | null }): Store {
  return new Proxy(store, {
    get(target, key, receiver) {
      if (key !== 'moveCopy') return Reflect.get(target, key, receiver) as unknown;
      return (id: string, from: CopyState, to: CopyState, ...rest: unknown[]) => {
        const commit = () => (target.moveCopy as (...a: unknown[]) => Promise<boolean>)(id, from, to, ...rest);
        return outage.current ? outage.current(from, to, commit) : commit();
      };
    },
  });
}

describe('a copy whose state change lost its reply', () => {
  let dir: string;
  let store: Store;
  let driver: FileDriver;
  let image: Image;
  const outage: { current: Outage | null } = { current: null };

  before(async () => {
    dir = await makeTempDir('prestage-lost-reply-');
    store = await openSqliteStore({ file: join(dir, 'state.db') });
    driver = await FileDriver.open({ dataDir: dir, workers: 1, logger });
    await writeRandomFile(join(dir, 'g.raw'), 256 << 10);
    const vol = await driver.importImage(join(dir, 'g.raw'));
    image = { id: newId('img'), name: 'g', version: 1, sha256: vol.sha256, sizeBytes: vol.sizeBytes, volume: vol.volume, state: 'ready', createdAt: new Date().toISOString(), kind: 'golden', baseImageId: null };
    await store.insertImage(image, { type: 'image.imported', subject: 'g' });
  });

  after(async () => {
    await driver?.close();
    await store?.close();
  });

  const exists = (volume: string) => access(volume).then(() => true, () => false);

  async function fillOne(): Promise<Replenisher> {
    const r = new Replenisher({ store: withOutage(store, outage), driver, logger, concurrency: 1, retryBaseMs: 50 });
    await store.upsertPool('g', staticPolicy(1, 1), { type: 'pool.set', subject: 'g' });
    r.start();
    r.poke(true);
    await r.whenIdle();
    return r;
  }

  async function emptyPool(): Promise<void> {
    await store.upsertPool('g', staticPolicy(0, 0), { type: 'pool.set', subject: 'g' });
    for (const c of await store.listCopies({ state: 'ready' })) {
      await store.moveCopy(c.id, 'ready', 'releasing');
      await driver.removeCopy(c.id);
      await store.moveCopy(c.id, 'releasing', 'gone');
    }
  }

  it('committed, reply lost: the spare stays ready with its volume, and nothing is recorded failed', async () => {
    let cut = 0;
    outage.current = async (from, to, commit) => {
      const moved = await commit();
      if (from === 'making' && to === 'ready' && cut++ === 0) throw lost();
      return moved;
    };
    const r = await fillOne();
    outage.current = null;
    const ready = await store.listCopies({ state: 'ready' });
    assert.equal(ready.length, 1, 'one spare');
    assert.equal(cut, 1, 'the cut happened');
    assert.ok(await exists(ready[0]!.volume), 'the ready spare kept its volume');
    assert.deepEqual(await store.listCopies({ state: 'failed' }), []);
    await r.drain(5000);
    await emptyPool();
  });

  it('not committed, and the store away for a while: recorded failed once it answers, then its volume removed, then made again', async () => {
    let refusals = 0;
    outage.current = async (from, to, commit) => {
      if (from === 'making' && to === 'ready' && refusals === 0) {
        refusals++;
        throw lost();
      }
      // The store stays away for the first two tries to record the failure.
      if (from === 'making' && to === 'failed' && refusals < 3) {
        refusals++;
        throw lost();
      }
      return commit();
    };
    const r = await fillOne();
    await r.whenIdle();
    outage.current = null;
    assert.equal(refusals, 3);
    const failed = await store.listCopies({ state: 'failed' });
    assert.equal(failed.length, 1, 'the copy whose ready move did not land is recorded failed');
    assert.equal(await exists(failed[0]!.volume), false, 'and its volume is gone');
    // After the pool's back-off, another copy takes its place.
    const ready = await waitFor('a spare made again', async () => {
      const rows = await store.listCopies({ state: 'ready' });
      return rows.length > 0 && rows;
    });
    assert.equal(ready.length, 1);
    assert.ok(await exists(ready[0]!.volume));
    await r.drain(5000);
  });
});
