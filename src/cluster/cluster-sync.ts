import type { Logger } from 'pino';
import { NotFoundError, type ClusterBus, type ClusterMessage, type ExportedCopy, type Exporter, type HostCredentials, type Image, type Mapping, type Store } from '../domain/index.js';

export interface ClusterSyncOptions {
  readonly bus: ClusterBus;
  readonly store: Store;
  /** This instance's own exporter (not the ClusterExporter, which would tell the others again). */
  readonly exporter: Exporter;
  readonly logger: Logger;
  /** A copy came ready on another instance: a provision waiting here may take it. */
  readonly onCopyReady: (copyId: string, imageId: string) => void;
  /** Tokens changed on another instance (null: any of them). */
  readonly onTokenRevoked?: (name: string | null) => void;
  /** A host's credentials as the store has them now (null: it has none). */
  readonly credentialsOf: (hostId: string) => Promise<HostCredentials | null>;
  /** Every host's credentials. */
  readonly allCredentials: () => Promise<ReadonlyMap<string, HostCredentials>>;
  /** Where a copy of the image lives, as this instance's driver names it (a shared filesystem may be mounted elsewhere here). */
  readonly volumeOf: (copyId: string, image: Pick<Image, 'volume'>) => string;
  /** Pools changed hands (an instance stopped): take leases now rather than at the next heartbeat. */
  readonly onPools: () => void;
  /** A spare was taken or a copy released elsewhere: a pool led here may need refilling. */
  readonly onClaimOrRelease: () => void;
  /** Another instance appended events to the log: streams of it served here read on. */
  readonly onEvents?: () => void;
  /** Full resynchronization period, a safety net under lost notifications. Default 30 s. */
  readonly resyncMs?: number;
}

/**
 * Applies what the other instances tell (ClusterExporter, the replenishers) to this one: exports
 * of copies they mapped, releases, key changes, copies come ready. A message is only a hint: the
 * state is read from the store before anything is exported. Messages of one host are applied in
 * order; after the bus was down, and every `resyncMs`, every mapping and key is read again.
 */
export class ClusterSync {
  private readonly perHost = new Map<string, Promise<void>>();
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  /** Image id → its volume and size; images never change, so once read is enough. */
  private readonly images = new Map<string, Pick<Image, 'volume' | 'sizeBytes'>>();

  constructor(private readonly o: ClusterSyncOptions) {}

  /** The mapped copy as this instance's driver places it. */
  private async copyOf(mapping: Mapping): Promise<ExportedCopy> {
    let image = this.images.get(mapping.imageId);
    if (image === undefined) {
      const row = await this.o.store.getImage(mapping.imageId);
      if (!row) throw new NotFoundError('image', mapping.imageId);
      image = { volume: row.volume, sizeBytes: row.sizeBytes };
      this.images.set(mapping.imageId, image);
    }
    return { id: mapping.copyId, volume: this.o.volumeOf(mapping.copyId, image), sizeBytes: image.sizeBytes };
  }

  start(): void {
    this.o.bus.subscribe((m) => this.handle(m));
    this.o.bus.onResync(() => void this.resync());
    this.timer = setInterval(() => void this.resync(), this.o.resyncMs ?? 30_000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await Promise.allSettled([...this.perHost.values()]);
  }

  private handle(m: ClusterMessage): void {
    if (this.stopped) return;
    switch (m.kind) {
      case 'mapped':
        this.o.onClaimOrRelease();
        this.inOrder(m.hostId, () => this.exportMapped(m.hostId, m.copyId));
        return;
      case 'released':
        this.o.onClaimOrRelease();
        this.inOrder(m.hostId, () => this.o.exporter.unexport(m.hostId));
        return;
      case 'host-credentials':
        this.inOrder(m.hostId, async () => this.o.exporter.setHostCredentials(m.hostId, await this.o.credentialsOf(m.hostId)));
        return;
      case 'copy-ready':
        this.o.onCopyReady(m.copyId, m.imageId);
        return;
      case 'token-revoked':
        this.o.onTokenRevoked?.(m.name);
        return;
      case 'pools':
        this.o.onPools();
        return;
      case 'events':
        this.o.onEvents?.();
        return;
    }
  }

  private inOrder(hostId: string, step: () => Promise<void>): void {
    const before = this.perHost.get(hostId) ?? Promise.resolve();
    const next = before
      .then(step)
      .catch((err: unknown) => this.o.logger.warn({ err, hostId }, 'a change told by another instance was not applied here; the next resync retries'))
      .finally(() => {
        if (this.perHost.get(hostId) === next) this.perHost.delete(hostId);
      });
    this.perHost.set(hostId, next);
  }

  /**
   * The mapping as the store has it decides (a mapping row exists only for a handed-out copy);
   * where the copy's volume is comes from this instance's own driver, never from the message.
   */
  private async exportMapped(hostId: string, copyId: string): Promise<void> {
    const mapping = await this.o.store.getMapping(hostId);
    if (mapping?.copyId !== copyId) return; // released again meanwhile, or never committed
    await this.o.exporter.export(mapping, await this.copyOf(mapping));
  }

  /** Every key and every mapping as the store has them now; hosts no longer mapped lose their exports. */
  async resync(): Promise<void> {
    if (this.stopped) return;
    const { store, exporter, logger } = this.o;
    try {
      for (const [hostId, credentials] of await this.o.allCredentials()) this.inOrder(hostId, () => exporter.setHostCredentials(hostId, credentials));
      const mapped = new Set<string>();
      // One query for all: exporting a copy exported already costs nothing (no read per host).
      for (const m of await store.listMappings()) {
        mapped.add(m.hostId);
        this.inOrder(m.hostId, async () => void (await exporter.export(m, await this.copyOf(m))));
      }
      for (const hostId of exporter.exportedHosts()) if (!mapped.has(hostId)) this.inOrder(hostId, () => exporter.unexport(hostId));
    } catch (err) {
      logger.warn({ err }, 'resynchronization with the state failed; tried again later');
    }
  }
}
