/**
 * Running the external tools (e2fsprogs, mtools, xorriso): found up front so a missing one is
 * named with its package before the disk is touched; run asynchronously with a timeout and a
 * fixed environment (C locale for parseable messages, UTC for file dates, HOME in the build's
 * temp dir so no one's ~/.mtoolsrc or ~/.xorrisorc changes the bytes).
 */
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';
import { BadImageError, UnavailableError, errnoCode } from '../domain/index.js';

const execFileAsync = promisify(execFile);

export type ToolName = 'debugfs' | 'e2fsck' | 'mcopy' | 'mdeltree' | 'mdir' | 'xorriso';

const PACKAGE: Readonly<Record<ToolName, string>> = {
  debugfs: 'e2fsprogs',
  e2fsck: 'e2fsprogs',
  mcopy: 'mtools',
  mdeltree: 'mtools',
  mdir: 'mtools',
  xorriso: 'xorriso',
};

/** e2fsprogs lives in sbin, which a service user's PATH often lacks. */
const EXTRA_DIRS = ['/usr/local/sbin', '/usr/sbin', '/sbin', '/usr/local/bin', '/usr/bin', '/bin'];

export type ToolPaths = ReadonlyMap<ToolName, string>;

/**
 * Absolute paths of the tools, or an UnavailableError naming every missing one and its package.
 * `dirs` (default: PATH, then the usual bin and sbin directories) is where to look.
 */
export async function requireTools(names: Iterable<ToolName>, dirs: readonly string[] = searchDirs()): Promise<ToolPaths> {
  const found = new Map<ToolName, string>();
  const missing: ToolName[] = [];
  for (const name of new Set(names)) {
    const path = await firstExecutable(dirs.map((d) => join(d, name)));
    if (path) found.set(name, path);
    else missing.push(name);
  }
  if (missing.length > 0) {
    const packages = [...new Set(missing.map((n) => PACKAGE[n]))];
    throw new UnavailableError(`${missing.join(', ')} not installed: apt-get install ${packages.join(' ')}`, { missing, packages });
  }
  return found;
}

function searchDirs(): string[] {
  return [...(process.env.PATH ?? '').split(delimiter).filter(Boolean), ...EXTRA_DIRS];
}

async function firstExecutable(candidates: readonly string[]): Promise<string | undefined> {
  for (const c of candidates) {
    try {
      await access(c, constants.X_OK);
      return c;
    } catch {
      // not here; try the next directory
    }
  }
  return undefined;
}

export interface ToolContext {
  readonly tools: ToolPaths;
  /** The build's temp dir: working directory and HOME of every tool. */
  readonly cwd: string;
  readonly log: (line: string) => void;
  readonly signal?: AbortSignal;
  readonly timeoutMs: number;
}

export interface ToolRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface RunOptions {
  readonly env?: Readonly<Record<string, string>>;
  /**
   * Both streams in one pipe, in the order written. debugfs reports errors on stderr and echoes
   * each command on stdout: only the merged stream says which command an error belongs to.
   */
  readonly mergeOutput?: boolean;
}

/** Runs a tool to its end: a non-zero exit is a result for the caller to judge, not a throw. */
export async function runTool(ctx: ToolContext, name: ToolName, args: readonly string[], opts: RunOptions = {}): Promise<ToolRun> {
  const path = ctx.tools.get(name);
  if (path === undefined) throw new UnavailableError(`${name} was not looked up before use (apt-get install ${PACKAGE[name]})`);
  const [file, argv] = opts.mergeOutput ? ['/bin/sh', ['-c', 'exec "$0" "$@" 2>&1', path, ...args]] : [path, [...args]];
  ctx.log(`$ ${[name, ...args].map(shellQuote).join(' ')}`);
  const env = { PATH: process.env.PATH ?? EXTRA_DIRS.join(':'), LC_ALL: 'C', TZ: 'UTC', HOME: ctx.cwd, ...opts.env };
  try {
    const running = execFileAsync(file, argv, {
      cwd: ctx.cwd,
      env,
      encoding: 'utf8',
      timeout: ctx.timeoutMs,
      killSignal: 'SIGKILL',
      maxBuffer: 256 * 1024 * 1024,
      ...(ctx.signal ? { signal: ctx.signal } : {}),
    });
    // No tool gets to ask a question: a prompt reads end-of-file and fails instead of hanging.
    running.child.stdin?.end();
    const { stdout, stderr } = await running;
    return { code: 0, stdout, stderr };
  } catch (e) {
    if (ctx.signal?.aborted === true) throw ctx.signal.reason ?? e;
    const err = e as { code?: unknown; killed?: boolean; signal?: string | null; stdout?: string; stderr?: string };
    if (typeof err.code === 'number') return { code: err.code, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
    if (errnoCode(e) === 'ENOENT') throw new UnavailableError(`${name} is not installed: apt-get install ${PACKAGE[name]}`, {}, { cause: e });
    if (err.killed === true) throw new UnavailableError(`${name} did not finish within ${ctx.timeoutMs} ms and was killed`, { tool: name }, { cause: e });
    if (err.signal) throw new BadImageError(`${name} died of ${err.signal} (a damaged filesystem can do that)`, { tool: name }, { cause: e });
    throw e;
  }
}

/** Lines of a tool's output worth logging: trimmed, non-empty. */
export function outputLines(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.trimEnd())
    .filter((l) => l.trim() !== '');
}

function shellQuote(arg: string): string {
  return /^[\w@%+=:,./?-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", "'\\''")}'`;
}
