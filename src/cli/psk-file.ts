import { chmod, readFile, rename, writeFile } from 'node:fs/promises';
import { errnoCode } from '../domain/index.js';

/**
 * Writes `identity:hexkey` into a PSK key file, keeping the other identities' lines: one
 * file can serve several hosts. Written to a temporary name and renamed, mode 0600.
 */
export async function writePskFile(path: string, identity: string, line: string): Promise<void> {
  let old = '';
  try {
    old = await readFile(path, 'utf8');
  } catch (e) {
    if (errnoCode(e) !== 'ENOENT') throw e;
  }
  const kept = old.split('\n').filter((l) => l.trim() !== '' && !l.startsWith(`${identity}:`));
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, [...kept, line].join('\n') + '\n', { mode: 0o600 });
  await chmod(tmp, 0o600);
  await rename(tmp, path);
}
