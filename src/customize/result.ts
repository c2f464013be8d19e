/** What a customize build reports back: where it wrote, and how much. */
import type { FilesystemKind } from '../domain/index.js';

export interface EditCounts {
  readonly filesWritten: number;
  /** Removed paths that existed; a missing one is not an error and is not counted. */
  readonly filesRemoved: number;
}

export interface ChangedPartition {
  /** The partition number; 0 is the whole disk (no partition table). */
  readonly number: number;
  readonly startBytes: number;
  readonly sizeBytes: number;
  readonly filesystem: FilesystemKind;
}

export interface SeedReport {
  readonly as: 'iso' | 'vfat';
  readonly partition: number;
  readonly startBytes: number;
  readonly sizeBytes: number;
  /** The NoCloud files it holds, by name. */
  readonly files: readonly string[];
  /** `iso`: the size of the ISO image written at the partition's start. */
  readonly isoBytes?: number;
}

export interface CustomizeResult extends EditCounts {
  readonly partition: ChangedPartition;
  /** Null when the plan has no seed. */
  readonly seed: SeedReport | null;
}
