// `GET /v1/hosts/:id/access` and `prestage host access`, iSCSI credentials over the API and the
// CLI, and iSCSI sessions in `/v1/status` and `prestage status`: a real server with both
// exporters (its own tgtd), real iSCSI logins with libiscsi's tools. Needs root, tgt and
// libiscsi-bin; a missing tool fails the test.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { HostAccess, IscsiCredential, Status } from '../../src/api/types.js';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { prestage } from '../helpers/cli-run.js';
import { makeTempDir, waitFor, writeRandomFile } from '../helpers/files.js';
import { freePort, holdSession, iscsiLs, requireIscsiTools, type Login } from '../helpers/iscsi-tools.js';

const MiB = 1 << 20;

describe('how a host reaches its copy, over each exporter', () => {
  let t: TestApp;
  let dir: string;
  let portal: string;

  before(async () => {
    requireIscsiTools();
    dir = await makeTempDir('prestage-access-');
    const port = await freePort();
    portal = `127.0.0.1:${port}`;
    t = await startTestApp({ exporter: 'both', iscsiPortal: portal, nbdAdvertise: '127.0.0.1', listen: '127.0.0.1:0' }, { listen: true });
    await writeRandomFile(join(dir, 'golden.raw'), 4 * MiB);
    assert.equal((await t.call('POST', '/v1/images', { name: 'golden', path: join(dir, 'golden.raw') })).status, 201);
    assert.equal((await t.call('PUT', '/v1/pools/golden', { min: 2, max: 2 })).status, 200);
    assert.equal((await t.call('POST', '/v1/hosts', { id: 'metal-1', exporter: 'iscsi' })).status, 201);
    assert.equal((await t.call('POST', '/v1/hosts', { id: 'vm-1', exporter: 'nbd' })).status, 201);
  });
  after(() => t?.close());

  const access = async (host: string) => {
    const r = await t.call<HostAccess>('GET', `/v1/hosts/${host}/access`);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body;
  };
  const cli = (...args: string[]) => prestage(args, { env: { PRESTAGE_URL: `http://${t.app.address}`, PRESTAGE_TOKEN: t.token } });
  const login = (c: IscsiCredential): Login => ({ initiator: c.initiator, user: c.chapUser, secret: c.chapSecret });

  it('before a copy is mapped: each exporter, which one serves the host, how it proves itself, nothing to dial', async () => {
    const a = await access('metal-1');
    assert.equal(a.mapping, null);
    assert.deepEqual(a.exporters.map((e) => [e.exporter, e.serves, e.access, e.sessions]).sort(), [
      ['iscsi', true, null, 0],
      ['nbd', false, null, 0],
    ]);
    const iscsi = a.exporters.find((e) => e.exporter === 'iscsi')!;
    assert.match(iscsi.credential, /^initiator iqn\.[^ ]+:metal-1, CHAP user metal-1; the secrets: prestage host iscsi-credential metal-1$/);
    assert.match(a.exporters.find((e) => e.exporter === 'nbd')!.credential, /TLS-PSK, identity metal-1; its key: prestage host key metal-1/);
    assert.doesNotMatch(JSON.stringify(a), /secret"|chapSecret|[0-9a-f]{64}/, 'no secret in an access reply');
  });

  it('once mapped: the exporter that serves it says what to dial; a session shows up in access and status', async () => {
    const p = await t.call<{ access: { kind: string; target: string } }>('POST', '/v1/hosts/metal-1/provision', { source: 'golden' });
    assert.equal(p.status, 200, JSON.stringify(p.body));
    const a = await access('metal-1');
    const iscsi = a.exporters.find((e) => e.exporter === 'iscsi')!;
    assert.deepEqual(iscsi.access, p.body.access, 'the same access the provision handed out');
    assert.equal(a.exporters.find((e) => e.exporter === 'nbd')!.access, null, 'NBD does not serve this host');

    const cred = (await t.call<IscsiCredential>('GET', '/v1/hosts/metal-1/iscsi-credential')).body;
    const session = holdSession(portal, login(cred), p.body.access.target);
    try {
      await waitFor('the session in the access reply', async () => (await access('metal-1')).exporters.find((e) => e.exporter === 'iscsi')!.sessions === 1);
      const status = (await t.call<Status>('GET', '/v1/status')).body;
      assert.equal(status.iscsi?.portal, portal);
      assert.equal(status.iscsi?.tgtd, 'RUNNING');
      assert.deepEqual(status.iscsi?.sessions.map((s) => [s.hostId, s.initiator]), [['metal-1', cred.initiator]]);
      const human = await cli('status');
      assert.equal(human.code, 0, human.stderr);
      assert.match(human.stdout, new RegExp(`^iscsi ${portal} · tgtd RUNNING · 1 target · 1 session$`, 'm'));
      assert.match(human.stdout, /^metal-1 +iqn\.\S+:metal-1 +127\.0\.0\.1/m);

      const shown = await cli('host', 'access', 'metal-1');
      assert.equal(shown.code, 0, shown.stderr);
      assert.match(shown.stdout, /^metal-1: golden → c-/);
      assert.match(shown.stdout, /^iscsi \(serves it\) · 1 session open$/m);
      assert.match(shown.stdout, new RegExp(`^  dial +iscsi://${portal}/iqn\\.2026-12\\.io\\.prestage:metal-1/1 `, 'm'));
      assert.match(shown.stdout, /^nbd · 0 connections open\n {2}dial +- \(another exporter serves it\)$/m);

      // Rotating the CHAP secret ends the session; the old secret no longer logs in, the new one does.
      const rotated = await cli('host', 'iscsi-credential', 'metal-1', '--rotate', '--json');
      assert.equal(rotated.code, 0, rotated.stderr);
      const next = JSON.parse(rotated.stdout) as IscsiCredential;
      assert.equal(next.initiator, cred.initiator, 'the initiator name stays');
      assert.notEqual(next.chapSecret, cred.chapSecret);
      const ended = await session.exited;
      assert.notEqual(ended.code, 0, 'the held session ended');
      assert.notEqual((await iscsiLs(portal, login(cred))).code, 0, 'the old secret is refused');
      const ls = await iscsiLs(portal, login(next));
      assert.equal(ls.code, 0, ls.stderr);
      assert.match(ls.stdout, /iqn\.2026-12\.io\.prestage:metal-1/);
    } finally {
      session.child.kill('SIGKILL');
    }
  });

  it('an NBD host: its URI and identity; iSCSI lists its login but does not serve it', async () => {
    const p = await t.call<{ access: { kind: string; uri: string } }>('POST', '/v1/hosts/vm-1/provision', { source: 'golden' });
    assert.equal(p.status, 200, JSON.stringify(p.body));
    const a = await access('vm-1');
    const nbd = a.exporters.find((e) => e.exporter === 'nbd')!;
    assert.deepEqual([nbd.serves, nbd.access], [true, p.body.access]);
    assert.match(p.body.access.uri, /^nbds:\/\/vm-1@127\.0\.0\.1:\d+\/c-/);
    assert.deepEqual(
      a.exporters.filter((e) => e.exporter === 'iscsi').map((e) => [e.serves, e.access]),
      [[false, null]],
    );
  });

  it('a reader sees access but not iSCSI secrets; unknown hosts are 404', async () => {
    const made = await t.call<{ token: string }>('POST', '/v1/tokens', { name: 'r', role: 'reader' });
    assert.equal(made.status, 201, made.text);
    const reader = { authorization: `Bearer ${made.body.token}` };
    assert.equal((await t.call('GET', '/v1/hosts/metal-1/access', undefined, reader)).status, 200);
    assert.equal((await t.call('GET', '/v1/hosts/metal-1/iscsi-credential', undefined, reader)).status, 403);
    assert.equal((await t.call('POST', '/v1/hosts/metal-1/iscsi-credential', undefined, reader)).status, 403);
    assert.equal((await t.call('GET', '/v1/hosts/nobody/access')).status, 404);
    assert.equal((await t.call('POST', '/v1/hosts/metal-1/iscsi-credential', { rotate: true })).status, 400, 'a body is a mistake, not a rotation');
  });
});
