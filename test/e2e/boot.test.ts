// A host really boots from its copy: qemu (tcg) boots the Debian cloud kernel with a busybox
// initramfs whose root disk is the host's copy, reached over prestage's built-in NBD server with
// TLS-PSK (identity = host id). The host prints what it finds on its disk to the serial console.
// Defends invariants 1 (the golden never changes), 2 (a copy is exported to its host only) and
// 3 (two hosts never share a copy) with a real block-device client, not a test double.
// A missing tool fails the test, naming its apt package (scripts/install.sh installs them).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe } from 'node:test';
import { bootFromNbd, buildBootGolden, writeQemuPskDir, type BootGolden, type BootResult } from '../helpers/boot-image.js';
import { guardedSteps } from '../helpers/steps.js';
import { makeTempDir, sha256File, waitFor } from '../helpers/files.js';
import { startServe, type ServeProcess } from '../helpers/server.js';

interface Provision {
  copyId: string;
  source: string;
  outcome: string;
  access: { kind: string; uri: string; exportName: string };
}
interface Image {
  ref: string;
  sha256: string;
  volume: string;
  sizeBytes: number;
}

/** The NBD endpoint of a provision reply: nbds://HOST@127.0.0.1:PORT/EXPORT. */
function endpoint(p: Provision): { host: string; port: number; exportName: string; identity: string } {
  assert.equal(p.access.kind, 'nbd');
  const u = new URL(p.access.uri);
  assert.equal(u.protocol, 'nbds:', 'TLS is on');
  assert.equal(decodeURIComponent(u.pathname.slice(1)), p.access.exportName);
  return { host: u.hostname, port: Number(u.port), exportName: p.access.exportName, identity: decodeURIComponent(u.username) };
}

/** Everything the console said, for an assertion message. */
const shown = (r: BootResult) => `qemu exit ${r.code} after ${r.ms} ms:\n${r.output}`;

/** qemu gave up connecting: a clear error, neither a boot nor a hang. */
function assertRefused(r: BootResult, why: string): void {
  assert.equal(r.marker, undefined, `${why}: the host must not see the disk\n${shown(r)}`);
  assert.notEqual(r.code, 0, `${why}\n${shown(r)}`);
  assert.ok(r.code !== 124 && r.code !== 137, `${why}: qemu must fail, not hang until the timeout\n${shown(r)}`);
  // The TLS handshake works (the key is valid); the NBD server refuses the export itself.
  assert.match(r.output, /qemu-system-x86_64: -drive [^\n]*: Requested export not available/, `${why}: qemu says why\n${shown(r)}`);
}

describe('a host boots from its copy over NBD with TLS-PSK (qemu, tcg)', () => {
  const SOURCE = 'bootable';
  let dir: string;
  let golden: BootGolden;
  let goldenSha: string;
  let serve: ServeProcess | undefined;
  let a: Provision;
  let keyDirA: string;
  let keyDirB: string;
  const wroteByA = `written-by-A-${randomBytes(6).toString('hex')}`;

  const boot = (p: Provision, keyDir: string, username: string, write?: string) => {
    const e = endpoint(p);
    return bootFromNbd({ kernel: golden.kernel, initrd: golden.initrd, host: e.host, port: e.port, exportName: e.exportName, pskDir: keyDir, username, write, timeoutSec: 120 });
  };
  const keyDir = async (hostId: string) => {
    const key = await serve!.call<{ pskFileLine: string }>('GET', `/v1/hosts/${hostId}/key`);
    assert.equal(key.status, 200);
    assert.match(key.body.pskFileLine, new RegExp(`^${hostId}:[0-9a-f]{32,}$`));
    return writeQemuPskDir(join(dir, `keys-${hostId}`), key.body.pskFileLine);
  };

  // A missing qemu, kernel, busybox-static, sfdisk or mke2fs fails every step below with the
  // apt package to install (never a skip, never a run of "cancelled" steps).
  const { setupFailed, step } = guardedSteps();
  before(async () => {
    dir = await makeTempDir('prestage-boot-');
    try {
      golden = await buildBootGolden(join(dir, 'golden'));
      goldenSha = await sha256File(golden.disk);
      serve = await startServe(join(dir, 'data'));
    } catch (e) {
      setupFailed(e);
    }
  });

  after(async () => {
    await serve?.kill('SIGTERM');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  step('imports the bootable golden and makes two spares', async () => {
    const img = await serve!.call<Image>('POST', '/v1/images', { name: SOURCE, path: golden.disk });
    assert.equal(img.status, 201, JSON.stringify(img.body));
    assert.equal(img.body.sha256, goldenSha);
    assert.equal(img.body.sizeBytes, golden.sizeBytes);
    assert.equal((await serve!.call('PUT', `/v1/pools/${SOURCE}`, { min: 2, max: 2 })).status, 200);
    await waitFor('two ready spares', async () => (await serve!.call<{ ready: number }>('GET', `/v1/pools/${SOURCE}`)).body.ready >= 2, 60_000, 100);
    for (const id of ['host-a', 'host-b']) assert.equal((await serve!.call('POST', '/v1/hosts', { id })).status, 201);
  });

  step('host A boots from its copy, sees the golden marker and writes a file of its own', async (t) => {
    const p = await serve!.call<Provision>('POST', '/v1/hosts/host-a/provision', { source: SOURCE });
    assert.equal(p.status, 200, JSON.stringify(p.body));
    a = p.body;
    assert.equal(a.outcome, 'warm', 'a spare was ready');
    assert.equal(endpoint(a).identity, 'host-a');
    keyDirA = await keyDir('host-a');
    const r = await boot(a, keyDirA, 'host-a', wroteByA);
    t.diagnostic(`host A booted in ${r.ms} ms`);
    assert.equal(r.marker, golden.marker, `A sees the golden's marker\n${shown(r)}`);
    assert.equal(r.hostWrote, 'none', `A's fresh copy has no /host-wrote\n${shown(r)}`);
    assert.equal(r.wrote, wroteByA, shown(r));
    assert.ok(r.done, `A unmounted and powered off\n${shown(r)}`);
    assert.equal(r.code, 0, shown(r));
  });

  step("host B boots from its own copy of the same pool: the marker, but not A's file", async (t) => {
    const p = await serve!.call<Provision>('POST', '/v1/hosts/host-b/provision', { source: SOURCE });
    assert.equal(p.status, 200, JSON.stringify(p.body));
    const b = p.body;
    assert.equal(b.outcome, 'warm', 'the second spare was ready');
    assert.equal(b.source, a.source);
    assert.notEqual(b.copyId, a.copyId, 'two hosts never share a copy');
    assert.notEqual(b.access.exportName, a.access.exportName);
    keyDirB = await keyDir('host-b');
    const r = await boot(b, keyDirB, 'host-b');
    t.diagnostic(`host B booted in ${r.ms} ms`);
    assert.equal(r.marker, golden.marker, `B sees the golden's marker\n${shown(r)}`);
    assert.equal(r.hostWrote, 'none', `B must not see what A wrote to its copy\n${shown(r)}`);
    assert.ok(r.done, shown(r));
    assert.equal(r.code, 0, shown(r));
  });

  step("A's write stayed on A's copy: A boots again and finds it", async () => {
    const r = await boot(a, keyDirA, 'host-a');
    assert.equal(r.marker, golden.marker, shown(r));
    assert.equal(r.hostWrote, wroteByA, `A's write reached its copy through NBD\n${shown(r)}`);
    assert.equal(r.code, 0, shown(r));
  });

  step("B's key does not open A's export", async () => {
    assertRefused(await boot(a, keyDirB, 'host-b'), "B's identity on A's export");
  });

  step("after A is released, A's own key no longer opens its export", async () => {
    const rel = await serve!.call<{ copyId: string }>('POST', '/v1/hosts/host-a/release');
    assert.equal(rel.status, 200, JSON.stringify(rel.body));
    assert.equal(rel.body.copyId, a.copyId);
    assertRefused(await boot(a, keyDirA, 'host-a'), "A's export after release");
  });

  step('the golden never changed: its recorded sha256 and the file behind it', async () => {
    const img = await serve!.call<Image>('GET', `/v1/images/${SOURCE}`);
    assert.equal(img.status, 200);
    assert.equal(img.body.sha256, goldenSha);
    assert.equal(await sha256File(img.body.volume), goldenSha, 'the sealed golden volume is byte-for-byte what was imported');
    assert.equal(await sha256File(golden.disk), goldenSha, 'and the file it was imported from');
  });
});
