import { constants } from 'node:fs';
import { open, readFile, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { UnavailableError, errnoCode } from '../domain/index.js';
import { tryLockExclusive, tryLockShared } from '../drivers/file/fs-native.js';

/** The lock file in the data directory; its content names the holder, for the next one's message. */
export const LOCK_FILE = 'prestage.lock';

/** Who holds the lock, as the holder wrote it. */
interface Holder {
  pid: number;
  since: string;
  host: string;
}

export interface DataDirLock {
  /** Closes the fd, which drops the lock. */
  release(): Promise<void>;
}

/**
 * Makes this process the only prestage on `dataDir`, or throws before anything in it is read or
 * changed: a second server's start-up reconcile would otherwise remove the first one's copies in
 * flight. An flock (not a PID file) because the kernel drops it when the holder dies, even by
 * SIGKILL, so there is never a stale lock to clean up by hand. Locks belong to the open file
 * description: a second open in this same process is refused too. Node opens files close-on-exec,
 * so a child process (qemu-img, a customizer) cannot outlive us still holding it.
 */
export async function lockDataDir(dataDir: string, mode: 'exclusive' | 'shared' = 'exclusive'): Promise<DataDirLock> {
  const file = join(dataDir, LOCK_FILE);
  let fh: FileHandle;
  try {
    // No O_TRUNC: the holder's note must survive until we know we are not the second one.
    fh = await open(file, constants.O_RDWR | constants.O_CREAT, 0o600);
  } catch (e) {
    throw new UnavailableError(`data directory ${dataDir}: cannot open ${LOCK_FILE} to lock it (${errnoCode(e) ?? String(e)})`, { dataDir }, { cause: e });
  }
  try {
    let locked: boolean;
    try {
      // Shared: instances on one PostgreSQL state share the directory (they know of each other
      // through the database), but none may join a server that has it alone, nor the reverse.
      locked = mode === 'shared' ? tryLockShared(fh.fd) : tryLockExclusive(fh.fd);
    } catch (e) {
      throw new UnavailableError(`data directory ${dataDir}: cannot lock ${LOCK_FILE} (${errnoCode(e) ?? String(e)})`, { dataDir }, { cause: e });
    }
    if (!locked) {
      const holder = await readHolder(file);
      const hint = mode === 'shared' ? 'it runs on SQLite and keeps the directory to itself' : 'instances sharing a directory must share a PostgreSQL state (--db)';
      throw new UnavailableError(`data directory ${dataDir} is in use by another prestage (${holderText(holder)}; ${hint}); stop it first or use another --data`, { dataDir, ...holder });
    }
    const note: Holder = { pid: process.pid, since: new Date().toISOString(), host: hostname() };
    await fh.truncate(0);
    await fh.write(`${JSON.stringify(note)}\n`, 0);
  } catch (e) {
    await fh.close();
    throw e;
  }
  let released: Promise<void> | undefined;
  return { release: () => (released ??= fh.close()) };
}

/** The note the holder wrote; undefined if it has not written it yet or it is not ours. */
async function readHolder(file: string): Promise<Holder | undefined> {
  try {
    const v = JSON.parse(await readFile(file, 'utf8')) as Partial<Holder>;
    if (typeof v.pid === 'number' && typeof v.since === 'string' && typeof v.host === 'string') return { pid: v.pid, since: v.since, host: v.host };
  } catch {
    // Empty (the holder is between flock and write) or unreadable: the message says less.
  }
  return undefined;
}

function holderText(holder: Holder | undefined): string {
  if (!holder) return 'pid unknown';
  const where = holder.host === hostname() ? '' : ` on ${holder.host}`;
  return `pid ${holder.pid}${where}, since ${holder.since}`;
}
