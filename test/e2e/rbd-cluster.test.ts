/**
 * Two instances on one PostgreSQL state and one Ceph pool, each with a data directory of its own
 * (nothing shared but the database and the cluster): either serves a copy mapped through the
 * other, and a host whose instance dies reconnects to the other and finds its writes.
 */
import assert from 'node:assert/strict';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe } from 'node:test';
import { startCeph, type CephCluster } from '../helpers/ceph.js';
import { makeTempDir, sha256File, waitFor, writeRandomFile } from '../helpers/files.js';
import { ok, run } from '../helpers/nbd-tools.js';
import { TEST_PG_URL, pgSchema, type PgSchema } from '../helpers/postgres.js';
import { startServe, type ServeProcess } from '../helpers/server.js';
import { guardedSteps } from '../helpers/steps.js';

interface Provision {
  copyId: string;
  outcome: string;
  access: { kind: string; uri: string; exportName: string };
}
interface InstanceRow {
  name: string;
  pid: number;
  nbd: string | null;
}

const MiB = 1024 * 1024;

describe('two instances on one Ceph pool: any instance serves any copy', { concurrency: false }, () => {
  let dir: string;
  let ceph: CephCluster | undefined;
  let schema: PgSchema | undefined;
  const serves = new Map<string, ServeProcess>();
  let a: ServeProcess;
  let b: ServeProcess;
  let nbdOf: Map<string, string>;

  const keyFile = async (via: ServeProcess, hostId: string): Promise<string> => {
    const key = await via.call<{ pskFileLine: string }>('GET', `/v1/hosts/${hostId}/key`);
    assert.equal(key.status, 200);
    const file = join(dir, `${hostId}.psk`);
    await writeFile(file, `${key.body.pskFileLine}\n`, { mode: 0o600 });
    return file;
  };
  /** The host's export, dialled at a given instance's NBD address. */
  const at = (instance: string, p: Provision, hostId: string, key: string) => `nbds://${hostId}@${nbdOf.get(instance)}/${p.access.exportName}?tls-psk-file=${key}`;

  const { setupFailed, step } = guardedSteps();
  before(async () => {
    dir = await makeTempDir('prestage-rbd-cluster-');
    try {
      ceph = await startCeph();
      schema = await pgSchema();
      for (const name of ['a', 'b']) {
        // The admin token lives in the shared state: the first instance wrote it to its own
        // directory; the second is handed a copy, as an operator would give the CLI on its machine.
        const a0 = serves.get('a');
        if (a0) {
          await mkdir(join(dir, `data-${name}`), { mode: 0o700 });
          await writeFile(join(dir, `data-${name}`, 'admin.token'), `${a0.token}\n`, { mode: 0o600 });
        }
        serves.set(name, await startServe(join(dir, `data-${name}`), ['--db', TEST_PG_URL, '--db-schema', schema.name, '--instance-name', name, '--driver', 'rbd', '--ceph-conf', ceph.confPath, '--ceph-pool', ceph.pool]));
      }
      a = serves.get('a')!;
      b = serves.get('b')!;
      const rows = (await a.call<InstanceRow[]>('GET', '/v1/instances')).body;
      nbdOf = new Map(rows.map((r) => [r.name, r.nbd ?? '']));
      assert.ok(nbdOf.get('a') && nbdOf.get('b') && nbdOf.get('a') !== nbdOf.get('b'), JSON.stringify(rows));
    } catch (e) {
      setupFailed(e);
    }
  });
  after(async () => {
    for (const s of serves.values()) await s.kill('SIGKILL');
    await ceph?.stop();
    await schema?.drop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  step('a copy mapped through A is served by B, and one mapped through B by A', async () => {
    const src = join(dir, 'golden.raw');
    await writeRandomFile(src, 8 * MiB);
    const img = await a.call<{ driver: string }>('POST', '/v1/images', { name: 'golden', path: src });
    assert.equal(img.status, 201, JSON.stringify(img.body));
    assert.equal(img.body.driver, 'rbd');
    assert.equal((await b.call('PUT', '/v1/pools/golden', { min: 2, max: 2 })).status, 200);
    await waitFor('two spares', async () => (await b.call<{ ready: number }>('GET', '/v1/pools/golden')).body.ready >= 2, 60_000, 100);
    for (const id of ['h1', 'h2']) assert.equal((await a.call('POST', '/v1/hosts', { id })).status, 201);
    const p1 = (await a.call<Provision>('POST', '/v1/hosts/h1/provision', { source: 'golden' })).body;
    const p2 = (await b.call<Provision>('POST', '/v1/hosts/h2/provision', { source: 'golden' })).body;
    const [k1, k2] = [await keyFile(a, 'h1'), await keyFile(b, 'h2')];
    const sha = await sha256File(src);
    for (const [instance, p, host, key] of [['b', p1, 'h1', k1], ['a', p2, 'h2', k2]] as const) {
      const out = join(dir, `${host}-via-${instance}.raw`);
      await waitFor(`${host}'s export on ${instance}`, async () => (await run('nbdinfo', ['--size', at(instance, p, host, key)])).code === 0, 10_000, 50);
      await ok('nbdcopy', [at(instance, p, host, key), out]);
      assert.equal(await sha256File(out), sha, `${host} reads its copy through ${instance}`);
    }
  });

  step('a host writes through A; A dies (SIGKILL); the host reconnects to B and finds its writes', async () => {
    const p1 = (await b.call<Provision>('POST', '/v1/hosts/h1/provision', { source: 'golden' })).body;
    const k1 = await keyFile(b, 'h1');
    const data = join(dir, 'written.raw');
    await writeRandomFile(data, 8 * MiB);
    await ok('nbdcopy', [data, at('a', p1, 'h1', k1)]);
    await a.kill('SIGKILL');
    const back = join(dir, 'read-back.raw');
    await ok('nbdcopy', [at('b', p1, 'h1', k1), back]);
    assert.equal(await sha256File(back), await sha256File(data), 'every write A acknowledged is on the clone');
  });

  step('release on the survivor removes the clone, although the dead instance had it open', async () => {
    const p1 = (await b.call<Provision>('POST', '/v1/hosts/h1/provision', { source: 'golden' })).body;
    const rel = await b.call('POST', '/v1/hosts/h1/release');
    assert.equal(rel.status, 200, JSON.stringify(rel.body));
    const left = (await ceph!.cli('rbd', 'ls', ceph!.pool)).split('\n');
    assert.ok(!left.includes(`copy-${p1.copyId}`), `copy-${p1.copyId} is gone: ${left.join(' ')}`);
    const k1 = await keyFile(b, 'h1');
    assert.notEqual((await run('nbdinfo', ['--size', at('b', p1, 'h1', k1)])).code, 0, 'and its export with it');
  });
});
