// Secrets at rest: the data directory is the service user's alone (0700), the database with
// every host's key is 0600 (its WAL too), sealed images are 0400 and copies 0600.
import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { makeTempDir, writeRandomFile } from '../helpers/files.js';

const mode = (p: string) => statSync(p).mode & 0o777;

describe('file modes of the data directory', () => {
  let t: TestApp;
  before(async () => {
    const src = await makeTempDir();
    await writeRandomFile(join(src, 'g.raw'), 1 << 20);
    t = await startTestApp({ dataDir: join(await makeTempDir(), 'fresh') }, { sqlite: true }); // the modes of state.db too
    assert.equal((await t.call('POST', '/v1/images', { name: 'g', path: join(src, 'g.raw') })).status, 201);
    assert.equal((await t.call('PUT', '/v1/pools/g', { min: 1, max: 1 })).status, 200);
    assert.equal((await t.call('POST', '/v1/hosts', { id: 'h1' })).status, 201);
    assert.equal((await t.call('GET', '/v1/hosts/h1/key')).status, 200);
    await t.app.replenisher.whenIdle();
  });
  after(() => t?.close());

  it('keeps keys, database and disks from other users', async () => {
    assert.equal(mode(t.dataDir), 0o700);
    for (const sub of ['images', 'copies', 'tmp']) assert.equal(mode(join(t.dataDir, sub)), 0o700, sub);
    assert.equal(mode(join(t.dataDir, 'state.db')), 0o600);
    for (const f of ['state.db-wal', 'state.db-shm']) if (existsSync(join(t.dataDir, f))) assert.equal(mode(join(t.dataDir, f)), 0o600, f);
    const images = (await t.call<{ volume: string }[]>('GET', '/v1/images')).body;
    assert.equal(mode(images[0]!.volume), 0o400);
    const copies = (await t.call<{ volume: string; state: string }[]>('GET', '/v1/copies')).body;
    assert.ok(copies.length > 0);
    for (const c of copies) assert.equal(mode(c.volume), 0o600, c.volume);
  });
});
