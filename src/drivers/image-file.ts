/**
 * An image file as it arrives, before a driver stores it: its format told from its first bytes
 * (raw or qcow2, checked before any tool opens it) and a qcow2 turned into a sparse raw file by
 * qemu-img. Shared by every driver: what an acceptable image is does not depend on where it goes.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import { BadImageError, NoSpaceError, UnavailableError, errnoCode } from '../domain/index.js';
import { QCOW2_HEADER_BYTES, QCOW2_MAGIC, checkQcow2Header } from './file/qcow2-header.js';

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs qemu-img without blocking; a non-zero exit is a result, a missing binary is an error. */
function qemuImg(args: readonly string[]): Promise<Run> {
  return new Promise((resolvePromise, reject) => {
    execFile('qemu-img', args, { maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') {
        const cause: Error = err;
        reject(errnoCode(err) === 'ENOENT' ? new UnavailableError('qemu-img is not installed (apt-get install qemu-utils)', {}, { cause }) : cause);
      } else {
        resolvePromise({ code: err ? Number(err.code) : 0, stdout, stderr });
      }
    });
  });
}

/** qemu-img's own explanation: its error lines, or its summary when it has none. */
function qemuMessage(run: Run): string {
  const lines = `${run.stderr}\n${run.stdout}`.split('\n').map((l) => l.trim()).filter(Boolean);
  const first = lines.find((l) => /error|could not|failed/i.test(l)) ?? lines[0] ?? `exit code ${run.code}`;
  const summary = lines.find((l) => /errors were found/i.test(l));
  return summary && summary !== first ? `${first} (${summary})` : first;
}

/** Checks an image file can be imported at all; returns its format. */
export async function inspectImageFile(path: string): Promise<'raw' | 'qcow2'> {
  const bad = (why: string, e?: unknown): BadImageError => new BadImageError(`${path}: ${why}`, { path }, { cause: e });
  let size: number;
  const head = Buffer.alloc(QCOW2_HEADER_BYTES);
  let got = 0;
  try {
    const st = await fs.stat(path);
    if (!st.isFile()) throw bad('not a regular file');
    if (st.size === 0) throw bad('the file is empty');
    size = st.size;
    const fh = await fs.open(path, 'r');
    try {
      ({ bytesRead: got } = await fh.read(head, 0, head.length, 0));
    } finally {
      await fh.close();
    }
  } catch (e) {
    if (e instanceof BadImageError) throw e;
    const code = errnoCode(e);
    throw bad(code === 'ENOENT' ? 'no such file' : `cannot read it (${code ?? String(e)})`, e);
  }
  if (got >= 4 && head.subarray(0, 4).equals(QCOW2_MAGIC)) {
    // Before qemu-img opens it: a backing file or an external data file would have it open
    // something else (a local file, a URL, a port) on the uploader's behalf.
    const verdict = checkQcow2Header(head.subarray(0, got));
    if (!verdict.ok) throw bad(verdict.reason);
    return 'qcow2';
  }
  if (size % 512 !== 0) throw bad(`${size} bytes is not a multiple of 512: the file looks truncated`);
  return 'raw';
}

/** Checks a qcow2 and converts it to a sparse raw file at `out` (which the caller removes). */
export async function qcow2ToRaw(path: string, out: string): Promise<void> {
  const bad = (why: string): BadImageError => new BadImageError(`${path}: ${why}`, { path });
  // Exit 0: clean; 3: only leaked clusters, which waste space but lose no data.
  const check = await qemuImg(['check', '-f', 'qcow2', path]);
  if (check.code !== 0 && check.code !== 3) throw bad(`qemu-img check: ${qemuMessage(check)}`);

  // A backing or external data file would pull in bytes from outside the file we were given.
  const info = await qemuImg(['info', '--output=json', '-f', 'qcow2', path]);
  if (info.code !== 0) throw bad(`qemu-img info: ${qemuMessage(info)}`);
  const parsed = JSON.parse(info.stdout) as { 'backing-filename'?: string; 'format-specific'?: { data?: { 'data-file'?: string } } };
  if (parsed['backing-filename'] !== undefined) throw bad(`it has a backing file (${parsed['backing-filename']}); import a flattened image`);
  if (parsed['format-specific']?.data?.['data-file'] !== undefined) throw bad('it uses an external data file; import a flattened image');

  const conv = await qemuImg(['convert', '-f', 'qcow2', '-O', 'raw', path, out]);
  if (conv.code === 0) return;
  const message = qemuMessage(conv);
  if (/no space left|disk quota/i.test(conv.stderr)) throw new NoSpaceError(`converting ${path}: ${message}`, { path });
  throw bad(`qemu-img convert: ${message}`);
}
