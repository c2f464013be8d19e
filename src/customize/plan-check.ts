/**
 * A customize plan checked and normalised before any tool runs: paths end up in debugfs command
 * files and mtools arguments, so a newline or a `..` in one is an injection, not a typo. Every
 * rule here fails with an InputError while the disk is still untouched.
 */
import { posix } from 'node:path';
import { InputError, type CustomizePlan, type FilesystemKind, type PartitionSelector } from '../domain/index.js';

export interface CheckedWrite {
  readonly path: string;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly content: Buffer;
}

export interface CheckedSeed {
  readonly as: 'iso' | 'vfat';
  readonly partition: PartitionSelector;
  /** NoCloud file name → bytes, sorted by name. */
  readonly files: readonly (readonly [name: string, content: Buffer])[];
}

export interface CheckedPlan {
  readonly partition: PartitionSelector | 'whole-disk';
  readonly filesystem: FilesystemKind;
  readonly writes: readonly CheckedWrite[];
  /** Normalised, without duplicates and without paths inside another removed path. */
  readonly removes: readonly string[];
  readonly seed?: CheckedSeed;
  readonly epoch: number;
}

/** The files cloud-init's NoCloud datasource reads. */
export const SEED_FILES: readonly string[] = ['meta-data', 'network-config', 'user-data', 'vendor-data'];
/** Kept to 32-bit signed seconds: 128-byte ext inodes, FAT and every tool agree on that range. */
const MAX_EPOCH = 2 ** 31 - 1;
const MAX_ID = 2 ** 32 - 2; // 2^32 - 1 is (uid_t) -1, "no owner"
const MAX_PATH_BYTES = 4095;
const MAX_NAME_BYTES = 255;
/** Characters FAT forbids in names, and the ones mtools reads as wildcards. */
const VFAT_FORBIDDEN = /["*:<>?\\|[\]]/;
const PRINTABLE_ASCII = /^[\u0020-\u007e]*$/;

export function checkPlan(plan: CustomizePlan): CheckedPlan {
  const filesystem = plan.filesystem;
  if (filesystem !== 'ext' && filesystem !== 'vfat') throw new InputError(`unknown filesystem kind '${String(filesystem)}' (ext or vfat)`);
  if (!Number.isInteger(plan.epoch) || plan.epoch < 0 || plan.epoch > MAX_EPOCH) {
    throw new InputError(`epoch ${plan.epoch} is not a whole number of seconds from 0 to ${MAX_EPOCH}`, { epoch: plan.epoch });
  }
  const key = (p: string): string => (filesystem === 'vfat' ? p.toLowerCase() : p);
  const writes = plan.writes.map((w) => checkWrite(w, filesystem));
  const written = new Set<string>();
  for (const w of writes) {
    if (written.has(key(w.path))) throw new InputError(`the plan writes ${w.path} twice`, { path: w.path });
    written.add(key(w.path));
  }
  for (const w of writes) {
    const inside = writes.find((o) => key(o.path).startsWith(`${key(w.path)}/`));
    if (inside) throw new InputError(`the plan writes ${w.path} as a file and ${inside.path} inside it`, { path: w.path });
  }
  const removes = outermost(plan.removes.map((p) => normalizePath(p, filesystem)), key);
  for (const r of removes) {
    if (written.has(key(r))) throw new InputError(`the plan both writes and removes ${r}`, { path: r });
  }
  const seed = plan.seed && checkSeed(plan.seed);
  return { partition: plan.partition, filesystem, writes, removes, epoch: plan.epoch, ...(seed ? { seed } : {}) };
}

function checkWrite(w: CustomizePlan['writes'][number], fs: FilesystemKind): CheckedWrite {
  const path = normalizePath(w.path, fs);
  if (!Number.isInteger(w.mode) || w.mode < 0 || w.mode > 0o7777) throw new InputError(`mode ${w.mode} of ${path} is not permission bits (0 to 0o7777)`, { path });
  for (const [what, id] of [['uid', w.uid], ['gid', w.gid]] as const) {
    if (!Number.isInteger(id) || id < 0 || id > MAX_ID) throw new InputError(`${what} ${id} of ${path} is not a whole number from 0 to ${MAX_ID}`, { path });
  }
  if (!Buffer.isBuffer(w.content)) throw new InputError(`the content of ${path} is not bytes`, { path });
  return { path, mode: w.mode, uid: w.uid, gid: w.gid, content: w.content };
}

/**
 * An absolute path with `//`, `.` and a trailing `/` folded away. `..` is refused rather than
 * resolved: a spec that climbs is a mistake or an attack, never what someone meant.
 */
export function normalizePath(raw: unknown, fs: FilesystemKind): string {
  const shown = JSON.stringify(raw);
  if (typeof raw !== 'string') throw new InputError(`path ${shown} is not a string`);
  if (!raw.startsWith('/')) throw new InputError(`path ${shown} is not absolute`, { path: raw });
  if (hasControlCharacter(raw)) throw new InputError(`path ${shown} holds a control character (newline, NUL, …)`, { path: raw });
  const parts = raw.split('/').filter((c) => c !== '' && c !== '.');
  if (parts.includes('..')) throw new InputError(`path ${shown} climbs with '..'`, { path: raw });
  if (parts.length === 0) throw new InputError(`path ${shown} is the root directory itself`, { path: raw });
  const path = `/${parts.join('/')}`;
  if (Buffer.byteLength(path) > MAX_PATH_BYTES) throw new InputError(`path ${shown} is longer than ${MAX_PATH_BYTES} bytes`, { path: raw });
  for (const name of parts) {
    if (Buffer.byteLength(name) > MAX_NAME_BYTES) throw new InputError(`path ${shown} has a name longer than ${MAX_NAME_BYTES} bytes`, { path: raw });
    if (fs === 'vfat') checkVfatName(name, shown, raw);
  }
  return path;
}

function hasControlCharacter(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}

function checkVfatName(name: string, shown: string, raw: string): void {
  // mtools maps non-ASCII through the locale and changes case on the way: keep names exact.
  if (!PRINTABLE_ASCII.test(name)) throw new InputError(`path ${shown}: vfat names here are printable ASCII only`, { path: raw });
  if (VFAT_FORBIDDEN.test(name)) throw new InputError(`path ${shown}: vfat names cannot hold any of " * : < > ? \\ | [ ]`, { path: raw });
  if (/[. ]$/.test(name)) throw new InputError(`path ${shown}: vfat names cannot end in a dot or a space`, { path: raw });
}

/** Drops duplicates and paths inside another path of the list: removing the outer one covers them. */
function outermost(paths: readonly string[], key: (p: string) => string): string[] {
  const sorted = [...new Set(paths)].sort((a, b) => a.length - b.length);
  const kept: string[] = [];
  for (const p of sorted) {
    if (!kept.some((k) => key(p) === key(k) || key(p).startsWith(`${key(k)}/`))) kept.push(p);
  }
  return kept;
}

function checkSeed(seed: NonNullable<CustomizePlan['seed']>): CheckedSeed {
  if (seed.as !== 'iso' && seed.as !== 'vfat') throw new InputError(`seed kind '${String(seed.as)}' is neither iso nor vfat`);
  const files = new Map<string, Buffer>();
  for (const [name, content] of Object.entries(seed.files)) {
    if (!SEED_FILES.includes(name)) throw new InputError(`seed file '${name}' is not a NoCloud file (${SEED_FILES.join(', ')})`, { name });
    if (!Buffer.isBuffer(content)) throw new InputError(`the content of seed file ${name} is not bytes`, { name });
    files.set(name, content);
  }
  // NoCloud ignores a seed that lacks either of these; empty ones are valid.
  for (const required of ['meta-data', 'user-data']) if (!files.has(required)) files.set(required, Buffer.alloc(0));
  return { as: seed.as, partition: seed.partition, files: [...files.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)) };
}

/** The directories above a path, outermost first: `/a/b/c` → `/a`, `/a/b`. */
export function ancestors(path: string): string[] {
  const out: string[] = [];
  for (let d = posix.dirname(path); d !== '/'; d = posix.dirname(d)) out.unshift(d);
  return out;
}
