import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Writes `size` bytes of random data (in 1 MiB blocks of fresh randomness). */
export async function writeRandomFile(path: string, size: number): Promise<void> {
  const fh = await open(path, 'wx');
  try {
    const block = 1 << 20;
    for (let off = 0; off < size; off += block) {
      const n = Math.min(block, size - off);
      await fh.write(randomBytes(n), 0, n, off);
    }
  } finally {
    await fh.close();
  }
}

/** A sparse file of `size` bytes with `chunks` of random data at the given offsets. */
export async function writeSparseFile(path: string, size: number, chunks: readonly { offset: number; length: number }[]): Promise<void> {
  const fh = await open(path, 'wx');
  try {
    await fh.truncate(size);
    for (const c of chunks) await fh.write(randomBytes(c.length), 0, c.length, c.offset);
  } finally {
    await fh.close();
  }
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

export async function allocatedBytes(path: string): Promise<number> {
  return (await stat(path)).blocks * 512;
}

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 60_000, everyMs = 50): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export async function makeTempDir(prefix = 'prestage-test-'): Promise<string> {
  return mkdtemp(join(process.env.PRESTAGE_TEST_TMP ?? tmpdir(), prefix));
}
