import { resolve } from 'node:path';
import { InputError, parseDuration, staticPolicy } from '../domain/index.js';
import { parseBudget, type Budget } from '../pool/index.js';
import { defaultDataDir, isLoopback } from './data-dir.js';

export { defaultDataDir, isLoopback } from './data-dir.js';

/** Everything `prestage serve` can be told, as given (CLI flags, environment, defaults). */
export interface RawConfig {
  dataDir?: string;
  listen?: string;
  logLevel?: string;
  poolDefaultMin?: number;
  poolDefaultMax?: number;
  /** Give every newly imported name a static pool with the defaults. */
  poolAutoCreate?: boolean;
  copyConcurrency?: number;
  /** Template builds run at once over all templates; later ones wait their turn. */
  templateBuilds?: number;
  /** How long events and gone copies are kept, e.g. `30d`. */
  retention?: string | number;
  /** Cap on all pools' spares together: a count (`800`) or a size (`500GiB`). */
  poolBudget?: string;
  reflink?: 'auto' | 'never';
  provisionWaitTimeout?: string | number;
  drainTimeout?: string | number;
  exporter?: 'nbd' | 'path';
  nbdListen?: string;
  nbdAdvertise?: string;
  nbdTls?: 'psk' | 'x509' | 'off';
  nbdTlsDir?: string;
  /** PEM files of the API's TLS certificate (chain) and key; both or neither. */
  tlsCert?: string;
  tlsKey?: string;
  /** Allow plain HTTP on an address beyond loopback (tokens then cross the network in clear). */
  insecureHttp?: boolean;
  /** Directories on the server that admins may import image files from by path (none by default). */
  importDirs?: readonly string[];
  /** PostgreSQL URL for the state (`postgres://…`); absent: SQLite in the data directory. */
  db?: string;
  /** With `db`: a schema of its own in that database. */
  dbSchema?: string;
}

export interface Config {
  /** Holds state.db, images/, copies/ and tmp/. Default `$PRESTAGE_DATA` or `~/.local/share/prestage`. */
  readonly dataDir: string;
  /** Default 127.0.0.1:7480. */
  readonly listen: { readonly host: string; readonly port: number };
  /** pino level. Default `info`. */
  readonly logLevel: string;
  /** The static pool a newly imported name gets (default min 1, max 8). */
  readonly poolDefaults: { readonly min: number; readonly max: number };
  /** Default true. */
  readonly poolAutoCreate: boolean;
  /** Copies made at once over all pools. Default 2. */
  readonly copyConcurrency: number;
  /** Template builds run at once over all templates (1–64). Default 2. */
  readonly templateBuilds: number;
  /** Events older than this and copies gone for longer are deleted (hourly). Default 30d. */
  readonly retentionMs: number;
  /** Cap on all pools' targets together; null: none. */
  readonly poolBudget: Budget | null;
  /** `auto` clones with reflink where the filesystem can, `never` always copies bytes. Default auto. */
  readonly reflink: 'auto' | 'never';
  /** How long a provision waits for a copy when no spare is ready. Default 30m. */
  readonly provisionWaitTimeoutMs: number;
  /** How long `stop` waits for copies in flight before it stops anyway. Default 10s. */
  readonly drainTimeoutMs: number;
  /** How hosts reach their copies: `nbd` (built-in NBD server, default) or `path` (the local file). */
  readonly exporter: 'nbd' | 'path';
  /** The NBD server's address. Default `$PRESTAGE_NBD_LISTEN` or 0.0.0.0:10809 (the IANA NBD port). */
  readonly nbdListen: { readonly host: string; readonly port: number };
  /** The address written into the URIs hosts get; default the listen address, or the first IPv4 when listening on all. */
  readonly nbdAdvertise: string | undefined;
  /**
   * `psk` (default): TLS-PSK with one key per host; `x509`: certificates (server and per-host client
   * certificates, CN = host id) from `nbdTlsDir`; `off`: plaintext, anyone who reaches the port sees every export.
   */
  readonly nbdTls: 'psk' | 'x509' | 'off';
  /** With `x509`: a directory holding ca-cert.pem, server-cert.pem and server-key.pem (the layout qemu and libnbd use). */
  readonly nbdTlsDir: string | undefined;
  /** TLS for the HTTP API; undefined: plain HTTP, which `serve` allows on loopback only unless `insecureHttp`. */
  readonly apiTls: { readonly certFile: string; readonly keyFile: string } | undefined;
  readonly insecureHttp: boolean;
  /** Directories an admin may import server-side files from, absolute (none by default). */
  readonly importDirs: readonly string[];
  /** Where the state lives: SQLite in the data directory, or a PostgreSQL database. */
  readonly db: { readonly kind: 'sqlite' } | { readonly kind: 'postgres'; readonly url: string; readonly schema?: string };
}

export const DEFAULT_LISTEN = '127.0.0.1:7480';
export const DEFAULT_NBD_LISTEN = '0.0.0.0:10809';

/** Whether an address is this machine's own: 127.0.0.0/8, ::1 or localhost. */
export function parseListen(raw: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):([0-9]{1,5})$/.exec(raw.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new InputError(`--listen: expected HOST:PORT (e.g. 127.0.0.1:7480), got '${raw}'`, { field: 'listen' });
  return { host: m[1] ?? m[2]!, port };
}

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** Raw input → defaults → checks → one frozen object. */
export function compileConfig(raw: RawConfig, env: NodeJS.ProcessEnv = process.env): Config {
  const logLevel = raw.logLevel ?? env.PRESTAGE_LOG_LEVEL ?? 'info';
  if (!LEVELS.includes(logLevel)) throw new InputError(`log level must be one of ${LEVELS.join(', ')}`, { field: 'logLevel' });
  const pool = staticPolicy(raw.poolDefaultMin ?? 1, raw.poolDefaultMax ?? 8);
  const concurrency = raw.copyConcurrency ?? 2;
  if (!Number.isSafeInteger(concurrency) || concurrency < 1 || concurrency > 64) {
    throw new InputError('copy concurrency must be a whole number from 1 to 64', { field: 'copyConcurrency' });
  }
  const templateBuilds = raw.templateBuilds ?? 2;
  if (!Number.isSafeInteger(templateBuilds) || templateBuilds < 1 || templateBuilds > 64) {
    throw new InputError('template builds must be a whole number from 1 to 64', { field: 'templateBuilds' });
  }
  const retentionMs = parseDuration(raw.retention ?? '30d', 'retention');
  // Zero would delete the history of what just happened, e.g. a release a second ago.
  if (retentionMs < 60_000) throw new InputError('retention must be at least a minute (e.g. 30d, 12h)', { field: 'retention' });
  const reflink = raw.reflink ?? 'auto';
  if (reflink !== 'auto' && reflink !== 'never') throw new InputError("reflink must be 'auto' or 'never'", { field: 'reflink' });
  const exporter = raw.exporter ?? 'nbd';
  if (exporter !== 'nbd' && exporter !== 'path') throw new InputError("exporter must be 'nbd' or 'path'", { field: 'exporter' });
  const nbdTls = raw.nbdTls ?? 'psk';
  if (nbdTls !== 'psk' && nbdTls !== 'x509' && nbdTls !== 'off') throw new InputError("nbd tls must be 'psk', 'x509' or 'off'", { field: 'nbdTls' });
  const nbdTlsDir = raw.nbdTlsDir ?? env.PRESTAGE_NBD_TLS_DIR;
  if (nbdTls === 'x509' && exporter === 'nbd' && nbdTlsDir === undefined) {
    throw new InputError('--nbd-tls x509 needs --nbd-tls-dir DIR holding ca-cert.pem, server-cert.pem and server-key.pem', { field: 'nbdTlsDir' });
  }
  if ((raw.tlsCert === undefined) !== (raw.tlsKey === undefined)) throw new InputError('--tls-cert and --tls-key go together', { field: raw.tlsCert === undefined ? 'tlsCert' : 'tlsKey' });
  const listen = Object.freeze(parseListen(raw.listen ?? env.PRESTAGE_LISTEN ?? DEFAULT_LISTEN));
  const insecureHttp = raw.insecureHttp ?? false;
  if (raw.tlsCert === undefined && !insecureHttp && !isLoopback(listen.host)) {
    throw new InputError(
      `--listen ${listen.host}: beyond loopback the API needs TLS (--tls-cert FILE --tls-key FILE), or --insecure-http to send tokens in clear on a network you trust`,
      { field: 'listen' },
    );
  }
  return Object.freeze({
    dataDir: resolve(raw.dataDir ?? defaultDataDir(env)),
    listen,
    logLevel,
    poolDefaults: Object.freeze({ min: pool.min, max: pool.max }),
    poolAutoCreate: raw.poolAutoCreate ?? true,
    copyConcurrency: concurrency,
    templateBuilds,
    retentionMs,
    poolBudget: raw.poolBudget === undefined || raw.poolBudget === '' ? null : parseBudget(raw.poolBudget, 'poolBudget'),
    reflink,
    provisionWaitTimeoutMs: parseDuration(raw.provisionWaitTimeout ?? '30m', 'provisionWaitTimeout'),
    drainTimeoutMs: parseDuration(raw.drainTimeout ?? '10s', 'drainTimeout'),
    exporter,
    nbdListen: Object.freeze(parseListen(raw.nbdListen ?? env.PRESTAGE_NBD_LISTEN ?? DEFAULT_NBD_LISTEN)),
    nbdAdvertise: raw.nbdAdvertise,
    nbdTls,
    nbdTlsDir: nbdTlsDir === undefined ? undefined : resolve(nbdTlsDir),
    apiTls: raw.tlsCert === undefined || raw.tlsKey === undefined ? undefined : Object.freeze({ certFile: resolve(raw.tlsCert), keyFile: resolve(raw.tlsKey) }),
    insecureHttp,
    importDirs: Object.freeze((raw.importDirs ?? []).map((d) => resolve(d))),
    db: parseDb(raw.db ?? env.PRESTAGE_DB, raw.dbSchema),
  });
}

/** `--db`: nothing (SQLite) or a postgres:// URL. */
function parseDb(url: string | undefined, schema: string | undefined): Config['db'] {
  if (url === undefined || url.trim() === '') {
    if (schema !== undefined) throw new InputError('--db-schema goes with --db postgres://…', { field: 'dbSchema' });
    return { kind: 'sqlite' };
  }
  let u: URL;
  try {
    u = new URL(url.trim());
  } catch {
    throw new InputError(`--db: expected a postgres:// URL, got '${url.slice(0, 100)}'`, { field: 'db' });
  }
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') throw new InputError(`--db: expected a postgres:// URL, got ${u.protocol}//…`, { field: 'db' });
  if (schema !== undefined && !/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) throw new InputError(`--db-schema '${schema}': lower-case letters, digits and _ only`, { field: 'dbSchema' });
  return Object.freeze({ kind: 'postgres', url: url.trim(), ...(schema !== undefined && { schema }) });
}
