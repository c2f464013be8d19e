/**
 * Which server-side files an admin may import: those inside the import directories the server
 * was started with (`serve --import-dir`), symlinks resolved, and never the data directory (its
 * state.db holds every key). A refusal says the same for a path that exists and one that does
 * not, so the API cannot be used to probe the server's disk.
 */
import fs from 'node:fs/promises';
import { isAbsolute, resolve, sep } from 'node:path';
import { ForbiddenError, InputError } from '../domain/index.js';

function inside(path: string, dir: string): boolean {
  return path.startsWith(dir.endsWith(sep) ? dir : dir + sep);
}

/** The real path of `path` (absolute, symlinks resolved) once it is known to be importable. */
export async function confinedPath(path: string, importDirs: readonly string[], dataDir: string | undefined): Promise<string> {
  if (!isAbsolute(path)) throw new InputError(`a server-side path must be absolute, not '${path}'`, { path });
  if (importDirs.length === 0) {
    throw new ForbiddenError('this server imports no server-side files (start it with --import-dir DIR); upload the file instead: prestage image import NAME FILE', { path });
  }
  // One answer for a missing file, a file outside and a symlink that leads outside.
  const refused = new ForbiddenError(`cannot import ${path}: not a file inside this server's import directories (--import-dir)`, { path });
  const real = async (p: string): Promise<string | undefined> => fs.realpath(p).catch(() => undefined);
  const dirs = (await Promise.all(importDirs.map(real))).filter((d): d is string => d !== undefined);
  const forbidden = dataDir === undefined ? [] : [resolve(dataDir), await real(dataDir)].filter((d): d is string => d !== undefined);
  const lexical = resolve(path);
  // Outside every import directory as written: refused without looking at the disk.
  if (!dirs.some((d) => inside(lexical, d)) && !importDirs.some((d) => inside(lexical, resolve(d)))) throw refused;
  const file = await real(lexical);
  if (file === undefined || !dirs.some((d) => inside(file, d)) || forbidden.some((d) => file === d || inside(file, d))) throw refused;
  return file;
}
