/**
 * Template specs: the YAML (or JSON) file an operator writes, and the normalized JSON the
 * API accepts (`TemplateSpec`). One reader serves both, so both obey the same rules; it
 * collects every problem before giving up, and in a file each one names its line.
 * Pure: a `from:` file is read through a function the caller passes in, and a file's text is
 * parsed at the edge (`src/cli/template-yaml.ts`), which hands over its value and a
 * `TemplateSourceMap`. The API's schema of the spec is at the other edge
 * (`src/api/template-spec-schema.ts`).
 */
import { InputError, PrestageError } from './errors.js';
import { parseSourceSpec, validateImageName } from './source-spec.js';
import { HOST_ID_PARAM, PARAM_NAME, scanPlaceholders } from './template-render.js';
import type { PartitionSelector, PerHostSpec, SeedSpec, TemplateFileSpec, TemplateSpec } from './template.js';

/** Size and count limits of a spec. The API also caps a whole request at 1 MiB, base64 included. */
export const TEMPLATE_LIMITS = {
  /** Bytes of one file's content. */
  fileBytes: 1 << 20,
  /** Characters of one seed or per-host document. */
  documentChars: 256 * 1024,
  /** Characters of one param value or default. */
  valueChars: 64 * 1024,
  /** Bytes of a path inside the image (Linux PATH_MAX). */
  pathBytes: 4096,
  files: 1024,
  remove: 1024,
  params: 256,
  descriptionChars: 1024,
  paramNameChars: 64,
  /** Partition numbers; GPT holds 128 entries unless made bigger. */
  partitionNumber: 256,
  /** Characters of a partition or filesystem label. */
  labelChars: 72,
  /** The largest uid/gid (2^32 - 2: -1 means "unchanged" to chown). */
  maxId: 4_294_967_294,
} as const;

/** A partition GUID (the API's schema uses its source as a pattern). */
export const GUID_PATTERN = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

// ---------------------------------------------------------------------------------------
// Where things are written: a path into the document (`['files', 1, 'mode']`) → a line.

/** A path into a spec document: `['files', 1, 'mode']`. */
export type TemplateSpecPath = readonly (string | number)[];
type Path = TemplateSpecPath;

/** Answers about the text a spec was read from. For the API's JSON there is none: every answer is undefined. */
export interface TemplateSourceMap {
  /** The line of the value at `path`, or of its nearest ancestor when it is absent. */
  line(path: Path): number | undefined;
  /** The line of `offset` inside the string at `path` (exact for `|` blocks, the value's line otherwise). */
  lineAt(path: Path, text: string, offset: number): number | undefined;
  /** A plain scalar as written: `1.10` stays `1.10`, and `0644` can be read as octal. */
  written(path: Path): string | undefined;
}

const NO_SOURCE: TemplateSourceMap = { line: () => undefined, lineAt: () => undefined, written: () => undefined };

// ---------------------------------------------------------------------------------------
// Problems: collected, then thrown together as one InputError.

/** One problem with a spec: the field (`files[1].mode`), its line in a file, what is wrong. */
export interface TemplateSpecIssue {
  readonly field: string;
  readonly line?: number;
  readonly message: string;
}

function fieldName(path: Path): string {
  return path.reduce<string>((s, seg) => {
    if (typeof seg === 'number') return `${s}[${seg}]`;
    const safe = /^[A-Za-z_][A-Za-z0-9_.-]*$/.test(seg) ? seg : JSON.stringify(seg);
    return s === '' ? safe : `${s}.${safe}`;
  }, '');
}

function formatIssue(issue: TemplateSpecIssue, fileName: string | undefined): string {
  const where = fileName === undefined ? '' : issue.line === undefined ? `${fileName}: ` : `${fileName}:${issue.line}: `;
  return `${where}${issue.field === '' ? '' : `${issue.field}: `}${issue.message}`;
}

/** Throws the problems of a spec as one InputError, in reading order, each named by file (when given), line and field. */
export function throwTemplateSpecIssues(issues: readonly TemplateSpecIssue[], fileName?: string): never {
  // Reading order is field order; people fix a file top to bottom.
  const sorted = [...issues].sort((a, b) => (a.line ?? Infinity) - (b.line ?? Infinity));
  const first = sorted[0] ?? { field: '', message: 'invalid template spec' };
  throw new InputError(sorted.map((i) => formatIssue(i, fileName)).join('\n'), {
    field: first.field,
    line: first.line,
    ...(fileName !== undefined && { file: fileName }),
    issues: sorted,
  });
}

/** `fils` → `files`, `perHost` → `per-host`: a close spelling, or the same name in another case style. */
function suggest(word: string, known: Iterable<string>): string | undefined {
  const squash = (s: string) => s.toLowerCase().replace(/[-_.]/g, '');
  let best: { name: string; d: number } | undefined;
  for (const name of known) {
    const d = squash(name) === squash(word) ? 0 : editDistance(word.toLowerCase(), name.toLowerCase());
    if (d <= Math.max(1, Math.floor(name.length / 3)) && (!best || d < best.d)) best = { name, d };
  }
  return best?.name;
}

/** Edits between two words, a swap of neighbours counting as one (`lable` is one edit from `label`). */
function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const row = d[i]!;
      row[j] = Math.min(d[i - 1]![j]! + 1, row[j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) row[j] = Math.min(row[j]!, d[i - 2]![j - 2]! + 1);
    }
  }
  return d[a.length]![b.length]!;
}

function describe(v: unknown): string {
  if (v === null) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  // YAML tags that turn into objects: !!binary, !!timestamp, !!set, !!omap.
  if (v instanceof Uint8Array) return 'binary data (!!binary)';
  if (v instanceof Date) return 'a timestamp';
  if (v instanceof Set || v instanceof Map) return `a ${v instanceof Set ? 'set (!!set)' : 'ordered map (!!omap)'}`;
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
  if (typeof v === 'number') return `the number ${v}`;
  if (typeof v === 'boolean') return `${v}`;
  return typeof v;
}

// ---------------------------------------------------------------------------------------
// The reader: typed values out of `unknown`, a problem recorded for each bad one.

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** How a spec is written: a file (kebab-case keys, `content:`/`from:`, octal modes) or the API's JSON. */
type Dialect = 'file' | 'api';

class Reader {
  readonly issues: TemplateSpecIssue[] = [];
  constructor(
    readonly src: TemplateSourceMap,
    readonly dialect: Dialect,
  ) {}

  /** A TemplateSpec field's key in this dialect: `perHost` is `per-host` in a file. */
  key(name: string): string {
    return this.dialect === 'file' ? name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`) : name;
  }

  fail(path: Path, message: string, line = this.src.line(path)): undefined {
    this.issues.push({ field: fieldName(path), ...(line !== undefined && { line }), message });
    return undefined;
  }

  /** Runs a domain rule that throws InputError, recording its message instead. */
  rule<T>(path: Path, check: () => T): T | undefined {
    try {
      return check();
    } catch (e) {
      if (!(e instanceof PrestageError)) throw e;
      return this.fail(path, e.message);
    }
  }

  /** A YAML `key:` with nothing after it is null; in a file that means "not given". */
  absent(v: unknown): boolean {
    return v === undefined || (v === null && this.dialect === 'file');
  }

  /** A mapping holding only `known` keys (in this dialect's spelling; `any` for names the operator chooses) and every `required` one. */
  mapping(v: unknown, path: Path, known: readonly string[] | 'any', required: readonly string[] = []): Record<string, unknown> | undefined {
    if (!isPlainObject(v)) return this.fail(path, `expected a mapping, got ${describe(v)}`);
    const m = v;
    for (const k of Object.keys(m)) {
      if (known === 'any' || known.includes(k)) continue;
      const near = suggest(k, known);
      this.fail([...path, k], `unknown field${near ? `; did you mean '${near}'?` : ` (known: ${known.join(', ')})`}`);
    }
    for (const k of required) if (this.absent(m[k])) this.fail([...path, k], 'missing (required)');
    return m;
  }

  string(v: unknown, path: Path, max: number): string | undefined {
    if (typeof v !== 'string') return this.fail(path, `expected a string, got ${describe(v)}`);
    if (v.length > max) return this.fail(path, `too long: ${v.length} characters, at most ${max}`);
    return v;
  }

  oneOf<T extends string>(v: unknown, path: Path, values: readonly T[], fallback: T): T {
    if (this.absent(v)) return fallback;
    if (typeof v === 'string' && (values as readonly string[]).includes(v)) return v as T;
    this.fail(path, `expected ${values.map((x) => `'${x}'`).join(' or ')}, got ${describe(v)}`);
    return fallback;
  }

  integer(v: unknown, path: Path, min: number, max: number, what: string): number | undefined {
    const n = typeof v === 'string' && this.dialect === 'file' && /^[0-9]{1,10}$/.test(v) ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) return this.fail(path, `expected ${what} ${min}-${max}, got ${describe(v)}`);
    return n;
  }

  boolean(v: unknown, path: Path): boolean | undefined {
    if (typeof v !== 'boolean') return this.fail(path, `expected true or false, got ${describe(v)}`);
    return v;
  }

  list(v: unknown, path: Path, max: number): readonly unknown[] {
    if (this.absent(v)) return [];
    if (!Array.isArray(v)) return this.fail(path, `expected a list, got ${describe(v)}`) ?? [];
    if (v.length > max) return this.fail(path, `too many entries: ${v.length}, at most ${max}`) ?? [];
    return v;
  }

  /** A param value. A file may write numbers and booleans; they become the text as written (`1.10` stays `1.10`). */
  value(v: unknown, path: Path): string | undefined {
    if (this.dialect === 'file' && (typeof v === 'number' || typeof v === 'boolean')) return this.src.written(path) ?? String(v);
    if (v === null) return this.fail(path, "has no value (write '' for an empty one)");
    return this.string(v, path, TEMPLATE_LIMITS.valueChars);
  }
}

// ---------------------------------------------------------------------------------------
// Fields.

/** An absolute, canonical path inside the image: the same file is always written the same way, so duplicates show. */
function imagePath(r: Reader, v: unknown, path: Path): string | undefined {
  const s = r.string(v, path, TEMPLATE_LIMITS.pathBytes);
  if (s === undefined) return undefined;
  const why = pathProblem(s);
  return why === undefined ? s : r.fail(path, `${JSON.stringify(s)} ${why}`);
}

function pathProblem(s: string): string | undefined {
  if (!s.startsWith('/')) return "must be absolute (start with '/')";
  if (/[\0\r\n]/.test(s)) return 'must not contain NUL or line breaks';
  if (Buffer.byteLength(s) > TEMPLATE_LIMITS.pathBytes) return `is longer than ${TEMPLATE_LIMITS.pathBytes} bytes`;
  if (s === '/') return 'is the root directory';
  const parts = s.slice(1).split('/');
  if (parts.includes('..')) return "must not contain '..'";
  if (parts.includes('.') || parts.includes('')) return "must be written plainly: no '.' parts, '//' or trailing '/'";
  return undefined;
}

/** `1` (in a file), `{number: 1}`, `{label: x}`, `{guid: …}`. */
function partition(r: Reader, v: unknown, path: Path): PartitionSelector | undefined {
  const { partitionNumber: maxN, labelChars } = TEMPLATE_LIMITS;
  if (r.dialect === 'file') {
    if (typeof v === 'number' || (typeof v === 'string' && /^[0-9]+$/.test(v))) {
      const n = r.integer(v, path, 1, maxN, 'a partition number');
      return n === undefined ? undefined : { number: n };
    }
  }
  const expected = `expected ${r.dialect === 'file' ? 'a partition number, ' : ''}{number: N}, {label: NAME} or {guid: UUID}`;
  if (!isPlainObject(v)) return r.fail(path, `${expected}, got ${describe(v)}`);
  const m = r.mapping(v, path, ['number', 'label', 'guid']);
  if (!m) return undefined;
  const given = Object.keys(m);
  if (!given.every((k) => ['number', 'label', 'guid'].includes(k))) return undefined; // reported as unknown fields
  if (given.length !== 1) return given.length === 0 ? r.fail(path, expected) : r.fail(path, `give one of number, label or guid, not ${given.join(' and ')}`);
  const key = given[0]!;
  const at = [...path, key];
  if (key === 'number') {
    const n = r.integer(m.number, at, 1, maxN, 'a partition number');
    return n === undefined ? undefined : { number: n };
  }
  const s = r.string(m[key], at, labelChars);
  if (s === undefined) return undefined;
  if (key === 'guid') return GUID_PATTERN.test(s) ? { guid: s.toLowerCase() } : r.fail(at, `${JSON.stringify(s)} is not a GUID like 0fc63daf-8483-4772-8e79-3d69d8477de4`);
  if (s === '' || /[\0\n\r/]/.test(s)) return r.fail(at, 'a label is 1 or more characters, without NUL, line breaks or /');
  return { label: s };
}

/** A mode in a file is octal whatever its form (`"0644"`, `0644`, `644`, `0o644`): nobody means decimal 644. */
function fileMode(r: Reader, v: unknown, path: Path): number | undefined {
  if (r.absent(v)) return 0o644;
  const text = typeof v === 'number' ? (r.src.written(path) ?? String(v)) : v;
  const m = typeof text === 'string' ? /^(?:0o)?([0-7]{1,5})$/.exec(text) : null;
  const n = m ? parseInt(m[1]!, 8) : NaN;
  if (!(n <= 0o7777)) return r.fail(path, `${describe(v)} is not an octal mode 0-7777 (e.g. "0644")`);
  return n;
}

interface Scope {
  readonly params: ReadonlySet<string>;
  readonly perHost: ReadonlySet<string>;
  /** Per-host documents may use per-host params and `host.id`; files and the seed are the same for every host. */
  readonly isPerHost: boolean;
}

/** Reports each placeholder in `text` that the scope does not know (once per name), at its line. */
function checkPlaceholders(r: Reader, text: string, path: Path, scope: Scope, lineNote?: (offset: number) => string): void {
  const { pieces, problems } = scanPlaceholders(text);
  const note = (at: number) => (lineNote ? lineNote(at) : '');
  for (const p of problems) r.fail(path, p.message + note(p.at), r.src.lineAt(path, text, p.at));
  const seen = new Set<string>();
  for (const p of pieces) {
    if (!('name' in p) || seen.has(p.name)) continue;
    seen.add(p.name);
    const why = placeholderProblem(p.name, scope);
    if (why !== undefined) r.fail(path, `'{{${p.name}}}' ${why}${note(p.at)}`, r.src.lineAt(path, text, p.at));
  }
}

function placeholderProblem(name: string, scope: Scope): string | undefined {
  if (scope.params.has(name)) return undefined;
  if (scope.isPerHost && (scope.perHost.has(name) || name === HOST_ID_PARAM)) return undefined;
  const sameForAll = 'only per-host documents may use it (files and the seed are the same for every host)';
  if (name === HOST_ID_PARAM) return `is the host's id: ${sameForAll}`;
  if (scope.perHost.has(name)) return `is a per-host param: ${sameForAll}`;
  const known = scope.isPerHost ? [...scope.params, ...scope.perHost, HOST_ID_PARAM] : [...scope.params];
  const near = suggest(name, known);
  const declare = `declare it under ${scope.isPerHost ? 'params or per-host params' : 'params'}, or write '{{{{' for a literal '{{'`;
  return `is not a declared param${near ? `; did you mean '${near}'?` : ` (${declare})`}`;
}

function paramName(r: Reader, name: string, path: Path): boolean {
  if (!PARAM_NAME.test(name) || name.length > TEMPLATE_LIMITS.paramNameChars) {
    r.fail(path, `'${name}' is not a param name: 1-${TEMPLATE_LIMITS.paramNameChars} characters of A-Z a-z 0-9 _ . -, not starting with a digit, '.' or '-'`);
    return false;
  }
  if (name === '__proto__') {
    r.fail(path, `'${name}' cannot be a param name`);
    return false;
  }
  if (name.startsWith('host.')) {
    r.fail(path, `'${name}': names starting with 'host.' are reserved for what prestage knows about a host`);
    return false;
  }
  return true;
}

function params(r: Reader, v: unknown, path: Path): Record<string, string> {
  const out: Record<string, string> = {};
  if (r.absent(v)) return out;
  const m = r.mapping(v, path, 'any');
  if (!m) return out;
  if (Object.keys(m).length > TEMPLATE_LIMITS.params) r.fail(path, `too many params: at most ${TEMPLATE_LIMITS.params}`);
  for (const [name, raw] of Object.entries(m)) {
    if (!paramName(r, name, [...path, name])) continue;
    const value = r.value(raw, [...path, name]);
    if (value !== undefined) out[name] = value;
  }
  return out;
}

type FromReader = (path: string) => Buffer;

/** A `files:` entry of a spec file: `content:` (text) or `from:` (a local file, read through `resolveFrom`). */
function specFileEntry(r: Reader, v: unknown, path: Path, scope: Scope, resolveFrom: FromReader | undefined): TemplateFileSpec | undefined {
  const m = r.mapping(v, path, ['path', 'mode', 'owner', 'group', 'content', 'from', 'substitute'], ['path']);
  if (!m) return undefined;
  const target = imagePath(r, m.path, [...path, 'path']);
  const mode = fileMode(r, m.mode, [...path, 'mode']);
  const uid = r.absent(m.owner) ? 0 : r.integer(m.owner, [...path, 'owner'], 0, TEMPLATE_LIMITS.maxId, 'a numeric uid (names are not looked up)');
  const gid = r.absent(m.group) ? 0 : r.integer(m.group, [...path, 'group'], 0, TEMPLATE_LIMITS.maxId, 'a numeric gid (names are not looked up)');
  const hasContent = m.content !== undefined;
  const hasFrom = !r.absent(m.from);
  if (hasContent === hasFrom) return r.fail(hasFrom ? [...path, 'from'] : path, hasFrom ? "give either 'content' or 'from', not both" : "give the file's 'content' or 'from' (a local file)");
  // Text is meant to be filled in; bytes from a file or `!!binary` are taken as they are.
  const isText = hasContent && !(m.content instanceof Uint8Array);
  const substitute = r.absent(m.substitute) ? isText : r.boolean(m.substitute, [...path, 'substitute']);
  const at = hasContent ? [...path, 'content'] : [...path, 'from'];
  const bytes = hasContent ? inlineContent(r, m.content, at) : fromContent(r, m.from, at, resolveFrom);
  const fromNote = (text: string) => (hasContent ? undefined : (offset: number) => ` (in ${String(m.from)}, line ${lineOfOffset(text, offset)})`);
  const ok = bytes === undefined || substitute !== true || substitutable(r, bytes, at, [...path, 'substitute'], scope, fromNote);
  if (!ok || bytes === undefined || target === undefined || mode === undefined || uid === undefined || gid === undefined || substitute === undefined) return undefined;
  return { path: target, mode, uid, gid, contentBase64: bytes.toString('base64'), substitute };
}

const lineOfOffset = (text: string, offset: number) => 1 + (text.slice(0, offset).match(/\n/g)?.length ?? 0);

/** Content to substitute in must be UTF-8 text whose placeholders all name what the scope knows. */
function substitutable(
  r: Reader, bytes: Buffer, at: Path, substitutePath: Path, scope: Scope,
  note: (text: string) => ((offset: number) => string) | undefined = () => undefined,
): boolean {
  const text = utf8(bytes);
  if (text === undefined) {
    r.fail(substitutePath, r.dialect === 'file' ? 'the content is not UTF-8 text: set substitute: false' : 'the content is not UTF-8 text: set substitute to false');
    return false;
  }
  const before = r.issues.length;
  checkPlaceholders(r, text, at, scope, note(text));
  return r.issues.length === before;
}

function inlineContent(r: Reader, v: unknown, path: Path): Buffer | undefined {
  if (v === null) return Buffer.alloc(0); // `content:` with nothing after it: an empty file
  if (v instanceof Uint8Array) {
    return v.length > TEMPLATE_LIMITS.fileBytes ? r.fail(path, `content is ${v.length} bytes, at most ${TEMPLATE_LIMITS.fileBytes}`) : Buffer.from(v);
  }
  const s = r.string(v, path, TEMPLATE_LIMITS.fileBytes);
  if (s === undefined) return undefined;
  const b = Buffer.from(s, 'utf8');
  return b.length > TEMPLATE_LIMITS.fileBytes ? r.fail(path, `content is ${b.length} bytes, at most ${TEMPLATE_LIMITS.fileBytes}`) : b;
}

function fromContent(r: Reader, v: unknown, path: Path, resolveFrom: FromReader | undefined): Buffer | undefined {
  const name = r.string(v, path, TEMPLATE_LIMITS.pathBytes);
  if (name === undefined) return undefined;
  if (name === '' || name.includes('\0')) return r.fail(path, 'expected a file name');
  if (!resolveFrom) return r.fail(path, 'from: needs the file next to the spec: use a spec file (the CLI reads it)');
  let b: Buffer;
  try {
    b = resolveFrom(name);
  } catch (e) {
    return r.fail(path, `cannot read '${name}': ${e instanceof Error ? e.message : String(e)}`);
  }
  return b.length > TEMPLATE_LIMITS.fileBytes ? r.fail(path, `'${name}' is ${b.length} bytes, at most ${TEMPLATE_LIMITS.fileBytes}`) : b;
}

/** A `files:` entry of the API's JSON: the normalized form. */
function apiFileEntry(r: Reader, v: unknown, path: Path, scope: Scope): TemplateFileSpec | undefined {
  const keys = ['path', 'mode', 'uid', 'gid', 'contentBase64', 'substitute'];
  const m = r.mapping(v, path, keys, keys);
  if (!m) return undefined;
  const target = imagePath(r, m.path, [...path, 'path']);
  const mode = r.integer(m.mode, [...path, 'mode'], 0, 0o7777, 'a mode');
  const uid = r.integer(m.uid, [...path, 'uid'], 0, TEMPLATE_LIMITS.maxId, 'a uid');
  const gid = r.integer(m.gid, [...path, 'gid'], 0, TEMPLATE_LIMITS.maxId, 'a gid');
  const substitute = r.boolean(m.substitute, [...path, 'substitute']);
  const b64 = r.string(m.contentBase64, [...path, 'contentBase64'], Math.ceil(TEMPLATE_LIMITS.fileBytes / 3) * 4);
  if (b64 !== undefined && !BASE64.test(b64)) r.fail([...path, 'contentBase64'], 'is not base64');
  const base64Ok = b64 !== undefined && BASE64.test(b64);
  const ok = !base64Ok || substitute !== true || substitutable(r, Buffer.from(b64, 'base64'), [...path, 'contentBase64'], [...path, 'substitute'], scope);
  if (!ok || !base64Ok || target === undefined || mode === undefined || uid === undefined || gid === undefined || substitute === undefined) return undefined;
  return { path: target, mode, uid, gid, contentBase64: b64, substitute };
}

function utf8(b: Buffer): string | undefined {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(b);
  } catch {
    return undefined;
  }
}

/**
 * Each image path is written once, and not also removed: writing already replaces a file, so
 * a path in both lists is a mistake about one of them. Paths are taken from the raw entries,
 * so a clash shows even in an entry with other problems.
 */
function checkPaths(r: Reader, rawFiles: readonly unknown[], remove: readonly (string | undefined)[]): void {
  const written = new Map<string, number>();
  rawFiles.forEach((f, i) => {
    const path = isPlainObject(f) && typeof f.path === 'string' && pathProblem(f.path) === undefined ? f.path : undefined;
    if (path === undefined) return;
    const first = written.get(path);
    if (first === undefined) written.set(path, i);
    else r.fail(['files', i, 'path'], `'${path}' is already written by files[${first}]${lineNote(r, ['files', first])}`);
  });
  const removed = new Map<string, number>();
  remove.forEach((p, i) => {
    if (p === undefined) return;
    const w = written.get(p);
    const again = removed.get(p);
    if (w !== undefined) r.fail(['remove', i], `'${p}' is also written by files[${w}]${lineNote(r, ['files', w])}, which replaces it anyway`);
    else if (again !== undefined) r.fail(['remove', i], `'${p}' is already listed as remove[${again}]`);
    else removed.set(p, i);
  });
}

const lineNote = (r: Reader, path: Path) => {
  const line = r.src.line(path);
  return line === undefined ? '' : ` (line ${line})`;
};

type Documents = { userData?: string; metaData?: string; networkConfig?: string };

/** user-data, meta-data, network-config of a seed or of per-host, each checked against what may be substituted there. */
function documents(r: Reader, m: Record<string, unknown>, path: Path, scope: Scope): Documents {
  const out: Documents = {};
  for (const name of ['userData', 'metaData', 'networkConfig'] as const) {
    const v = m[r.key(name)];
    if (r.absent(v)) continue;
    const at = [...path, r.key(name)];
    const text = r.string(v, at, TEMPLATE_LIMITS.documentChars);
    if (text === undefined) continue;
    checkPlaceholders(r, text, at, scope);
    out[name] = text;
  }
  return out;
}

function seed(r: Reader, v: unknown, scope: Scope, filesPartition: PartitionSelector | 'whole-disk' | undefined): SeedSpec | undefined {
  const path = [r.key('seed')];
  const m = r.mapping(v, path, ['as', 'partition', r.key('userData'), r.key('metaData'), r.key('networkConfig')], ['as', 'partition']);
  if (!m) return undefined;
  const as = r.oneOf(m.as, [...path, 'as'], ['iso', 'vfat'], 'iso');
  const where = r.absent(m.partition) ? undefined : partition(r, m.partition, [...path, 'partition']);
  const docs = documents(r, m, path, scope);
  if (!where) return undefined;
  // Writing the seed over the partition the files go to would destroy them.
  if (JSON.stringify(where) === JSON.stringify(filesPartition ?? { number: 1 })) {
    r.fail([...path, 'partition'], 'is the partition the files are written to; the seed needs a partition of its own');
  }
  return { as, partition: where, ...docs };
}

function perHostParams(r: Reader, v: unknown, path: Path, templateParams: Readonly<Record<string, string>>): PerHostSpec['params'] {
  const out: Record<string, { default?: string; description?: string }> = {};
  if (r.absent(v)) return out;
  const m = r.mapping(v, path, 'any');
  if (!m) return out;
  if (Object.keys(m).length > TEMPLATE_LIMITS.params) r.fail(path, `too many per-host params: at most ${TEMPLATE_LIMITS.params}`);
  for (const [name, raw] of Object.entries(m)) {
    const at = [...path, name];
    if (!paramName(r, name, at)) continue;
    if (Object.hasOwn(templateParams, name)) {
      r.fail(at, `'${name}' is also a template param: a name means one thing`);
      continue;
    }
    if (raw === null && r.dialect === 'file') {
      out[name] = {}; // `hostname:` alone: required, no description
      continue;
    }
    const p = r.mapping(raw, at, ['default', 'description']);
    if (!p) continue;
    const def = r.absent(p.default) ? undefined : oneLine(r, r.value(p.default, [...at, 'default']), [...at, 'default']);
    const description = r.absent(p.description) ? undefined : r.string(p.description, [...at, 'description'], TEMPLATE_LIMITS.descriptionChars);
    out[name] = { ...(def !== undefined && { default: def }), ...(description !== undefined && { description }) };
  }
  return out;
}

/** Per-host values are one line (they land in YAML, where a line break could add keys); so are the defaults standing in for them. */
function oneLine(r: Reader, v: string | undefined, path: Path): string | undefined {
  return v !== undefined && /[\0\r\n]/.test(v) ? r.fail(path, 'must be one line, like the host values it stands in for') : v;
}

function perHost(r: Reader, v: unknown, templateParams: Readonly<Record<string, string>>): PerHostSpec | undefined {
  const path = [r.key('perHost')];
  const known = ['params', r.key('metaData'), r.key('userData'), r.key('networkConfig')];
  const m = r.mapping(v, path, known, r.dialect === 'api' ? ['params'] : []);
  if (!m) return undefined;
  const declared = perHostParams(r, m.params, [...path, 'params'], templateParams);
  const scope: Scope = { params: new Set(Object.keys(templateParams)), perHost: new Set(Object.keys(declared)), isPerHost: true };
  return { params: declared, ...documents(r, m, path, scope) };
}

/** Per-host param names as declared, before anything else is checked: files and the seed must not use them. */
function perHostNames(v: unknown): ReadonlySet<string> {
  if (typeof v !== 'object' || v === null) return new Set();
  const declared = (v as Record<string, unknown>).params;
  return new Set(typeof declared === 'object' && declared !== null ? Object.keys(declared) : []);
}

const TOP_FIELDS = ['name', 'base', 'description', 'partition', 'filesystem', 'rebuild', 'params', 'files', 'remove', 'seed', 'perHost'] as const;
const API_REQUIRED = ['name', 'base', 'filesystem', 'rebuild', 'params', 'files', 'remove'];

function readSpec(r: Reader, root: unknown, resolveFrom: FromReader | undefined): TemplateSpec | undefined {
  if (root === null || root === undefined) {
    return r.fail([], r.dialect === 'file' ? 'the spec is empty: expected a mapping with at least name and base' : 'expected a template spec object');
  }
  const m = r.mapping(root, [], TOP_FIELDS.map((k) => r.key(k)), r.dialect === 'api' ? API_REQUIRED : ['name', 'base']);
  if (!m) return undefined;
  const nameText = r.absent(m.name) ? undefined : r.string(m.name, ['name'], 80);
  const name = nameText === undefined ? undefined : r.rule(['name'], () => validateImageName(nameText));
  const base = r.absent(m.base) ? undefined : baseName(r, m.base);
  const description = r.absent(m.description) ? undefined : r.string(m.description, ['description'], TEMPLATE_LIMITS.descriptionChars);
  const where = r.absent(m.partition) ? undefined : m.partition === 'whole-disk' ? ('whole-disk' as const) : partition(r, m.partition, ['partition']);
  const filesystem = r.oneOf(m.filesystem, ['filesystem'], ['ext', 'vfat'], 'ext');
  const rebuild = r.oneOf(m.rebuild, ['rebuild'], ['auto', 'manual'], 'auto');
  const values = params(r, m.params, ['params']);
  const scope: Scope = { params: new Set(Object.keys(values)), perHost: perHostNames(m[r.key('perHost')]), isPerHost: false };
  const rawFiles = r.list(m.files, ['files'], TEMPLATE_LIMITS.files);
  const files = rawFiles.map((f, i) =>
    r.dialect === 'file' ? specFileEntry(r, f, ['files', i], scope, resolveFrom) : apiFileEntry(r, f, ['files', i], scope),
  );
  const remove = r.list(m.remove, ['remove'], TEMPLATE_LIMITS.remove).map((p, i) => imagePath(r, p, ['remove', i]));
  checkPaths(r, rawFiles, remove);
  const seedSpec = r.absent(m.seed) ? undefined : seed(r, m.seed, scope, where);
  const perHostSpec = r.absent(m[r.key('perHost')]) ? undefined : perHost(r, m[r.key('perHost')], values);
  if (r.issues.length > 0 || name === undefined || base === undefined) return undefined;
  return {
    name,
    base,
    ...(description !== undefined && { description }),
    ...(where !== undefined && { partition: where }),
    filesystem,
    rebuild,
    params: values,
    files: files.filter((f) => f !== undefined),
    remove: remove.filter((p) => p !== undefined),
    ...(seedSpec && { seed: seedSpec }),
    ...(perHostSpec && { perHost: perHostSpec }),
  };
}

function baseName(r: Reader, v: unknown): string | undefined {
  const s = r.string(v, ['base'], 80);
  if (s === undefined) return undefined;
  return r.rule(['base'], () => (parseSourceSpec(s), s));
}

// ---------------------------------------------------------------------------------------
// Public surface.

/** A spec file parsed (at the edge) but not yet checked: its JSON value and where each part of it is written. */
export interface RawTemplateDoc {
  readonly fileName: string;
  readonly value: unknown;
  readonly source: TemplateSourceMap;
}

export interface NormalizeOptions {
  /** Reads a `from:` file as written in the spec (the CLI resolves it against the spec's directory). Without it, `from:` is an error. */
  readonly resolveFrom?: (path: string) => Buffer;
}

/** Checks a parsed spec file and turns it into a `TemplateSpec`. Every problem, each with its field and line, in one InputError. */
export function normalizeTemplateSpec(raw: RawTemplateDoc, options: NormalizeOptions = {}): TemplateSpec {
  const r = new Reader(raw.source, 'file');
  const spec = readSpec(r, raw.value, options.resolveFrom);
  if (!spec) throwTemplateSpecIssues(r.issues, raw.fileName);
  return spec;
}

/** Checks the JSON the API received (the normalized form, `TemplateSpecBody`) by the same rules; errors name JSON paths. */
export function validateTemplateSpec(body: unknown): TemplateSpec {
  const r = new Reader(NO_SOURCE, 'api');
  const spec = readSpec(r, body, undefined);
  if (!spec) throwTemplateSpecIssues(r.issues);
  return spec;
}
