/**
 * One prestage instance per PostgreSQL state until instances share work safely (leases with
 * fencing are not there yet): a second one's reconcile would take the first one's copies for
 * orphans. A session advisory lock, held on a connection of its own for the life of the
 * instance; PostgreSQL drops it when that connection ends, however the process died.
 */
import { hostname } from 'node:os';
import pg from 'pg';
import { UnavailableError } from '../domain/index.js';

export interface PgInstanceLock {
  release(): Promise<void>;
}

export async function lockPostgresState(opts: { readonly url: string; readonly schema?: string }): Promise<PgInstanceLock> {
  const me = `prestage pid ${process.pid} on ${hostname()}`;
  const client = new pg.Client({ connectionString: opts.url, application_name: me.slice(0, 63), ...(opts.schema !== undefined && { options: `-c search_path=${opts.schema}` }) });
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (e) {
    throw new UnavailableError(`cannot reach the state database: ${e instanceof Error ? e.message : String(e)}`, {}, { cause: e });
  }
  // One key per schema: instances of separate schemas in one database do not exclude each other.
  const key = `${opts.schema ?? 'public'}:prestage-instance`;
  const got = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock(hashtext($1)) AS ok', [key]);
  if (got.rows[0]?.ok !== true) {
    // Who holds it, as far as the database can tell (its connection's application_name).
    const holder = await client.query<{ app: string; since: string }>(
      `SELECT a.application_name AS app, a.backend_start::text AS since FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.pid <> pg_backend_pid() AND a.application_name LIKE 'prestage pid %' LIMIT 1`,
    );
    await client.end().catch(() => undefined);
    const h = holder.rows[0];
    throw new UnavailableError(
      `the state database${opts.schema !== undefined ? ` (schema ${opts.schema})` : ''} is in use by another prestage${h ? ` (${h.app}, since ${h.since})` : ''}; one instance per database for now: stop it first`,
      {},
    );
  }
  let released: Promise<void> | undefined;
  return { release: () => (released ??= client.end().catch(() => undefined)) };
}
