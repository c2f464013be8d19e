/**
 * PostgreSQL going away under a running store: requests fail fast with UNAVAILABLE (503 through
 * the API) and change nothing, and the store works again by itself once the database is back.
 * The outage is a TCP relay in front of the test PostgreSQL, cut and restored by the test.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { UnavailableError } from '../../src/domain/index.js';
import { openPostgresStore, type KyselyStore } from '../../src/store/index.js';
import { pgSchema, type PgSchema } from '../helpers/postgres.js';
import { pgRelay, type Relay } from '../helpers/pg-relay.js';

describe('PostgreSQL goes away and comes back', () => {
  let schema: PgSchema;
  let relay: Relay;
  let store: KyselyStore;

  before(async () => {
    schema = await pgSchema();
    const r = await pgRelay();
    relay = r.relay;
    store = await openPostgresStore({ url: r.url, schema: schema.name, connectTimeoutMs: 1000 });
  });
  after(async () => {
    await store?.close();
    await relay?.down();
    await schema?.drop();
  });

  it('answers UNAVAILABLE while it is gone, changes nothing, and works again once it is back', async () => {
    const at = new Date().toISOString();
    await store.insertHost({ id: 'before', mac: null, labels: {}, vars: {}, iqn: null, boot: null, exporter: null, createdAt: at }, { type: 'host.added', subject: 'before' });
    await relay.down();
    for (const attempt of [
      () => store.insertHost({ id: 'during', mac: null, labels: {}, vars: {}, iqn: null, boot: null, exporter: null, createdAt: at }, { type: 'host.added', subject: 'during' }),
      () => store.listHosts(),
    ]) {
      await assert.rejects(attempt(), (e: unknown) => {
        assert.ok(e instanceof UnavailableError, `an UnavailableError, not ${String(e)}`);
        assert.match(e.message, /unavailable/);
        return true;
      });
    }
    await relay.up();
    // The pool drops the broken connections and opens new ones by itself.
    const hosts = (await store.listHosts()).map((h) => h.id);
    assert.deepEqual(hosts, ['before'], 'the refused insert left nothing behind');
    await store.insertHost({ id: 'after', mac: null, labels: {}, vars: {}, iqn: null, boot: null, exporter: null, createdAt: at }, { type: 'host.added', subject: 'after' });
    assert.deepEqual((await store.listHosts()).map((h) => h.id), ['after', 'before']);
  });
});
