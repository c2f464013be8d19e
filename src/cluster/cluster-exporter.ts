import type { Access, ClusterBus, Copy, ExportedCopy, Exporter, ExporterAccess, HostCredentials, Mapping } from '../domain/index.js';

/**
 * The exporter as the services see it when instances share the state: each change is made here
 * and told to the others, so that every instance serves every mapped copy, a changed key holds
 * everywhere, and a release cuts the host's connections on every instance.
 */
export class ClusterExporter implements Exporter {
  constructor(
    readonly local: Exporter,
    private readonly bus: ClusterBus,
  ) {}

  get name(): string {
    return this.local.name;
  }

  async export(mapping: Mapping, copy: ExportedCopy): Promise<Access> {
    const access = await this.local.export(mapping, copy);
    this.bus.publish({ kind: 'mapped', hostId: mapping.hostId, copyId: copy.id });
    return access;
  }

  async setHostCredentials(hostId: string, credentials: HostCredentials | null): Promise<void> {
    await this.local.setHostCredentials(hostId, credentials);
    this.bus.publish({ kind: 'host-credentials', hostId });
  }

  async unexport(hostId: string): Promise<void> {
    await this.local.unexport(hostId);
    this.bus.publish({ kind: 'released', hostId });
  }

  accessOf(hostId: string, copy: Pick<Copy, 'id' | 'volume'> | null): Promise<ExporterAccess[]> {
    return this.local.accessOf(hostId, copy);
  }

  exportedHosts(): readonly string[] {
    return this.local.exportedHosts();
  }

  close(): Promise<void> {
    return this.local.close();
  }
}
