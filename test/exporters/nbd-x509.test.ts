/**
 * TLS with X.509 certificates, the option to TLS-PSK: a host proves its id with a client
 * certificate of the operator's CA whose CN is the host id. Checked with libnbd's nbdinfo and
 * nbdcopy and with qemu-img, against the NbdServer and against `prestage serve --nbd-tls x509`.
 */
import assert from 'node:assert/strict';
import { copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { InputError } from '../../src/domain/index.js';
import { NbdServer } from '../../src/exporters/nbd/index.js';
import { makeTempDir, sha256File, writeRandomFile } from '../helpers/files.js';
import { ok, run, type ToolRun as Run } from '../helpers/nbd-tools.js';
import { makePki, type Pki } from '../helpers/pki.js';
import { startServe, type ServeProcess } from '../helpers/server.js';
import { fileExport } from './nbd-helpers.js';

const MiB = 1 << 20;

async function refused(cmd: string, args: readonly string[], why: string): Promise<Run> {
  const r = await run(cmd, args);
  assert.notEqual(r.code, 0, `${why}: ${cmd} must fail\n${r.stdout}`);
  assert.doesNotMatch(r.stdout, /export-size|size:/, `${why}: nothing about the export is shown`);
  return r;
}

describe('NBD server with TLS X.509 client certificates', () => {
  let dir = '';
  let pki: Pki;
  let server: NbdServer;
  let port = 0;
  /** Trusts our CA (so the server is accepted) but shows a certificate of another CA, CN hostA. */
  let forgedDir = '';
  /** Trusts our CA but has no client certificate at all. */
  let anonymousDir = '';
  const uri = (exportName: string, certDir: string) => `nbds://127.0.0.1:${port}/${exportName}?tls-certificates=${certDir}`;

  before(async () => {
    dir = await makeTempDir('prestage-x509-');
    pki = await makePki(join(dir, 'pki'), ['hostA', 'hostB']);
    const rogue = await makePki(join(dir, 'rogue'), ['hostA'], 'rogue-ca');
    forgedDir = join(dir, 'forged');
    await mkdir(forgedDir);
    await copyFile(join(pki.serverDir, 'ca-cert.pem'), join(forgedDir, 'ca-cert.pem'));
    await copyFile(join(rogue.clientDir('hostA'), 'client-cert.pem'), join(forgedDir, 'client-cert.pem'));
    await copyFile(join(rogue.clientDir('hostA'), 'client-key.pem'), join(forgedDir, 'client-key.pem'));
    anonymousDir = join(dir, 'anonymous');
    await mkdir(anonymousDir);
    await copyFile(join(pki.serverDir, 'ca-cert.pem'), join(anonymousDir, 'ca-cert.pem'));

    await writeRandomFile(join(dir, 'a.img'), 16 * MiB);
    await writeRandomFile(join(dir, 'b.img'), 8 * MiB);
    const read = (f: string) => readFile(join(pki.serverDir, f));
    server = new NbdServer({ tls: 'x509', x509: { ca: await read('ca-cert.pem'), cert: await read('server-cert.pem'), key: await read('server-key.pem') }, negotiationTimeoutMs: 2000, stopTimeoutMs: 2000 });
    await server.addExport(await fileExport({ name: 'a-disk', path: join(dir, 'a.img'), hostId: 'hostA' }));
    await server.addExport(await fileExport({ name: 'b-disk', path: join(dir, 'b.img'), hostId: 'hostB' }));
    ({ port } = await server.start({ host: '127.0.0.1', port: 0 }));
  });

  after(async () => {
    await server?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("lists to a host its own exports only, identified by its certificate's CN", async () => {
    const a = JSON.parse(await ok('nbdinfo', ['--list', '--json', uri('', pki.clientDir('hostA'))])) as { exports: { 'export-name': string }[] };
    assert.deepEqual(a.exports.map((e) => e['export-name']), ['a-disk']);
    const b = JSON.parse(await ok('nbdinfo', ['--list', '--json', uri('', pki.clientDir('hostB'))])) as { exports: { 'export-name': string }[] };
    assert.deepEqual(b.exports.map((e) => e['export-name']), ['b-disk']);
  });

  it('serves the bytes of the export to its host (nbdcopy, qemu-img compare)', async () => {
    const out = join(dir, 'a-out.img');
    await ok('nbdcopy', [uri('a-disk', pki.clientDir('hostA')), out]);
    assert.equal(await sha256File(out), await sha256File(join(dir, 'a.img')));
    const node = `driver=raw,file.driver=nbd,file.host=127.0.0.1,file.port=${port},file.export=a-disk,file.tls-creds=tls0`;
    await ok('qemu-img', ['compare', '--object', `tls-creds-x509,id=tls0,endpoint=client,dir=${pki.clientDir('hostA')}`, '--image-opts', node, `driver=raw,file.filename=${join(dir, 'a.img')}`]);
  });

  it("refuses another host's export with a valid certificate", async () => {
    const r = await refused('nbdinfo', [uri('b-disk', pki.clientDir('hostA'))], "hostA's certificate on hostB's export");
    assert.match(r.stderr, /not available|unknown|not found|no such/i);
  });

  it('refuses a certificate of another CA, no certificate, and a plaintext client', async () => {
    await refused('nbdinfo', [uri('a-disk', forgedDir)], 'a certificate of another CA with CN hostA');
    await refused('nbdinfo', [uri('a-disk', anonymousDir)], 'no client certificate');
    const plain = await refused('nbdinfo', [`nbd://127.0.0.1:${port}/a-disk`], 'plaintext');
    assert.match(plain.stderr, /TLS|not supported/); // NBD_REP_ERR_TLS_REQD
    // The server is still up and serves its host.
    await ok('nbdinfo', ['--size', uri('a-disk', pki.clientDir('hostA'))]);
  });

  it('rejects X.509 options it cannot use, naming them', () => {
    assert.throws(() => new NbdServer({ tls: 'x509' }), (e: unknown) => e instanceof InputError && /X\.509 needs/.test(e.message));
    assert.throws(
      () => new NbdServer({ tls: 'x509', x509: { ca: 'nonsense', cert: 'nonsense', key: 'nonsense' } }),
      (e: unknown) => e instanceof InputError && /not usable/.test(e.message),
    );
  });
});

describe('prestage serve --nbd-tls x509', () => {
  let dir = '';
  let pki: Pki;
  let serve: ServeProcess | undefined;

  before(async () => {
    dir = await makeTempDir('prestage-x509-serve-');
    pki = await makePki(join(dir, 'pki'), ['web-1', 'web-2']);
  });

  after(async () => {
    await serve?.kill('SIGTERM');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('maps a copy that only the host with the right certificate reads', async () => {
    const golden = join(dir, 'golden.img');
    await writeRandomFile(golden, 8 * MiB);
    serve = await startServe(join(dir, 'data'), ['--nbd-tls', 'x509', '--nbd-tls-dir', pki.serverDir]);
    assert.equal((await serve.call('POST', '/v1/images', { name: 'base', path: golden })).status, 201);
    for (const h of ['web-1', 'web-2']) assert.equal((await serve.call('POST', '/v1/hosts', { id: h })).status, 201);
    const p = await serve.call<{ access: { uri: string; exportName: string } }>('POST', '/v1/hosts/web-1/provision', { source: 'base' });
    assert.equal(p.status, 200, JSON.stringify(p.body));
    const u = new URL(p.body.access.uri);
    assert.equal(u.protocol, 'nbds:');
    const target = `nbds://127.0.0.1:${u.port}/${p.body.access.exportName}`;
    const out = join(dir, 'read.img');
    await ok('nbdcopy', [`${target}?tls-certificates=${pki.clientDir('web-1')}`, out]);
    assert.equal(await sha256File(out), await sha256File(golden));
    await refused('nbdinfo', [`${target}?tls-certificates=${pki.clientDir('web-2')}`], "web-2's certificate on web-1's copy");
  });

  it('refuses to start without the certificate files, naming what is missing', async () => {
    await writeFile(join(dir, 'empty'), '');
    const r = await run(process.execPath, [join(import.meta.dirname, '../../bin/prestage.js'), 'serve', '--data', join(dir, 'data2'), '--listen', '127.0.0.1:0', '--nbd-listen', '127.0.0.1:0', '--nbd-tls', 'x509', '--nbd-tls-dir', join(dir, 'nowhere')]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /cannot read ca-cert\.pem/);
    const r2 = await run(process.execPath, [join(import.meta.dirname, '../../bin/prestage.js'), 'serve', '--data', join(dir, 'data3'), '--nbd-tls', 'x509']);
    assert.notEqual(r2.code, 0);
    assert.match(r2.stderr, /needs --nbd-tls-dir/);
  });
});
