import { networkInterfaces } from 'node:os';
import type { Logger } from 'pino';
import type { Access, BlockDevice, Copy, ExportedCopy, Exporter, ExporterAccess, HostCredentials, Mapping } from '../domain/index.js';
import { BackgroundDevice } from './background-device.js';
import { NbdServer, type NbdStats } from './nbd/index.js';

/** The NBD server's totals since its start, with its connections open and refused now. */
export interface NbdExporterStats extends NbdStats {
  readonly open: number;
  readonly refused: number;
}

export interface NbdExporterOptions {
  /** Where the NBD server listens. */
  readonly listen: { readonly host: string; readonly port: number };
  /** The address put in the URIs handed to hosts; default: the listen address, or this machine's first IPv4 when it listens on all. */
  readonly advertise?: string;
  /** `psk`: TLS-PSK, one key per host, identity = host id; `x509`: client certificates whose CN is the host id. */
  readonly tls: 'psk' | 'x509' | 'off';
  /** PEM of the server certificate, its key and the CA of client certificates; with `tls: 'x509'`. */
  readonly x509?: { readonly cert: Buffer; readonly key: Buffer; readonly ca: Buffer };
  readonly logger?: Logger;
  /** Opens a copy's volume for I/O: the driver's openVolume (a file, an RBD image). Called in the background after export() answered. */
  readonly openVolume: (volume: string, opts: { readonly readOnly: boolean }) => Promise<BlockDevice>;
}

/** The address hosts should dial when the server listens on every interface. */
function firstIPv4(): string {
  for (const addrs of Object.values(networkInterfaces())) {
    for (const a of addrs ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.1';
}

/**
 * Maps a copy to its host over NBD: one export per mapped copy, named by the copy id, that
 * only the host (by its PSK identity or certificate CN) can list or open. Releasing a host cuts its connections.
 */
export class NbdExporter implements Exporter {
  readonly name = 'nbd';
  private readonly keys = new Map<string, Buffer>();
  /** Export name → host, so a provision checks in O(1) whether its copy is exported already. */
  private readonly exported = new Map<string, string>();
  private readonly server: NbdServer;
  private bound: { host: string; port: number } | undefined;

  constructor(private readonly o: NbdExporterOptions) {
    this.server = new NbdServer({ tls: o.tls, keys: (id) => this.keys.get(id), ...(o.x509 && { x509: o.x509 }), ...(o.logger && { logger: o.logger }) });
  }

  async start(): Promise<{ host: string; port: number }> {
    this.bound = await this.server.start({ host: this.o.listen.host, port: this.o.listen.port });
    return this.bound;
  }

  /** host:port as hosts dial it. */
  get address(): string {
    if (!this.bound) throw new Error('the NBD server is not started');
    const wildcard = this.bound.host === '0.0.0.0' || this.bound.host === '::';
    const host = this.o.advertise ?? (wildcard ? firstIPv4() : this.bound.host);
    return `${host.includes(':') ? `[${host}]` : host}:${this.bound.port}`;
  }

  /** The Exporter port's credentials hook: the NBD part of them (the TLS-PSK key). */
  setHostCredentials(hostId: string, credentials: HostCredentials | null): Promise<void> {
    this.setHostKey(hostId, credentials?.psk ?? null);
    return Promise.resolve();
  }

  /**
   * A new key (or none) for a host. When it differs from the one it had, every open NBD session
   * of the host is cut at once: a session must not outlive the key that opened it (a connection
   * still in its TLS handshake with the old key is refused when that handshake ends).
   */
  setHostKey(hostId: string, pskHex: string | null): void {
    const before = this.keys.get(hostId);
    const after = pskHex === null ? undefined : Buffer.from(pskHex, 'hex');
    if (after === undefined) this.keys.delete(hostId);
    else this.keys.set(hostId, after);
    const changed = before === undefined ? after !== undefined : after === undefined || !before.equals(after);
    // With X.509 the key opens no session (the certificate does), so there is nothing to cut.
    if (changed && this.o.tls === 'psk') void this.server.disconnectHost(hostId, 'host key changed');
  }

  async export(mapping: Mapping, copy: ExportedCopy): Promise<Access> {
    const exportName = copy.id;
    if (!this.exported.has(exportName)) {
      const device = new BackgroundDevice(copy.sizeBytes, () => this.o.openVolume(copy.volume, { readOnly: false }), (err) =>
        this.o.logger?.error({ err, copyId: copy.id, hostId: mapping.hostId, volume: copy.volume }, 'cannot open the volume of an export; its requests fail until it opens'),
      );
      await this.server.addExport({ name: exportName, device, volume: copy.volume, hostId: mapping.hostId, description: `${mapping.source} for ${mapping.hostId}` });
      this.exported.set(exportName, mapping.hostId);
    }
    return this.accessFor(mapping.hostId, exportName);
  }

  private accessFor(hostId: string, exportName: string): Access {
    const scheme = this.o.tls === 'off' ? 'nbd' : 'nbds';
    return { kind: 'nbd', uri: `${scheme}://${encodeURIComponent(hostId)}@${this.address}/${encodeURIComponent(exportName)}`, exportName };
  }

  accessOf(hostId: string, copy: Pick<Copy, 'id'> | null): Promise<ExporterAccess[]> {
    const credential = {
      psk: `TLS-PSK, identity ${hostId}; its key: prestage host key ${hostId}`,
      x509: `a client certificate with CN ${hostId}`,
      off: 'none: plaintext NBD (--nbd-tls off), for trusted networks only',
    }[this.o.tls];
    const exported = copy !== null && this.exported.get(copy.id) === hostId;
    return Promise.resolve([{ exporter: 'nbd', serves: true, access: exported ? this.accessFor(hostId, copy.id) : null, credential, sessions: this.server.connectionsOf(hostId) }]);
  }

  async unexport(hostId: string): Promise<void> {
    for (const [name, host] of this.exported) if (host === hostId) this.exported.delete(name);
    await this.server.closeHost(hostId);
  }

  exportedHosts(): readonly string[] {
    return [...new Set(this.exported.values())];
  }

  exportsServed(): readonly { name: string; hostId: string }[] {
    return this.server.listExports();
  }

  stats(): NbdExporterStats {
    return { ...this.server.stats, open: this.server.connectionsOpen, refused: this.server.connectionsRefused };
  }

  close(): Promise<void> {
    return this.server.stop();
  }
}
