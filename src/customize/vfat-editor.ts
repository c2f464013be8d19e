/**
 * Writes and removes files in a vfat filesystem inside a disk image, without mounting: mtools
 * on `FILE@@OFFSET`. FAT has no owners or permission bits, so a write's mode, uid and gid are
 * ignored here. Names compare case-insensitively, as FAT does.
 *
 * Dates: this mtools (4.0.32) ignores SOURCE_DATE_EPOCH, and `mmd` stamps new directories with
 * the clock. So files and new directories are staged locally with the epoch as their mtime and
 * copied in with `mcopy -m`, which gives each new entry the source's mtime as its write,
 * creation and access date (`-s` on an empty staged directory makes a dated directory). TZ=UTC
 * makes FAT's local-time fields the same on every machine. Sources are always named one by
 * one, in plan order, never found by reading a local directory: readdir order differs between
 * hosts, and the order of entries and clusters in the FAT would follow it.
 *
 * Like ext: everything is checked against a listing before anything is written; removes run
 * first and take whole directory trees (`mdeltree`); a written path replaces a file.
 */
import { mkdir, mkdtemp, utimes, writeFile } from 'node:fs/promises';
import { join, posix, relative } from 'node:path';
import { BadImageError, InputError, NoSpaceError } from '../domain/index.js';
import { ancestors, type CheckedWrite } from './plan-check.js';
import type { EditCounts } from './result.js';
import { outputLines, runTool, type ToolContext, type ToolRun } from './tools.js';

export interface VfatEdit {
  readonly writes: readonly Pick<CheckedWrite, 'path' | 'content'>[];
  readonly removes: readonly string[];
  readonly epoch: number;
}

/** MTOOLS_SKIP_CHECK: a partition's FAT need not match a floppy's geometry; MTOOLSRC: no user config. */
const MTOOLS_ENV = { MTOOLS_SKIP_CHECK: '1', MTOOLSRC: '/dev/null' };

type Kind = 'file' | 'dir';

/** `image` is relative to the build's temp dir (where the tools run); `where` names the partition in messages. */
export async function editVfat(ctx: ToolContext, image: string, offsetBytes: number, where: string, edit: VfatEdit): Promise<EditCounts> {
  if (edit.writes.length === 0 && edit.removes.length === 0) return { filesWritten: 0, filesRemoved: 0 };
  const device = `${image}@@${offsetBytes}`;
  const listing = await listVfat(ctx, device, where);
  const removes = edit.removes.filter((r) => listing.has(r.toLowerCase()));
  const after = afterRemoves(listing, edit.removes);
  checkWrites(edit, after);

  const mtools = async (tool: 'mcopy' | 'mdeltree', args: readonly string[], what: string): Promise<void> =>
    judge(await runTool(ctx, tool, ['-i', device, ...args], { env: MTOOLS_ENV }), what, where);
  if (removes.length > 0) await mtools('mdeltree', removes.map((r) => `::${r}`), `remove ${removes.join(', ')}`);
  for (const [parent, dirs] of groupByParent(newDirectories(edit, after).map((path) => ({ path })))) {
    const sources = await stage(ctx.cwd, dirs, edit.epoch);
    await mtools('mcopy', ['-s', '-m', ...sources, `::${slash(parent)}`], `make ${dirs.map((d) => d.path).join(', ')}`);
  }
  for (const [parent, files] of groupByParent(edit.writes)) {
    const sources = await stage(ctx.cwd, files, edit.epoch);
    await mtools('mcopy', ['-m', '-o', ...sources, `::${slash(parent)}`], `write ${files.map((f) => f.path).join(', ')}`);
  }
  return { filesWritten: edit.writes.length, filesRemoved: removes.length };
}

/** Every path in the filesystem, lower-cased → file or directory. */
async function listVfat(ctx: ToolContext, device: string, where: string): Promise<Map<string, Kind>> {
  const run = await runTool(ctx, 'mdir', ['-/', '-b', '-a', '-i', device, '::/'], { env: MTOOLS_ENV });
  const listing = new Map<string, Kind>();
  // mdir reports an empty root directory as "not found".
  if (run.code !== 0 && /File "::\/" not found/.test(run.stderr)) return listing;
  if (run.code !== 0) throw new BadImageError(`mtools cannot read the vfat filesystem in ${where}: ${outputLines(run.stderr).join('; ')}`, { partition: where });
  for (const line of outputLines(run.stdout)) {
    if (!line.startsWith('::/')) continue;
    const dir = line.endsWith('/');
    listing.set((dir ? line.slice(2, -1) : line.slice(2)).toLowerCase(), dir ? 'dir' : 'file');
  }
  return listing;
}

/** What a path will be once the removes ran (they go first). */
function afterRemoves(listing: ReadonlyMap<string, Kind>, removes: readonly string[]): (path: string) => Kind | undefined {
  const gone = removes.map((r) => r.toLowerCase());
  return (path) => {
    const key = path.toLowerCase();
    return gone.some((r) => key === r || key.startsWith(`${r}/`)) ? undefined : listing.get(key);
  };
}

function checkWrites(edit: VfatEdit, kind: (path: string) => Kind | undefined): void {
  for (const w of edit.writes) {
    const blocker = ancestors(w.path).find((d) => kind(d) === 'file');
    if (blocker) throw new InputError(`cannot write ${w.path}: ${blocker} is a file in the vfat filesystem, not a directory`, { path: w.path, blocker });
    if (kind(w.path) === 'dir') throw new InputError(`cannot write ${w.path}: it is a directory in the vfat filesystem`, { path: w.path });
  }
}

/** Directories the writes need that will not exist, outermost first. */
function newDirectories(edit: VfatEdit, kind: (path: string) => Kind | undefined): string[] {
  const seen = new Set<string>();
  const dirs: string[] = [];
  for (const d of edit.writes.flatMap((w) => ancestors(w.path))) {
    if (seen.has(d.toLowerCase()) || kind(d) === 'dir') continue;
    seen.add(d.toLowerCase());
    dirs.push(d);
  }
  return dirs;
}

/** Entries grouped by parent directory (case-insensitively), groups and entries in first-seen order. */
function groupByParent<T extends { readonly path: string }>(entries: readonly T[]): [parent: string, entries: T[]][] {
  const groups = new Map<string, [string, T[]]>();
  for (const e of entries) {
    const parent = posix.dirname(e.path);
    const group = groups.get(parent.toLowerCase()) ?? [parent, []];
    group[1].push(e);
    groups.set(parent.toLowerCase(), group);
  }
  return [...groups.values()];
}

/**
 * Local copies to feed mcopy under their final names, dated `epoch`: a file with content, an
 * empty directory without. Returns their paths relative to `cwd`, where the tools run, in order.
 */
async function stage(cwd: string, entries: readonly { path: string; content?: Buffer }[], epoch: number): Promise<string[]> {
  const dir = await mkdtemp(join(cwd, 'vfat-'));
  const out: string[] = [];
  for (const e of entries) {
    const path = join(dir, posix.basename(e.path));
    if (e.content === undefined) await mkdir(path);
    else await writeFile(path, e.content);
    await utimes(path, epoch, epoch);
    out.push(relative(cwd, path));
  }
  return out;
}

const slash = (dir: string): string => (dir === '/' ? '/' : `${dir}/`);

/** mtools sometimes exits 0 after skipping a file ("Skipping …"), so any complaint on stderr is a failure. */
function judge(run: ToolRun, what: string, where: string): void {
  const said = outputLines(run.stderr);
  if (run.code === 0 && said.length === 0) return;
  const text = said.join('; ') || `exit code ${run.code}`;
  const state = 'the disk is left partly changed and must be discarded';
  if (/disk full|no space/i.test(text)) throw new NoSpaceError(`the template's filesystem is full (${where}): ${what} failed: ${text}; ${state}`, { partition: where });
  throw new BadImageError(`mtools could not ${what} in ${where}: ${text}; ${state}`, { partition: where, output: said });
}
