/**
 * The few Linux syscalls Node's `fs` lacks, called through koffi on glibc: hole-aware seeking,
 * in-kernel copies, reflink clones, per-thread CPU priority, and flock. Everything here is
 * synchronous and meant for the copy worker threads, never the main event loop — except
 * `tryLockExclusive`, which never waits (LOCK_NB) and so may run anywhere.
 *
 * Errors are thrown Node-style (an Error with `.code` such as 'ENOSPC', `.errno`, `.syscall`)
 * so callers treat them exactly like errors from `fs`.
 */
import koffi from 'koffi';
import { getSystemErrorName } from 'node:util';

const libc = koffi.load('libc.so.6');

// off_t and loff_t are 64-bit on x86_64/aarch64 glibc; koffi returns them as numbers (files stay
// far below 2^53 bytes).
const lseekC = libc.func('int64_t lseek(int fd, int64_t offset, int whence)') as (fd: number, offset: number, whence: number) => number;
// The offsets are in/out pointers; a BigInt64Array is handed over as a pointer to its memory.
const copyFileRangeC = libc.func(
  'int64_t copy_file_range(int fdIn, int64_t *offIn, int fdOut, int64_t *offOut, size_t len, unsigned int flags)',
) as (fdIn: number, offIn: BigInt64Array, fdOut: number, offOut: BigInt64Array, len: number, flags: number) => number;
// ioctl is variadic: koffi takes each extra argument as a (type, value) pair.
const ioctlC = libc.func('int ioctl(int fd, unsigned long request, ...)') as (fd: number, request: number, argType: 'int', arg: number) => number;
const setpriorityC = libc.func('int setpriority(int which, unsigned int who, int prio)') as (which: number, who: number, prio: number) => number;
const gettidC = libc.func('int gettid(void)') as () => number;
const flockC = libc.func('int flock(int fd, int operation)') as (fd: number, operation: number) => number;
const strerrorC = libc.func('const char *strerror(int errnum)') as (errnum: number) => string;

const SEEK_DATA = 3;
const SEEK_HOLE = 4;
/** _IOW(0x94, 9, int): share the source's extents with the destination (btrfs, XFS reflink=1). */
const FICLONE = 0x40049409;
const PRIO_PROCESS = 0;
const LOCK_SH = 1;
const LOCK_EX = 2;
const LOCK_NB = 4;

/** An fs-style error carrying the errno left by the last libc call on this thread. */
function errnoError(syscall: string): NodeJS.ErrnoException {
  const errno = koffi.errno();
  const code = getSystemErrorName(-errno);
  const err: NodeJS.ErrnoException = new Error(`${code}: ${strerrorC(errno)}, ${syscall}`);
  err.code = code;
  err.errno = -errno;
  err.syscall = syscall;
  return err;
}

/** The next offset >= `offset` holding data, or null when only holes (or EOF) follow. */
export function seekData(fd: number, offset: number): number | null {
  const r = lseekC(fd, offset, SEEK_DATA);
  if (r >= 0) return r;
  const err = errnoError('lseek');
  if (err.code === 'ENXIO') return null; // ENXIO: no data at or after offset
  throw err;
}

/** The next hole at or after `offset`; every file has an implicit hole at EOF. */
export function seekHole(fd: number, offset: number): number {
  const r = lseekC(fd, offset, SEEK_HOLE);
  if (r >= 0) return r;
  throw errnoError('lseek');
}

/**
 * The data segments [start, end) of the first `size` bytes of a file, in order; everything
 * between them is a hole that reads as zeros. A filesystem without SEEK_DATA support gets one
 * segment covering the whole file, which is always correct, merely not sparse.
 */
export function dataSegments(fd: number, size: number): Array<[number, number]> {
  const segments: Array<[number, number]> = [];
  let offset = 0;
  try {
    while (offset < size) {
      const start = seekData(fd, offset);
      if (start === null || start >= size) break;
      const end = Math.min(seekHole(fd, start), size);
      segments.push([start, end]);
      offset = end;
    }
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EINVAL' || code === 'EOPNOTSUPP') return size > 0 ? [[0, size]] : [];
    throw e;
  }
  return segments;
}

/**
 * One copy_file_range call: up to `len` bytes from `fdIn` at `offIn` to `fdOut` at `offOut`,
 * done in the kernel without passing through user space. Returns the bytes copied (may be short;
 * 0 means the source ended).
 */
export function copyFileRange(fdIn: number, offIn: number, fdOut: number, offOut: number, len: number): number {
  const inPos = new BigInt64Array([BigInt(offIn)]);
  const outPos = new BigInt64Array([BigInt(offOut)]);
  const r = copyFileRangeC(fdIn, inPos, fdOut, outPos, len, 0);
  if (r < 0) throw errnoError('copy_file_range');
  return r;
}

/** Makes `dstFd` share every extent of `srcFd` (a reflink). Throws EOPNOTSUPP/EXDEV/EINVAL/ENOTTY where unsupported. */
export function ficlone(dstFd: number, srcFd: number): void {
  if (ioctlC(dstFd, FICLONE, 'int', srcFd) !== 0) throw errnoError('ioctl(FICLONE)');
}

/**
 * Lowers the calling thread's CPU priority to nice 10. On Linux a thread id is a valid
 * PRIO_PROCESS target and affects only that thread, so a copy worker can yield to the request
 * path without slowing the rest of the process.
 */
export function lowerThreadPriority(nice = 10): void {
  if (setpriorityC(PRIO_PROCESS, gettidC(), nice) !== 0) throw errnoError('setpriority');
}

/**
 * flock(fd, LOCK_EX | LOCK_NB): true when this open file description now holds the exclusive lock,
 * false when another one holds it (EWOULDBLOCK); any other failure throws. The kernel drops the
 * lock when the last fd of the description closes, so a killed process leaves no stale lock.
 */
export function tryLockExclusive(fd: number): boolean {
  return tryLock(fd, LOCK_EX);
}

/** flock(fd, LOCK_SH | LOCK_NB): shared with other shared holders, refused while one holds it exclusively. */
export function tryLockShared(fd: number): boolean {
  return tryLock(fd, LOCK_SH);
}

function tryLock(fd: number, how: number): boolean {
  if (flockC(fd, how | LOCK_NB) === 0) return true;
  const err = errnoError('flock');
  if (err.code === 'EWOULDBLOCK' || err.code === 'EAGAIN') return false;
  throw err;
}
