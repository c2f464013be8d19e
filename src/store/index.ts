export { KyselyStore } from './kysely-store.js';
export { openSqliteStore, type SqliteStoreOptions } from './sqlite.js';
export type { SqlDialectName } from './migrations.js';
export { openPostgresStore, type PostgresStoreOptions } from './postgres.js';
export { translateDbError, withDbErrors } from './db-errors.js';
export { lockPostgresStartup, type PgStartupLock } from './pg-startup-lock.js';
