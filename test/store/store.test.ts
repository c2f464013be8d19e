import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { rm } from 'node:fs/promises';
import BetterSqlite3 from 'better-sqlite3';
import { ConflictError, type Copy, type Image, type Store } from '../../src/domain/index.js';
import { openSqliteStore } from '../../src/store/index.js';
import { makeTempDir } from '../helpers/files.js';
import { pgSchema, type PgSchema } from '../helpers/postgres.js';

interface Opened {
  readonly store: Store;
  /** Runs SQL on the same database behind the store's back. */
  raw(sqlText: string): Promise<void>;
  /** Another store on the same database, as a second instance has. */
  another(): Promise<Store>;
  drop(): Promise<void>;
}

// One suite for every dialect.
const DIALECTS: { name: string; open: (dir: string) => Promise<Opened> }[] = [
  {
    name: 'sqlite',
    open: async (dir) => {
      const file = join(dir, 'state.db');
      return {
        store: await openSqliteStore({ file }),
        raw: (text) => {
          const db = new BetterSqlite3(file);
          try {
            db.prepare(text).run();
            return Promise.resolve();
          } catch (e) {
            return Promise.reject(e instanceof Error ? e : new Error(String(e)));
          } finally {
            db.close();
          }
        },
        another: () => openSqliteStore({ file }),
        drop: () => Promise.resolve(),
      };
    },
  },
  {
    name: 'postgres',
    open: async () => {
      const schema: PgSchema = await pgSchema();
      return { store: await schema.open(), raw: (text) => schema.query(text), another: () => schema.open(), drop: () => schema.drop() };
    },
  },
];

const ev = (type: string) => ({ type, subject: 'test' });

function image(id: string, name: string, version: number): Image {
  return { id, name, version, sha256: 'ab'.repeat(32), sizeBytes: 1 << 20, volume: `/v/${id}`, state: 'ready',
  kind: 'golden',
  baseImageId: null, createdAt: new Date().toISOString() };
}

function copy(id: string, imageId: string, state: Copy['state'] = 'ready'): Copy {
  const now = new Date().toISOString();
  return { id, imageId, pool: 'img', state, volume: `/c/${id}`, method: 'sparse-copy', hostId: null, error: null, createdAt: now, readyAt: state === 'ready' ? now : null, copyMs: 1 };
}

for (const dialect of DIALECTS) {
  describe(`store (${dialect.name})`, () => {
    let dir: string;
    let store: Store;
    let opened: Opened;
    before(async () => {
      dir = await makeTempDir();
      opened = await dialect.open(dir);
      store = opened.store;
      await store.insertImage(image('i1', 'img', 1), ev('image.imported'));
      for (let h = 0; h < 50; h++) await store.insertHost({ id: `h${h}`, mac: null, labels: {}, vars: {}, iqn: null, boot: null, exporter: null, createdAt: new Date().toISOString() }, ev('host.added'));
    });
    after(async () => {
      await store.close();
      await opened.drop();
      await rm(dir, { recursive: true, force: true });
    });

    it('versions names and refuses a taken version', async () => {
      assert.equal(await store.nextImageVersion('img'), 2);
      await assert.rejects(store.insertImage(image('i9', 'img', 1), ev('x')), ConflictError);
      assert.equal((await store.findImage('img', null))?.id, 'i1');
    });

    it('hands each ready copy to exactly one of many concurrent claimers', async () => {
      for (let i = 0; i < 20; i++) await store.insertCopy(copy(`c${i}`, 'i1'));
      const results = await Promise.all(
        Array.from({ length: 50 }, (_, h) => store.claim({ hostId: `h${h}`, imageId: 'i1', source: 'img', at: new Date().toISOString() }, ev('host.mapped'))),
      );
      const won = results.filter((r) => r !== undefined);
      assert.equal(won.length, 20);
      assert.equal(new Set(won.map((r) => r.copy.id)).size, 20, 'no copy twice');
      assert.equal((await store.countCopies('i1')).mapped, 20);
      assert.equal((await store.listMappings()).length, 20);
    });

    it('never claims a copy that is not ready', async () => {
      await store.insertCopy(copy('m1', 'i1', 'making'));
      assert.equal(await store.claim({ hostId: 'h49', imageId: 'i1', source: 'img', copyId: 'm1', at: 'x' }, ev('host.mapped')), undefined);
    });

    it('moves copies only along the state machine', async () => {
      assert.equal(await store.moveCopy('m1', 'ready', 'mapped'), false, 'not in the from state');
      await assert.rejects(store.moveCopy('m1', 'making', 'mapped'), /not a transition/);
      assert.equal(await store.moveCopy('m1', 'making', 'ready', { readyAt: new Date().toISOString() }), true);
    });

    it('unmaps in one step and keeps the event log append-only', async () => {
      const m = await store.getMapping('h0');
      assert.ok(m);
      const c = await store.unmap('h0', ev('host.released'));
      assert.equal(c?.state, 'releasing');
      assert.equal(await store.getMapping('h0'), undefined);
      const events = await store.listEvents({});
      assert.ok(events.length > 50);
      assert.ok(events.every((e, i) => i === 0 || e.seq > events[i - 1]!.seq));
      await assert.rejects(opened.raw('DELETE FROM events'), /append-only/);
      await assert.rejects(opened.raw("UPDATE events SET type = 'x'"), /append-only/);
    });

    it('refuses to delete a host that holds a mapping', async () => {
      // Which of the concurrent claimers won is up to the database: take one that did.
      const holder = (await store.listMappings())[0]!.hostId;
      await assert.rejects(store.deleteHost(holder, ev('host.removed')), ConflictError);
      assert.ok(await store.getMapping(holder), 'the mapping is still there');
    });

    if (dialect.name === 'postgres') {
      it('hands out every spare once to claimers on three instances at once, none left waiting while one is ready', async () => {
        const others = [await opened.another(), await opened.another()];
        try {
          await store.insertImage(image('i2', 'multi', 1), ev('image.imported'));
          for (let h = 0; h < 60; h++) await store.insertHost({ id: `m${h}`, mac: null, labels: {}, vars: {}, iqn: null, boot: null, exporter: null, createdAt: new Date().toISOString() }, ev('host.added'));
          for (let i = 0; i < 40; i++) await store.insertCopy(copy(`mc${i}`, 'i2'));
          const stores = [store, ...others];
          const results = await Promise.all(
            Array.from({ length: 60 }, (_, h) => stores[h % 3]!.claim({ hostId: `m${h}`, imageId: 'i2', source: 'multi', at: new Date().toISOString() }, ev('host.mapped'))),
          );
          const won = results.filter((r) => r !== undefined);
          assert.equal(won.length, 40, 'every ready spare went to a claimer: none fell to a cold wait');
          assert.equal(new Set(won.map((r) => r.copy.id)).size, 40, 'no copy twice');
          assert.equal((await store.countCopies('i2')).mapped, 40);
        } finally {
          for (const o of others) await o.close();
        }
      });

      it('tells unique violations apart by constraint when two instances race', async () => {
        const other = await opened.another();
        try {
          const at = new Date().toISOString();
          const results = await Promise.allSettled([store, other].map((s) => s.insertHost({ id: 'race', mac: null, labels: {}, vars: {}, iqn: null, boot: null, exporter: null, createdAt: at }, ev('host.added'))));
          assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
          const lost = results.find((r) => r.status === 'rejected');
          assert.ok(lost && lost.reason instanceof ConflictError, String(lost && (lost).reason));
        } finally {
          await other.close();
        }
      });
    }
  });
}
