import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { makeTempDir, sha256File, waitFor, writeRandomFile } from '../helpers/files.js';
import { freePort } from '../helpers/server.js';

interface Provision { copyId: string; access: { kind: string; uri: string; exportName: string } }

for (const [tool, pkg] of [['nbdinfo', 'libnbd-bin'], ['nbdcopy', 'libnbd-bin'], ['/usr/bin/nbdsh', 'python3-libnbd'], ['qemu-img', 'qemu-utils'], ['qemu-io', 'qemu-utils']]) {
  assert.equal(spawnSync('bash', ['-c', `command -v ${tool}`]).status, 0, `${tool} is required: apt-get install ${pkg}`);
}

/**
 * Runs an NBD client; returns its exit status and output instead of throwing. Asynchronous:
 * the server runs in this process and must keep answering while the client works.
 */
function nbd(tool: string, ...args: string[]): Promise<{ ok: boolean; out: string }> {
  return new Promise((resolve) => {
    execFile(tool, args, { encoding: 'utf8', timeout: 60_000 }, (err, stdout, stderr) => resolve({ ok: err === null, out: `${stdout}${stderr}` }));
  });
}

describe('hosts reach their copies over the built-in NBD server, and only theirs', () => {
  let t: TestApp;
  let dir: string;
  let port: number;
  let golden: { sha256: string; volume: string; id: string };
  const keyFile = (host: string) => join(dir, `${host}.psk`);
  const withKey = (uri: string, host: string) => `${uri}?tls-psk-file=${keyFile(host)}`;

  before(async () => {
    dir = await makeTempDir('prestage-nbd-');
    port = await freePort();
    t = await startTestApp({ dataDir: join(dir, 'data'), exporter: 'nbd', nbdListen: `127.0.0.1:${port}` });
    await writeRandomFile(join(dir, 'golden.raw'), 4 << 20);
    golden = (await t.call<{ sha256: string; volume: string; id: string }>('POST', '/v1/images', { name: 'golden', path: join(dir, 'golden.raw') })).body;
    await t.call('PUT', '/v1/pools/golden', { min: 2, max: 2 });
    for (const h of ['h1', 'h2']) {
      assert.equal((await t.call('POST', '/v1/hosts', { id: h })).status, 201);
      const k = await t.call<{ pskFileLine: string }>('GET', `/v1/hosts/${h}/key`);
      await writeFile(keyFile(h), `${k.body.pskFileLine}\n`, { mode: 0o600 });
    }
    await waitFor('2 spares', async () => (await t.call<{ ready: number }>('GET', '/v1/pools/golden')).body.ready === 2);
  });
  after(async () => {
    await t.close();
  });

  it('a provisioned host lists and reads its own export with its key, and only that', async () => {
    const p = (await t.call<Provision>('POST', '/v1/hosts/h1/provision', { source: 'golden' })).body;
    assert.equal(p.access.kind, 'nbd');
    assert.equal(p.access.uri, `nbds://h1@127.0.0.1:${port}/${p.copyId}`);
    const info = await nbd('nbdinfo', '--json', withKey(p.access.uri, 'h1'));
    assert.ok(info.ok, info.out);
    assert.equal((JSON.parse(info.out) as { exports: { 'export-size': number }[] }).exports[0]!['export-size'], 4 << 20);
    const list = await nbd('nbdinfo', '--list', '--json', withKey(`nbds://h1@127.0.0.1:${port}/`, 'h1'));
    assert.ok(list.ok, list.out);
    assert.deepEqual((JSON.parse(list.out) as { exports: { 'export-name': string }[] }).exports.map((e) => e['export-name']), [p.copyId]);
    const h2list = await nbd('nbdinfo', '--list', '--json', withKey(`nbds://h2@127.0.0.1:${port}/`, 'h2'));
    assert.ok(h2list.ok, h2list.out);
    assert.deepEqual((JSON.parse(h2list.out) as { exports: unknown[] }).exports, [], 'a host with no mapping sees nothing');
  });

  it('refuses a wrong key, another host, a spare, the golden image and plaintext', async () => {
    const m = (await t.call<Provision>('POST', '/v1/hosts/h1/provision', { source: 'golden' })).body;
    await writeFile(join(dir, 'wrong.psk'), `h1:${'00'.repeat(32)}\n`);
    const wrong = await nbd('nbdinfo', `${m.access.uri}?tls-psk-file=${join(dir, 'wrong.psk')}`);
    assert.ok(!wrong.ok, 'a wrong key is refused');
    const other = await nbd('nbdcopy', withKey(`nbds://h2@127.0.0.1:${port}/${m.copyId}`, 'h2'), 'null:');
    assert.ok(!other.ok, "another host's export is refused");
    const spare = (await t.call<{ id: string }[]>('GET', '/v1/copies?state=ready')).body[0];
    assert.ok(spare, 'a spare is there to try');
    assert.ok(!(await nbd('nbdinfo', withKey(`nbds://h1@127.0.0.1:${port}/${spare.id}`, 'h1'))).ok, 'a spare is exported to nobody');
    for (const name of [golden.id, golden.sha256, 'golden', '']) {
      assert.ok(!(await nbd('nbdinfo', withKey(`nbds://h1@127.0.0.1:${port}/${name}`, 'h1'))).ok, `the golden is never exported (${name})`);
    }
    assert.ok(!(await nbd('nbdinfo', `nbd://127.0.0.1:${port}/${m.copyId}`)).ok, 'plaintext is refused');
  });

  it("a host's writes reach only its copy; the golden's sha256 is unchanged after it wrote the whole copy", async () => {
    const m = (await t.call<Provision>('POST', '/v1/hosts/h1/provision', { source: 'golden' })).body;
    const data = join(dir, 'written.raw');
    await writeRandomFile(data, 4 << 20);
    const copy = await nbd('nbdcopy', data, withKey(m.access.uri, 'h1'));
    assert.ok(copy.ok, copy.out);
    const volume = (await t.call<{ id: string; volume: string }[]>('GET', '/v1/copies?state=mapped')).body.find((c) => c.id === m.copyId)!.volume;
    assert.equal(await sha256File(volume), await sha256File(data));
    assert.equal(await sha256File(golden.volume), golden.sha256);
  });

  it('qemu-img, qemu-io, nbdsh and nbdinfo --map/--can work against it with TLS-PSK', async () => {
    const m = (await t.call<Provision>('POST', '/v1/hosts/h1/provision', { source: 'golden' })).body;
    const tlsDir = join(dir, 'qemu-tls');
    await mkdir(tlsDir, { recursive: true });
    await copyFile(keyFile('h1'), join(tlsDir, 'keys.psk'));
    const obj = `tls-creds-psk,id=t0,endpoint=client,dir=${tlsDir},username=h1`;
    const opts = `driver=nbd,host=127.0.0.1,port=${port},export=${m.copyId},tls-creds=t0`;
    const info = await nbd('qemu-img', 'info', '--object', obj, '--image-opts', opts);
    assert.ok(info.ok && /virtual size: 4 MiB/.test(info.out), info.out);
    const write = await nbd('qemu-io', '--object', obj, '--image-opts', opts, '-c', 'write -P 0x5a 1M 64k', '-c', 'flush', '-c', 'read -P 0x5a 1M 64k', '-c', 'write -z 2M 64k', '-c', 'discard 3M 64k');
    assert.ok(write.ok && !/error|fail|mismatch/i.test(write.out), write.out);
    const volume = (await t.call<{ id: string; volume: string }[]>('GET', '/v1/copies?state=mapped')).body.find((c) => c.id === m.copyId)!.volume;
    const cmp = await nbd('qemu-img', 'compare', '--object', obj, '--image-opts', opts, `driver=raw,file.driver=file,file.filename=${volume}`);
    assert.ok(cmp.ok, `the export and the file on disk are identical: ${cmp.out}`);
    // nbdsh is Python: it needs Debian's python3, which has the nbd module, first on PATH.
    const script = `h.set_uri_allow_local_file(True); h.connect_uri(${JSON.stringify(withKey(m.access.uri, 'h1'))}); print(h.get_size(), h.can_flush(), h.can_multi_conn())`;
    const sh = await nbd('/usr/bin/env', `PATH=/usr/bin:${process.env.PATH ?? ''}`, 'nbdsh', '-c', script);
    assert.ok(sh.ok, sh.out);
    assert.equal(sh.out.trim(), `${4 << 20} True True`);
    const map = await nbd('nbdinfo', '--map=base:allocation', '--json', withKey(m.access.uri, 'h1'));
    assert.ok(map.ok, map.out);
    const extents = JSON.parse(map.out) as { offset: number; length: number; type: number }[];
    assert.equal(extents.reduce((n, e) => n + e.length, 0), 4 << 20, 'the map covers the export');
    for (const flag of ['flush', 'trim', 'zero', 'fua', 'multi-conn']) {
      assert.ok((await nbd('nbdinfo', `--can=${flag}`, withKey(m.access.uri, 'h1'))).ok, `can ${flag}`);
    }
  });

  it('release closes the export at once; a new mapping is exported again after a restart', async () => {
    const m = (await t.call<Provision>('POST', '/v1/hosts/h1/provision', { source: 'golden' })).body;
    assert.equal((await t.call('POST', '/v1/hosts/h1/release')).status, 200);
    assert.ok(!(await nbd('nbdinfo', withKey(m.access.uri, 'h1'))).ok, 'refused after release');

    const p2 = (await t.call<Provision>('POST', '/v1/hosts/h2/provision', { source: 'golden' })).body;
    await t.close({ keepData: true });
    t = await startTestApp({ dataDir: join(dir, 'data'), exporter: 'nbd', nbdListen: `127.0.0.1:${port}` });
    const again = await nbd('nbdinfo', '--json', withKey(p2.access.uri, 'h2'));
    assert.ok(again.ok, `the mapping is exported again after a restart: ${again.out}`);
    assert.ok((await nbd('nbdcopy', withKey(p2.access.uri, 'h2'), 'null:')).ok);
  });
});
