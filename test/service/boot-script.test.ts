/** Network boot's pure parts: the iPXE scripts and the --boot-networks list. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { InputError } from '../../src/domain/index.js';
import { BOOT_RETRY_SECONDS, BootNetworks, ipxeRetryScript, ipxeSanbootScript, ipxeText, iscsiRootPath } from '../../src/service/boot-script.js';

const RETRY = 'http://10.0.0.1:7480/v1/boot/ipxe?mac=52:54:00:12:34:56';
const target = {
  hostId: 'web-1',
  portal: '10.0.0.1:3260',
  target: 'iqn.2026-12.io.prestage:web-1',
  lun: 1,
  initiator: 'iqn.2026-12.example:web-1',
  chap: { user: 'web-1', secret: 'Abc_def-123~x' },
};

describe('iPXE boot scripts', () => {
  it('boots the host from its LUN with its initiator name and CHAP account', () => {
    const script = ipxeSanbootScript(target, RETRY);
    const lines = script.split('\n');
    assert.equal(lines[0], '#!ipxe');
    assert.ok(lines.includes('set initiator-iqn iqn.2026-12.example:web-1'));
    assert.ok(lines.includes('set username web-1'));
    assert.ok(lines.includes('set password Abc_def-123~x'));
    assert.ok(!script.includes('reverse-'), 'no mutual CHAP unless asked');
    // Port and LUN written out: the copy is LUN 1, iPXE's default would be 0.
    assert.ok(lines.includes('sanboot iscsi:10.0.0.1::3260:1:iqn.2026-12.io.prestage:web-1 || goto failed'));
    // A failed boot asks again rather than falling through to the next boot device.
    assert.ok(lines.includes(`sleep ${BOOT_RETRY_SECONDS}`));
    assert.ok(lines.includes(`chain --replace --autofree ${RETRY}`));
    assert.ok(script.endsWith('\n'));
  });

  it('sets the reverse account for mutual CHAP', () => {
    const script = ipxeSanbootScript({ ...target, mutual: { user: 'iqn.2026-12.io.prestage:web-1', secret: 'Zyx-987_abc.w' } }, RETRY);
    assert.match(script, /^set reverse-username iqn\.2026-12\.io\.prestage:web-1$/m);
    assert.match(script, /^set reverse-password Zyx-987_abc\.w$/m);
  });

  it('brackets an IPv6 portal and refuses a portal without a port', () => {
    assert.equal(iscsiRootPath('[fd00::1]:3260', 1, 'iqn.2026-12.io.prestage:a'), 'iscsi:[fd00::1]::3260:1:iqn.2026-12.io.prestage:a');
    assert.equal(iscsiRootPath('fd00::1:3260', 1, 'iqn.2026-12.io.prestage:a').startsWith('iscsi:[fd00::1]::3260:'), true);
    assert.throws(() => iscsiRootPath('10.0.0.1', 1, 'iqn.2026-12.io.prestage:a'), InputError);
    assert.throws(() => iscsiRootPath('10.0.0.1:3260', -1, 'iqn.2026-12.io.prestage:a'), InputError);
  });

  it('refuses values iPXE would read as syntax instead of writing them', () => {
    for (const bad of ['a b', 'x${net0/mac}', 'a||reboot', 'a&&b', 'a;b', 'a\nsanboot x', '#c', '']) {
      assert.throws(() => ipxeSanbootScript({ ...target, chap: { user: 'web-1', secret: bad } }, RETRY), InputError, JSON.stringify(bad));
      assert.throws(() => ipxeSanbootScript({ ...target, initiator: bad }, RETRY), InputError);
      assert.throws(() => ipxeRetryScript('waiting', `${RETRY}${bad === '' ? ' ' : bad}`), InputError);
    }
  });

  it('prints messages with syntax characters replaced, one line each', () => {
    assert.equal(ipxeText('no host has MAC ${x}\nreboot || a;b & c #d'), 'no host has MAC ??x??reboot ?? a?b ? c ?d');
    const script = ipxeRetryScript('no host has MAC 52:54:00:aa:bb:cc\n${evil}', RETRY);
    assert.deepEqual(script.split('\n'), [
      '#!ipxe',
      'echo prestage: no host has MAC 52:54:00:aa:bb:cc???evil?',
      `echo prestage: asking again in ${BOOT_RETRY_SECONDS} s`,
      `sleep ${BOOT_RETRY_SECONDS}`,
      `chain --replace --autofree ${RETRY}`,
      '',
    ]);
  });
});

describe('--boot-networks', () => {
  it('answers none by default', () => {
    for (const raw of [undefined, '', ' , ']) {
      const nets = BootNetworks.parse(raw);
      assert.equal(nets.empty, true);
      assert.equal(nets.allows('127.0.0.1'), false);
    }
  });

  it('answers addresses inside the listed networks only, IPv4-mapped ones included', () => {
    const nets = BootNetworks.parse('10.0.0.0/24, fd00::/64');
    assert.deepEqual(nets.cidrs, ['10.0.0.0/24', 'fd00::/64']);
    assert.equal(nets.allows('10.0.0.7'), true);
    assert.equal(nets.allows('::ffff:10.0.0.7'), true);
    assert.equal(nets.allows('fd00::5'), true);
    assert.equal(nets.allows('10.0.1.7'), false);
    assert.equal(nets.allows('::ffff:10.0.1.7'), false);
    assert.equal(nets.allows('fd00:0:0:1::5'), false);
    assert.equal(nets.allows('not-an-address'), false);
    assert.equal(nets.allows(undefined), false);
  });

  it('refuses entries that are not ADDRESS/PREFIX, naming the entry', () => {
    for (const bad of ['10.0.0.0', '10.0.0.0/33', 'fd00::/129', 'lan/24', '10.0.0.0/24/1']) {
      assert.throws(() => BootNetworks.parse(`192.168.0.0/16,${bad}`), (e: unknown) => e instanceof InputError && e.message.includes('--boot-networks') && e.message.includes(bad));
    }
  });
});
