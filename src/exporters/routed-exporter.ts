import type { Access, Copy, ExportedCopy, Exporter, ExporterAccess, ExporterKind, HostCredentials, Mapping } from '../domain/index.js';

/**
 * Serves each host by the exporter chosen for it (`--exporter both`, or iSCSI alone): the
 * services see one Exporter. A release unexports the host from every exporter, so a host whose
 * choice changed while mapped still loses its sessions everywhere.
 */
export class RoutedExporter implements Exporter {
  readonly name: string;

  constructor(
    private readonly exporters: Readonly<Partial<Record<ExporterKind, Exporter>>>,
    /** The exporter that serves the host (its record's choice, else the server's). */
    private readonly route: (hostId: string) => Promise<ExporterKind>,
  ) {
    this.name = Object.keys(exporters).join('+');
  }

  async export(mapping: Mapping, copy: ExportedCopy): Promise<Access> {
    const kind = await this.route(mapping.hostId);
    const exporter = this.exporters[kind];
    if (!exporter) throw new Error(`host ${mapping.hostId} is to be served over ${kind}, which this server does not run (--exporter ${this.name})`);
    return exporter.export(mapping, copy);
  }

  async setHostCredentials(hostId: string, credentials: HostCredentials | null): Promise<void> {
    for (const e of this.all()) await e.setHostCredentials(hostId, credentials);
  }

  async accessOf(hostId: string, copy: Pick<Copy, 'id' | 'volume'> | null): Promise<ExporterAccess[]> {
    const kind = await this.route(hostId);
    const out: ExporterAccess[] = [];
    for (const [name, e] of Object.entries(this.exporters)) {
      if (!e) continue;
      const serves = name === kind;
      for (const a of await e.accessOf(hostId, copy)) out.push({ ...a, serves, access: serves ? a.access : null });
    }
    return out;
  }

  async unexport(hostId: string): Promise<void> {
    for (const e of this.all()) await e.unexport(hostId);
  }

  exportedHosts(): readonly string[] {
    return [...new Set(this.all().flatMap((e) => e.exportedHosts()))];
  }

  async close(): Promise<void> {
    for (const e of this.all()) await e.close();
  }

  private all(): Exporter[] {
    return Object.values(this.exporters).filter((e): e is Exporter => e !== undefined);
  }
}
