import { chmodSync, closeSync, openSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
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
 * of the process: a commit is complete once its frames are written to the WAL, which is in the
 * OS cache then (no fsync on a commit); only a power loss may roll back the last ones. FULL
 * would fsync the WAL on every commit, on the request path.
 *
 * Checkpoints (copying the WAL back into the database, with two fsyncs) run off the request
 * path, in a worker thread with a connection of its own (`startCheckpointer`), and only once
 * the WAL holds CHECKPOINT_WAL_BYTES: SQLite's automatic checkpoint runs inside the commit that
 * crosses its threshold (1000 pages), which stalled that request, and every one queued behind
 * it, for milliseconds every 30 to 100 provisions while copies were being written. The first commit
 * after a complete checkpoint starts the WAL over and fsyncs its header (SQLite does that on
 * every synchronous level but OFF), on the request path: letting the WAL grow to 32 MiB first
 * makes that rare, where checkpointing it often would make it frequent. A checkpoint
 * changes no committed data, whoever runs it and whenever, so none of this changes what
 * survives a crash.
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
  // When the WAL starts over it is truncated, so its frames go to new space at the end of the
  // file: written over the old blocks instead, each partial page whose cached copy the OS had
  // evicted (copies stream gigabytes through the page cache) is first read back from disk, on
  // the request path, queued behind the copies' writes (seen: the main thread waiting in
  // ext4_block_write_begin for a third of a burst). The truncation costs about 0.2 ms per MiB,
  // once per WAL cycle.
  sqlite.pragma('journal_size_limit = 0');
  const checkpointer = opts.file === ':memory:' ? undefined : startCheckpointer(sqlite, opts.file);
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: withStatementCache(sqlite, () => checkpointer?.stop()) }) });
  return KyselyStore.open(db, 'sqlite', checkpointer ? { afterClose: () => checkpointer.exited } : {});
}

/** How often the checkpointer looks at the WAL's size. */
const CHECKPOINT_INTERVAL_MS = 100;
/**
 * The WAL's size at which the checkpointer checkpoints: a provision, its release and the refill
 * of its spare add about 140 KiB (measured; a claim alone about 35 KiB, less in a burst's shared
 * transactions), so the WAL starts over, fsyncing its header on the request path, about once in
 * 230 provisions.
 */
const CHECKPOINT_WAL_BYTES = 32 << 20;
/**
 * The automatic checkpoint while the checkpointer runs: a safety net only, well above
 * CHECKPOINT_WAL_BYTES (about 200 MiB of 4 KiB pages), so that a stuck checkpointer cannot let
 * the WAL grow without bound. SQLite's default (1000 pages) comes back if the checkpointer fails.
 */
const SAFETY_AUTOCHECKPOINT_PAGES = 50_000;
const DEFAULT_AUTOCHECKPOINT_PAGES = 1000;

/**
 * The worker: its own connection to the file; a PASSIVE checkpoint when the WAL file has grown
 * to the threshold. PASSIVE neither waits for nor blocks the main connection's readers and
 * writers (it copies what it can and returns); SQLITE_BUSY (another checkpoint under way) just
 * waits for the next look. A WAL checkpointed whole stays at its size until the next commit
 * starts it over; checkpointing it again meanwhile finds nothing to do.
 */
const CHECKPOINTER_SOURCE = `
const { statSync } = require('node:fs');
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.module);
const db = new Database(workerData.file, { fileMustExist: true });
db.pragma('synchronous = NORMAL');
const wal = workerData.file + '-wal';
const timer = setInterval(() => {
  const size = statSync(wal, { throwIfNoEntry: false })?.size ?? 0;
  if (size < workerData.walBytes) return;
  try {
    db.pragma('wal_checkpoint(PASSIVE)');
  } catch (e) {
    if (e && e.code !== 'SQLITE_BUSY') throw e;
  }
}, workerData.intervalMs);
parentPort.on('message', () => {
  clearInterval(timer);
  db.close();
  parentPort.close();
});
`;

function startCheckpointer(sqlite: BetterSqlite3.Database, file: string): { stop(): void; readonly exited: Promise<void> } {
  const worker = new Worker(CHECKPOINTER_SOURCE, {
    eval: true,
    workerData: { module: createRequire(import.meta.url).resolve('better-sqlite3'), file, intervalMs: CHECKPOINT_INTERVAL_MS, walBytes: CHECKPOINT_WAL_BYTES },
  });
  let stopped = false;
  // The store's close waits for it: until it has closed its connection the file is open, and an
  // unmount (or a test's rm) right after the close would find it busy.
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  // A worker that does not stop (stuck on a full disk) must not hold a close forever.
  const exitedOrLate = () => Promise.race([exited, new Promise<void>((resolve) => setTimeout(resolve, 5000).unref())]);
  sqlite.pragma(`wal_autocheckpoint = ${SAFETY_AUTOCHECKPOINT_PAGES}`);
  // A failed checkpointer hands checkpoints back to SQLite's own, on the commits, as before.
  worker.on('error', () => {
    if (!stopped && sqlite.open) sqlite.pragma(`wal_autocheckpoint = ${DEFAULT_AUTOCHECKPOINT_PAGES}`);
  });
  // It must not keep the process alive; the store's close stops it.
  worker.unref();
  return {
    get exited() {
      return exitedOrLate();
    },
    stop() {
      if (stopped) return;
      stopped = true;
      // Closes its connection and ends; it may finish after the main connection's close (the
      // last connection to close checkpoints and removes the WAL).
      // Kept alive until it has gone, so that a close awaiting `exited` holds the process open.
      worker.ref();
      worker.postMessage('stop');
    },
  };
}

/**
 * Kysely prepares every query anew; the same few statements run thousands of times a second
 * on the provision path, so each SQL text is prepared once. Safe because Kysely's SQLite
 * driver runs one query at a time on its one connection.
 */
function withStatementCache(db: BetterSqlite3.Database, onClose: () => void): SqliteDatabase {
  const cache = new Map<string, BetterSqlite3.Statement>();
  return {
    close: () => {
      onClose();
      db.close();
    },
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
