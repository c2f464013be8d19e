/**
 * The customize layer's public surface: change the filesystem inside a raw disk image file for
 * a template build, without mounting (debugfs for ext2/3/4, mtools for vfat, xorriso for seed
 * ISOs). Work on a throwaway copy: a build that fails part-way leaves the copy partly changed.
 */
import { mkdtemp, open, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { BadImageError, errnoCode, type CustomizePlan } from '../domain/index.js';
import { fileDiskReader } from './disk-reader.js';
import { editExt } from './ext-editor.js';
import { describeExtent, detectFilesystem, requireFilesystem, type FilesystemInfo } from './fs-detect.js';
import { describeTable, selectPartition, readPartitionTable, type Partition } from './partition-table.js';
import { checkPlan, type CheckedPlan } from './plan-check.js';
import type { CustomizeResult, EditCounts } from './result.js';
import { buildSeedIso, checkSeedTarget, isoFits, writeIso, writeVfatSeed } from './seed.js';
import { requireTools, type ToolContext, type ToolName } from './tools.js';
import { editVfat } from './vfat-editor.js';

export type { CustomizeResult, ChangedPartition, SeedReport, EditCounts } from './result.js';
export { readPartitionTable, selectPartition, describeTable, type Partition, type PartitionTable } from './partition-table.js';
export { detectFilesystem, type FilesystemInfo, type DetectedKind } from './fs-detect.js';
export { fileDiskReader, bufferDiskReader, type DiskReader } from './disk-reader.js';
export { checkPlan, type CheckedPlan } from './plan-check.js';

export interface CustomizeOptions {
  /** Build-log lines: each tool command run, its relevant output, e2fsck's verdict. Default: dropped. */
  readonly log?: (line: string) => void;
  /** Stops the build between steps and kills a running tool; the disk may then be partly changed. */
  readonly signal?: AbortSignal;
  /** The longest one tool run may take, in ms. Default 600 000 (10 minutes). */
  readonly toolTimeoutMs?: number;
  /** Where the build's temp dir is made (and removed). Default `os.tmpdir()`. */
  readonly tmpDir?: string;
}

const DEFAULT_TOOL_TIMEOUT_MS = 600_000;
/** The name the disk goes by inside the temp dir: tools parse `?offset=` and `@@`, so the real path never reaches them. */
const DISK = 'disk';

/**
 * Applies a plan to a raw disk image: removes, then writes, in one partition's filesystem,
 * then the cloud-init seed. Everything that can be checked first is — the plan (InputError),
 * the tools (UnavailableError), the partition table, the filesystems and labels, the fs being
 * clean, every path, the seed ISO's size — so a plan that cannot apply changes nothing.
 * Failures after that (a full filesystem: NoSpaceError) leave the disk partly changed.
 */
export async function customizeDisk(diskPath: string, plan: CustomizePlan, options: CustomizeOptions = {}): Promise<CustomizeResult> {
  const checked = checkPlan(plan);
  const { signal } = options;
  const log = options.log ?? ((): void => undefined);
  signal?.throwIfAborted();
  const tools = await requireTools(toolsFor(checked));
  const disk = resolve(diskPath);
  const place = await locate(disk, checked, log);
  const cwd = await mkdtemp(join(options.tmpDir ?? tmpdir(), 'prestage-customize-'));
  try {
    await symlink(disk, join(cwd, DISK));
    const ctx: ToolContext = { tools, cwd, log, timeoutMs: options.toolTimeoutMs ?? DEFAULT_TOOL_TIMEOUT_MS, ...(signal ? { signal } : {}) };
    const { seed } = checked;
    const iso = seed?.as === 'iso' && place.seed ? await buildSeedIso(ctx, seed.files, checked.epoch) : undefined;
    const isoBytes = iso !== undefined && place.seed ? await isoFits(iso, place.seed) : undefined;
    signal?.throwIfAborted();

    const counts = await edit(ctx, checked, place.target);
    signal?.throwIfAborted();
    if (seed && place.seed) {
      if (iso !== undefined) await writeIso(ctx, disk, iso, place.seed);
      else await writeVfatSeed(ctx, DISK, seed, place.seed, checked.epoch);
    }
    return {
      ...counts,
      partition: { number: place.target.number, startBytes: place.target.startBytes, sizeBytes: place.target.sizeBytes, filesystem: checked.filesystem },
      seed:
        seed && place.seed
          ? {
              as: seed.as,
              partition: place.seed.number,
              startBytes: place.seed.startBytes,
              sizeBytes: place.seed.sizeBytes,
              files: seed.files.map(([name]) => name),
              ...(isoBytes !== undefined ? { isoBytes } : {}),
            }
          : null,
    };
  } finally {
    await rm(cwd, { recursive: true, force: true });
  }
}

function toolsFor(plan: CheckedPlan): ToolName[] {
  const tools: ToolName[] = [];
  const changes = plan.writes.length > 0 || plan.removes.length > 0;
  if (changes && plan.filesystem === 'ext') tools.push('debugfs', 'e2fsck');
  if ((changes && plan.filesystem === 'vfat') || plan.seed?.as === 'vfat') tools.push('mdir', 'mcopy', 'mdeltree');
  if (plan.seed?.as === 'iso') tools.push('xorriso');
  return tools;
}

interface Place {
  readonly target: Partition;
  readonly seed?: Partition;
}

/** Reads the table and the filesystems and checks them all, before anything is written. */
async function locate(disk: string, plan: CheckedPlan, log: (line: string) => void): Promise<Place> {
  const fh = await open(disk, 'r').catch((e: unknown) => {
    throw new BadImageError(`cannot open disk image ${disk}: ${errnoCode(e) ?? String(e)}`, { path: disk }, { cause: e });
  });
  try {
    const reader = await fileDiskReader(fh);
    const table = await readPartitionTable(reader);
    const target = await selectPartition(reader, table, plan.partition);
    const fs = await detectFilesystem(reader, target);
    log(`disk ${disk}: ${describeTable(table)}; changing ${describePlace(target, fs)}`);
    requireFilesystem(fs, plan.filesystem, target);
    if (!plan.seed) return { target };
    const seed = await selectPartition(reader, table, plan.seed.partition);
    const seedFs = await detectFilesystem(reader, seed);
    log(`seed (${plan.seed.as}) goes to ${describePlace(seed, seedFs)}`);
    checkSeedTarget(plan.seed, seed, seedFs, target);
    return { target, seed };
  } finally {
    await fh.close();
  }
}

function describePlace(p: Partition, fs: FilesystemInfo): string {
  const label = fs.label === undefined ? '' : `, label '${fs.label}'`;
  return `${describeExtent(p)} (${fs.kind}${label}, bytes ${p.startBytes}–${p.startBytes + p.sizeBytes - 1})`;
}

function edit(ctx: ToolContext, plan: CheckedPlan, target: Partition): Promise<EditCounts> {
  const where = describeExtent(target);
  switch (plan.filesystem) {
    case 'ext':
      return editExt(ctx, `${DISK}?offset=${target.startBytes}`, where, plan);
    case 'vfat':
      return editVfat(ctx, DISK, target.startBytes, where, plan);
  }
}
