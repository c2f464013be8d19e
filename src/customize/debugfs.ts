/**
 * debugfs as a batch interpreter: a command file in, each command's output back. debugfs exits
 * 0 whatever its commands did and reports failures only as text, so the text is the result:
 * with stdout and stderr merged, each command's echo ("debugfs: CMD") starts its own section,
 * and an error line lands in the section of the command that caused it.
 */
import { writeFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { BadImageError, InputError, NoSpaceError } from '../domain/index.js';
import { outputLines, runTool, type ToolContext } from './tools.js';

export interface DebugfsCommand {
  /** One command line; its arguments quoted with `quote`. */
  readonly line: string;
  /** What it does, for error messages: "write /etc/hosts". */
  readonly what: string;
}

/**
 * A name as one debugfs argument. Its command parser (libss) splits on blanks, keeps blanks
 * inside double quotes and reads `""` there as one quote; backslashes are plain characters.
 */
export function quote(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/**
 * A path debugfs resolves even through symlinked directories: `/bin/x` as `/bin/./x`. Its
 * write/mkdir/rm look the parent up without following a final symlink (`/bin` → `usr/bin` on
 * merged-/usr systems); with `/.` appended the parent is followed like any inner component.
 * Always absolute, so a name starting with `-` is never read as an option.
 */
export function target(path: string): string {
  const dir = posix.dirname(path);
  return `${dir === '/' ? '' : dir}/./${posix.basename(path)}`;
}

let scripts = 0;
const MAX_LOGGED_LINES = 400;
const MAX_LINE_BYTES = 8000;

/**
 * Runs the commands in one debugfs process and returns each command's output lines (the echo
 * left out). `device` is `FILE?offset=BYTES`. Read-only unless `write`; with `write`, the
 * epoch becomes debugfs's clock (E2FSPROGS_FAKE_TIME), so superblock and inode times repeat.
 */
export async function runDebugfs(
  ctx: ToolContext,
  device: string,
  commands: readonly DebugfsCommand[],
  opts: { readonly write: boolean; readonly epoch: number; readonly where: string },
): Promise<string[][]> {
  // debugfs reads its command file with fgets into BUFSIZ (8 KiB): a longer line would be cut in two.
  const long = commands.find((c) => Buffer.byteLength(c.line) > MAX_LINE_BYTES);
  if (long) {
    const what = long.what.length > 120 ? `${long.what.slice(0, 120)}…` : long.what;
    throw new InputError(`cannot ${what}: the debugfs command would be longer than ${MAX_LINE_BYTES} bytes`);
  }
  const file = `debugfs-${++scripts}.cmds`;
  await writeFile(join(ctx.cwd, file), commands.map((c) => `${c.line}\n`).join(''));
  const run = await runTool(ctx, 'debugfs', [...(opts.write ? ['-w'] : []), '-f', file, device], {
    mergeOutput: true,
    env: { E2FSPROGS_FAKE_TIME: String(opts.epoch), DEBUGFS_PAGER: '__none__', PAGER: '__none__' },
  });
  const lines = run.stdout.split('\n');
  if (opts.write) logLines(ctx, lines);
  const preamble: string[] = [];
  const sections: string[][] = [];
  for (const line of lines) {
    const next = commands[sections.length];
    if (next !== undefined && line === `debugfs: ${next.line}`) sections.push([]);
    else (sections.at(-1) ?? preamble).push(line);
  }
  // Anything before the first command but the version banner is debugfs failing to open the filesystem.
  const trouble = outputLines(preamble.join('\n')).filter((l) => !/^debugfs \d/.test(l));
  if (trouble.length > 0 || sections.length < commands.length || run.code !== 0) {
    const said = trouble.length > 0 ? trouble : outputLines(lines.slice(-5).join('\n'));
    throw new BadImageError(`debugfs cannot work on the filesystem in ${opts.where}: ${said.join('; ') || `exit code ${run.code}`}`, {
      output: said,
    });
  }
  return sections;
}

function logLines(ctx: ToolContext, lines: readonly string[]): void {
  const shown = outputLines(lines.join('\n'));
  for (const l of shown.slice(0, MAX_LOGGED_LINES)) ctx.log(`  ${l}`);
  if (shown.length > MAX_LOGGED_LINES) ctx.log(`  … ${shown.length - MAX_LOGGED_LINES} more lines`);
}

/** Lines a successful change command may print; anything else is debugfs reporting an error. */
const BENIGN = /^(Allocated inode: \d+)?$/;
const NO_SPACE = /could not allocate|no free space|no space left/i;

/**
 * Throws for the first command whose section holds an error line: NoSpaceError when the
 * filesystem ran out of blocks or inodes, BadImageError with debugfs's words otherwise.
 */
export function throwOnErrors(commands: readonly DebugfsCommand[], sections: readonly (readonly string[])[], where: string): void {
  const failed = commands.flatMap((command, i) => {
    const errors = (sections[i] ?? []).map((l) => l.trim()).filter((l) => !BENIGN.test(l));
    return errors.length > 0 ? [{ command, errors }] : [];
  });
  const first = failed[0];
  if (first === undefined) return;
  const said = first.errors.join('; ');
  const state = `the disk is left partly changed (the commands before it ran) and must be discarded`;
  const details = { partition: where, command: first.command.line, output: said, failedCommands: failed.length };
  if (NO_SPACE.test(said)) {
    throw new NoSpaceError(`the template's filesystem is full (${where}): ${first.command.what} failed: ${said}; ${state}`, details);
  }
  throw new BadImageError(`debugfs could not ${first.command.what} in ${where}: ${said}; ${state}`, details);
}
