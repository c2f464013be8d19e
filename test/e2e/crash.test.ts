import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { makeTempDir, sha256File, waitFor, writeRandomFile } from '../helpers/files.js';
import { startServe, type ServeProcess } from '../helpers/server.js';

interface CopyRow { id: string; state: string; volume: string; progress?: { doneBytes: number } }

describe('SIGKILL in the middle of a copy, then a restart', () => {
  let dir: string;
  let server: ServeProcess | undefined;
  after(async () => {
    await server?.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  it('leaves no partial copy ready and no orphan file; the mapping survives', async () => {
    dir = await makeTempDir('prestage-crash-');
    const data = join(dir, 'data');
    const src = join(dir, 'big.raw');
    await writeRandomFile(src, 512 << 20);
    server = await startServe(data, ['--reflink', 'never']);
    const img = await server.call<{ sha256: string }>('POST', '/v1/images', { name: 'big', path: src });
    assert.equal(img.status, 201);
    await server.call('PUT', '/v1/pools/big', { min: 1, max: 4 });
    await server.call('POST', '/v1/hosts', { id: 'keep' });
    await waitFor('a spare', async () => (await server!.call<{ ready: number }>('GET', '/v1/pools/big')).body.ready >= 1, 120_000);
    const mapped = await server.call<{ copyId: string }>('POST', '/v1/hosts/keep/provision', { source: 'big' });
    assert.equal(mapped.status, 200);

    // Ask for more spares and kill the server once a copy is partly written.
    await server.call('PUT', '/v1/pools/big', { min: 3, max: 4 });
    const making = await waitFor('a copy in progress', async () => {
      const r = await server!.call<CopyRow[]>('GET', '/v1/copies?state=making');
      return r.body.find((c) => (c.progress?.doneBytes ?? 0) > 0);
    }, 60_000, 5);
    await server.kill('SIGKILL');
    const partials = (await readdir(join(data, 'copies'))).filter((f) => f.endsWith('.partial'));
    assert.ok(partials.length >= 1, 'the kill left a partial copy behind, as a crash would');

    server = await startServe(data, ['--reflink', 'never']);
    const events = await server.call<{ type: string; subject: string }[]>('GET', '/v1/events?limit=10000');
    assert.ok(events.body.some((e) => e.type === 'reconcile.interrupted' && e.subject === making.id), 'the interrupted copy is logged');
    const killed = await server.call<CopyRow[]>('GET', '/v1/copies?state=failed');
    assert.ok(killed.body.some((c) => c.id === making.id), 'the interrupted copy is marked failed, never ready');

    // The pool makes its spares again; every file on disk belongs to a live, complete copy.
    await waitFor('the pool to refill', async () => {
      const p = (await server!.call<{ ready: number; making: number }>('GET', '/v1/pools/big')).body;
      return p.ready >= 3 && p.making === 0;
    }, 180_000);
    const live = (await server.call<CopyRow[]>('GET', '/v1/copies')).body.filter((c) => c.state === 'ready' || c.state === 'mapped');
    const files = (await readdir(join(data, 'copies'))).sort();
    assert.deepEqual(files, live.map((c) => `${c.id}.raw`).sort(), 'no orphan or partial file');
    assert.deepEqual(await readdir(join(data, 'tmp')), []);
    for (const c of live) assert.equal(await sha256File(c.volume), img.body.sha256, `copy ${c.id} is complete`);
    const host = await server.call<{ mapping: { copyId: string } | null }>('GET', '/v1/hosts/keep');
    assert.equal(host.body.mapping?.copyId, mapped.body.copyId, 'the mapping was not lost');
  });
});
