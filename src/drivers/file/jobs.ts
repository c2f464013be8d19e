/**
 * The message protocol between the file driver (main thread) and its copy workers. Plain
 * structured-clone data only.
 */

/**
 * Copy an image volume to `target` through `tmp` (created O_EXCL, renamed into place only after
 * it is flushed and verified).
 * - `reflink: 'auto'` tries FICLONE first and falls back to a sparse copy; 'never' skips it (the
 *   kernel may still share blocks inside copy_file_range on XFS/btrfs; verification is then full).
 * - `verify: 'auto'` checks a reflink by sampling (the filesystem shares the blocks, so a full
 *   read would only re-hash the source) and a byte copy by its full sha256; 'full' always hashes.
 */
export interface CopyJob {
  readonly kind: 'copy';
  readonly source: string;
  readonly tmp: string;
  readonly target: string;
  readonly expectSha256: string;
  readonly sizeBytes: number;
  readonly reflink: 'auto' | 'never';
  readonly verify: 'auto' | 'full';
}

export interface CopyResult {
  readonly method: 'reflink' | 'sparse-copy';
  readonly durationMs: number;
  /** st_blocks * 512 of the finished copy. */
  readonly allocatedBytes: number;
  readonly verified: 'full' | 'sample';
}

/** Stream `source` into `tmp` (O_EXCL), keeping holes, hashing every byte; sealed 0400. */
export interface ImportJob {
  readonly kind: 'import';
  readonly source: string;
  readonly tmp: string;
}

export interface ImportResult {
  readonly sha256: string;
  readonly sizeBytes: number;
  readonly allocatedBytes: number;
}

export type Job = CopyJob | ImportJob;

export interface JobResults {
  copy: CopyResult;
  import: ImportResult;
}

/** Main thread → worker. */
export interface JobMessage {
  readonly id: number;
  readonly job: Job;
}

/**
 * Worker → main thread. Progress counts units of work: for a fully verified copy that is the
 * copy pass plus the hashing pass (2 × size), so a percentage stays honest through verification.
 */
export type WorkerMessage =
  /** Sent once, when the worker has loaded its modules and listens for jobs. */
  | { readonly type: 'ready' }
  | { readonly type: 'progress'; readonly id: number; readonly doneBytes: number; readonly totalBytes: number }
  | { readonly type: 'done'; readonly id: number; readonly result: CopyResult | ImportResult }
  | { readonly type: 'error'; readonly id: number; readonly code: string; readonly message: string };

/** The code a worker reports when a copy does not match its source. */
export const VERIFY_FAILED = 'EVERIFY';
