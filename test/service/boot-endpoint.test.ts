import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { startTestApp, type TestApp } from '../helpers/app.js';

/** The boot endpoint's gate and its answers that need no iSCSI target (test/e2e/ipxe-boot.test.ts boots through it). */
describe('GET /v1/boot/ipxe', () => {
  const apps: TestApp[] = [];
  after(async () => {
    for (const a of apps) await a.close();
  });
  const start = async (bootNetworks?: string) => {
    const t = await startTestApp(bootNetworks === undefined ? {} : { bootNetworks });
    apps.push(t);
    return t;
  };
  // Injected requests come from 127.0.0.1; no token is sent (the route is public but gated).
  const boot = (t: TestApp, query: string) => t.call('GET', `/v1/boot/ipxe?${query}`, undefined, { authorization: '' });

  it('refuses everyone by default, and any address outside --boot-networks', async () => {
    for (const t of [await start(), await start('10.9.0.0/16,192.168.1.0/24')]) {
      assert.equal((await t.call('POST', '/v1/hosts', { id: 'h1', mac: '52:54:00:00:00:01', boot: 'debian' })).status, 201);
      const r = await boot(t, 'mac=52:54:00:00:00:01');
      assert.equal(r.status, 403, r.text);
      assert.equal((r.body as { error: { code: string } }).error.code, 'PRESTAGE_FORBIDDEN');
      assert.ok(!r.text.includes('sanboot') && !r.text.includes('password'), 'no script, no credential');
    }
  });

  it('an unknown MAC, or a host with neither copy nor boot source, gets a script that says why and asks again', async () => {
    const t = await start('127.0.0.0/8');
    assert.equal((await t.call('POST', '/v1/hosts', { id: 'bare', mac: '52:54:00:00:00:02' })).status, 201);
    for (const [query, why] of [
      ['mac=52:54:00:99:99:99', /no host is registered with MAC 52:54:00:99:99:99/],
      ['host=nobody', /no host is registered with id nobody/],
      ['mac=52:54:00:00:00:02', /host bare has no copy and no boot source/],
    ] as const) {
      const r = await boot(t, query);
      assert.equal(r.status, 200, r.text);
      assert.match(r.text, /^#!ipxe\n/);
      assert.match(r.text, why);
      assert.match(r.text, /sleep \d+/);
      assert.match(r.text, /chain --replace/);
      assert.ok(!r.text.includes('sanboot'), r.text);
    }
  });

  it('a host whose copy is served over NBD gets a script saying network boot needs iSCSI, not a broken sanboot', async () => {
    const t = await start('127.0.0.0/8');
    assert.equal((await t.call('POST', '/v1/hosts', { id: 'vm', mac: '52:54:00:00:00:03', boot: 'missing-image' })).status, 201);
    const r = await boot(t, 'mac=52:54:00:00:00:03');
    assert.equal(r.status, 200, r.text);
    assert.match(r.text, /cannot be provisioned from missing-image|not iSCSI/);
    assert.ok(!r.text.includes('sanboot'), r.text);
  });
});
