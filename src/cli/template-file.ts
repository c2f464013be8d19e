import { readFileSync, statSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { InputError, TEMPLATE_LIMITS, errnoCode, type TemplateSpec } from '../domain/index.js';
import { readTemplateSpecText } from './template-yaml.js';

/** A spec file is text an operator writes; anything this big is a wrong path. */
const MAX_SPEC_BYTES = 16 << 20;

/**
 * Reads a template spec file (YAML or JSON) and returns the normalized spec, ready to POST.
 * `from:` files are read relative to the spec's directory. Every problem of the file,
 * including unreadable `from:` files, comes back in one InputError naming file and line.
 * `options.name` is how messages name the file (default: `path`), e.g. the path as typed
 * when `path` was made absolute.
 */
export async function loadTemplateFile(path: string, options: { readonly name?: string } = {}): Promise<TemplateSpec> {
  const name = options.name ?? path;
  const text = await readSpecText(path, name);
  const dir = dirname(resolve(path));
  return readTemplateSpecText(text, name, { resolveFrom: (from) => readFromFile(resolve(dir, from)) });
}

async function readSpecText(path: string, name: string): Promise<string> {
  let bytes: Buffer;
  try {
    const st = await stat(path);
    if (!st.isFile()) throw new InputError(`template spec '${name}' is not a regular file`, { file: name });
    if (st.size > MAX_SPEC_BYTES) throw new InputError(`template spec '${name}' is ${st.size} bytes: not a spec file?`, { file: name });
    bytes = await readFile(path);
  } catch (e) {
    if (e instanceof InputError) throw e;
    throw new InputError(`cannot read template spec '${name}': ${reason(e)}`, { file: name }, { cause: e });
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch (e) {
    throw new InputError(`template spec '${name}' is not UTF-8 text`, { file: name }, { cause: e });
  }
}

/**
 * Reads one `from:` file. Synchronous because the pure normalizer calls it mid-check; a CLI
 * reading a few small files is not held up by that. Its errors become the spec line's message.
 */
function readFromFile(abs: string): Buffer {
  let size: number;
  try {
    const st = statSync(abs);
    if (!st.isFile()) throw new Error(`${abs} is not a regular file`);
    size = st.size;
  } catch (e) {
    throw new Error(reason(e, abs), { cause: e });
  }
  if (size > TEMPLATE_LIMITS.fileBytes) throw new Error(`${abs} is ${size} bytes, at most ${TEMPLATE_LIMITS.fileBytes}`);
  return readFileSync(abs);
}

const ERRNO_REASONS: Readonly<Record<string, string>> = { ENOENT: 'no such file', EACCES: 'permission denied', EISDIR: 'is a directory' };

/** What went wrong reading a file, in words, with the absolute path when the spec named it relatively. */
function reason(e: unknown, path?: string): string {
  const known = ERRNO_REASONS[errnoCode(e) ?? ''];
  if (known === undefined) return e instanceof Error ? e.message : String(e);
  return path === undefined ? known : `${known}: ${path}`;
}
