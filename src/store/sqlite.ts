import BetterSqlite3 from 'better-sqlite3';
import { Kysely, SqliteDialect } from 'kysely';
import type { Database } from './schema.js';
import { KyselyStore } from './kysely-store.js';

export interface SqliteStoreOptions {
  /** The database file; `:memory:` for a throwaway store. */
  readonly file: string;
  /** How long a writer waits for a lock held by another process, in ms. Default 5000. */
  readonly busyTimeoutMs?: number;
}

/**
 * SQLite in WAL mode. `synchronous=NORMAL` keeps every committed transaction across a crash
 * of the process (the WAL is in the OS cache); only a power loss may roll back the last ones.
 */
export async function openSqliteStore(opts: SqliteStoreOptions): Promise<KyselyStore> {
  const sqlite = new BetterSqlite3(opts.file);
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('synchronous = NORMAL');
  sqlite.pragma('foreign_keys = ON');
  sqlite.pragma(`busy_timeout = ${Math.trunc(opts.busyTimeoutMs ?? 5000)}`);
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: sqlite }) });
  return KyselyStore.open(db, 'sqlite');
}
