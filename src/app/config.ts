import { resolve } from 'node:path';
import { InputError, parseDuration, parseSize, staticPolicy, type ExporterKind } from '../domain/index.js';
import { BootNetworks } from '../service/boot-script.js';
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
  /** A cap on the disk bandwidth of all copies together, e.g. `200MiB` (per second); absent or `0`: none. */
  copyRate?: string | number;
  /** Template builds run at once over all templates; later ones wait their turn. */
  templateBuilds?: number;
  /** How long events and gone copies are kept, e.g. `30d`. */
  retention?: string | number;
  /** Cap on all pools' spares together: a count (`800`) or a size (`500GiB`). */
  poolBudget?: string;
  reflink?: 'auto' | 'never';
  /** Where images and copies live: `file` (the data directory, default) or `rbd` (Ceph). */
  driver?: string;
  /** With `driver: rbd`: the ceph.conf, the RBD pool and the Ceph user (default `admin`). */
  cephConf?: string;
  cephPool?: string;
  cephId?: string;
  provisionWaitTimeout?: string | number;
  drainTimeout?: string | number;
  exporter?: ExporterChoice;
  /** tgtd's portal, HOST:PORT (with `exporter` iscsi or both). */
  iscsiPortal?: string;
  /** Mutual CHAP for hosts added from now on: the target proves itself to the host too. */
  iscsiMutualChap?: boolean;
  /** Networks (CIDR, comma-separated) the network-boot endpoint answers; none by default. */
  bootNetworks?: string | readonly string[];
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
  /** How this instance is named among those sharing the state. */
  instanceName?: string;
  /** How long a pool lease (and an instance's silence) lasts before another instance takes over, e.g. `5s`. */
  leaseTtl?: string | number;
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
  /** Bytes per second all copies together may move (the copy and its verification); null: no cap. */
  readonly copyRateBytesPerSec: number | null;
  /** Template builds run at once over all templates (1–64). Default 2. */
  readonly templateBuilds: number;
  /** Events older than this and copies gone for longer are deleted (hourly). Default 30d. */
  readonly retentionMs: number;
  /** Cap on all pools' targets together; null: none. */
  readonly poolBudget: Budget | null;
  /** `auto` clones with reflink where the filesystem can, `never` always copies bytes. Default auto. */
  readonly reflink: 'auto' | 'never';
  /**
   * Where new images (and their copies) go unless an import names another: `file`, the data
   * directory (reflinks or sparse copies), or `rbd`, the Ceph pool of `ceph` (copies are clones of
   * a protected snapshot). Uploads and template builds stage through the data directory's tmp/.
   */
  readonly driver: 'file' | 'rbd';
  /** The Ceph pool images may go to (`--ceph-conf`, `--ceph-pool`, `--ceph-id`); null: none. */
  readonly ceph: { readonly confPath: string; readonly pool: string; readonly id: string } | null;
  /** How long a provision waits for a copy when no spare is ready. Default 30m. */
  readonly provisionWaitTimeoutMs: number;
  /** How long `stop` waits for copies in flight before it stops anyway. Default 10s. */
  readonly drainTimeoutMs: number;
  /**
   * How hosts reach their copies: `nbd` (built-in NBD server, default), `iscsi` (a tgtd this
   * server runs), `both` (each host by its record's `exporter`, default nbd) or `path` (the local file).
   */
  readonly exporter: ExporterChoice;
  /** tgtd's portal. Default 0.0.0.0:3260 (the IANA iSCSI port): hosts must reach it; the per-host ACL and CHAP guard it. */
  readonly iscsiPortal: { readonly host: string; readonly port: number };
  readonly iscsiMutualChap: boolean;
  /** Who may fetch boot scripts (`GET /v1/boot/ipxe`): addresses in these networks only. */
  readonly bootNetworks: BootNetworks;
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
  /** The name shown for this instance; default host:pid. */
  readonly instanceName: string | undefined;
  /** A pool lease not renewed for this long passes to another instance; a silent instance is dead after it. Default 5s. */
  readonly leaseTtlMs: number;
}

export const DEFAULT_LISTEN = '127.0.0.1:7480';
export const DEFAULT_NBD_LISTEN = '0.0.0.0:10809';
export const DEFAULT_ISCSI_PORTAL = '0.0.0.0:3260';

/** `--exporter`: which exporters run. `both` serves each host by its record's choice. */
export type ExporterChoice = 'nbd' | 'iscsi' | 'both' | 'path';
const EXPORTER_CHOICES: readonly ExporterChoice[] = ['nbd', 'iscsi', 'both', 'path'];

/** The exporter a host is served by under `--exporter`: its own choice where both run, else the one that runs. */
export function exporterForHost(choice: ExporterChoice, host: { readonly exporter: ExporterKind | null }): ExporterKind | 'path' {
  if (choice === 'both') return host.exporter ?? 'nbd';
  return choice;
}

/** Whether an address is this machine's own: 127.0.0.0/8, ::1 or localhost. */
export function parseListen(raw: string, flag = '--listen'): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):([0-9]{1,5})$/.exec(raw.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new InputError(`${flag}: expected HOST:PORT (e.g. 127.0.0.1:7480), got '${raw}'`, { field: flag.replace(/^--/, '').replace(/-(\w)/g, (_, c: string) => c.toUpperCase()) });
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
  const copyRateBytesPerSec = parseCopyRate(raw.copyRate);
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
  if (!EXPORTER_CHOICES.includes(exporter)) throw new InputError(`exporter must be one of ${EXPORTER_CHOICES.join(', ')}`, { field: 'exporter' });
  const nbdTls = raw.nbdTls ?? 'psk';
  if (nbdTls !== 'psk' && nbdTls !== 'x509' && nbdTls !== 'off') throw new InputError("nbd tls must be 'psk', 'x509' or 'off'", { field: 'nbdTls' });
  const nbdTlsDir = raw.nbdTlsDir ?? env.PRESTAGE_NBD_TLS_DIR;
  if (nbdTls === 'x509' && (exporter === 'nbd' || exporter === 'both') && nbdTlsDir === undefined) {
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
  const drivers = parseDriver(raw, env);
  if (exporter === 'path' && drivers.ceph !== null) throw new InputError('--exporter path hands hosts local files; copies on Ceph (--ceph-pool) need --exporter nbd', { field: 'exporter' });
  const leaseTtlMs = parseDuration(raw.leaseTtl ?? '5s', 'leaseTtl');
  // Below a second, a busy event loop or a slow query would hand pools around for nothing.
  if (leaseTtlMs < 1000 || leaseTtlMs > 600_000) throw new InputError('--lease-ttl must be from 1s to 10m', { field: 'leaseTtl' });
  const instanceName = raw.instanceName ?? env.PRESTAGE_INSTANCE_NAME;
  if (instanceName !== undefined && !/^[\x21-\x7e]{1,63}$/.test(instanceName)) throw new InputError('--instance-name: 1 to 63 printable characters without spaces', { field: 'instanceName' });
  return Object.freeze({
    instanceName,
    leaseTtlMs,
    dataDir: resolve(raw.dataDir ?? defaultDataDir(env)),
    listen,
    logLevel,
    poolDefaults: Object.freeze({ min: pool.min, max: pool.max }),
    poolAutoCreate: raw.poolAutoCreate ?? true,
    copyConcurrency: concurrency,
    copyRateBytesPerSec,
    templateBuilds,
    retentionMs,
    poolBudget: raw.poolBudget === undefined || raw.poolBudget === '' ? null : parseBudget(raw.poolBudget, 'poolBudget'),
    reflink,
    ...drivers,
    provisionWaitTimeoutMs: parseDuration(raw.provisionWaitTimeout ?? '30m', 'provisionWaitTimeout'),
    drainTimeoutMs: parseDuration(raw.drainTimeout ?? '10s', 'drainTimeout'),
    exporter,
    iscsiPortal: Object.freeze(parseListen(raw.iscsiPortal ?? DEFAULT_ISCSI_PORTAL, '--iscsi-portal')),
    iscsiMutualChap: raw.iscsiMutualChap === true,
    bootNetworks: BootNetworks.parse(raw.bootNetworks),
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

/** `--driver` and the Ceph pool that `rbd` needs (and that imports may name with the file driver as the default). */
function parseDriver(raw: RawConfig, env: NodeJS.ProcessEnv): Pick<Config, 'driver' | 'ceph'> {
  const driver = raw.driver ?? env.PRESTAGE_DRIVER ?? 'file';
  if (driver !== 'file' && driver !== 'rbd') throw new InputError(`--driver must be 'file' or 'rbd', got '${driver}'`, { field: 'driver' });
  const confPath = raw.cephConf ?? env.PRESTAGE_CEPH_CONF;
  const pool = raw.cephPool ?? env.PRESTAGE_CEPH_POOL;
  const id = raw.cephId ?? env.PRESTAGE_CEPH_ID;
  if (confPath === undefined && pool === undefined) {
    if (driver === 'rbd') throw new InputError('--driver rbd needs --ceph-conf FILE and --ceph-pool NAME', { field: 'cephConf' });
    if (id !== undefined) throw new InputError('--ceph-id goes with --ceph-conf and --ceph-pool', { field: 'cephId' });
    return { driver, ceph: null };
  }
  if (confPath === undefined) throw new InputError('--ceph-pool needs --ceph-conf FILE (a ceph.conf naming the monitors and the keyring)', { field: 'cephConf' });
  if (pool === undefined) throw new InputError('--ceph-conf needs --ceph-pool NAME (an RBD pool: ceph osd pool create NAME; rbd pool init NAME)', { field: 'cephPool' });
  // Ceph's own rules for pool names are loose; these keep a name safe in an `rbd:POOL/IMAGE` locator.
  if (!/^[A-Za-z0-9_.-]{1,128}$/.test(pool)) throw new InputError(`--ceph-pool '${pool}': letters, digits, '.', '_' and '-' only`, { field: 'cephPool' });
  if (id !== undefined && !/^[A-Za-z0-9_.-]{1,64}$/.test(id)) throw new InputError(`--ceph-id '${id}': letters, digits, '.', '_' and '-' only`, { field: 'cephId' });
  return { driver, ceph: Object.freeze({ confPath: resolve(confPath), pool, id: id ?? 'admin' }) };
}

/** `--copy-rate`: `200MiB` or `200MiB/s`; 0 or nothing means no cap. */
function parseCopyRate(raw: string | number | undefined): number | null {
  if (raw === undefined || raw === '') return null;
  const bytes = parseSize(typeof raw === 'string' ? raw.replace(/\/s$/i, '') : raw, 'copyRate');
  if (bytes === 0) return null;
  // Below this a single 32 MiB chunk would take over half a minute: surely a unit mistake.
  if (bytes < 1 << 20) throw new InputError(`--copy-rate ${raw}: at least 1MiB (per second), or 0 for no cap`, { field: 'copyRate' });
  return bytes;
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
