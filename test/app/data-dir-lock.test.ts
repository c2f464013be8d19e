// One prestage per data directory. A second server's start-up reconcile used to remove the first
// one's copies in flight (and did even when the second then failed to bind its port); now the
// second stops at an flock on DATA/prestage.lock before it reads or changes anything, and the
// kernel drops the lock when the holder dies, so a SIGKILL leaves nothing stale.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { LOCK_FILE, lockDataDir } from '../../src/app/data-dir-lock.js';
import { UnavailableError } from '../../src/domain/index.js';
import { makeTempDir, waitFor, writeRandomFile } from '../helpers/files.js';
import { BIN, freePort, startServe, type ServeProcess } from '../helpers/server.js';

interface CopyRow { id: string; state: string; volume: string; progress?: { doneBytes: number } }

/**
 * `prestage serve` on `data` with every port free, run until it exits (as it should, at once) or
 * says it is serving (the bug: then it is killed and reported with code null).
 */
async function serveExpectingFailure(data: string): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, [BIN, 'serve', '--data', data, '--listen', `127.0.0.1:${await freePort()}`, '--nbd-listen', `127.0.0.1:${await freePort()}`, '--reflink', 'never'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  const exited = once(child, 'exit') as Promise<[number | null]>;
  const serving = new Promise<void>((resolve) =>
    child.stderr.setEncoding('utf8').on('data', (s: string) => {
      stderr += s;
      if (stderr.includes('prestage serving on')) resolve();
    }),
  );
  if ((await Promise.race([exited.then(() => 'exited' as const), serving.then(() => 'serving' as const)])) === 'serving') {
    child.kill('SIGKILL');
    await exited;
    return { code: null, stderr };
  }
  return { code: (await exited)[0], stderr };
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Every file and directory under `dir`: its size, mtime, ctime and inode, so any write, replacement or removal shows. */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of await readdir(dir, { recursive: true })) {
    const st = await stat(join(dir, name));
    out[name] = `${st.ino} ${st.size} ${st.mtimeMs} ${st.ctimeMs}`;
  }
  return out;
}

describe('the data directory lock', () => {
  it('refuses a second lock, even from this process, names the holder, and is free again once released', async () => {
    const dir = await makeTempDir('prestage-lock-');
    try {
      const lock = await lockDataDir(dir);
      const noteText = await readFile(join(dir, LOCK_FILE), 'utf8');
      const note = JSON.parse(noteText) as { pid: number; since: string };
      assert.equal(note.pid, process.pid);
      assert.ok(!Number.isNaN(Date.parse(note.since)));
      // flock belongs to the open file description: a second open is refused like another process.
      await assert.rejects(lockDataDir(dir), (e: unknown) => {
        assert.ok(e instanceof UnavailableError);
        assert.match(e.message, new RegExp(`^data directory ${escape(dir)} is in use by another prestage \\(pid ${process.pid}, since ${escape(note.since)}; instances sharing a directory must share a PostgreSQL state \\(--db\\)\\); stop it first or use another --data$`));
        return true;
      });
      assert.equal(await readFile(join(dir, LOCK_FILE), 'utf8'), noteText, 'the refused one did not touch the note');
      await lock.release();
      await lock.release(); // twice is harmless
      const again = await lockDataDir(dir);
      await again.release();
      assert.equal((await stat(join(dir, LOCK_FILE))).mode & 0o777, 0o600);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a refused server creates and changes nothing: no state.db, no admin.token, no subdirectory', async () => {
    const dir = await makeTempDir('prestage-lock-');
    try {
      const lock = await lockDataDir(dir);
      const before = await snapshot(dir);
      const second = await serveExpectingFailure(dir);
      await lock.release();
      assert.equal(second.code, 7, second.stderr);
      assert.match(second.stderr, new RegExp(`data directory ${escape(dir)} is in use by another prestage \\(pid ${process.pid}, `));
      assert.deepEqual(await snapshot(dir), before);
      assert.deepEqual(await readdir(dir), [LOCK_FILE]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('two servers on one data directory', () => {
  let dir: string;
  let first: ServeProcess | undefined;
  after(async () => {
    await first?.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  it('the second fails at once, naming the first, and leaves its copies in flight alone', async () => {
    dir = await makeTempDir('prestage-lock-e2e-');
    const data = join(dir, 'data');
    const src = join(dir, 'big.raw');
    await writeRandomFile(src, 256 << 20);
    // Capped copies (256 MiB copied + 256 MiB verified at 128 MiB/s: about 4 s each) stay in flight
    // far longer than a refused server takes to start and stop, whatever this machine's disk does.
    first = await startServe(data, ['--reflink', 'never', '--copy-rate', '128MiB']);
    const server = first;
    assert.equal((await server.call('POST', '/v1/images', { name: 'big', path: src })).status, 201);
    await server.call('PUT', '/v1/pools/big', { min: 1, max: 1 });
    await waitFor('a spare', async () => (await server.call<{ ready: number }>('GET', '/v1/pools/big')).body.ready >= 1, 120_000);
    // What exists before the second starts and the first leaves alone: the image, the ready copy, the token.
    const settled = async () => {
      const s = await snapshot(data);
      return Object.fromEntries(Object.entries(s).filter(([name]) => name.startsWith('images/') || (name.startsWith('copies/') && name.endsWith('.raw')) || name === 'admin.token'));
    };
    const before = await settled();
    assert.ok(Object.keys(before).some((n) => n.startsWith('copies/')));

    // Keep copies in flight and start the second while one is partly written, until one of its
    // attempts begins and ends within a single copy's flight, as when the copies were lost.
    const target = 4;
    await server.call('PUT', '/v1/pools/big', { min: target, max: target });
    const overlapped: string[] = [];
    for (let attempt = 0; attempt < 3 && overlapped.length === 0; attempt++) {
      const making = await waitFor('a copy partly written', async () => {
        const r = await server.call<CopyRow[]>('GET', '/v1/copies?state=making');
        const ids = r.body.filter((c) => (c.progress?.doneBytes ?? 0) > 0).map((c) => c.id);
        return ids.length > 0 && ids;
      }, 60_000, 5);
      const second = await serveExpectingFailure(data);
      assert.equal(second.code, 7, second.stderr);
      assert.match(second.stderr, new RegExp(`prestage: data directory ${escape(data)} is in use by another prestage \\(pid ${server.child.pid}, since [0-9TZ:.-]+; instances sharing a directory must share a PostgreSQL state \\(--db\\)\\); stop it first or use another --data`));
      const still = (await server.call<CopyRow[]>('GET', '/v1/copies?state=making')).body.map((c) => c.id);
      overlapped.push(...making.filter((id) => still.includes(id)));
    }
    assert.ok(overlapped.length > 0, 'a second server was refused while a copy was in flight');

    await waitFor('the pool to fill', async () => {
      const p = (await server.call<{ ready: number; making: number }>('GET', '/v1/pools/big')).body;
      return p.ready >= target && p.making === 0;
    }, 300_000, 100);
    const copies = (await server.call<CopyRow[]>('GET', '/v1/copies')).body;
    for (const id of overlapped) assert.equal(copies.find((c) => c.id === id)?.state, 'ready', `copy ${id}, in flight during the second's attempt`);
    assert.deepEqual(copies.filter((c) => c.state !== 'ready').map((c) => `${c.id} ${c.state}`), [], 'every copy the first made is ready');
    const events = (await server.call<{ type: string }[]>('GET', '/v1/events?limit=10000')).body;
    assert.deepEqual(events.filter((e) => e.type.startsWith('reconcile.')), [], 'no reconcile ran on the live directory');
    assert.doesNotMatch(server.stderr(), /ENOENT|interrupted by a restart/);
    assert.deepEqual(await readdir(join(data, 'tmp')), []);
    const after = await settled();
    for (const [name, was] of Object.entries(before)) assert.equal(after[name], was, `${name} is untouched`);
    assert.equal((await server.call('GET', '/healthz')).status, 200, 'the first still serves');
  });

  it('after the holder is killed with SIGKILL, a new server starts on the same directory', async () => {
    assert.ok(first);
    await first.kill('SIGKILL');
    const data = join(dir, 'data');
    // Capped copies (256 MiB copied + 256 MiB verified at 128 MiB/s: about 4 s each) stay in flight
    // far longer than a refused server takes to start and stop, whatever this machine's disk does.
    first = await startServe(data, ['--reflink', 'never', '--copy-rate', '128MiB']);
    const note = JSON.parse(await readFile(join(data, LOCK_FILE), 'utf8')) as { pid: number };
    assert.equal(note.pid, first.child.pid, 'the new holder wrote its note');
    assert.equal((await first.call('GET', '/healthz')).status, 200);
  });
});
