/**
 * The part of librados and librbd (Ceph's C client libraries) the RBD driver uses, called through
 * koffi. The libraries are loaded on first use, so a machine without them runs every other driver.
 *
 * Threads. Nothing here blocks the event loop:
 * - Control calls (connect, open, create, clone, snapshots, diff) run with koffi's `.async()` on
 *   the libuv thread pool: each takes one or more round trips to the cluster.
 * - The data path (read, write, discard, write-zeroes, flush) uses librbd's own AIO: a call
 *   queues the request and returns at once (`rbd_non_blocking_aio`, on by default). Measured on
 *   the test cluster against `rbd_read2` through `.async()`: the same sequential 1 MiB throughput,
 *   and about twice the 4 KiB random reads at queue depth 32, because the thread pool caps the
 *   requests in flight at its 4 threads (which `fs` needs as well), while AIO has no such cap.
 * - Completions come back through librbd's event notification, not a callback (AioQueue): each
 *   image with AIO gets a pipe (`rbd_set_image_notification`); a completion made without a
 *   callback only queues itself on the image and writes a byte to the pipe, on whichever librbd
 *   thread finished it; the main thread, woken by libuv when the pipe is readable, takes every
 *   finished completion at once (`rbd_poll_io_events`). A callback instead goes through librbd's
 *   one op thread and koffi's relay, which holds that thread until the main thread has run it:
 *   one completion per trip through the event loop, two thread switches each, and librbd's own
 *   work waiting behind it.
 * - No librbd call that waits for I/O (close, flush, remove…) runs synchronously on the main
 *   thread: those go through `.async()`.
 *
 * Errors are Node-style: an Error with `.code` ('ENOENT', 'EBUSY', …), `.errno` and `.syscall`
 * naming the librados/librbd call, so callers treat them like errors from `fs`.
 */
import koffi from 'koffi';
import { closeSync } from 'node:fs';
import { Socket, type SocketConstructorOpts } from 'node:net';
import { getSystemErrorMap, getSystemErrorName } from 'node:util';
import { UnavailableError } from '../../domain/index.js';

/** Layering is what clones need; nothing else, so any client and kernel can open the images. */
export const RBD_FEATURE_LAYERING = 1;
/** rbd_write_zeroes: keep the range allocated (NBD's NO_HOLE) rather than deallocate it. */
const RBD_WRITE_ZEROES_FLAG_THICK_PROVISION = 1;
const RBD_IMAGE_OPTION_FORMAT = 0;
const RBD_IMAGE_OPTION_FEATURES = 1;
/** rbd_set_image_notification: one byte written to a pipe per completion. */
const EVENT_TYPE_PIPE = 1;
const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;
/** Completions taken per rbd_poll_io_events call. */
const POLL_BATCH = 64;

export type RbdError = NodeJS.ErrnoException;

/** An fs-style error from a negative errno returned by `call`. */
export function rbdError(call: string, ret: number, what?: string): RbdError {
  const errno = -Math.abs(ret);
  const code = safeName(errno);
  const text = getSystemErrorMap().get(errno)?.[1] ?? 'unknown error';
  const err: RbdError = new Error(`${code}: ${text}, ${call}${what === undefined ? '' : ` '${what}'`}`);
  err.code = code;
  err.errno = errno;
  err.syscall = call;
  return err;
}

function safeName(errno: number): string {
  try {
    return getSystemErrorName(errno);
  } catch {
    return `E${-errno}`;
  }
}

type Fn = koffi.KoffiFunction;

interface Lib {
  readonly f: Record<string, Fn>;
  readonly pipe2: Fn;
  readonly specT: koffi.IKoffiCType;
  readonly linkedSpecT: koffi.IKoffiCType;
  readonly snapSpecT: koffi.IKoffiCType;
  readonly snapInfoT: koffi.IKoffiCType;
}

let loaded: Lib | undefined;

function lib(): Lib {
  if (loaded) return loaded;
  let rados: koffi.IKoffiLib;
  let rbd: koffi.IKoffiLib;
  let libc: koffi.IKoffiLib;
  try {
    rados = koffi.load('librados.so.2');
    rbd = koffi.load('librbd.so.1');
    libc = koffi.load('libc.so.6');
  } catch (e) {
    throw new UnavailableError('librados/librbd are not installed (apt-get install librbd1)', {}, { cause: e });
  }
  koffi.pointer('rados_t', koffi.opaque());
  koffi.pointer('rados_ioctx_t', koffi.opaque());
  koffi.pointer('rbd_image_t', koffi.opaque());
  koffi.pointer('rbd_image_options_t', koffi.opaque());
  // A completion is handled as its address (a Number: user-space addresses fit in 53 bits), the
  // form rbd_poll_io_events returns it in, so the data path makes no koffi pointer objects.
  koffi.alias('rbd_completion_t', 'uintptr_t');
  koffi.proto('int rbd_diff_cb(uint64_t off, size_t len, int exists, void *arg)');
  const specT = koffi.struct('rbd_image_spec_t', { id: 'char *', name: 'char *' });
  const linkedSpecT = koffi.struct('rbd_linked_image_spec_t', {
    pool_id: 'int64_t',
    pool_name: 'char *',
    pool_namespace: 'char *',
    image_id: 'char *',
    image_name: 'char *',
    trash: 'bool',
  });
  const snapSpecT = koffi.struct('rbd_snap_spec_t', { id: 'uint64_t', namespace_type: 'int', name: 'char *' });
  const snapInfoT = koffi.struct('rbd_snap_info_t', { id: 'uint64_t', size: 'uint64_t', name: 'const char *' });
  // Declared by name for the prototypes below.
  koffi.struct('rados_cluster_stat_t', { kb: 'uint64_t', kb_used: 'uint64_t', kb_avail: 'uint64_t', num_objects: 'uint64_t' });

  const f: Record<string, Fn> = {};
  const decl = (l: koffi.IKoffiLib, proto: string): void => {
    const name = /(\w+)\(/.exec(proto)![1]!;
    f[name] = l.func(proto);
  };
  for (const p of [
    'int rados_create2(_Out_ rados_t *cluster, const char *clusterName, const char *name, uint64_t flags)',
    'int rados_conf_read_file(rados_t cluster, const char *path)',
    'int rados_conf_set(rados_t cluster, const char *option, const char *value)',
    'int rados_connect(rados_t cluster)',
    'void rados_shutdown(rados_t cluster)',
    'int rados_cluster_stat(rados_t cluster, _Out_ rados_cluster_stat_t *stat)',
    'int rados_mon_command(rados_t cluster, const char **cmd, size_t cmdlen, const char *inbuf, size_t inbuflen, _Out_ void **outbuf, _Out_ size_t *outbuflen, _Out_ void **outs, _Out_ size_t *outslen)',
    'void rados_buffer_free(void *buf)',
    'int rados_ioctx_create(rados_t cluster, const char *pool, _Out_ rados_ioctx_t *io)',
    'void rados_ioctx_destroy(rados_ioctx_t io)',
  ]) decl(rados, p);
  for (const p of [
    'void rbd_image_options_create(_Out_ rbd_image_options_t *opts)',
    'void rbd_image_options_destroy(rbd_image_options_t opts)',
    'int rbd_image_options_set_uint64(rbd_image_options_t opts, int optname, uint64_t optval)',
    'int rbd_create4(rados_ioctx_t io, const char *name, uint64_t size, rbd_image_options_t opts)',
    'int rbd_clone3(rados_ioctx_t pio, const char *pname, const char *psnap, rados_ioctx_t cio, const char *cname, rbd_image_options_t opts)',
    'int rbd_remove(rados_ioctx_t io, const char *name)',
    'int rbd_rename(rados_ioctx_t io, const char *from, const char *to)',
    'int rbd_list2(rados_ioctx_t io, void *specs, _Inout_ size_t *max)',
    'void rbd_image_spec_list_cleanup(void *specs, size_t n)',
    'int rbd_open(rados_ioctx_t io, const char *name, _Out_ rbd_image_t *image, const char *snap)',
    'int rbd_open_read_only(rados_ioctx_t io, const char *name, _Out_ rbd_image_t *image, const char *snap)',
    'int rbd_close(rbd_image_t image)',
    'int rbd_get_size(rbd_image_t image, _Out_ uint64_t *size)',
    'int rbd_get_parent(rbd_image_t image, void *parentImage, void *parentSnap)',
    'void rbd_linked_image_spec_cleanup(void *spec)',
    'void rbd_snap_spec_cleanup(void *spec)',
    'int rbd_list_children3(rbd_image_t image, void *specs, _Inout_ size_t *max)',
    'void rbd_linked_image_spec_list_cleanup(void *specs, size_t n)',
    'int rbd_flatten(rbd_image_t image)',
    'int rbd_snap_create(rbd_image_t image, const char *name)',
    'int rbd_snap_protect(rbd_image_t image, const char *name)',
    'int rbd_snap_unprotect(rbd_image_t image, const char *name)',
    'int rbd_snap_remove(rbd_image_t image, const char *name)',
    'int rbd_snap_is_protected(rbd_image_t image, const char *name, _Out_ int *isProtected)',
    'int rbd_snap_list(rbd_image_t image, void *snaps, _Inout_ int *max)',
    'void rbd_snap_list_end(void *snaps)',
    'int rbd_diff_iterate2(rbd_image_t image, const char *fromSnap, uint64_t off, uint64_t len, uint8_t includeParent, uint8_t wholeObject, rbd_diff_cb *cb, void *arg)',
    'int rbd_aio_create_completion(void *arg, void *cb, uint8_t *c)',
    'int64_t rbd_aio_get_return_value(rbd_completion_t c)',
    'void rbd_aio_release(rbd_completion_t c)',
    'int rbd_aio_read2(rbd_image_t image, uint64_t off, size_t len, void *buf, rbd_completion_t c, int opFlags)',
    'int rbd_aio_write2(rbd_image_t image, uint64_t off, size_t len, const void *buf, rbd_completion_t c, int opFlags)',
    'int rbd_aio_discard(rbd_image_t image, uint64_t off, uint64_t len, rbd_completion_t c)',
    'int rbd_aio_write_zeroes(rbd_image_t image, uint64_t off, size_t len, rbd_completion_t c, int zeroFlags, int opFlags)',
    'int rbd_aio_flush(rbd_image_t image, rbd_completion_t c)',
    'int rbd_set_image_notification(rbd_image_t image, int fd, int type)',
    'int rbd_poll_io_events(rbd_image_t image, void *comps, int numcomp)',
  ]) decl(rbd, p);
  const pipe2 = libc.func('int pipe2(void *fds, int flags)');

  loaded = { f, pipe2, specT, linkedSpecT, snapSpecT, snapInfoT };
  return loaded;
}

/** Runs a C call on the thread pool; resolves with its return value. */
function inPool(fn: Fn, ...args: unknown[]): Promise<number> {
  return new Promise((resolve, reject) => {
    fn.async(...args, (err: unknown, ret: unknown) => (err ? reject(err instanceof Error ? err : new Error(`${fn.info.name}: koffi async call failed`)) : resolve(Number(ret))));
  });
}

/** Runs a C call on the thread pool; a negative return is an error naming the call. */
async function check(call: string, what: string | undefined, ...args: unknown[]): Promise<number> {
  const ret = await inPool(lib().f[call]!, ...args);
  if (ret < 0) throw rbdError(call, ret, what);
  return ret;
}

/** An AIO request in flight. */
interface Pending {
  readonly call: string;
  readonly resolve: (ret: number) => void;
  readonly reject: (err: RbdError) => void;
  /**
   * The buffer librbd reads into or writes from, held here so that it outlives the request
   * whatever the caller does with it meanwhile (librbd keeps its address, not a reference the GC
   * would see).
   */
  readonly buffer: Buffer | undefined;
}

/** A pointer written by librbd at `at`, as a Number. */
function readAddress(buf: Buffer, at: number): number {
  return buf.readUInt32LE(at) + buf.readUInt32LE(at + 4) * 2 ** 32;
}

/**
 * The AIO of one image: its requests in flight, by completion address, and the pipe librbd
 * tells of completions through (see the header). The pipe's socket keeps Node alive while
 * requests are in flight, and only then.
 *
 * Closing is where this can go wrong (an earlier version aborted the process there), so the
 * rules: librbd's queue of finished completions lives in the image, so it is polled only while a
 * request of ours is in flight, which close() waits out before the image goes. The pipe may
 * still hold bytes of completions an earlier poll took: they wake us for nothing and must not
 * reach librbd, whose image may be closing or freed by then. A librbd thread may still be
 * finishing a completion we took (it queues it before it is done with it): rbd_close waits for
 * that, as its flush waits for every earlier request. The pipe is closed only once the image is,
 * when no librbd thread can write to it any more.
 */
class AioQueue {
  private readonly pending = new Map<number, Pending>();
  private readonly socket: Socket;
  private readonly writeFd: number;
  /** rbd_poll_io_events's answer: completion addresses. */
  private readonly polled = Buffer.alloc(POLL_BATCH * 8);
  /** rbd_aio_create_completion's answer: one address. */
  private readonly created = Buffer.alloc(8);
  private idle: (() => void) | undefined;

  constructor(
    private readonly image: unknown,
    name: string,
  ) {
    const { f, pipe2 } = lib();
    const fds = Buffer.alloc(8);
    // Non-blocking both ends: librbd never waits on a full pipe (the completions are queued
    // whether its byte fits or not, and one unread byte is enough to be woken).
    if (Number(pipe2(fds, O_NONBLOCK | O_CLOEXEC)) !== 0) throw Object.assign(new Error(`EMFILE: cannot create a pipe for the completions of ${name}`), { code: 'EMFILE' });
    const readFd = fds.readInt32LE(0);
    this.writeFd = fds.readInt32LE(4);
    const ret = Number(f.rbd_set_image_notification!(image, this.writeFd, EVENT_TYPE_PIPE));
    if (ret < 0) {
      closeSync(readFd);
      closeSync(this.writeFd);
      throw rbdError('rbd_set_image_notification', ret, name);
    }
    // The bytes say only "something completed": read into one small buffer, never kept.
    // (`onread`, the option net.connect() passes on, is not in the constructor's types.)
    const onread = { buffer: Buffer.alloc(1024), callback: () => this.poll() };
    this.socket = new Socket({ fd: readFd, readable: true, writable: false, onread } as SocketConstructorOpts);
    // A pipe we hold both ends of neither ends nor fails; were it to, polling costs nothing.
    this.socket.on('error', () => this.poll());
    this.socket.unref();
  }

  /** Submits one request on `buffer`; resolves with librbd's return value once it has completed. */
  submit(call: string, buffer: Buffer | undefined, submit: (c: number) => number): Promise<number> {
    const { f } = lib();
    const r = Number(f.rbd_aio_create_completion!(null, null, this.created));
    if (r < 0) return Promise.reject(rbdError('rbd_aio_create_completion', r));
    const c = readAddress(this.created, 0);
    return new Promise((resolve, reject) => {
      this.pending.set(c, { call, resolve, reject, buffer });
      if (this.pending.size === 1) this.socket.ref();
      const q = submit(c);
      if (q < 0) {
        this.pending.delete(c);
        f.rbd_aio_release!(c);
        this.settled();
        reject(rbdError(call, q));
      }
    });
  }

  /** Resolves once no request is in flight. */
  drained(): Promise<void> {
    if (this.pending.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const before = this.idle;
      this.idle = () => {
        before?.();
        resolve();
      };
    });
  }

  /** Closes the pipe. Only once the image is closed: until then librbd may write to it. */
  destroy(): void {
    this.socket.destroy();
    closeSync(this.writeFd);
  }

  /** Takes every finished completion: the pipe was readable. Returns true: go on reading. */
  private poll(): boolean {
    // Nothing of ours to take, and the image may be closing or closed: librbd is not asked.
    if (this.pending.size === 0) return true;
    const { f } = lib();
    for (;;) {
      const n = Number(f.rbd_poll_io_events!(this.image, this.polled, POLL_BATCH));
      for (let i = 0; i < n; i++) {
        const c = readAddress(this.polled, i * 8);
        const p = this.pending.get(c);
        // Only ours are made with event notification; anything else is not ours to release.
        if (p === undefined) continue;
        this.pending.delete(c);
        // Final before librbd queued it. librbd may still be finishing with it on its own
        // thread; it holds a reference of its own for that, so releasing ours here is safe.
        const ret = Number(f.rbd_aio_get_return_value!(c));
        f.rbd_aio_release!(c);
        if (ret < 0) p.reject(rbdError(p.call, ret));
        else p.resolve(ret);
      }
      if (n < POLL_BATCH) break;
    }
    this.settled();
    return true;
  }

  private settled(): void {
    if (this.pending.size > 0) return;
    this.socket.unref();
    const idle = this.idle;
    this.idle = undefined;
    idle?.();
  }
}

/** Options for a new image or clone: format 2, the given features. */
function imageOptions(features: number): { opts: unknown; destroy: () => void } {
  const { f } = lib();
  const out: unknown[] = [null];
  f.rbd_image_options_create!(out);
  const opts = out[0];
  f.rbd_image_options_set_uint64!(opts, RBD_IMAGE_OPTION_FORMAT, 2);
  f.rbd_image_options_set_uint64!(opts, RBD_IMAGE_OPTION_FEATURES, features);
  return {
    opts,
    destroy: () => {
      f.rbd_image_options_destroy!(opts);
    },
  };
}

/**
 * Calls a librbd "list into a caller's array" function: grows the array while it answers
 * ERANGE (which also tells the size it needs), decodes it, frees what librbd allocated.
 */
async function listInto<T>(call: string, type: koffi.IKoffiCType, first: unknown, cleanup: (buf: Buffer, n: number) => void): Promise<T[]> {
  const { f } = lib();
  for (let max = 16; ; ) {
    const buf = Buffer.alloc(max * koffi.sizeof(type));
    const n = [max];
    const ret = await inPool(f[call]!, first, buf, n);
    if (ret === -34 /* ERANGE */ && n[0]! > max) {
      max = n[0]!;
      continue;
    }
    if (ret < 0) throw rbdError(call, ret);
    const count = n[0]!;
    const items = count === 0 ? [] : (koffi.decode(buf, type, count) as T[]);
    cleanup(buf, count);
    return items;
  }
}

export interface ClusterStat {
  readonly totalBytes: number;
  readonly usedBytes: number;
  readonly availBytes: number;
}

/** A connected cluster handle (one per driver; librados handles are thread-safe). */
export class RadosCluster {
  private closed = false;
  private constructor(private readonly handle: unknown) {}

  /** Connects as `client.<id>` with the settings (mon addresses, keyring) of `confPath`. */
  static async connect(opts: { readonly confPath: string; readonly id?: string; readonly conf?: Readonly<Record<string, string>> }): Promise<RadosCluster> {
    const { f } = lib();
    const out: unknown[] = [null];
    const r = Number(f.rados_create2!(out, 'ceph', `client.${opts.id ?? 'admin'}`, 0));
    if (r < 0) throw rbdError('rados_create2', r, opts.id);
    const handle = out[0];
    try {
      let ret = Number(f.rados_conf_read_file!(handle, opts.confPath));
      if (ret < 0) throw rbdError('rados_conf_read_file', ret, opts.confPath);
      for (const [k, v] of Object.entries(opts.conf ?? {})) {
        ret = Number(f.rados_conf_set!(handle, k, v));
        if (ret < 0) throw rbdError('rados_conf_set', ret, k);
      }
      await check('rados_connect', undefined, handle);
    } catch (e) {
      await inPool(f.rados_shutdown!, handle);
      throw e;
    }
    return new RadosCluster(handle);
  }

  async ioctx(pool: string): Promise<IoCtx> {
    const out: unknown[] = [null];
    await check('rados_ioctx_create', pool, this.handle, pool, out);
    return new IoCtx(out[0], pool);
  }

  /** Raw space over the whole cluster (before replication). */
  async stat(): Promise<ClusterStat> {
    const out: unknown[] = [{}];
    await check('rados_cluster_stat', undefined, this.handle, out);
    const s = out[0] as { kb: number; kb_used: number; kb_avail: number };
    return { totalBytes: Number(s.kb) * 1024, usedBytes: Number(s.kb_used) * 1024, availBytes: Number(s.kb_avail) * 1024 };
  }

  /** A monitor command (JSON, as the `ceph` tool sends it); returns its output. */
  async monCommand(cmd: Record<string, unknown>): Promise<string> {
    const { f } = lib();
    const outbuf: unknown[] = [null];
    const outlen: number[] = [0];
    const outs: unknown[] = [null];
    const outslen: number[] = [0];
    const ret = await inPool(f.rados_mon_command!, this.handle, [JSON.stringify(cmd)], 1, '', 0, outbuf, outlen, outs, outslen);
    const text = (p: unknown, n: number): string => (p && n > 0 ? Buffer.from(koffi.view(p, n)).toString('utf8') : '');
    const out = text(outbuf[0], Number(outlen[0]));
    const status = text(outs[0], Number(outslen[0]));
    if (outbuf[0]) f.rados_buffer_free!(outbuf[0]);
    if (outs[0]) f.rados_buffer_free!(outs[0]);
    if (ret < 0) {
      const err = rbdError('rados_mon_command', ret, String(cmd.prefix));
      if (status) err.message += `: ${status}`;
      throw err;
    }
    return out;
  }

  /** Closes the handle; every ioctx and image of it must be closed first. */
  async shutdown(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await inPool(lib().f.rados_shutdown!, this.handle);
  }
}

export interface LinkedImage {
  readonly pool: string;
  readonly image: string;
  /** In the trash (a clone removed while it was still open somewhere, or moved there). */
  readonly trash: boolean;
}

/** A pool opened for I/O: where images are created, listed, renamed and removed. */
export class IoCtx {
  constructor(
    private readonly handle: unknown,
    readonly pool: string,
  ) {}

  /** A new, empty, thin image. */
  async create(name: string, size: number, features = RBD_FEATURE_LAYERING): Promise<void> {
    const o = imageOptions(features);
    try {
      await check('rbd_create4', name, this.handle, name, size, o.opts);
    } finally {
      o.destroy();
    }
  }

  /** A copy-on-write clone of `parent@snap` (protected) named `child`, in this pool. */
  async clone(parent: string, snap: string, child: string, features = RBD_FEATURE_LAYERING): Promise<void> {
    const o = imageOptions(features);
    try {
      await check('rbd_clone3', `${parent}@${snap} -> ${child}`, this.handle, parent, snap, this.handle, child, o.opts);
    } finally {
      o.destroy();
    }
  }

  async remove(name: string): Promise<void> {
    await check('rbd_remove', name, this.handle, name);
  }

  async rename(from: string, to: string): Promise<void> {
    await check('rbd_rename', `${from} -> ${to}`, this.handle, from, to);
  }

  /** Names of every image in the pool (not those in the trash). */
  async list(): Promise<string[]> {
    const { f, specT } = lib();
    const specs = await listInto<{ name: string }>('rbd_list2', specT, this.handle, (buf, n) => {
      f.rbd_image_spec_list_cleanup!(buf, n);
    });
    return specs.map((s) => s.name);
  }

  /** Opens an image (at `snap`, read-only, when given). Opening reads only the header. */
  async open(name: string, opts: { readonly readOnly?: boolean; readonly snap?: string } = {}): Promise<RbdImage> {
    const call = opts.readOnly ? 'rbd_open_read_only' : 'rbd_open';
    const out: unknown[] = [null];
    await check(call, opts.snap ? `${name}@${opts.snap}` : name, this.handle, name, out, opts.snap ?? null);
    const image = new RbdImage(out[0], name);
    try {
      await image.refreshSize();
    } catch (e) {
      await image.close();
      throw e;
    }
    return image;
  }

  destroy(): void {
    lib().f.rados_ioctx_destroy!(this.handle);
  }
}

/** An open image (or snapshot of one). */
export class RbdImage {
  private bytes = 0;
  private closed = false;
  /** Made at the first AIO request. */
  private queue: AioQueue | undefined;

  constructor(
    private readonly handle: unknown,
    readonly name: string,
  ) {}

  /** The size when opened (or last refreshed). */
  get size(): number {
    return this.bytes;
  }

  async refreshSize(): Promise<number> {
    const out: number[] = [0];
    await check('rbd_get_size', this.name, this.handle, out);
    this.bytes = Number(out[0]);
    return this.bytes;
  }

  /** Reads `into.length` bytes at `offset`; resolves with the bytes read (short only past the end). */
  read(into: Buffer, offset: number): Promise<number> {
    return this.aio('rbd_aio_read2', into, (c) => Number(lib().f.rbd_aio_read2!(this.handle, offset, into.length, into, c, 0)));
  }

  write(data: Buffer, offset: number): Promise<number> {
    return this.aio('rbd_aio_write2', data, (c) => Number(lib().f.rbd_aio_write2!(this.handle, offset, data.length, data, c, 0)));
  }

  /** Deallocates what it can; in a clone, or for partial objects, the range may keep its data. */
  discard(offset: number, length: number): Promise<number> {
    return this.aio('rbd_aio_discard', undefined, (c) => Number(lib().f.rbd_aio_discard!(this.handle, offset, length, c)));
  }

  /** Makes the range read as zeros; `keepAllocated` writes them rather than deallocating. */
  writeZeroes(offset: number, length: number, keepAllocated: boolean): Promise<number> {
    const flags = keepAllocated ? RBD_WRITE_ZEROES_FLAG_THICK_PROVISION : 0;
    return this.aio('rbd_aio_write_zeroes', undefined, (c) => Number(lib().f.rbd_aio_write_zeroes!(this.handle, offset, length, c, flags, 0)));
  }

  flush(): Promise<number> {
    return this.aio('rbd_aio_flush', undefined, (c) => Number(lib().f.rbd_aio_flush!(this.handle, c)));
  }

  /**
   * Calls `onExtent` for each allocated extent in [offset, offset + length), in order;
   * `includeParent` counts what a clone reads through from its parent as allocated.
   */
  async diffIterate(offset: number, length: number, includeParent: boolean, onExtent: (offset: number, length: number, exists: boolean) => void): Promise<void> {
    const cb = (off: number, len: number, exists: number): number => {
      onExtent(Number(off), Number(len), exists !== 0);
      return 0;
    };
    await check('rbd_diff_iterate2', this.name, this.handle, null, offset, length, includeParent ? 1 : 0, 0, cb, null);
  }

  /** The parent image and snapshot of a clone; null for an image that has none (or no longer). */
  async parent(): Promise<{ readonly pool: string; readonly image: string; readonly snap: string } | null> {
    const { f, linkedSpecT, snapSpecT } = lib();
    const img = Buffer.alloc(koffi.sizeof(linkedSpecT));
    const snap = Buffer.alloc(koffi.sizeof(snapSpecT));
    const ret = await inPool(f.rbd_get_parent!, this.handle, img, snap);
    if (ret === -2 /* ENOENT: no parent */) return null;
    if (ret < 0) throw rbdError('rbd_get_parent', ret, this.name);
    const i = koffi.decode(img, linkedSpecT) as { pool_name: string; image_name: string };
    const s = koffi.decode(snap, snapSpecT) as { name: string };
    const parent = { pool: i.pool_name, image: i.image_name, snap: s.name };
    f.rbd_linked_image_spec_cleanup!(img);
    f.rbd_snap_spec_cleanup!(snap);
    return parent;
  }

  /** The clones of this image (open at a snapshot: of that snapshot), trashed ones included. */
  async children(): Promise<LinkedImage[]> {
    const { f, linkedSpecT } = lib();
    const specs = await listInto<{ pool_name: string; image_name: string; trash: boolean }>('rbd_list_children3', linkedSpecT, this.handle, (buf, n) => {
      f.rbd_linked_image_spec_list_cleanup!(buf, n);
    });
    return specs.map((s) => ({ pool: s.pool_name, image: s.image_name, trash: s.trash }));
  }

  /** Copies the parent's data into this clone and detaches it. */
  async flatten(): Promise<void> {
    await check('rbd_flatten', this.name, this.handle);
  }

  async snapCreate(snap: string): Promise<void> {
    await check('rbd_snap_create', `${this.name}@${snap}`, this.handle, snap);
  }

  async snapProtect(snap: string): Promise<void> {
    await check('rbd_snap_protect', `${this.name}@${snap}`, this.handle, snap);
  }

  /** EBUSY while clones of the snapshot exist. */
  async snapUnprotect(snap: string): Promise<void> {
    await check('rbd_snap_unprotect', `${this.name}@${snap}`, this.handle, snap);
  }

  async snapRemove(snap: string): Promise<void> {
    await check('rbd_snap_remove', `${this.name}@${snap}`, this.handle, snap);
  }

  async snapIsProtected(snap: string): Promise<boolean> {
    const out: number[] = [0];
    await check('rbd_snap_is_protected', `${this.name}@${snap}`, this.handle, snap, out);
    return out[0] !== 0;
  }

  async snapList(): Promise<string[]> {
    const { f, snapInfoT } = lib();
    for (let max = 8; ; ) {
      // rbd_snap_list writes max + 1 entries (a terminating one).
      const buf = Buffer.alloc((max + 1) * koffi.sizeof(snapInfoT));
      const n = [max];
      const ret = await inPool(f.rbd_snap_list!, this.handle, buf, n);
      if (ret === -34 /* ERANGE */ && n[0]! > max) {
        max = n[0]!;
        continue;
      }
      if (ret < 0) throw rbdError('rbd_snap_list', ret, this.name);
      const snaps = ret === 0 ? [] : (koffi.decode(buf, snapInfoT, ret) as { name: string }[]).map((s) => s.name);
      f.rbd_snap_list_end!(buf);
      return snaps;
    }
  }

  /** Waits for the image's I/O, then closes it; later I/O is refused (EBADF). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Every completion taken before the image goes: rbd_poll_io_events needs it open.
    await this.queue?.drained();
    try {
      await check('rbd_close', this.name, this.handle);
    } finally {
      // The image is gone whether rbd_close succeeded or not: librbd writes to the pipe no more.
      this.queue?.destroy();
    }
  }

  private aio(call: string, buffer: Buffer | undefined, submit: (c: number) => number): Promise<number> {
    if (this.closed) return Promise.reject(rbdError(call, -9 /* EBADF */, this.name));
    try {
      this.queue ??= new AioQueue(this.handle, this.name);
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
    return this.queue.submit(call, buffer, submit);
  }
}
