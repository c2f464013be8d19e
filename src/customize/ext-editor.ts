/**
 * Writes and removes files in an ext2/3/4 filesystem inside a disk image, without mounting:
 * e2fsprogs' debugfs on `FILE?offset=BYTES`. In four steps, so that a plan that cannot apply
 * fails before anything is written:
 *   1. e2fsck -fn: the base filesystem is clean (else the fault is the image's, not the build's);
 *   2. read-only debugfs runs look at every path involved (and list directories to remove);
 *   3. one `debugfs -w` script: removes first, then writes (missing parents made 0755 root:root),
 *      every inode's mode, owner and times set, debugfs's clock fixed to the plan's epoch;
 *   4. e2fsck -fn again: the result is clean.
 * Removing a directory removes everything in it, like `rm -rf`; removing a symlink removes the
 * link, never what it points to. A written path that exists as a file or symlink is replaced.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BadImageError, InputError } from '../domain/index.js';
import { quote, runDebugfs, target, throwOnErrors, type DebugfsCommand } from './debugfs.js';
import { ancestors, type CheckedWrite } from './plan-check.js';
import type { EditCounts } from './result.js';
import { outputLines, runTool, type ToolContext } from './tools.js';

export interface ExtEdit {
  readonly writes: readonly CheckedWrite[];
  readonly removes: readonly string[];
  readonly epoch: number;
}

interface Site {
  readonly tools: ToolContext;
  /** `FILE?offset=BYTES`, what debugfs and e2fsck open. */
  readonly device: string;
  /** "partition 2", for messages. */
  readonly where: string;
  readonly epoch: number;
}

type NodeType = 'directory' | 'regular' | 'symlink' | 'other';

export async function editExt(ctx: ToolContext, device: string, where: string, edit: ExtEdit): Promise<EditCounts> {
  if (edit.writes.length === 0 && edit.removes.length === 0) return { filesWritten: 0, filesRemoved: 0 };
  const site: Site = { tools: ctx, device, where, epoch: edit.epoch };
  await e2fsck(site, 'before');
  const look = await inspect(site, edit);
  const removal = await planRemoves(site, edit.removes, look);
  const writing = await planWrites(site, edit, look);
  const commands = [...removal.commands, ...writing];
  // Only absent paths to remove: leave the filesystem exactly as it was.
  if (commands.length === 0) return { filesWritten: 0, filesRemoved: 0 };
  const sections = await runDebugfs(ctx, device, commands, { write: true, epoch: edit.epoch, where });
  throwOnErrors(commands, sections, where);
  await e2fsck(site, 'after');
  return { filesWritten: edit.writes.length, filesRemoved: removal.removed };
}

async function e2fsck(site: Site, when: 'before' | 'after'): Promise<void> {
  const run = await runTool(site.tools, 'e2fsck', ['-fn', site.device], { mergeOutput: true });
  const lines = outputLines(run.stdout);
  for (const l of lines) site.tools.log(`  ${l}`);
  if (run.code === 0) return;
  const findings = lines.filter((l) => !/^(Pass \d|e2fsck \d)/.test(l)).slice(0, 20);
  const which = when === 'before' ? 'before any change: the base image is damaged' : 'after the changes';
  throw new BadImageError(`e2fsck -fn found problems in the filesystem of ${site.where} ${which} (exit ${run.code}): ${findings.join('; ')}`, {
    partition: site.where,
    exitCode: run.code,
    output: findings,
  });
}

/** What each path involved is now: lstat-like (`stat P`) and whether it leads to a directory (`stat P/.`). */
interface Look {
  type(path: string): NodeType | undefined;
  isDirectory(path: string): boolean;
}

async function inspect(site: Site, edit: ExtEdit): Promise<Look> {
  const queries = new Map<string, DebugfsCommand>();
  const lstat = (p: string): string => `stat ${quote(p)}`;
  const follow = (p: string): string => `stat ${quote(`${p}/.`)}`;
  const ask = (line: string, path: string): void => void queries.set(line, { line, what: `look at ${path}` });
  for (const w of edit.writes) {
    for (const dir of ancestors(w.path)) {
      ask(lstat(dir), dir);
      ask(follow(dir), dir);
    }
    ask(lstat(w.path), w.path);
  }
  for (const r of edit.removes) ask(lstat(r), r);
  const commands = [...queries.values()];
  const sections = await runDebugfs(site.tools, site.device, commands, { write: false, epoch: site.epoch, where: site.where });
  const types = new Map(commands.map((c, i) => [c.line, statType(sections[i] ?? [])]));
  return {
    type: (p) => types.get(lstat(p)),
    isDirectory: (p) => types.get(follow(p)) === 'directory',
  };
}

/** The type from `stat` output ("Inode: 12   Type: regular …"); undefined when there is no such path. */
function statType(section: readonly string[]): NodeType | undefined {
  for (const l of section) {
    const m = /^Inode:\s*\d+\s+Type:\s*(\S+)/.exec(l);
    if (m) return m[1] === 'directory' || m[1] === 'regular' || m[1] === 'symlink' ? m[1] : 'other';
  }
  return undefined;
}

async function planRemoves(site: Site, removes: readonly string[], look: Look): Promise<{ commands: DebugfsCommand[]; removed: number }> {
  const present = removes.filter((r) => look.type(r) !== undefined);
  const trees = await listTrees(site, present.filter((r) => look.type(r) === 'directory'));
  const commands: DebugfsCommand[] = [];
  const removeTree = (dir: string): void => {
    for (const child of trees.get(dir) ?? []) {
      if (child.directory) removeTree(child.path);
      else commands.push({ line: `rm ${quote(target(child.path))}`, what: `remove ${child.path}` });
    }
    commands.push({ line: `rmdir ${quote(target(dir))}`, what: `remove directory ${dir}` });
  };
  for (const r of present) {
    if (look.type(r) === 'directory') removeTree(r);
    else commands.push({ line: `rm ${quote(target(r))}`, what: `remove ${r}` });
  }
  return { commands, removed: present.length };
}

interface Entry {
  readonly path: string;
  readonly directory: boolean;
}

/** Every directory under the roots → its entries, one read-only debugfs run per depth level. */
async function listTrees(site: Site, roots: readonly string[]): Promise<Map<string, Entry[]>> {
  const trees = new Map<string, Entry[]>();
  for (let level = [...roots], depth = 0; level.length > 0; depth++) {
    // ext has no directory hard links, so a deeper tree than this is a damaged one.
    if (depth > 1024) throw new BadImageError(`directories under ${roots.join(', ')} nest more than 1024 deep`);
    const commands = level.map((dir) => ({ line: `ls -p ${quote(dir)}`, what: `list ${dir}` }));
    const sections = await runDebugfs(site.tools, site.device, commands, { write: false, epoch: site.epoch, where: site.where });
    const next: string[] = [];
    level.forEach((dir, i) => {
      const entries = parseLs(dir, sections[i] ?? []);
      trees.set(dir, entries);
      next.push(...entries.filter((e) => e.directory).map((e) => e.path));
    });
    level = next;
  }
  return trees;
}

/** `ls -p` lines: `/INODE/MODE/UID/GID/NAME/SIZE/`; names hold no `/`, so the fields split cleanly. */
function parseLs(dir: string, section: readonly string[]): Entry[] {
  const entries: Entry[] = [];
  for (const line of section) {
    if (line === '') continue;
    const m = /^\/\d+\/([0-7]+)\/\d+\/\d+\/([^/]*)\/\d*\/$/.exec(line);
    if (!m) throw new BadImageError(`cannot list ${dir} to remove it: debugfs said ${JSON.stringify(line)}`, { path: dir });
    const [, mode, name] = m as unknown as [string, string, string];
    if (name === '.' || name === '..') continue;
    entries.push({ path: `${dir}/${name}`, directory: (parseInt(mode, 8) & 0o170000) === 0o040000 });
  }
  return entries;
}

/**
 * The write commands. Checks against the filesystem as it will be once the removes ran, so
 * "remove /var/lib/cloud, write /var/lib/cloud/x" works and needs /var/lib/cloud made anew.
 */
async function planWrites(site: Site, edit: ExtEdit, look: Look): Promise<DebugfsCommand[]> {
  const removed = (p: string): boolean => edit.removes.some((r) => p === r || p.startsWith(`${r}/`));
  const made = new Set<string>();
  const commands: DebugfsCommand[] = [];
  for (const [i, w] of edit.writes.entries()) {
    for (const dir of ancestors(w.path)) {
      if (made.has(dir) || (!removed(dir) && look.isDirectory(dir))) continue;
      const type = removed(dir) ? undefined : look.type(dir);
      if (type !== undefined) {
        throw new InputError(`cannot write ${w.path}: ${dir} is a ${describe(type)} in the image, not a directory`, { path: w.path, blocker: dir });
      }
      made.add(dir);
      commands.push({ line: `mkdir ${quote(target(dir))}`, what: `make directory ${dir}` }, ...inodeFields(dir, 0o040755, 0, 0, site.epoch));
    }
    const existing = removed(w.path) ? undefined : look.type(w.path);
    if (existing === 'directory') throw new InputError(`cannot write ${w.path}: it is a directory in the image`, { path: w.path });
    // Relative to the build's temp dir, where debugfs runs: no temp path inside the command file.
    const local = `content-${i}`;
    await writeFile(join(site.tools.cwd, local), w.content);
    if (existing !== undefined) commands.push({ line: `rm ${quote(target(w.path))}`, what: `replace ${w.path}` });
    commands.push({ line: `write ${local} ${quote(target(w.path))}`, what: `write ${w.path}` }, ...inodeFields(w.path, 0o100000 | w.mode, w.uid, w.gid, site.epoch));
  }
  return commands;
}

/** Mode, owner and every time field, so the inode's bytes depend on the plan alone. */
function inodeFields(path: string, mode: number, uid: number, gid: number, epoch: number): DebugfsCommand[] {
  const t = quote(target(path));
  const fields: [string, string][] = [
    ['mode', `0${mode.toString(8)}`],
    ['uid', String(uid)],
    ['gid', String(gid)],
    ...['atime', 'mtime', 'ctime', 'crtime'].map((f): [string, string] => [f, `@${epoch}`]),
  ];
  return fields.map(([field, value]) => ({ line: `set_inode_field ${t} ${field} ${value}`, what: `set ${field} of ${path}` }));
}

function describe(type: NodeType): string {
  switch (type) {
    case 'regular':
      return 'regular file';
    case 'symlink':
      return 'symlink that does not lead to a directory';
    case 'directory':
      return 'directory';
    case 'other':
      return 'special file';
  }
}
