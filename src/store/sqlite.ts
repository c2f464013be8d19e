import { chmodSync, closeSync, openSync } from 'node:fs';
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, SqliteDialect, type SqliteDatabase } from 'kysely';
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
  if (opts.file !== ':memory:') {
    // The database holds every host's key: 0600 before SQLite opens it (its WAL and shm files take the same mode).
    closeSync(openSync(opts.file, 'a', 0o600));
    chmodSync(opts.file, 0o600);
  }
  const sqlite = new BetterSqlite3(opts.file);
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('synchronous = NORMAL');
  sqlite.pragma('foreign_keys = ON');
  sqlite.pragma(`busy_timeout = ${Math.trunc(opts.busyTimeoutMs ?? 5000)}`);
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: withStatementCache(sqlite) }) });
  return KyselyStore.open(db, 'sqlite');
}

/**
 * Kysely prepares every query anew; the same few statements run thousands of times a second
 * on the provision path, so each SQL text is prepared once. Safe because Kysely's SQLite
 * driver runs one query at a time on its one connection.
 */
function withStatementCache(db: BetterSqlite3.Database): SqliteDatabase {
  const cache = new Map<string, BetterSqlite3.Statement>();
  return {
    close: () => db.close(),
    prepare(sqlText: string) {
      let stmt = cache.get(sqlText);
      if (!stmt) {
        stmt = db.prepare(sqlText);
        if (cache.size < 1000) cache.set(sqlText, stmt);
      }
      return stmt;
    },
  };
}
