/**
 * What a database error means to the domain. Unique violations are told apart by the name of
 * the constraint PostgreSQL reports (never by message text); a database that cannot be reached
 * is UNAVAILABLE (503), so a request fails fast and nothing half-done is left (each store
 * method is one transaction).
 */
import { ConflictError, PrestageError, UnavailableError, VersionTakenError } from '../domain/index.js';

/** PostgreSQL's constraint names (Kysely's schema builder names them `<table>_pkey`, `<table>_<column>_key`, or as given). */
const UNIQUE: Readonly<Record<string, (detail: string) => PrestageError>> = {
  images_name_version: (d) => new VersionTakenError(`that image version exists already (${d})`),
  images_pkey: (d) => new ConflictError(`an image with that id exists already (${d})`),
  hosts_pkey: (d) => new ConflictError(`that host exists already (${d})`),
  mappings_pkey: (d) => new ConflictError(`the host is mapped already (${d})`),
  mappings_copy_id_key: (d) => new ConflictError(`that copy is handed out already (${d})`),
  copies_pkey: (d) => new ConflictError(`a copy with that id exists already (${d})`),
  pools_pkey: (d) => new ConflictError(`that pool exists already (${d})`),
  templates_pkey: (d) => new ConflictError(`that template exists already (${d})`),
  api_tokens_pkey: (d) => new ConflictError(`a token of that name exists already (${d})`),
  api_tokens_sha256_key: () => new ConflictError('that token secret exists already'),
};

/** SQLSTATE classes and socket errors that mean the database is not there (now); pg's own errors for a lost connection carry no code, only their text. */
const GONE = /^(08|57P0[123]|53300)/;
const SOCKET = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH']);

function field(e: object, name: string): string | undefined {
  const v = (e as Record<string, unknown>)[name];
  return typeof v === 'string' ? v : undefined;
}

/** The domain's error for `e`, or `e` itself when it is not one the domain knows. */
export function translateDbError(e: unknown): unknown {
  if (e instanceof PrestageError || typeof e !== 'object' || e === null) return e;
  const code = field(e, 'code');
  const message = e instanceof Error ? e.message : '';
  if (code === '23505') {
    const constraint = field(e, 'constraint') ?? '';
    const detail = field(e, 'detail') ?? constraint;
    const make = UNIQUE[constraint];
    return make ? Object.assign(make(detail), { cause: e }) : new ConflictError(`conflicts with a row that exists (${constraint})`, { constraint }, { cause: e });
  }
  if (code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY') return new ConflictError('conflicts with a row that exists', {}, { cause: e });
  if (code === 'SQLITE_BUSY') return new UnavailableError('the state database is busy; try again', {}, { cause: e });
  if ((code !== undefined && (GONE.test(code) || SOCKET.has(code))) || /Connection terminated|timeout exceeded when trying to connect|not queryable/i.test(message)) {
    return new UnavailableError('the state database is unavailable; try again once it is back', { dbCode: code ?? null }, { cause: e });
  }
  return e;
}

/**
 * The store with every method's failure translated: one place, so no method can forget it.
 * Methods that do not return promises (getters) pass through.
 */
export function withDbErrors<T extends object>(store: T): T {
  // One wrapper per method, made on first use: the provision path calls the store thousands of times a second.
  const wrapped = new Map<PropertyKey, unknown>();
  return new Proxy(store, {
    get(target, prop, receiver) {
      const v: unknown = Reflect.get(target, prop, receiver);
      if (typeof v !== 'function') return v;
      let w = wrapped.get(prop);
      if (w === undefined) {
        w = (...args: unknown[]): unknown => {
          try {
            const r: unknown = (v as (...a: unknown[]) => unknown).apply(target, args);
            return r instanceof Promise
              ? r.catch((e: unknown) => {
                  throw translateDbError(e);
                })
              : r;
          } catch (e) {
            throw translateDbError(e);
          }
        };
        wrapped.set(prop, w);
      }
      return w;
    },
  });
}
