/**
 * The narrow interfaces the core needs from its adapters. Real implementations are wired in
 * `app/`; tests of the layers above may swap them.
 */
import type { CustomizePlan } from './template.js';
import type { Access, ApiToken, Copy, CopyMethod, CopyState, EventRecord, Host, Image, Mapping, Pool, PoolPolicy, TemplateBuild, TemplateRecord } from './types.js';

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

/** How volumes are stored and copied. Every volume it makes is complete, flushed and verified. */
export interface VolumeDriver {
  readonly name: string;
  /**
   * Reads an image file, hashes it while storing it content-addressed and sealed read-only.
   * Throws BadImageError for unreadable or truncated files, NoSpaceError when the disk is full;
   * leaves nothing behind on failure.
   */
  importImage(path: string, onProgress?: ProgressListener): Promise<ImportedVolume>;
  /**
   * Receives an image's bytes from a stream (an upload, a download) into a temporary file of the
   * store, hashing them on the way, for importImage(staged.path). Nothing is left behind when the
   * stream fails; the caller calls discard() once it is done with the file.
   */
  stageImage(chunks: AsyncIterable<Uint8Array>, opts?: { readonly totalBytes?: number; readonly onProgress?: ProgressListener }): Promise<StagedImage>;
  /** Where the copy with this id will live (known before it is made, so a crash can be reconciled). */
  copyVolumeFor(copyId: string): string;
  /** Makes a verified copy of an image's volume at `copyVolumeFor(copyId)`. */
  makeCopy(image: Pick<Image, 'volume' | 'sha256' | 'sizeBytes'>, copyId: string, onProgress?: ProgressListener): Promise<MadeCopy>;
  /**
   * Bytes one new copy of the image takes on the store before it is ready: what the replenisher
   * reserves before it starts one, so it never starts more copies than the free space holds.
   */
  copyBytes(image: Pick<Image, 'volume' | 'sizeBytes'>): Promise<number>;
  /** Space left where copies are made: bytes an unprivileged writer may still use, and the filesystem's size. */
  freeSpace(): Promise<StoreSpace>;
  /** Removes a copy's volume, complete or partial; absent is fine. */
  removeCopy(copyId: string): Promise<void>;
  /** Removes an image volume that no row refers to. */
  removeImage(volume: string): Promise<void>;
  volumeExists(volume: string): Promise<boolean>;
  /** Every copy volume on disk, complete or partial, by copy id (for reconcile). */
  listCopyVolumes(): Promise<readonly { copyId: string; volume: string; partial: boolean }[]>;
  /** Removes temporary files of interrupted imports; returns their names (for reconcile). */
  removeTempFiles(): Promise<readonly string[]>;
  /** Every image volume on disk (for reconcile). */
  listImageVolumes(): Promise<readonly string[]>;
  close(): Promise<void>;
}

/** How a mapped copy reaches its host. A spare or an image is never exported. */
export interface Exporter {
  readonly name: string;
  /** Exports the copy to the mapping's host only; exporting an exported copy again is a no-op. */
  export(mapping: Mapping, copy: Copy): Promise<Access>;
  /** The host's credentials changed (a new key, or null when the host is removed). */
  setHostKey(hostId: string, pskHex: string | null): void;
  unexport(hostId: string): Promise<void>;
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
  /** Moves a copy along the state machine if it is in `from`; returns false when it was not. */
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
   * Retention, in one transaction: raises the event horizon (never lowers it) to the first event
   * at or after `eventsBefore` and deletes the events below it, and deletes copies that went
   * `gone` before `copiesGoneBefore` and that nothing refers to. Returns how many rows went.
   */
  prune(cutoffs: { eventsBefore: Date; copiesGoneBefore: Date }): Promise<{ events: number; copies: number }>;

  close(): Promise<void>;
}
