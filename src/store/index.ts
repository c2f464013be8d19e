export { KyselyStore } from './kysely-store.js';
export { openSqliteStore, type SqliteStoreOptions } from './sqlite.js';
export type { SqlDialectName } from './migrations.js';
