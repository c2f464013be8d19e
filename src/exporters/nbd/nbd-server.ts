/**
 * The built-in NBD server: a TCP listener, the exports it serves, and the connections to them.
 *
 * With TLS-PSK (the default) a host proves its id by the key it holds: the PSK identity is the
 * host id, and a host lists and opens only the exports added for it. Without TLS there is no
 * authentication at all; that mode is for trusted networks and tests.
 */
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { X509Certificate } from 'node:crypto';
import { createSecureContext } from 'node:tls';
import type { Logger } from 'pino';
import { ConflictError, InputError, UnavailableError, errnoCode, type BlockDevice } from '../../domain/index.js';
import { NbdConnection, type ConnectionLimits, type DeviceExport, type TlsSetup } from './connection.js';
import { Handshake, type HandshakeConfig } from './handshake.js';
import { NBD_MAX_STRING } from './protocol.js';
import { newNbdStats, type NbdStats } from './stats.js';

export interface NbdServerOptions {
  /**
   * `'psk'` (default): clients must upgrade with NBD_OPT_STARTTLS and prove a host's key;
   * nothing but STARTTLS and ABORT is answered before. `'x509'`: the same, but a host proves
   * itself with a client certificate signed by `x509.ca` whose subject CN is its host id.
   * `'off'`: plaintext, no authentication: whoever reaches the port can list and open every export.
   */
  readonly tls?: 'psk' | 'x509' | 'off';
  /** The pre-shared key of a host id (the client's PSK identity); undefined refuses it. Required with `tls: 'psk'`. */
  readonly keys?: (identity: string) => Buffer | undefined;
  /** PEM: the server's certificate chain and key, and the CA(s) that sign client certificates. Required with `tls: 'x509'`. */
  readonly x509?: { readonly cert: string | Buffer; readonly key: string | Buffer; readonly ca: string | Buffer };
  /** OpenSSL cipher list, TLS 1.3 suites included. Default: `DEFAULT_PSK_CIPHERS`. */
  readonly ciphers?: string;
  /**
   * A client not in transmission this long after connecting is dropped, whatever it sends
   * meanwhile (a deadline from accept, not an idle timer). Default 30 000 ms.
   */
  readonly negotiationTimeoutMs?: number;
  /** Largest option data accepted during negotiation. Default 64 KiB. */
  readonly maxOptionLength?: number;
  /** Options an anonymous client may send before STARTTLS (with TLS on); then it is cut. Default 32. */
  readonly maxOptionsBeforeTls?: number;
  /** Options in one negotiation, all together; then the client is cut. Default 256. */
  readonly maxOptions?: number;
  /** Largest READ or WRITE, advertised as the maximum block size. Default 32 MiB. */
  readonly maxRequestLength?: number;
  /** Requests per connection being served at once; more wait unread in the socket. Default 64. */
  readonly maxInFlight?: number;
  /**
   * READ/WRITE bytes per connection being served at once, replies not yet handed to the kernel
   * included: a client that does not read its replies is not read from either. Default 64 MiB.
   */
  readonly maxInFlightBytes?: number;
  /** How long stop() lets clients finish their requests before cutting them off. Default 10 000 ms. */
  readonly stopTimeoutMs?: number;
  /** Connections open at once, all clients together; more are closed at once. Default 1024. */
  readonly maxConnections?: number;
  /**
   * Connections open at once from one address (before TLS says who it is, the address is all a
   * server knows): one client opening thousands cannot crowd out the others. Default 64.
   */
  readonly maxConnectionsPerAddress?: number;
  /**
   * Connections open at once for one host (PSK identity or certificate CN), counted once TLS
   * proved it; more are closed right after their TLS handshake. Default 64.
   */
  readonly maxConnectionsPerHost?: number;
  /** Default: no logging. */
  readonly logger?: Logger;
}

/**
 * TLS 1.3 suites, then TLS 1.2 PSK suites with ECDHE (forward secrecy) and without; GnuTLS
 * (libnbd, qemu) negotiates TLS 1.3 with these, the 1.2 ones serve older clients. Our order
 * wins: a Node PSK key is tied to SHA-256, and of the SHA-256 suites AES-GCM (in hardware on
 * most CPUs) moves data faster than ChaCha20, which GnuTLS would pick.
 */
export const DEFAULT_PSK_CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_CHACHA20_POLY1305_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'ECDHE-PSK-AES128-CBC-SHA256',
  'ECDHE-PSK-CHACHA20-POLY1305',
  'ECDHE-PSK-AES256-CBC-SHA384',
  'PSK-AES128-GCM-SHA256',
  'PSK-AES256-GCM-SHA384',
  'PSK-CHACHA20-POLY1305',
].join(':');

export interface NbdExportSpec {
  /** The NBD export name clients ask for. */
  readonly name: string;
  /** What to serve: a device a driver opened, which the server then owns and closes when the export goes (or when adding it fails). */
  readonly device: BlockDevice;
  /** Where the device's bytes live, for logs and listings. */
  readonly volume: string;
  /** The only host (PSK identity) that may see and open the export. */
  readonly hostId: string;
  /** Default false. */
  readonly readOnly?: boolean;
  /** Shown to clients that ask (NBD_INFO_DESCRIPTION, NBD_OPT_LIST). */
  readonly description?: string;
}

export type NbdServerState = 'INITIALIZED' | 'RUNNING' | 'STOPPING' | 'STOPPED';

interface CompiledOptions extends ConnectionLimits {
  readonly tls: TlsSetup | undefined;
  readonly maxOptionLength: number;
  readonly maxOptionsBeforeTls: number;
  readonly maxOptions: number;
  readonly stopTimeoutMs: number;
  readonly maxConnections: number;
  readonly maxConnectionsPerAddress: number;
  readonly maxConnectionsPerHost: number;
}

interface ServedExport extends DeviceExport {
  readonly hostId: string;
  readonly volume: string;
  readonly device: BlockDevice;
}

const KiB = 1024;
const MiB = 1024 * KiB;

function compile(o: NbdServerOptions): Readonly<CompiledOptions> {
  const int = (name: keyof NbdServerOptions, value: number, min: number, max = Number.MAX_SAFE_INTEGER): number => {
    if (!Number.isInteger(value) || value < min || value > max) throw new InputError(`NBD server option ${name} must be an integer from ${min} to ${max}`, { [name]: value });
    return value;
  };
  return Object.freeze({
    tls: compileTls(o),
    negotiationTimeoutMs: int('negotiationTimeoutMs', o.negotiationTimeoutMs ?? 30_000, 1),
    // At least room for NBD_OPT_GO with a name of the spec's longest (4096 bytes).
    maxOptionLength: int('maxOptionLength', o.maxOptionLength ?? 64 * KiB, 4 * KiB + 16),
    // Enough for any real client: STARTTLS comes first, and listing a host's exports takes a
    // few options per export.
    maxOptionsBeforeTls: int('maxOptionsBeforeTls', o.maxOptionsBeforeTls ?? 32, 1),
    maxOptions: int('maxOptions', o.maxOptions ?? 256, 1),
    // The spec: a maximum block size must not be below the preferred one (4 KiB), fits 32 bits.
    maxRequestLength: int('maxRequestLength', o.maxRequestLength ?? 32 * MiB, 4 * KiB, 0xffffffff),
    maxInFlight: int('maxInFlight', o.maxInFlight ?? 64, 1),
    maxInFlightBytes: int('maxInFlightBytes', o.maxInFlightBytes ?? 64 * MiB, 1),
    stopTimeoutMs: int('stopTimeoutMs', o.stopTimeoutMs ?? 10_000, 0),
    maxConnections: int('maxConnections', o.maxConnections ?? 1024, 1),
    maxConnectionsPerAddress: int('maxConnectionsPerAddress', o.maxConnectionsPerAddress ?? 64, 1),
    maxConnectionsPerHost: int('maxConnectionsPerHost', o.maxConnectionsPerHost ?? 64, 1),
  });
}

/** Each certificate of a PEM bundle. */
function pemCertificates(pem: string | Buffer): X509Certificate[] {
  const blocks = pem.toString().match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new Error('the CA file holds no PEM certificate');
  return blocks.map((b) => new X509Certificate(b));
}

function compileTls(o: NbdServerOptions): TlsSetup | undefined {
  const mode = o.tls ?? 'psk';
  switch (mode) {
    case 'off':
      return undefined;
    case 'psk':
      if (o.keys === undefined) throw new InputError('NBD server with TLS-PSK needs a keys() lookup');
      return { mode, keys: o.keys, secureContext: createSecureContext({ ciphers: o.ciphers ?? DEFAULT_PSK_CIPHERS, honorCipherOrder: true, minVersion: 'TLSv1.2' }) };
    case 'x509': {
      if (o.x509 === undefined) throw new InputError('NBD server with TLS X.509 needs a server certificate, its key and a CA');
      try {
        return { mode, secureContext: createSecureContext({ ...o.x509, minVersion: 'TLSv1.2' }), clientCas: pemCertificates(o.x509.ca) };
      } catch (e) {
        throw new InputError(`NBD server TLS X.509: the certificate, key or CA is not usable: ${e instanceof Error ? e.message : String(e)}`, {}, { cause: e });
      }
    }
    default:
      throw new InputError("NBD server option tls must be 'psk', 'x509' or 'off'", { tls: mode });
  }
}

export class NbdServer {
  private readonly options: Readonly<CompiledOptions>;
  private readonly log: Logger | undefined;
  private readonly exports = new Map<string, ServedExport>();
  private readonly connections = new Set<NbdConnection<ServedExport>>();
  /** Open connections per remote address. */
  private readonly perAddress = new Map<string, number>();
  /** Open connections per host, from the end of their TLS handshake. */
  private readonly perHost = new Map<string, number>();
  private refused = 0;
  private readonly totals = newNbdStats();
  private server: Server | undefined;
  private stateValue: NbdServerState = 'INITIALIZED';
  private stopping: Promise<void> | undefined;
  private connectionCount = 0;

  constructor(options: NbdServerOptions) {
    this.options = compile(options);
    this.log = options.logger?.child({ component: 'nbd' });
  }

  get state(): NbdServerState {
    return this.stateValue;
  }

  /** Open connections, negotiating or attached. */
  get connectionsOpen(): number {
    return this.connections.size;
  }

  /** Open connections of one host (counted from the end of their TLS handshake). */
  connectionsOf(hostId: string): number {
    return this.perHost.get(hostId) ?? 0;
  }

  /** Listens; resolves with the bound address (port 0 picks a free one). */
  async start(at: { host: string; port: number }): Promise<{ host: string; port: number }> {
    if (this.stateValue !== 'INITIALIZED') throw new ConflictError(`NBD server cannot start: it is ${this.stateValue}`);
    this.stateValue = 'RUNNING';
    const server = createServer((socket) => this.accept(socket));
    this.server = server;
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(at.port, at.host, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (e) {
      this.stateValue = 'STOPPED';
      const why = errnoCode(e) === 'EADDRINUSE' ? 'the address is in use (another prestage serve?)' : e instanceof Error ? e.message : String(e);
      throw new UnavailableError(`NBD server cannot listen on ${at.host}:${at.port}: ${why}`, { ...at }, { cause: e });
    }
    server.on('error', (err) => this.log?.error({ err }, 'nbd listener error'));
    const address = server.address() as AddressInfo;
    this.log?.info({ host: address.address, port: address.port, tls: this.options.tls?.mode ?? 'off' }, 'nbd server listening');
    return { host: address.address, port: address.port };
  }

  /**
   * Stops listening and lets attached clients finish the requests they sent (negotiating ones
   * are dropped); after `stopTimeoutMs` every connection is cut. Then closes the exports' files.
   */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    this.stateValue = 'STOPPING';
    const listenerClosed = new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    for (const c of this.connections) c.drain();
    const allClosed = Promise.all([...this.connections].map((c) => c.closed));
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), this.options.stopTimeoutMs)));
    if (await Promise.race([allClosed.then(() => false), timedOut])) {
      this.log?.warn({ connections: this.connections.size }, 'nbd clients did not finish in time; disconnecting them');
      for (const c of this.connections) c.destroy('server stop timed out');
    }
    clearTimeout(timer);
    await allClosed;
    await listenerClosed;
    await Promise.all([...this.exports.values()].map((e) => e.device.close()));
    this.exports.clear();
    this.stateValue = 'STOPPED';
    this.log?.info('nbd server stopped');
  }

  /** Serves a device as an export for one host. The name must be free. On refusal the device is closed. */
  async addExport(spec: NbdExportSpec): Promise<void> {
    const { device, volume, hostId } = spec;
    try {
      if (this.stateValue === 'STOPPING' || this.stateValue === 'STOPPED') throw new UnavailableError('NBD server is stopping');
      const nameBytes = Buffer.byteLength(spec.name, 'utf8');
      if (nameBytes === 0 || nameBytes > NBD_MAX_STRING || spec.name.includes('\0')) throw new InputError('NBD export names are 1 to 4096 bytes of UTF-8 without NUL', { name: spec.name });
      if (hostId === '') throw new InputError('an NBD export needs a host id', { name: spec.name });
      if (this.exports.has(spec.name)) throw new ConflictError(`NBD export '${spec.name}' exists`, { name: spec.name });
    } catch (e) {
      await device.close();
      throw e;
    }
    const readOnly = spec.readOnly ?? false;
    this.exports.set(spec.name, { name: spec.name, size: device.size, readOnly, hostId, volume, device, ...(spec.description === undefined ? {} : { description: spec.description }) });
    this.log?.info({ export: spec.name, hostId, volume, size: device.size, readOnly }, 'nbd export added');
  }

  /** Stops serving an export: new clients cannot open it and connected ones are cut at once. Absent is fine. */
  async removeExport(name: string): Promise<void> {
    const exp = this.exports.get(name);
    if (exp === undefined) return;
    this.exports.delete(name);
    const cut = [...this.connections].filter((c) => c.export === exp);
    for (const c of cut) c.destroy('export removed');
    await Promise.all(cut.map((c) => c.closed));
    await exp.device.close();
    this.log?.info({ export: name, connections: cut.length }, 'nbd export removed');
  }

  /** Removes every export of a host and cuts every connection it has, attached or not. */
  async closeHost(hostId: string): Promise<void> {
    const names = [...this.exports.values()].filter((e) => e.hostId === hostId).map((e) => e.name);
    await Promise.all([...names.map((n) => this.removeExport(n)), this.disconnectHost(hostId, 'host closed')]);
  }

  /**
   * Cuts every connection a host has after TLS, attached or not, at once (the sockets are
   * destroyed before this returns); resolves when they are gone. Its exports stay. For a key
   * change: no session may outlive the key that opened it.
   */
  disconnectHost(hostId: string, reason = 'host disconnected'): Promise<void> {
    const cut = [...this.connections].filter((c) => c.identity === hostId);
    for (const c of cut) c.destroy(reason);
    if (cut.length > 0) this.log?.info({ hostId, connections: cut.length, reason }, 'nbd host disconnected');
    return Promise.all(cut.map((c) => c.closed)).then(() => undefined);
  }

  /** The exports served, for status pages and tests. */
  listExports(): readonly { name: string; hostId: string; volume: string; size: number; readOnly: boolean }[] {
    return [...this.exports.values()].map(({ name, hostId, volume, size, readOnly }) => ({ name, hostId, volume, size, readOnly }));
  }

  private accept(socket: Socket): void {
    if (this.stateValue !== 'RUNNING') {
      socket.destroy();
      return;
    }
    const address = socket.remoteAddress ?? '';
    const fromAddress = this.perAddress.get(address) ?? 0;
    if (this.connections.size >= this.options.maxConnections || fromAddress >= this.options.maxConnectionsPerAddress) {
      // Closed before a byte is sent: refusing costs the server nothing but the accept.
      this.refused++;
      if (this.refused === 1 || this.refused % 1000 === 0) this.log?.warn({ remote: address, open: this.connections.size, fromAddress, refused: this.refused }, 'nbd connection refused: too many open');
      socket.destroy();
      return;
    }
    this.perAddress.set(address, fromAddress + 1);
    const tlsOn = this.options.tls !== undefined;
    const visible = (identity: string | null, e: ServedExport) => !tlsOn || e.hostId === identity;
    const config: HandshakeConfig<ServedExport> = {
      tlsRequired: tlsOn,
      maxOptionLength: this.options.maxOptionLength,
      maxOptionsBeforeTls: this.options.maxOptionsBeforeTls,
      maxOptions: this.options.maxOptions,
      blockSizes: { min: 1, preferred: 4096, max: this.options.maxRequestLength },
      authorize: (identity, name) => {
        const e = this.exports.get(name);
        return e !== undefined && visible(identity, e) ? e : undefined;
      },
      list: (identity) => [...this.exports.values()].filter((e) => visible(identity, e)),
    };
    const log = this.log?.child({ conn: ++this.connectionCount, remote: `${socket.remoteAddress}:${socket.remotePort}` });
    const admit = (identity: string): boolean => {
      const fromHost = this.perHost.get(identity) ?? 0;
      if (fromHost >= this.options.maxConnectionsPerHost) {
        this.refused++;
        this.log?.warn({ hostId: identity, fromHost, refused: this.refused }, 'nbd connection refused: too many open for the host');
        return false;
      }
      this.perHost.set(identity, fromHost + 1);
      return true;
    };
    this.totals.connections++;
    const conn = new NbdConnection(socket, new Handshake(config), this.options.tls, this.options, admit, log, this.totals);
    this.connections.add(conn);
    void conn.closed.then(() => {
      this.connections.delete(conn);
      decrement(this.perAddress, address);
      // A connection has an identity only once admit() counted it.
      if (conn.identity !== null) decrement(this.perHost, conn.identity);
    });
  }

  /** Connections closed because a cap was reached (at accept, or for a host after TLS), since the start. */
  get connectionsRefused(): number {
    return this.refused;
  }

  /** Connections, bytes and errors since the start (live numbers: read them, do not keep them). */
  get stats(): Readonly<NbdStats> {
    return this.totals;
  }
}

function decrement(counts: Map<string, number>, key: string): void {
  const left = (counts.get(key) ?? 1) - 1;
  if (left > 0) counts.set(key, left);
  else counts.delete(key);
}
