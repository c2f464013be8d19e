import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { InputError } from '../domain/index.js';
import type { Database } from './schema.js';
import { KyselyStore } from './kysely-store.js';

export interface PostgresStoreOptions {
  /** `postgres://user@host:port/database` (libpq's forms, `?sslmode=` included). */
  readonly url: string;
  /** A schema of its own (made if missing): several stores, e.g. tests, in one database. */
  readonly schema?: string;
  /** Connections in the pool. Default 10. */
  readonly maxConnections?: number;
  /** How long a request waits for a connection before it fails (503). Default 5000 ms. */
  readonly connectTimeoutMs?: number;
}

/** pg's parsers, but int8 as a number. */
const typeParser = ((oid: number, format?: 'text' | 'binary'): unknown =>
  oid === INT8 ? (v: string) => Number(v) : (pg.types.getTypeParser as (o: number, f?: string) => unknown)(oid, format)) as typeof pg.types.getTypeParser;

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;
const INT8 = 20;

/**
 * PostgreSQL through the same Kysely code as SQLite. 64-bit integers come back as numbers (they
 * are sizes and sequence numbers, far below 2^53), per pool rather than process-wide.
 */
export async function openPostgresStore(opts: PostgresStoreOptions): Promise<KyselyStore> {
  if (opts.schema !== undefined && !SCHEMA_NAME.test(opts.schema)) throw new InputError(`schema '${opts.schema}': lower-case letters, digits and _ only`, { field: 'schema' });
  const pool = new pg.Pool({
    connectionString: opts.url,
    max: opts.maxConnections ?? 10,
    connectionTimeoutMillis: opts.connectTimeoutMs ?? 5000,
    ...(opts.schema !== undefined && { options: `-c search_path=${opts.schema}` }),
    types: { getTypeParser: typeParser },
  });
  // A connection the server drops must not take the process down, idle (the pool's 'error') or
  // checked out (the client's own 'error', which nobody else listens to): its query fails with
  // UNAVAILABLE, the pool discards it and connects anew for the next one.
  pool.on('error', () => undefined);
  pool.on('connect', (client) => {
    client.on('error', () => undefined);
    preparedStatements(client);
  });
  if (opts.schema !== undefined) await pool.query(`CREATE SCHEMA IF NOT EXISTS ${opts.schema}`);
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  try {
    return await KyselyStore.open(db, 'postgres', opts.schema !== undefined ? { schema: opts.schema } : {});
  } catch (e) {
    await db.destroy();
    throw e;
  }
}

/** Distinct statements prepared per connection at most; any beyond run unprepared. */
const MAX_PREPARED = 512;

/**
 * Runs every parameterized statement as a named prepared statement on its connection: PostgreSQL
 * parses and plans it once per connection instead of on every call, which is most of its CPU for
 * the small statements of a provision. Kysely sends (text, values); the name is the text's order
 * of first use on this connection. The set of texts is the code's queries, so it is bounded; the
 * cap guards against a query built with a varying number of placeholders.
 */
function preparedStatements(client: pg.PoolClient): void {
  const names = new Map<string, string>();
  const query = client.query.bind(client) as (...args: unknown[]) => unknown;
  (client as unknown as { query: (...args: unknown[]) => unknown }).query = (config: unknown, values?: unknown, callback?: unknown) => {
    if (typeof config === 'string' && Array.isArray(values) && values.length > 0) {
      let name = names.get(config);
      if (name === undefined && names.size < MAX_PREPARED) names.set(config, (name = `prestage_${names.size}`));
      if (name !== undefined) return callback === undefined ? query({ name, text: config, values }) : query({ name, text: config, values }, callback);
    }
    return callback === undefined ? (values === undefined ? query(config) : query(config, values)) : query(config, values, callback);
  };
}
