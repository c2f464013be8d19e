/**
 * PostgreSQL going away under a running store: requests fail fast with UNAVAILABLE (503 through
 * the API) and change nothing, and the store works again by itself once the database is back.
 * The outage is a TCP relay in front of the test PostgreSQL, cut and restored by the test.
 */
import assert from 'node:assert/strict';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { UnavailableError } from '../../src/domain/index.js';
import { openPostgresStore, type KyselyStore } from '../../src/store/index.js';
import { TEST_PG_URL, pgSchema, type PgSchema } from '../helpers/postgres.js';

/** A relay to PostgreSQL that can be cut (every connection closed, new ones refused) and restored. */
class Relay {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  constructor(
    private readonly target: { host: string; port: number },
    readonly port: number,
  ) {}

  async up(): Promise<void> {
    this.server = createServer((client) => {
      const upstream = connect(this.target.port, this.target.host);
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => undefined);
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve) => this.server!.listen(this.port, '127.0.0.1', resolve));
  }

  async down(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    this.server = undefined;
  }
}

describe('PostgreSQL goes away and comes back', () => {
  let schema: PgSchema;
  let relay: Relay;
  let store: KyselyStore;

  before(async () => {
    schema = await pgSchema();
    const target = new URL(TEST_PG_URL);
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as { port: number }).port;
    await new Promise<void>((r) => probe.close(() => r()));
    relay = new Relay({ host: target.hostname, port: Number(target.port || 5432) }, port);
    await relay.up();
    const via = new URL(TEST_PG_URL);
    via.host = `127.0.0.1:${port}`;
    store = await openPostgresStore({ url: via.href, schema: schema.name, connectTimeoutMs: 1000 });
  });
  after(async () => {
    await store?.close();
    await relay?.down();
    await schema?.drop();
  });

  it('answers UNAVAILABLE while it is gone, changes nothing, and works again once it is back', async () => {
    const at = new Date().toISOString();
    await store.insertHost({ id: 'before', mac: null, labels: {}, vars: {}, createdAt: at }, { type: 'host.added', subject: 'before' });
    await relay.down();
    for (const attempt of [
      () => store.insertHost({ id: 'during', mac: null, labels: {}, vars: {}, createdAt: at }, { type: 'host.added', subject: 'during' }),
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
    await store.insertHost({ id: 'after', mac: null, labels: {}, vars: {}, createdAt: at }, { type: 'host.added', subject: 'after' });
    assert.deepEqual((await store.listHosts()).map((h) => h.id), ['after', 'before']);
  });
});
