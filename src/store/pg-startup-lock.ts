/**
 * Instances sharing one PostgreSQL state start one at a time: the migrations, the reaping of dead
 * instances, reconcile and the first admin token run under a session advisory lock, released
 * once the instance serves. PostgreSQL drops the lock when its connection ends, however the
 * process died, so a crash mid-start leaves nothing to clean up.
 */
import { hostname } from 'node:os';
import pg from 'pg';
import { UnavailableError } from '../domain/index.js';

export interface PgStartupLock {
  release(): Promise<void>;
}

export async function lockPostgresStartup(opts: { readonly url: string; readonly schema?: string; readonly waitMs?: number }): Promise<PgStartupLock> {
  const me = `prestage pid ${process.pid} on ${hostname()} (starting)`;
  const client = new pg.Client({ connectionString: opts.url, application_name: me.slice(0, 63) });
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (e) {
    throw new UnavailableError(`cannot reach the state database: ${e instanceof Error ? e.message : String(e)}`, {}, { cause: e });
  }
  // One key per schema: instances of separate schemas in one database do not wait for each other.
  const key = `${opts.schema ?? 'public'}:prestage-startup`;
  const waitMs = opts.waitMs ?? 120_000;
  try {
    await client.query(`SET lock_timeout = ${Math.max(1, Math.floor(waitMs))}`);
    await client.query('SELECT pg_advisory_lock(hashtext($1))', [key]);
  } catch (e) {
    await client.end().catch(() => undefined);
    throw new UnavailableError(`another prestage instance has been starting on this state database for ${Math.round(waitMs / 1000)} s; try again when it is up`, {}, { cause: e });
  }
  let released: Promise<void> | undefined;
  return { release: () => (released ??= client.end().catch(() => undefined)) };
}
