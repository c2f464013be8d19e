/**
 * The two Linux calls Node's `fs` lacks that an NBD export needs: lseek(SEEK_DATA / SEEK_HOLE)
 * to report holes, and fallocate to punch or zero ranges. Called through koffi on glibc, off the
 * event loop (koffi's `.async` runs them on worker threads) so a slow filesystem stalls only the
 * request that asked.
 */
import koffi from 'koffi';
import { getSystemErrorName } from 'node:util';

type Callback = (err: unknown, result: number) => void;
interface NativeFn<A extends unknown[]> {
  (...args: A): number;
  async(...args: [...A, Callback]): void;
}

const libc = koffi.load('libc.so.6');
// off_t is 64-bit on x86_64/aarch64 glibc; koffi hands it over as a number (files stay below 2^53).
const lseekC = libc.func('int64_t lseek(int fd, int64_t offset, int whence)') as NativeFn<[number, number, number]>;
const fallocateC = libc.func('int fallocate(int fd, int mode, int64_t offset, int64_t len)') as NativeFn<[number, number, number, number]>;

const SEEK_DATA = 3;
const SEEK_HOLE = 4;
const FALLOC_FL_KEEP_SIZE = 0x01;
const FALLOC_FL_PUNCH_HOLE = 0x02;
const FALLOC_FL_ZERO_RANGE = 0x10;

/**
 * Runs `fn` on a koffi worker thread. When the call fails, it is repeated synchronously: errno
 * lives in the worker thread and is lost, and both calls here are idempotent and fail fast.
 * When koffi's queue of async calls is full it throws; the call then runs synchronously too.
 */
async function call<A extends unknown[]>(name: string, fn: NativeFn<A>, ...args: A): Promise<number> {
  const result = await new Promise<number>((resolve) => {
    try {
      fn.async(...args, (err, r) => resolve(err ? -1 : r));
    } catch {
      resolve(-1);
    }
  });
  if (result >= 0) return result;
  const again = fn(...args);
  if (again >= 0) return again;
  const errno = koffi.errno();
  const code = getSystemErrorName(-errno);
  const err: NodeJS.ErrnoException = new Error(`${code}: ${name} failed`);
  err.code = code;
  err.errno = -errno;
  err.syscall = name;
  throw err;
}

/** The next offset >= `offset` holding data, or null when only holes (or EOF) follow. */
export async function seekData(fd: number, offset: number): Promise<number | null> {
  try {
    return await call('lseek', lseekC, fd, offset, SEEK_DATA);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENXIO') return null;
    throw e;
  }
}

/** The next hole at or after `offset`; there is always one at EOF. */
export async function seekHole(fd: number, offset: number): Promise<number> {
  return call('lseek', lseekC, fd, offset, SEEK_HOLE);
}

/** Deallocates a range; it then reads as zeros. Throws EOPNOTSUPP where the filesystem cannot. */
export async function punchHole(fd: number, offset: number, length: number): Promise<void> {
  await call('fallocate', fallocateC, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
}

/** Zeroes a range and keeps it allocated (so later writes there cannot run out of space). */
export async function zeroRange(fd: number, offset: number, length: number): Promise<void> {
  await call('fallocate', fallocateC, fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length);
}

koffi.struct('prestage_iovec', { base: 'void *', len: 'size_t' });
const preadv2C = libc.func('int64_t preadv2(int fd, const prestage_iovec *iov, int iovcnt, int64_t offset, int flags)') as (
  fd: number,
  iov: { base: Buffer; len: number }[],
  iovcnt: number,
  offset: number,
  flags: number,
) => number;
const RWF_NOWAIT = 0x08;

/**
 * Reads what the page cache holds, on the calling thread, without ever waiting for the disk
 * (preadv2 with RWF_NOWAIT): a cached 4 KiB read costs microseconds here, a trip through
 * libuv's thread pool tens. Returns the bytes read, possibly short; -1 when nothing is cached
 * or the filesystem cannot say (the caller then reads the usual way).
 */
export function readCached(fd: number, into: Buffer, offset: number): number {
  const n = preadv2C(fd, [{ base: into, len: into.length }], 1, offset, RWF_NOWAIT);
  return n > 0 ? n : -1;
}
