/**
 * The narrow interfaces the core needs from its adapters. Real implementations are wired in
 * `app/`; tests of the layers above may swap them.
 */
import type { CustomizePlan } from './template.js';
import type { Access, ExporterAccess, HostCredentials } from './access.js';
import type { ApiToken, Copy, CopyMethod, CopyState, EventRecord, Host, Image, InstanceRecord, Mapping, Pool, PoolLease, PoolPolicy, ReapedWork, TemplateBuild, TemplateRecord } from './types.js';

export interface Progress {
  readonly doneBytes: number;
  readonly totalBytes: number;
}
export type ProgressListener = (p: Progress) => void;

export interface ImportedVolume {
  readonly sha256: string;
  readonly sizeBytes: number;
  readonly volume: string;
  /** The format the file came in (a qcow2 is converted to raw). */
  readonly format: 'raw' | 'qcow2';
}

export interface MadeCopy {
  readonly method: CopyMethod;
  readonly durationMs: number;
  readonly allocatedBytes: number;
}

export interface StoreSpace {
  readonly freeBytes: number;
  readonly totalBytes: number;
}

/** Bytes received into a temporary file, not yet an image. */
export interface StagedImage {
  readonly path: string;
  readonly bytes: number;
  /** Of the bytes as received (for a qcow2, of the qcow2 file, not of the image it holds). */
  readonly sha256: string;
  /** Removes the file; safe to call more than once. */
  discard(): Promise<void>;
}

/** An allocation extent of a block device: `flags` holds EXTENT_HOLE and EXTENT_ZERO bits. */
export interface BlockExtent {
  readonly length: number;
  readonly flags: number;
}
/** Not allocated (the same bit as NBD's base:allocation NBD_STATE_HOLE). */
export const EXTENT_HOLE = 1 << 0;
/** Reads as zeros (NBD_STATE_ZERO). */
export const EXTENT_ZERO = 1 << 1;

/**
 * A volume opened for I/O: what the NBD server serves and what a driver hands out, whatever the
 * volume is (a file, an RBD image). Offsets and lengths are already checked against `size`.
 * One device may be shared by several connections: a flush makes every completed write durable.
 */
export interface BlockDevice {
  readonly size: number;
  read(into: Buffer, offset: number): Promise<void>;
  write(data: Buffer, offset: number): Promise<void>;
  /** Makes every completed write durable. */
  flush(): Promise<void>;
  /** A hint that the range is no longer needed; may do nothing. */
  trim(offset: number, length: number): Promise<void>;
  /** Makes the range read as zeros; `mayPunch` allows doing it by deallocating. */
  zero(offset: number, length: number, mayPunch: boolean): Promise<void>;
  /** Allocation extents from `offset`: at least one, at most `max`, within the range. */
  extents(offset: number, length: number, max: number): Promise<BlockExtent[]>;
  /** Waits for running operations, then releases the device; later calls fail. */
  close(): Promise<void>;
}

/** A local file a driver made for a tool that needs a path. */
export interface ScratchFile {
  readonly path: string;
  /** How it was made (e.g. reflink, sparse-copy, export). */
  readonly method: CopyMethod;
  readonly durationMs: number;
}

/** A storage driver's name: `file` (the data directory) or `rbd` (a Ceph pool). */
export type DriverName = 'file' | 'rbd';

/** How volumes are stored and copied. Every volume it makes is complete, flushed and verified. */
export interface VolumeDriver {
  /** `file`, `rbd`; a set of drivers is named by the one new images go to. */
  readonly name: DriverName;
  /**
   * Reads an image file, hashes it while storing it content-addressed and sealed read-only, with
   * the driver named `into` (default: where new images go; a driver that is not configured is an
   * InputError).
   * Throws BadImageError for unreadable or truncated files, NoSpaceError when the disk is full;
   * leaves nothing behind on failure.
   */
  importImage(path: string, onProgress?: ProgressListener, into?: DriverName): Promise<ImportedVolume>;
  /**
   * Receives an image's bytes from a stream (an upload, a download) into a temporary file of the
   * store, hashing them on the way, for importImage(staged.path). Nothing is left behind when the
   * stream fails; the caller calls discard() once it is done with the file.
   */
  stageImage(chunks: AsyncIterable<Uint8Array>, opts?: { readonly totalBytes?: number; readonly onProgress?: ProgressListener }): Promise<StagedImage>;
  /**
   * Where the copy with this id of this image will live (known before it is made, so a crash can
   * be reconciled): with the image's driver.
   */
  copyVolumeFor(copyId: string, image: Pick<Image, 'volume'>): string;
  /** Whether this driver stores the volume (an image's or a copy's locator). */
  owns(volume: string): boolean;
  /** The name of the driver that stores the volume (`file`, `rbd`), for people; undefined: none here. */
  driverOf(volume: string): DriverName | undefined;
  /** Makes a verified copy of an image's volume at `copyVolumeFor(copyId)`. */
  makeCopy(image: Pick<Image, 'volume' | 'sha256' | 'sizeBytes'>, copyId: string, onProgress?: ProgressListener): Promise<MadeCopy>;
  /**
   * Bytes one new copy of the image takes on the store before it is ready: what the replenisher
   * reserves before it starts one, so it never starts more copies than the free space holds.
   */
  copyBytes(image: Pick<Image, 'volume' | 'sizeBytes'>): Promise<number>;
  /**
   * Space left where copies of the image are made (by default, where new images go): bytes an
   * unprivileged writer may still use, and the store's size.
   */
  freeSpace(near?: Pick<Image, 'volume'>): Promise<StoreSpace>;
  /**
   * Opens a copy's volume for I/O: the device the NBD server serves to the copy's host. Opening
   * is cheap (no data is read); the caller closes it.
   */
  openVolume(volume: string, opts: { readonly readOnly: boolean }): Promise<BlockDevice>;
  /**
   * A writable local file holding an image's bytes, for tools that need a path (a template
   * build's customizer), named by `name` (a copy id) so that a crash can be cleaned up:
   * removeCopy(name) removes it as it removes a copy, which is what reconcile does for a dead
   * build. The caller imports it with importImage(path) when done.
   */
  scratchFile(image: Pick<Image, 'volume' | 'sha256' | 'sizeBytes'>, name: string, onProgress?: ProgressListener): Promise<ScratchFile>;
  /** Removes a copy's volume, complete or partial; absent is fine. */
  removeCopy(copyId: string): Promise<void>;
  /** Removes an image volume that no row refers to. */
  removeImage(volume: string): Promise<void>;
  volumeExists(volume: string): Promise<boolean>;
  /** Every copy volume on disk, complete or partial, by copy id (for reconcile). */
  listCopyVolumes(): Promise<readonly { copyId: string; volume: string; partial: boolean }[]>;
  /** Removes temporary files of interrupted imports; returns their names (for reconcile). */
  removeTempFiles(dead?: (owner: string | null) => boolean): Promise<readonly string[]>;
  /** Every image volume on disk (for reconcile). */
  listImageVolumes(): Promise<readonly string[]>;
  close(): Promise<void>;
}

/** How a mapped copy reaches its host. A spare or an image is never exported. */
/**
 * What the store keeps of a host's iSCSI login, beside its PSK: its initiator name and CHAP
 * secrets. Its CHAP user is its id and the mutual one its target's name, so neither is stored.
 */
export interface HostIscsiSecrets {
  readonly iqn: string;
  readonly chapSecret: string;
  /** Null: one-way CHAP. */
  readonly mutualSecret: string | null;
}

/**
 * What an exporter serves: a copy's id and volume, and its size (its image's), known without
 * opening the volume, so that an exporter may open it after the provision has answered.
 */
export interface ExportedCopy {
  readonly id: string;
  readonly volume: string;
  readonly sizeBytes: number;
}

export interface Exporter {
  readonly name: string;
  /** Exports the copy to the mapping's host only; exporting an exported copy again is a no-op. */
  export(mapping: Mapping, copy: ExportedCopy): Promise<Access>;
  /**
   * The host's credentials as they are now (null: the host was removed). Sessions opened with
   * credentials that changed end at once; the exporter takes only its own part.
   */
  setHostCredentials(hostId: string, credentials: HostCredentials | null): Promise<void>;
  unexport(hostId: string): Promise<void>;
  /** How the host reaches its mapped copy (null when it has none) over each exporter here. */
  accessOf(hostId: string, copy: Pick<Copy, 'id' | 'volume'> | null): Promise<ExporterAccess[]>;
  /** Hosts with a copy exported here now. */
  exportedHosts(): readonly string[];
  close(): Promise<void>;
}

/**
 * What one instance tells the others sharing its state (PostgreSQL LISTEN/NOTIFY; nothing with
 * SQLite, where there is one). Only hints: every receiver reads the truth from the store.
 */
export type ClusterMessage =
  | { readonly kind: 'mapped'; readonly hostId: string; readonly copyId: string }
  | { readonly kind: 'released'; readonly hostId: string }
  | { readonly kind: 'copy-ready'; readonly copyId: string; readonly imageId: string }
  | { readonly kind: 'host-credentials'; readonly hostId: string }
  | { readonly kind: 'token-revoked'; readonly name: string | null }
  | { readonly kind: 'pools' }
  /** Events were appended to the log: live readers of it (`GET /v1/events` streams) read on. */
  | { readonly kind: 'events' };

export interface ClusterBus {
  /** Sends to every other instance; never throws (a message lost is made up by the next resync). */
  publish(message: ClusterMessage): void;
  /** Messages from the other instances. */
  subscribe(handler: (message: ClusterMessage) => void): void;
  /** Called after the bus was down: messages may have been missed, so read the state again. */
  onResync(handler: () => void): void;
  close(): Promise<void>;
}

/** Changes the filesystem inside a raw disk image (a template build's working copy). */
export interface Customizer {
  /** Applies the plan; `log` gets the build-log lines. Leaves the disk partly changed on failure: it is a throwaway copy. */
  customize(diskPath: string, plan: CustomizePlan, log: (line: string) => void): Promise<void>;
}

export interface Clock {
  now(): number;
}

export interface NewEvent {
  readonly type: string;
  readonly subject: string;
  readonly data?: Record<string, unknown>;
}

/** Counts of copies of one image in one pool (or of an image over every pool when pool is undefined). */
export interface CopyCounts {
  readonly ready: number;
  readonly making: number;
  readonly mapped: number;
}

/** The state store. Every method is atomic; claims never hand out one copy twice. */
export interface Store {
  // images
  nextImageVersion(name: string): Promise<number>;
  insertImage(image: Image, event: NewEvent): Promise<void>;
  getImage(id: string): Promise<Image | undefined>;
  findImage(name: string, version: number | null): Promise<Image | undefined>;
  listImages(): Promise<Image[]>;
  setImageState(id: string, state: Image['state'], event: NewEvent): Promise<void>;
  /** Deletes an image row; refuses (ConflictError) while copies of it or pools pinned to it exist. */
  deleteImage(id: string, event: NewEvent): Promise<void>;

  // pools
  /** Creates or changes a pool; `prewarm` undefined keeps the events it has. */
  upsertPool(source: string, policy: PoolPolicy, event: NewEvent, prewarm?: readonly string[]): Promise<Pool>;
  /** The pool's demand forecaster state (opaque JSON); a pool that is gone is ignored. */
  savePoolForecast(source: string, state: string): Promise<void>;
  loadPoolForecasts(): Promise<Map<string, string>>;
  getPool(source: string): Promise<Pool | undefined>;
  listPools(): Promise<Pool[]>;
  deletePool(source: string, event: NewEvent): Promise<void>;

  // copies
  insertCopy(copy: Copy): Promise<void>;
  getCopy(id: string): Promise<Copy | undefined>;
  listCopies(filter?: { state?: CopyState; imageId?: string; notImageId?: string; pool?: string | null }): Promise<Copy[]>;
  countCopies(imageId: string, pool?: string | null): Promise<CopyCounts>;
  /**
   * Moves a copy along the state machine if it is in `from`; returns false when it was not. From
   * making to ready it also checks the fence: a spare started under a pool lease moves only while
   * its maker still holds that lease at that epoch.
   */
  moveCopy(id: string, from: CopyState, to: CopyState, patch?: Partial<Pick<Copy, 'method' | 'error' | 'readyAt' | 'copyMs'>>, event?: NewEvent): Promise<boolean>;
  /** One transaction: take the oldest ready copy of the image (or the given copy) and map it to the host. */
  claim(args: { hostId: string; imageId: string; source: string; copyId?: string; at: string }, event: NewEvent): Promise<{ copy: Copy; mapping: Mapping } | undefined>;
  /** One transaction: drop the mapping and move its copy to releasing. */
  unmap(hostId: string, event: NewEvent): Promise<Copy | undefined>;

  // hosts and mappings
  insertHost(host: Host, event: NewEvent): Promise<void>;
  getHost(id: string): Promise<Host | undefined>;
  listHosts(): Promise<Host[]>;
  /** Removes a host and the API tokens bound to it; refused while it holds a mapping. */
  deleteHost(id: string, event: NewEvent): Promise<void>;
  /** Sets the host's TLS-PSK key (hex); the PSK identity is the host id. */
  setHostKey(id: string, pskHex: string, event: NewEvent): Promise<void>;
  getHostKey(id: string): Promise<string | undefined>;
  listHostKeys(): Promise<{ hostId: string; psk: string }[]>;
  /** Sets the host's initiator name and CHAP secrets; an initiator name another host has is a ConflictError. */
  setHostIscsi(id: string, iscsi: HostIscsiSecrets, event: NewEvent): Promise<void>;
  /** Undefined until they were made (hosts from before iSCSI get them on first use). */
  getHostIscsi(id: string): Promise<HostIscsiSecrets | undefined>;
  listHostIscsi(): Promise<({ hostId: string } & HostIscsiSecrets)[]>;
  getHostByMac(mac: string): Promise<Host | undefined>;
  /** The host's credential for its own cloud-init documents (hex); not its NBD key. */
  setHostMetaSecret(id: string, secretHex: string, event: NewEvent): Promise<void>;
  getHostMetaSecret(id: string): Promise<string | undefined>;
  setHostVars(id: string, vars: Readonly<Record<string, string>>, event: NewEvent): Promise<void>;
  getMapping(hostId: string): Promise<Mapping | undefined>;
  listMappings(): Promise<Mapping[]>;

  // templates
  /** Creates or replaces a template's spec; refuses (ConflictError) a name golden images use. */
  upsertTemplate(t: TemplateRecord, event: NewEvent): Promise<void>;
  getTemplate(name: string): Promise<TemplateRecord | undefined>;
  listTemplates(): Promise<TemplateRecord[]>;
  /** Deletes the template row and its builds (its versions are images, removed before). */
  deleteTemplate(name: string, event: NewEvent): Promise<void>;
  insertBuild(b: TemplateBuild): Promise<void>;
  updateBuild(id: string, patch: Partial<Omit<TemplateBuild, 'id' | 'template' | 'spec'>>, event?: NewEvent): Promise<void>;
  /** Newest first. */
  listBuilds(template: string): Promise<TemplateBuild[]>;
  /** The build that made a template version. */
  buildOfImage(imageId: string): Promise<TemplateBuild | undefined>;

  // events
  // API tokens: stored by the SHA-256 of their secret
  insertToken(token: ApiToken, sha256: string, event: NewEvent): Promise<void>;
  findToken(sha256: string): Promise<ApiToken | undefined>;
  listTokens(): Promise<ApiToken[]>;
  deleteToken(name: string, event: NewEvent): Promise<void>;

  appendEvent(event: NewEvent): Promise<void>;
  listEvents(opts?: { afterSeq?: number; limit?: number }): Promise<EventRecord[]>;
  /**
   * What a live reader of the log reads next: the events after `afterSeq` in order, at most
   * `limit`, cut before any gap in the sequence numbers that a transaction still in flight may
   * yet fill. A reader that goes on after the last event returned misses none of those that
   * commit later. (PostgreSQL numbers an event when it is inserted, not when it commits, so 12
   * may be seen before 11 commits; one writer at a time, as with SQLite, has no such gaps.)
   */
  tailEvents(afterSeq: number, limit: number): Promise<EventRecord[]>;
  /** The sequence number of the newest event, 0 with none. */
  lastEventSeq(): Promise<number>;
  /** `listener` runs after each transaction of this store that appended events has committed; the returned function removes it. */
  onEventsAppended(listener: () => void): () => void;
  /**
   * Retention, in one transaction: raises the event horizon (never lowers it) to the first event
   * at or after `eventsBefore` and deletes the events below it, and deletes copies that went
   * `gone` before `copiesGoneBefore` and that nothing refers to. Returns how many rows went.
   */
  prune(cutoffs: { eventsBefore: Date; copiesGoneBefore: Date }): Promise<{ events: number; copies: number }>;

  // cluster: instances, their heartbeats and the pool leases (docs/design.md, "Several instances")
  registerInstance(instance: InstanceRecord, event: NewEvent): Promise<void>;
  /** Records a heartbeat; false when the instance was reaped meanwhile (it must not act as that instance again). */
  heartbeatInstance(id: string, at: string): Promise<boolean>;
  /** A clean stop: the instance gives up its leases. */
  stopInstance(id: string, at: string, event: NewEvent): Promise<void>;
  /** Instances neither stopped nor reaped (alive, or dead and not yet found out). */
  listInstances(): Promise<InstanceRecord[]>;
  /**
   * One transaction, done by one reaper only: marks a dead instance reaped, moves the copies it
   * was making to failed and its running builds to failed, and drops its leases. Undefined when
   * it was reaped (or stopped) already.
   */
  reapInstance(id: string, by: string, at: string, event: NewEvent): Promise<ReapedWork | undefined>;
  /** Takes a pool's lease if nobody holds it or it expired before `at` (or the taker holds it); returns the new epoch. */
  acquireLease(source: string, instanceId: string, at: string, expiresAt: string, event: NewEvent): Promise<number | undefined>;
  /** Extends every lease the instance still holds; returns those (a lease taken over is not among them). */
  renewLeases(instanceId: string, expiresAt: string): Promise<PoolLease[]>;
  releaseLease(source: string, instanceId: string): Promise<void>;
  listLeases(): Promise<PoolLease[]>;

  close(): Promise<void>;

  /**
   * What a provision reads before it claims, in one query: the host, its mapping, and the image
   * `name@version` names (`version` null: the newest of `name`, as `findImage`). Undefined when
   * there is no such host.
   */
  provisionLookup(hostId: string, name: string, version: number | null): Promise<{ host: Host; mapping: Mapping | undefined; image: Image | undefined } | undefined>;
}
