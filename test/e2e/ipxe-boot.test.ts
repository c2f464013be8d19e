// A host network-boots from its own copy over iSCSI: qemu (tcg) with its built-in iPXE ROM
// (Debian ipxe-qemu, efi-virtio.rom on a virtio-net NIC) gets its boot file URL from qemu's
// user-mode DHCP, fetches an iPXE script over HTTP and `sanboot`s an iSCSI LUN served by tgtd:
// BIOS → iPXE → MBR → syslinux → kernel + initramfs, every sector over iSCSI. The golden's
// marker on the serial console proves the host booted that disk; its initramfs then logs in
// again from Linux (the iBFT iPXE left, open-iscsi's iscsistart) and writes to its disk, so a
// second host shows it does not see the first one's write. On qemu's user network the
// host's 127.0.0.1 answers at 10.0.2.2, so the HTTP server and tgtd's portal listen on loopback.
//
// Two parts:
// - "direct": tgtd run by src/exporters/iscsi (Tgtd + Tgtadm), one target per host with an ACL
//   (the host's initiator name) and CHAP, a static iPXE script from a tiny HTTP server. Proves
//   the chain and the exact iPXE syntax, independently of the app.
// - "served": the real flow, `prestage serve --exporter iscsi --boot-networks …`, the host
//   known by its MAC with a boot source, the script from GET /v1/boot/ipxe?mac=. Marked TODO
//   (reported, not failed) while the server has no such endpoint.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { access, constants, copyFile, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { newHostAuth, Tgtd, type IscsiHostAuth } from '../../src/exporters/iscsi/index.js';
import { buildBiosGolden, runQemu, type BiosBoot, type BiosGolden } from '../helpers/bios-image.js';
import { makeTempDir, sha256File } from '../helpers/files.js';
import { freePort, requireIscsiTools } from '../helpers/iscsi-tools.js';
import { startServe, type ServeProcess } from '../helpers/server.js';
import { guardedSteps } from '../helpers/steps.js';

/** The host's loopback as a guest on qemu's user network sees it. */
export const GUEST_HOST = '10.0.2.2';

/** What iPXE needs to sanboot one LUN: the portal as the guest reaches it, the target, the host's initiator name and CHAP. */
export interface SanbootTarget {
  readonly port: number;
  readonly target: string;
  readonly lun: number;
  readonly auth: IscsiHostAuth;
}

/**
 * The iPXE script: `set initiator-iqn`, `set username` / `set password` (CHAP the initiator
 * proves), then `sanboot iscsi:SERVER:PROTOCOL:PORT:LUN:TARGET` (PROTOCOL empty: TCP). A failed
 * sanboot prints a marker and ends iPXE, so a refusal is seen on the console, not waited out.
 */
export function ipxeScript(t: SanbootTarget): string {
  return [
    '#!ipxe',
    `set initiator-iqn ${t.auth.initiator}`,
    `set username ${t.auth.chap.user}`,
    `set password ${t.auth.chap.secret}`,
    ...(t.auth.mutual ? [`set reverse-username ${t.auth.mutual.user}`, `set reverse-password ${t.auth.mutual.secret}`] : []),
    `sanboot iscsi:${GUEST_HOST}::${t.port}:${t.lun}:${t.target} || goto failed`,
    ':failed',
    `echo ${SANBOOT_FAILED}`,
    'exit 1',
    '',
  ].join('\n');
}
export const SANBOOT_FAILED = 'PRESTAGE-SANBOOT:failed';

/** A tiny HTTP server on 127.0.0.1 answering GET /boot/MAC with that MAC's script (404 otherwise). */
export async function startScriptServer(scripts: Map<string, string>): Promise<{ server: Server; port: number; requests: string[] }> {
  const requests: string[] = [];
  const server = createServer((req, res) => {
    // iPXE percent-encodes the MAC's colons.
    const path = decodeURIComponent(req.url ?? '');
    requests.push(path);
    const mac = /^\/boot\/([^/?]+)/.exec(path)?.[1] ?? '';
    const script = scripts.get(mac.toLowerCase());
    if (req.method !== 'GET' || script === undefined) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain' }).end(script);
  });
  server.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  return { server, port: (server.address() as AddressInfo).port, requests };
}

/** qemu's iPXE ROM for virtio-net (Debian ipxe-qemu; qemu looks in /usr/lib/ipxe/qemu). */
export const IPXE_ROM = '/usr/lib/ipxe/qemu/efi-virtio.rom';
async function requireIpxeRom(): Promise<void> {
  await access(IPXE_ROM, constants.R_OK).catch(() => {
    throw new Error(`${IPXE_ROM} is missing: apt-get install ipxe-qemu (scripts/install.sh lists it)`);
  });
}

/** Network-boots qemu (tcg) with iPXE on a virtio-net NIC of this MAC, its DHCP boot file `bootUrl`. */
export function bootIpxe(mac: string, bootUrl: string, timeoutSec = 180): Promise<BiosBoot> {
  // A failed sanboot leaves iPXE to the BIOS, which waits for ever: stop at its marker.
  if (/[,\s]/.test(bootUrl)) throw new Error(`boot URL ${bootUrl}: no commas or spaces (qemu's -netdev syntax)`);
  return runQemu(['-boot', 'order=n', '-netdev', `user,id=n0,bootfile=${bootUrl}`, '-device', `virtio-net-pci,netdev=n0,mac=${mac}`], timeoutSec, SANBOOT_FAILED);
}

/** Exports `file` as LUN 1 of a new target open only to `auth.initiator` with its CHAP account. */
export async function exportLun(tgtd: Tgtd, tid: number, target: string, file: string, auth: IscsiHostAuth): Promise<void> {
  await tgtd.admin.newTarget(tid, target);
  await tgtd.admin.newLun(tid, 1, { path: file, type: 'rdwr' });
  await tgtd.admin.bindInitiator(tid, auth.initiator);
  await tgtd.admin.newAccount(auth.chap.user, auth.chap.secret);
  await tgtd.admin.bindAccount(tid, auth.chap.user);
}

const shown = (r: BiosBoot) => `qemu exit ${r.code} after ${r.ms} ms:\n${r.output.slice(-4000)}`;

describe('iPXE sanboot from a tgtd LUN, direct (tgtd + a static script)', () => {
  let dir: string;
  let golden: BiosGolden;
  let goldenSha: string;
  let tgtd: Tgtd | undefined;
  let http: Awaited<ReturnType<typeof startScriptServer>> | undefined;
  let portal: number;
  const scripts = new Map<string, string>();
  const hosts = [
    { id: 'host-a', mac: '52:54:00:12:34:0a', tid: 1 },
    { id: 'host-b', mac: '52:54:00:12:34:0b', tid: 2 },
  ].map((h) => ({ ...h, target: `iqn.2026-12.io.prestage:${h.id}`, auth: newHostAuth(h.id, `iqn.2026-12.test.prestage:${h.id}`), copy: '' }));
  const url = (mac: string) => `http://${GUEST_HOST}:${http!.port}/boot/${mac}`;
  let wroteByA = '';

  const { setupFailed, step } = guardedSteps();
  before(async () => {
    dir = await makeTempDir('prestage-ipxe-');
    try {
      requireIscsiTools();
      await requireIpxeRom();
      golden = await buildBiosGolden(join(dir, 'golden'));
      goldenSha = await sha256File(golden.disk);
      portal = await freePort();
      tgtd = new Tgtd({ runDir: join(dir, 'run'), portal: { host: '127.0.0.1', port: portal } });
      await tgtd.start();
      for (const h of hosts) {
        h.copy = join(dir, `copy-${h.id}.raw`);
        await copyFile(golden.disk, h.copy);
        await exportLun(tgtd, h.tid, h.target, h.copy, h.auth);
        scripts.set(h.mac, ipxeScript({ port: portal, target: h.target, lun: 1, auth: h.auth }));
      }
      http = await startScriptServer(scripts);
    } catch (e) {
      setupFailed(e);
    }
  });

  after(async () => {
    http?.server.close();
    if (tgtd) {
      for (const h of hosts) await tgtd.admin.deleteTarget(h.tid, { force: true }).catch(() => undefined);
      await tgtd.stop();
    }
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  step('host A network-boots its LUN: iPXE fetches its script, sanboots, the golden marker is on the console', async (t) => {
    const a = hosts[0]!;
    const r = await bootIpxe(a.mac, url(a.mac));
    t.diagnostic(`host A booted over iSCSI in ${r.ms} ms`);
    assert.ok(http!.requests.includes(`/boot/${a.mac}`), `iPXE fetched its script: ${http!.requests.join(' ')}\n${shown(r)}`);
    assert.equal(r.marker, golden.marker, `A booted the golden's syslinux.cfg\n${shown(r)}`);
    assert.equal(r.hostWrote, 'none', `A's fresh copy has no /hostwr\n${shown(r)}`);
    assert.match(r.wrote ?? '', /^boot-/, `A logged in again from Linux (iBFT, iscsistart) and wrote\n${shown(r)}`);
    wroteByA = r.wrote!;
    assert.ok(r.done, shown(r));
    assert.equal(r.code, 0, shown(r));
  });

  step('host B boots its own target with its own credentials', async (t) => {
    const b = hosts[1]!;
    const r = await bootIpxe(b.mac, url(b.mac));
    t.diagnostic(`host B booted over iSCSI in ${r.ms} ms`);
    assert.equal(r.marker, golden.marker, shown(r));
    assert.equal(r.hostWrote, 'none', `B must not see what A wrote to its copy\n${shown(r)}`);
    assert.ok(r.done, shown(r));
    assert.equal(r.code, 0, shown(r));
  });

  step("A's write stayed on A's copy: A boots again and finds it", async () => {
    const a = hosts[0]!;
    const r = await bootIpxe(a.mac, url(a.mac));
    assert.equal(r.hostWrote, wroteByA, shown(r));
    assert.equal(r.code, 0, shown(r));
  });

  step("B's initiator name and CHAP on A's target: refused at login, nothing boots", async (t) => {
    const [a, b] = [hosts[0]!, hosts[1]!];
    const mac = '52:54:00:12:34:0c';
    scripts.set(mac, ipxeScript({ port: portal, target: a.target, lun: 1, auth: b.auth }));
    const r = await bootIpxe(mac, url(mac), 120);
    t.diagnostic(`iPXE: ${/Could not [^\n]*/.exec(r.output)?.[0] ?? '?'}`);
    assert.equal(r.marker, undefined, shown(r));
    assert.ok(r.output.includes(SANBOOT_FAILED), `the sanboot failed and said so\n${shown(r)}`);
    // tgtd hides a target from an initiator outside its ACL.
    assert.match(r.output, /Could not open SAN device: No such device/, shown(r));
  });

  step("A's initiator name with a wrong CHAP secret: refused", async (t) => {
    const a = hosts[0]!;
    const mac = '52:54:00:12:34:0d';
    scripts.set(mac, ipxeScript({ port: portal, target: a.target, lun: 1, auth: { ...a.auth, chap: { user: a.auth.chap.user, secret: 'wrong-secret-12' } } }));
    const r = await bootIpxe(mac, url(mac), 120);
    t.diagnostic(`iPXE: ${/Could not [^\n]*/.exec(r.output)?.[0] ?? '?'}`);
    assert.equal(r.marker, undefined, shown(r));
    assert.ok(r.output.includes(SANBOOT_FAILED), shown(r));
    assert.match(r.output, /Could not open SAN device: Operation not permitted/, shown(r));
  });

  step('the golden never changed', async () => {
    assert.equal(await sha256File(golden.disk), goldenSha);
  });
});

interface Image {
  ref: string;
  sha256: string;
}

describe('iPXE sanboot through prestage serve --exporter iscsi (GET /v1/boot/ipxe?mac=)', () => {
  const SOURCE = 'bios-golden';
  let dir: string;
  let golden: BiosGolden;
  let serve: ServeProcess | undefined;
  let apiPort: number;
  let endpoint = false;
  const hostA = { id: 'ipxe-a', mac: '52:54:00:ab:00:01' };
  const hostB = { id: 'ipxe-b', mac: '52:54:00:ab:00:02' };
  const bootUrl = (mac: string) => `http://${GUEST_HOST}:${apiPort}/v1/boot/ipxe?mac=${mac}`;

  let setupError: Error | undefined;
  /** A step fails with the set-up's error when the server could not start. */
  const step = (name: string, fn: (t: TestContext) => Promise<void>) =>
    it(name, async (t) => {
      if (setupError) throw setupError;
      assert.ok(endpoint, 'GET /v1/boot/ipxe is served');
      await fn(t);
    });

  before(async () => {
    dir = await makeTempDir('prestage-ipxe-serve-');
    try {
      requireIscsiTools();
      await requireIpxeRom();
      golden = await buildBiosGolden(join(dir, 'golden'));
      const iscsiPort = await freePort();
      serve = await startServe(join(dir, 'data'), ['--exporter', 'iscsi', '--iscsi-portal', `127.0.0.1:${iscsiPort}`, '--nbd-advertise', GUEST_HOST, '--boot-networks', '127.0.0.0/8,10.0.2.0/24']);
      apiPort = Number(new URL(serve.url).port);
      const probe = await fetch(`${serve.url}/v1/boot/ipxe?mac=52:54:00:00:00:00`);
      endpoint = !(probe.status === 404 && /Route .* not found/i.test(await probe.text()));
    } catch (e) {
      setupError = e instanceof Error ? e : new Error(String(e));
    }
  });

  after(async () => {
    await serve?.kill('SIGTERM');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  step('imports the BIOS golden, pools two spares, adds two hosts by MAC with a boot source', async () => {
    const img = await serve!.call<Image>('POST', '/v1/images', { name: SOURCE, path: golden.disk });
    assert.equal(img.status, 201, JSON.stringify(img.body));
    assert.equal((await serve!.call('PUT', `/v1/pools/${SOURCE}`, { min: 2, max: 2 })).status, 200);
    for (const h of [hostA, hostB]) {
      const r = await serve!.call('POST', '/v1/hosts', { id: h.id, mac: h.mac, boot: SOURCE });
      assert.equal(r.status, 201, JSON.stringify(r.body));
    }
  });

  step('host A boots from its copy over iSCSI with the script the server wrote', async (t) => {
    const r = await bootIpxe(hostA.mac, bootUrl(hostA.mac));
    t.diagnostic(`host A booted in ${r.ms} ms`);
    assert.equal(r.marker, golden.marker, shown(r));
    assert.equal(r.hostWrote, 'none', shown(r));
    assert.match(r.wrote ?? '', /^boot-/, shown(r));
    assert.equal(r.code, 0, shown(r));
  });

  step('host B boots its own copy', async () => {
    const r = await bootIpxe(hostB.mac, bootUrl(hostB.mac));
    assert.equal(r.marker, golden.marker, shown(r));
    assert.equal(r.hostWrote, 'none', `B must not see what A wrote to its copy\n${shown(r)}`);
    assert.equal(r.code, 0, shown(r));
  });

  step('an unknown MAC gets no script that boots', async () => {
    const r = await fetch(`${serve!.url}/v1/boot/ipxe?mac=52:54:00:ff:ff:${randomBytes(1).toString('hex')}`);
    const text = await r.text();
    assert.ok(r.status >= 400 || !text.includes('sanboot'), `${r.status}: ${text}`);
  });
});
