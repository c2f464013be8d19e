import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { makeTempDir, writeRandomFile } from '../helpers/files.js';
import { snapshot, volumeFiles } from '../helpers/snapshot.js';

type Err = { error: { code: string; message: string } };

/** Each bad request gets its status and code, a message, and changes nothing a user can see. */
async function refused(t: TestApp, method: 'POST' | 'PUT' | 'PATCH' | 'DELETE' | 'GET', url: string, body: unknown, status: number, code: string, message?: RegExp): Promise<void> {
  const before = await snapshot(t);
  const r = await t.call<Err>(method, url, body);
  assert.equal(r.status, status, `${method} ${url} ${JSON.stringify(body)} → ${JSON.stringify(r.body)}`);
  assert.equal(r.body.error.code, code);
  assert.ok(r.body.error.message.length > 10, 'a message a person can act on');
  if (message) assert.match(r.body.error.message, message);
  assert.deepEqual(await snapshot(t), before, `${method} ${url} changed something`);
}

describe('bad input gets a clear error and changes nothing', () => {
  let t: TestApp;
  let dir: string;
  before(async () => {
    t = await startTestApp();
    dir = await makeTempDir();
    await writeRandomFile(join(dir, 'good.raw'), 1 << 20);
    assert.equal((await t.call('POST', '/v1/images', { name: 'good', path: join(dir, 'good.raw') })).status, 201);
    assert.equal((await t.call('PUT', '/v1/pools/good', { min: 1, max: 2 })).status, 200);
    assert.equal((await t.call('POST', '/v1/hosts', { id: 'h1', mac: '52:54:00:00:00:01' })).status, 201);
    await t.app.replenisher.whenIdle();
  });
  after(() => t.close());

  it('bad arguments', async () => {
    await refused(t, 'POST', '/v1/images', { name: 'x' }, 400, 'PRESTAGE_INPUT');
    await refused(t, 'POST', '/v1/images', { name: 'Bad Name', path: join(dir, 'good.raw') }, 400, 'PRESTAGE_INPUT', /invalid image name/);
    await refused(t, 'POST', '/v1/images', { name: 'x', path: join(dir, 'good.raw'), extra: 1 }, 400, 'PRESTAGE_INPUT');
    await refused(t, 'PUT', '/v1/pools/good', { min: 5, max: 2 }, 400, 'PRESTAGE_INPUT', /min/);
    await refused(t, 'PUT', '/v1/pools/good', { min: -1 }, 400, 'PRESTAGE_INPUT');
    await refused(t, 'PUT', '/v1/pools/good', { min: 1.5 }, 400, 'PRESTAGE_INPUT');
    await refused(t, 'PUT', '/v1/pools/good', { min: 1, max: 1e9 }, 400, 'PRESTAGE_INPUT');
    await refused(t, 'PUT', '/v1/pools/good@0', { min: 1 }, 400, 'PRESTAGE_INPUT', /version/);
    // The cost policy: a miss cost it needs, within its range, and with no other policy's settings.
    await refused(t, 'PUT', '/v1/pools/good', { policy: 'cost' }, 400, 'PRESTAGE_INPUT', /the cost policy needs a miss cost: how many hours of holding one spare a cold wait costs/);
    await refused(t, 'PUT', '/v1/pools/good', { missCost: 0 }, 400, 'PRESTAGE_INPUT', /missCost must be > 0/);
    await refused(t, 'PUT', '/v1/pools/good', { missCost: -2 }, 400, 'PRESTAGE_INPUT', /missCost/);
    await refused(t, 'PUT', '/v1/pools/good', { missCost: 9000 }, 400, 'PRESTAGE_INPUT', /missCost must be <= 8760/);
    await refused(t, 'PUT', '/v1/pools/good', { missCost: 'soon' }, 400, 'PRESTAGE_INPUT', /missCost must be number/);
    await refused(t, 'PUT', '/v1/pools/good', { policy: 'costly', missCost: 2 }, 400, 'PRESTAGE_INPUT', /policy/);
    await refused(t, 'PUT', '/v1/pools/good', { missCost: 2, fillRate: 0.99 }, 400, 'PRESTAGE_INPUT', /a fill rate \(predictive policy\) or a miss cost \(cost policy\), not both/);
    await refused(t, 'PUT', '/v1/pools/good', { policy: 'static', missCost: 2 }, 400, 'PRESTAGE_INPUT', /a miss cost goes with the cost policy only/);
    await refused(t, 'PUT', '/v1/pools/good', { policy: 'predictive', missCost: 2 }, 400, 'PRESTAGE_INPUT', /a miss cost goes with the cost policy only/);
    await refused(t, 'PUT', '/v1/pools/good', { policy: 'cost', fillRate: 0.99 }, 400, 'PRESTAGE_INPUT', /a fill rate goes with the predictive policy only/);
    await refused(t, 'PUT', '/v1/pools/good', { missCost: 2, min: 5, max: 2 }, 400, 'PRESTAGE_INPUT', /min \(5\) must not exceed max \(2\)/);
    await refused(t, 'POST', '/v1/hosts', { id: 'bad id!' }, 400, 'PRESTAGE_INPUT', /invalid host id/);
    await refused(t, 'POST', '/v1/hosts', { id: 'h2', mac: 'zz:54:00:00:00:01' }, 400, 'PRESTAGE_INPUT', /MAC/);
    await refused(t, 'POST', '/v1/hosts/h1/provision', {}, 400, 'PRESTAGE_INPUT');
    await refused(t, 'POST', '/v1/hosts/h1/provision', { source: 'good@x' }, 400, 'PRESTAGE_INPUT');
  });

  it('wrong types are refused, never coerced into a change', async () => {
    const wrong: [Parameters<typeof refused>[1], string, unknown][] = [
      ['POST', '/v1/images', { name: 123, path: join(dir, 'good.raw') }],
      ['POST', '/v1/images', { name: true, path: join(dir, 'good.raw') }],
      ['POST', '/v1/hosts', { id: ['h'] }],
      ['POST', '/v1/hosts/h1/provision', { source: ['good'] }],
      ['PUT', '/v1/pools/good', { min: null }],
      ['PUT', '/v1/pools/good', { min: true }],
      ['PUT', '/v1/pools/good', { fillRate: '0.9' }],
      ['PUT', '/v1/pools/good', { prewarm: '1@09:00' }],
      ['POST', '/v1/templates', null],
      ['POST', '/v1/templates', [1]],
      ['POST', '/v1/hosts/h1/key', []],
      ['POST', '/v1/hosts/h1/key', 42],
      ['POST', '/v1/hosts/h1/key', { rotate: true }],
    ];
    for (const [method, url, body] of wrong) await refused(t, method, url, body, 400, 'PRESTAGE_INPUT');
    await refused(t, 'PATCH', '/v1/hosts/h1/vars', { x: 1 }, 400, 'PRESTAGE_INPUT');
    // The JSON text `null` itself (t.call would send no body at all).
    const before = await snapshot(t);
    const nul = await t.app.http.inject({ method: 'POST', url: '/v1/templates', payload: 'null', headers: { 'content-type': 'application/json', authorization: `Bearer ${t.token}` } });
    assert.deepEqual([nul.statusCode, nul.json<Err>().error.code], [400, 'PRESTAGE_INPUT']);
    assert.deepEqual(await snapshot(t), before);
  });

  it('a pre-warm event larger than the pool can hold, and a bad path encoding, get the catalogue 400', async () => {
    await refused(t, 'PUT', '/v1/pools/good', { prewarm: ['999999999@09:00'] }, 400, 'PRESTAGE_INPUT', /more than the pool's max of 2/);
    const bad = await t.call<Err>('GET', '/v1/pools/%zz');
    assert.deepEqual([bad.status, bad.body.error.code], [400, 'PRESTAGE_INPUT']);
  });

  it('unknown names', async () => {
    await refused(t, 'POST', '/v1/hosts/h1/provision', { source: 'nope' }, 404, 'PRESTAGE_NOT_FOUND', /nope/);
    await refused(t, 'POST', '/v1/hosts/h1/provision', { source: 'good@7' }, 404, 'PRESTAGE_NOT_FOUND', /good@7/);
    await refused(t, 'POST', '/v1/hosts/ghost/provision', { source: 'good' }, 404, 'PRESTAGE_NOT_FOUND', /ghost/);
    await refused(t, 'POST', '/v1/hosts/ghost/release', undefined, 404, 'PRESTAGE_NOT_FOUND');
    await refused(t, 'POST', '/v1/hosts/h1/release', undefined, 404, 'PRESTAGE_NOT_FOUND', /mapping/);
    await refused(t, 'PUT', '/v1/pools/nope', { min: 1 }, 404, 'PRESTAGE_NOT_FOUND');
    await refused(t, 'GET', '/v1/images/nope@3', undefined, 404, 'PRESTAGE_NOT_FOUND');
    await refused(t, 'DELETE', '/v1/hosts/ghost', undefined, 404, 'PRESTAGE_NOT_FOUND');
    await refused(t, 'GET', '/v1/no-such-route', undefined, 404, 'PRESTAGE_NOT_FOUND');
  });

  it('unreadable or truncated image files leave nothing half-made', async () => {
    // A missing file gets the answer a path outside the import directories gets: nothing is revealed.
    await refused(t, 'POST', '/v1/images', { name: 'm', path: join(dir, 'missing.raw') }, 403, 'PRESTAGE_FORBIDDEN', /import directories/);
    await refused(t, 'POST', '/v1/images', { name: 'm', path: dir }, 422, 'PRESTAGE_BAD_IMAGE');
    await writeFile(join(dir, 'empty.raw'), '');
    await refused(t, 'POST', '/v1/images', { name: 'm', path: join(dir, 'empty.raw') }, 422, 'PRESTAGE_BAD_IMAGE');
    await writeRandomFile(join(dir, 'cut.raw'), (1 << 20) + 100);
    await refused(t, 'POST', '/v1/images', { name: 'm', path: join(dir, 'cut.raw') }, 422, 'PRESTAGE_BAD_IMAGE', /truncated/);
    const q = join(dir, 'cut.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', q, '64M']);
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xab 0 8M', q], { stdio: 'ignore' });
    await truncate(q, 300_000);
    await refused(t, 'POST', '/v1/images', { name: 'm', path: q }, 422, 'PRESTAGE_BAD_IMAGE');
    assert.deepEqual((await volumeFiles(t.dataDir)).filter((f) => f.startsWith('tmp/')), []);
  });

  it('name clashes', async () => {
    await refused(t, 'POST', '/v1/images', { name: 'good', path: join(dir, 'good.raw') }, 409, 'PRESTAGE_CONFLICT', /same content/);
    await refused(t, 'POST', '/v1/hosts', { id: 'h1' }, 409, 'PRESTAGE_CONFLICT', /exists/);
    await refused(t, 'POST', '/v1/hosts', { id: 'h3', mac: '52:54:00:00:00:01' }, 409, 'PRESTAGE_CONFLICT', /MAC/);
  });
});

describe('disk full', () => {
  let t: TestApp;
  let mnt: string;
  let dir: string;
  before(async () => {
    mnt = await makeTempDir('prestage-full-');
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=40m', 'tmpfs', mnt]);
    await mkdir(join(mnt, 'data'));
    t = await startTestApp({ dataDir: join(mnt, 'data') });
    dir = await makeTempDir();
  });
  after(async () => {
    await t.close();
    execFileSync('umount', [mnt]);
  });

  it('an import larger than the free space is refused and leaves nothing behind', async () => {
    await writeRandomFile(join(dir, 'big.raw'), 64 << 20);
    await refused(t, 'POST', '/v1/images', { name: 'big', path: join(dir, 'big.raw') }, 507, 'PRESTAGE_NO_SPACE');
  });

  it('copies that do not fit are not started: no partial file, the pool says why, a cold provision too', async () => {
    await writeRandomFile(join(dir, 'mid.raw'), 16 << 20);
    assert.equal((await t.call('POST', '/v1/images', { name: 'mid', path: join(dir, 'mid.raw') })).status, 201);
    await t.call('PUT', '/v1/pools/mid', { min: 3, max: 3 });
    await new Promise((r) => setTimeout(r, 1500));
    await t.app.replenisher.whenIdle();
    const files = await volumeFiles(t.dataDir);
    assert.ok(files.filter((f) => f.startsWith('copies/')).length <= 1, files.join(','));
    assert.ok(!files.some((f) => f.endsWith('.partial')), 'no partial copy left');
    // The free space was counted before each copy: none started that could not finish.
    assert.deepEqual((await t.call<unknown[]>('GET', '/v1/copies?state=failed')).body, []);
    const pool = await t.call<{ shortage: { kind: string } | null; plan: { reason: string } }>('GET', '/v1/pools/mid');
    assert.equal(pool.body.shortage?.kind, 'space');
    assert.match(pool.body.plan.reason, /short of space/);
    // Take the one spare, then ask for another: the cold copy cannot be made and the reply says so.
    await t.call('POST', '/v1/hosts', { id: 'f1' });
    await t.call('POST', '/v1/hosts', { id: 'f2' });
    assert.equal((await t.call('POST', '/v1/hosts/f1/provision', { source: 'mid' })).status, 200);
    const cold = await t.call<Err>('POST', '/v1/hosts/f2/provision', { source: 'mid' });
    assert.equal(cold.status, 507, JSON.stringify(cold.body));
    assert.equal(cold.body.error.code, 'PRESTAGE_NO_SPACE');
    assert.equal((await t.call('GET', '/v1/hosts/f2')).body && (await t.call<{ mapping: unknown }>('GET', '/v1/hosts/f2')).body.mapping, null);
  });
});
