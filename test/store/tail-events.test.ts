/**
 * `tailEvents` on PostgreSQL, where an event is numbered when it is inserted and seen when its
 * transaction commits: a live reader never moves past a number a transaction in flight holds,
 * and gives it up once that transaction rolled back.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import type { KyselyStore } from '../../src/store/index.js';
import { TEST_PG_URL, pgSchema, type PgSchema } from '../helpers/postgres.js';

describe('tailEvents on PostgreSQL', () => {
  let schema: PgSchema;
  let store: KyselyStore;
  /** Another session, whose transaction holds an event's number uncommitted. */
  let other: pg.Client;
  before(async () => {
    schema = await pgSchema();
    store = await schema.open();
    other = new pg.Client({ connectionString: TEST_PG_URL, options: `-c search_path=${schema.name}` });
    await other.connect();
  });
  after(async () => {
    await other.end();
    await store.close();
    await schema.drop();
  });

  /** Starts a transaction in the other session that appends an event and keeps it open. */
  const holdEvent = async (subject: string) => {
    await other.query('BEGIN');
    await other.query(`INSERT INTO events (at, type, subject, data) VALUES ($1, 'test.held', $2, '{}')`, [new Date().toISOString(), subject]);
  };

  it('waits for the transaction holding the number before the events it sees, then returns them all in order', async () => {
    await store.appendEvent({ type: 'test.first', subject: 'first' });
    const start = await store.lastEventSeq();
    await holdEvent('held'); // start + 1, not committed
    await store.appendEvent({ type: 'test.after', subject: 'after' }); // start + 2, committed
    assert.deepEqual((await store.listEvents({ afterSeq: start })).map((e) => e.subject), ['after'], 'a plain read skips the held number');

    let settled = false;
    const tail = store.tailEvents(start, 100).finally(() => (settled = true));
    // It is waiting, not answering without the held event (the wait gives up only after 10 s).
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(settled, false);
    await other.query('COMMIT');
    assert.deepEqual((await tail).map((e) => e.subject), ['held', 'after']);
  });

  it('goes past a number whose transaction rolled back, once it ended', async () => {
    const start = await store.lastEventSeq();
    await holdEvent('rolled back');
    await store.appendEvent({ type: 'test.kept', subject: 'kept' });
    const tail = store.tailEvents(start, 100);
    await other.query('ROLLBACK');
    assert.deepEqual((await tail).map((e) => e.subject), ['kept']);
  });

  it('tells its listeners after a transaction that appended events committed', async () => {
    let told = 0;
    const off = store.onEventsAppended(() => (told += 1));
    await store.appendEvent({ type: 'test.told', subject: 'told' });
    assert.equal(told, 1);
    await store.upsertPool('told', { kind: 'static', min: 0, max: 0 }, { type: 'pool.set', subject: 'told' });
    assert.equal(told, 2, 'after the transaction of a change that records its event');
    off();
    await store.appendEvent({ type: 'test.untold', subject: 'untold' });
    assert.equal(told, 2, 'not after the listener was removed');
  });
});
