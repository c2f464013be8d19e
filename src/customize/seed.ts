/**
 * The cloud-init NoCloud seed: either an ISO 9660 image labelled `cidata` written over a
 * partition (`iso`; the partition's bytes after the ISO stay as they were), or the files copied
 * into the root of a vfat partition labelled CIDATA (`vfat`; other files there stay).
 *
 * The ISO is made reproducibly: every file staged with mode 0644 and the epoch as its mtime,
 * xorriso told the same dates three ways (SOURCE_DATE_EPOCH, --modification-date for the volume
 * dates and UUID, --set_all_file_dates for every node), owners fixed to 0, and `-no_rc` so no
 * startup file takes part. It is built before the disk is touched, so an ISO too large for
 * its partition is refused while nothing has changed.
 */
import { chmod, mkdtemp, open, readFile, stat, utimes, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { BadImageError, InputError, NoSpaceError, PrestageError } from '../domain/index.js';
import { describeExtent, describeKind, requireFilesystem, type Extent, type FilesystemInfo } from './fs-detect.js';
import type { CheckedSeed } from './plan-check.js';
import { outputLines, runTool, type ToolContext } from './tools.js';
import { editVfat } from './vfat-editor.js';

/** `YYYYMMDDhhmmsscc`, the date form of xorriso's mkisofs options, in UTC. */
export function isoDate(epoch: number): string {
  return `${new Date(epoch * 1000).toISOString().replace(/[-:T]/g, '').slice(0, 14)}00`;
}

/** Builds the seed ISO in the temp dir and returns its path. */
export async function buildSeedIso(ctx: ToolContext, files: CheckedSeed['files'], epoch: number): Promise<string> {
  const dir = await mkdtemp(join(ctx.cwd, 'seed-'));
  const sources: string[] = [];
  for (const [name, content] of files) {
    const path = join(dir, name);
    await writeFile(path, content);
    await chmod(path, 0o644);
    await utimes(path, epoch, epoch);
    sources.push(relative(ctx.cwd, path));
  }
  const iso = 'seed.iso';
  const date = isoDate(epoch);
  const args = ['-no_rc', '-as', 'mkisofs', '-quiet', '-output', iso, '-volid', 'cidata', '-joliet', '-rock'];
  args.push('-uid', '0', '-gid', '0', '-file-mode', '0644', '-dir-mode', '0755', `--modification-date=${date}`, '--set_all_file_dates', date, ...sources);
  const run = await runTool(ctx, 'xorriso', args, { env: { SOURCE_DATE_EPOCH: String(epoch) } });
  // "cidata" in lower case breaks ISO 9660's d-character rule; cloud-init looks for exactly that name.
  const said = outputLines(run.stderr).filter((l) => !/-volid text does not comply/.test(l));
  for (const l of said) ctx.log(`  ${l}`);
  // Staged files of fixed names in our own temp dir: a failure here is the tool's or the machine's, not the plan's.
  if (run.code !== 0) throw new PrestageError('PRESTAGE_INTERNAL', `xorriso could not build the seed ISO: ${said.join('; ') || `exit code ${run.code}`}`);
  return join(ctx.cwd, iso);
}

/**
 * Checks the seed's partition before anything is written: an ISO replaces whatever the partition
 * held, so it must not be the partition the plan edits nor an ext filesystem (almost surely the
 * wrong partition); a vfat seed needs a vfat filesystem that cloud-init will find by its label.
 */
export function checkSeedTarget(seed: CheckedSeed, target: Extent, fs: FilesystemInfo, edited: Extent): void {
  const where = describeExtent(target);
  if (seed.as === 'iso') {
    if (target.startBytes < edited.startBytes + edited.sizeBytes && edited.startBytes < target.startBytes + target.sizeBytes) {
      throw new InputError(`the seed ISO would overwrite ${where}, which holds the filesystem the plan changes`, { partition: target.number });
    }
    if (fs.kind === 'ext') throw new BadImageError(`${where} holds ${describeKind('ext')}; an ISO seed would destroy it — choose the seed partition`, { partition: target.number });
    return;
  }
  requireFilesystem(fs, 'vfat', target);
  if (fs.label?.toLowerCase() !== 'cidata') {
    throw new BadImageError(`the vfat filesystem in ${where} is labelled ${fs.label === undefined ? 'nothing' : `'${fs.label}'`}, not CIDATA: cloud-init would not find the seed`, {
      partition: target.number,
      label: fs.label ?? null,
    });
  }
}

/** The ISO's size, refused with NoSpaceError when it does not fit the partition. */
export async function isoFits(iso: string, target: Extent): Promise<number> {
  const { size } = await stat(iso);
  if (size > target.sizeBytes) {
    throw new NoSpaceError(`the seed ISO (${size} bytes) does not fit ${describeExtent(target)} (${target.sizeBytes} bytes)`, {
      partition: target.number,
      isoBytes: size,
      partitionBytes: target.sizeBytes,
    });
  }
  return size;
}

/** Writes the ISO at the partition's start; the rest of the partition keeps its old bytes. */
export async function writeIso(ctx: ToolContext, diskPath: string, iso: string, target: Extent): Promise<void> {
  const bytes = await readFile(iso);
  const fh = await open(diskPath, 'r+');
  try {
    await fh.write(bytes, 0, bytes.length, target.startBytes);
    await fh.sync();
  } finally {
    await fh.close();
  }
  ctx.log(`wrote the ${bytes.length}-byte seed ISO at byte ${target.startBytes} (${describeExtent(target)})`);
}

/** Copies the seed files into the root of the vfat filesystem, replacing same-named ones. */
export async function writeVfatSeed(ctx: ToolContext, image: string, seed: CheckedSeed, target: Extent, epoch: number): Promise<void> {
  const writes = seed.files.map(([name, content]) => ({ path: `/${name}`, content }));
  await editVfat(ctx, image, target.startBytes, describeExtent(target), { writes, removes: [], epoch });
}
