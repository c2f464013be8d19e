/**
 * prestage on Ceph RBD, end to end: `prestage serve --driver rbd` on a throwaway single-node
 * cluster (test/helpers/ceph.ts). Spares are clones of the golden's protected snapshot; hosts reach
 * them through our NBD server with TLS-PSK, read and write them with the real NBD clients and boot
 * from them (qemu, tcg); 200 concurrent provisions get 200 distinct clones; the golden's snapshot
 * never changes, whatever the hosts write. Needs root, Debian's ceph packages, qemu and the NBD
 * tools; a missing tool fails the test, never skips it.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe } from 'node:test';
import { bootFromNbd, buildBootGolden, writeQemuPskDir, type BootGolden, type BootResult } from '../helpers/boot-image.js';
import { startCeph, type CephCluster } from '../helpers/ceph.js';
import { makeTempDir, sha256File, waitFor, writeRandomFile } from '../helpers/files.js';
import { ok, run } from '../helpers/nbd-tools.js';
import { rbdSha256 } from '../helpers/rbd-invariants.js';
import { startServe, type ServeProcess } from '../helpers/server.js';
import { guardedSteps } from '../helpers/steps.js';

interface Provision {
  copyId: string;
  outcome: string;
  access: { kind: string; uri: string; exportName: string };
}
interface ImageRow {
  ref: string;
  sha256: string;
  volume: string;
  driver: string | null;
  sizeBytes: number;
}

const MiB = 1024 * 1024;

/** `rbd:POOL/img-…@sealed` → `POOL/img-…@sealed`, as the rbd tool names it. */
const rbdSpec = (volume: string) => {
  assert.match(volume, /^rbd:[^/]+\/[^@]+(@.+)?$/);
  return volume.slice('rbd:'.length);
};

describe('prestage on Ceph RBD: spares are clones, hosts read, write and boot them over NBD', { concurrency: false }, () => {
  let dir: string;
  let ceph: CephCluster | undefined;
  let serve: ServeProcess | undefined;
  let golden: BootGolden;
  let goldenSha: string;
  let image: ImageRow;
  /** The small golden the 200 hosts get, removed at the end. */
  let tinyVolume: string;
  const keyFiles = new Map<string, string>();

  const keyOf = async (hostId: string): Promise<string> => {
    let file = keyFiles.get(hostId);
    if (file) return file;
    const key = await serve!.call<{ pskFileLine: string }>('GET', `/v1/hosts/${hostId}/key`);
    assert.equal(key.status, 200);
    file = join(dir, 'keys', `${hostId}.psk`);
    await writeFile(file, `${key.body.pskFileLine}\n`, { mode: 0o600 });
    keyFiles.set(hostId, file);
    return file;
  };
  const uriFor = (p: Provision, keyFile: string) => `${p.access.uri}?tls-psk-file=${keyFile}`;
  const provision = async (hostId: string, source: string): Promise<Provision> => {
    const r = await serve!.call<Provision>('POST', `/v1/hosts/${hostId}/provision`, { source });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body;
  };

  const { setupFailed, step } = guardedSteps();
  before(async () => {
    dir = await makeTempDir('prestage-rbd-e2e-');
    try {
      await mkdir(join(dir, 'keys'), { mode: 0o700 });
      ceph = await startCeph();
      golden = await buildBootGolden(join(dir, 'golden'));
      goldenSha = await sha256File(golden.disk);
      serve = await startServe(join(dir, 'data'), ['--driver', 'rbd', '--ceph-conf', ceph.confPath, '--ceph-pool', ceph.pool, '--ceph-id', ceph.id]);
    } catch (e) {
      setupFailed(e);
    }
  });
  after(async () => {
    await serve?.kill('SIGTERM');
    await ceph?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  step('imports the golden into the pool as a sealed snapshot and makes clones as spares', async () => {
    const r = await serve!.call<ImageRow>('POST', '/v1/images', { name: 'bootable', path: golden.disk });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    image = r.body;
    assert.equal(image.sha256, goldenSha);
    assert.equal(image.driver, 'rbd');
    assert.match(image.volume, new RegExp(`^rbd:${ceph!.pool}/img-${goldenSha}@sealed$`));
    assert.match(await ceph!.cli('rbd', 'snap', 'ls', rbdSpec(image.volume).split('@')[0]!, '--format', 'json'), /"protected":\s*"true"/);
    assert.equal((await serve!.call('PUT', '/v1/pools/bootable', { min: 2, max: 2 })).status, 200);
    await waitFor('two spares', async () => (await serve!.call<{ ready: number }>('GET', '/v1/pools/bootable')).body.ready >= 2, 60_000, 100);
    const copies = (await serve!.call<{ id: string; volume: string; method: string }[]>('GET', '/v1/copies?state=ready')).body;
    assert.equal(copies.length, 2);
    for (const c of copies) {
      assert.equal(c.method, 'clone');
      assert.equal(c.volume, `rbd:${ceph!.pool}/copy-${c.id}`);
      const info = JSON.parse(await ceph!.cli('rbd', 'info', rbdSpec(c.volume), '--format', 'json')) as { parent?: { image: string; snapshot: string } };
      assert.equal(info.parent?.image, `img-${goldenSha}`, 'a spare is a clone of the golden');
      assert.equal(info.parent?.snapshot, 'sealed');
    }
    for (const id of ['host-a', 'host-b']) assert.equal((await serve!.call('POST', '/v1/hosts', { id })).status, 201);
  });

  step("nbdinfo, nbdcopy and qemu-img read a host's clone through our NBD server with TLS-PSK; another host's key is refused", async () => {
    const a = await provision('host-a', 'bootable');
    assert.equal(a.outcome, 'warm');
    const keyA = await keyOf('host-a');
    assert.equal((await ok('nbdinfo', ['--size', uriFor(a, keyA)])).trim(), String(golden.sizeBytes));
    const copied = join(dir, 'a-read.raw');
    await ok('nbdcopy', [uriFor(a, keyA), copied]);
    assert.equal(await sha256File(copied), goldenSha);
    const tlsDir = await writeQemuPskDir(join(dir, 'qemu-a'), (await serve!.call<{ pskFileLine: string }>('GET', '/v1/hosts/host-a/key')).body.pskFileLine);
    const u = new URL(a.access.uri);
    const cmp = await run('qemu-img', ['compare', '--object', `tls-creds-psk,id=t0,endpoint=client,dir=${tlsDir},username=host-a`, '--image-opts', `driver=nbd,host=${u.hostname},port=${u.port},export=${a.access.exportName},tls-creds=t0`, `driver=raw,file.driver=file,file.filename=${golden.disk}`]);
    assert.equal(cmp.code, 0, cmp.stderr + cmp.stdout);
    const keyB = await keyOf('host-b');
    const refused = await run('nbdinfo', ['--size', `nbds://host-b@${u.host}/${a.access.exportName}?tls-psk-file=${keyB}`]);
    assert.notEqual(refused.code, 0, "host B's key must not open A's export");
  });

  const shown = (r: BootResult) => `qemu exit ${r.code} after ${r.ms} ms:\n${r.output}`;
  const wroteByA = `rbd-written-by-A-${randomBytes(6).toString('hex')}`;
  const bootAs = async (p: Provision, hostId: string, write?: string) => {
    const line = (await serve!.call<{ pskFileLine: string }>('GET', `/v1/hosts/${hostId}/key`)).body.pskFileLine;
    const u = new URL(p.access.uri);
    return bootFromNbd({ kernel: golden.kernel, initrd: golden.initrd, host: u.hostname, port: Number(u.port), exportName: p.access.exportName, pskDir: await writeQemuPskDir(join(dir, `boot-${hostId}`), line), username: hostId, ...(write !== undefined && { write }), timeoutSec: 120 });
  };

  step('qemu boots host A from its clone and writes; host B boots its own clone and does not see it', async (t) => {
    const a = await provision('host-a', 'bootable'); // its mapping of the step before: provisioning is idempotent
    const r = await bootAs(a, 'host-a', wroteByA);
    t.diagnostic(`host A booted from an RBD clone in ${r.ms} ms`);
    assert.equal(r.marker, golden.marker, shown(r));
    assert.equal(r.wrote, wroteByA, shown(r));
    assert.equal(r.code, 0, shown(r));
    const again = await bootAs(a, 'host-a');
    assert.equal(again.hostWrote, wroteByA, `A's write stayed on its clone\n${shown(again)}`);
    const b = await provision('host-b', 'bootable');
    assert.notEqual(b.copyId, a.copyId);
    const rb = await bootAs(b, 'host-b');
    assert.equal(rb.marker, golden.marker, shown(rb));
    assert.equal(rb.hostWrote, 'none', `B does not see A's write\n${shown(rb)}`);
  });

  step('a template of the golden is built on Ceph too: its version is an RBD image, its spares clones of it', async () => {
    const marker = `rbd-template-${randomBytes(4).toString('hex')}`;
    const r = await serve!.call<{ build: { state: string; version: number } }>('POST', '/v1/templates', {
      name: 'bootable-tpl',
      base: 'bootable',
      partition: { number: 1 },
      filesystem: 'ext',
      rebuild: 'auto',
      params: {},
      files: [{ path: '/marker', mode: 0o644, uid: 0, gid: 0, contentBase64: Buffer.from(`${marker}\n`).toString('base64'), substitute: false }],
      remove: [],
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.equal(r.body.build.state, 'done');
    const tpl = (await serve!.call<ImageRow>('GET', '/v1/images/bootable-tpl')).body;
    assert.equal(tpl.driver, 'rbd', 'a template version lives where its base does');
    assert.match(tpl.volume, /^rbd:/);
    assert.ok(!(await ceph!.cli('rbd', 'ls', ceph!.pool)).split('\n').some((n) => n.startsWith('tmp-')), 'no import temporary left');
    await waitFor('a spare of the template', async () => (await serve!.call<{ ready: number }>('GET', '/v1/pools/bootable-tpl')).body.ready >= 1, 60_000, 100);
    assert.equal((await serve!.call('POST', '/v1/hosts', { id: 'host-t' })).status, 201);
    const t1 = await provision('host-t', 'bootable-tpl');
    const boot = await bootAs(t1, 'host-t');
    assert.equal(boot.marker, marker, `the host boots the template's disk\n${shown(boot)}`);
    assert.equal(await rbdSha256(ceph!, rbdSpec(image.volume)), goldenSha, 'the base golden kept its bytes');
  });

  step('200 concurrent provisions get 200 distinct clones; the golden snapshot is unchanged after every host wrote its whole clone', async (t) => {
    const tiny = join(dir, 'tiny.raw');
    await writeRandomFile(tiny, 4 * MiB);
    const tinySha = await sha256File(tiny);
    const img = await serve!.call<ImageRow>('POST', '/v1/images', { name: 'tiny', path: tiny });
    assert.equal(img.status, 201, JSON.stringify(img.body));
    tinyVolume = img.body.volume;
    assert.equal((await serve!.call('PUT', '/v1/pools/tiny', { min: 200, max: 200 })).status, 200);
    const t0 = Date.now();
    await waitFor('200 clones ready', async () => (await serve!.call<{ ready: number }>('GET', '/v1/pools/tiny')).body.ready >= 200, 300_000, 250);
    t.diagnostic(`200 clones made in ${Date.now() - t0} ms`);
    const hosts = Array.from({ length: 200 }, (_, i) => `r${i}`);
    for (const id of hosts) assert.equal((await serve!.call('POST', '/v1/hosts', { id })).status, 201);
    const replies = await Promise.all(hosts.map((id) => provision(id, 'tiny')));
    assert.equal(new Set(replies.map((r) => r.copyId)).size, 200, '200 distinct copies');
    assert.deepEqual([...new Set(replies.map((r) => r.outcome))], ['warm']);
    const clones = (await ceph!.cli('rbd', 'ls', ceph!.pool)).split('\n').filter((n) => replies.some((r) => n === `copy-${r.copyId}`));
    assert.equal(clones.length, 200, 'each is its own RBD clone');

    // Every host overwrites its whole clone with data of its own, eight at a time.
    const data = join(dir, 'overwrite.raw');
    await writeRandomFile(data, 4 * MiB);
    for (let i = 0; i < replies.length; i += 8) {
      await Promise.all(replies.slice(i, i + 8).map(async (r, k) => ok('nbdcopy', [data, uriFor(r, await keyOf(hosts[i + k]!))])));
    }
    const sample = replies[137]!;
    assert.equal(await rbdSha256(ceph!, `${ceph!.pool}/copy-${sample.copyId}`), await sha256File(data), 'the write reached the clone');
    assert.equal(await rbdSha256(ceph!, rbdSpec(img.body.volume)), tinySha, "the golden's protected snapshot kept its bytes");
    assert.equal(await rbdSha256(ceph!, rbdSpec(image.volume)), goldenSha, 'and so did the bootable one');
  });

  step('a golden with live clones cannot be removed; released, its clones go and then it can', async () => {
    const del = await serve!.call<{ error: { code: string; message: string } }>('DELETE', '/v1/images/tiny@1');
    assert.equal(del.status, 409, JSON.stringify(del.body));
    for (let i = 0; i < 200; i++) assert.equal((await serve!.call('POST', `/v1/hosts/r${i}/release`)).status, 200);
    assert.equal((await serve!.call('PUT', '/v1/pools/tiny', { min: 0, max: 0 })).status, 200);
    await waitFor('the spares of tiny gone', async () => (await serve!.call<{ ready: number; mapped: number }>('GET', '/v1/pools/tiny')).body.ready === 0, 60_000, 200);
    await waitFor('tiny removable', async () => (await serve!.call('DELETE', '/v1/images/tiny@1')).status === 200, 60_000, 500);
    const left = (await ceph!.cli('rbd', 'ls', ceph!.pool)).split('\n');
    const tinyImage = rbdSpec(tinyVolume).split('/')[1]!.split('@')[0]!;
    assert.ok(!left.includes(tinyImage), `${tinyImage} is gone: ${left.join(' ')}`);
    assert.ok(left.includes(`img-${goldenSha}`), 'the other golden stays');
  });

  step('reconcile on start compares the pool with the rows: an orphan clone, an orphan image and an import temporary go; mapped copies stay', async () => {
    const before = (await serve!.call<{ id: string; state: string }[]>('GET', '/v1/copies')).body.filter((c) => c.state === 'mapped' || c.state === 'ready').map((c) => c.id).sort();
    await serve!.kill('SIGKILL');
    const pool = ceph!.pool;
    await ceph!.cli('rbd', 'clone', `${pool}/img-${goldenSha}@sealed`, `${pool}/copy-orphan-1`);
    await ceph!.cli('rbd', 'create', '--size', '4M', `${pool}/tmp-dead~${randomBytes(4).toString('hex')}`);
    const strayImage = `img-${'e'.repeat(64)}`;
    await ceph!.cli('rbd', 'create', '--size', '4M', `${pool}/${strayImage}`);
    await ceph!.cli('rbd', 'snap', 'create', `${pool}/${strayImage}@sealed`);
    await ceph!.cli('rbd', 'snap', 'protect', `${pool}/${strayImage}@sealed`);
    serve = await startServe(join(dir, 'data'), ['--driver', 'rbd', '--ceph-conf', ceph!.confPath, '--ceph-pool', pool, '--ceph-id', ceph!.id]);
    const names = (await ceph!.cli('rbd', 'ls', pool)).split('\n').filter(Boolean);
    assert.ok(!names.includes('copy-orphan-1'), 'the orphan clone is gone');
    assert.ok(!names.some((n) => n.startsWith('tmp-')), 'the import temporary is gone');
    assert.ok(!names.includes(strayImage), 'the image no row names is gone');
    for (const id of before) assert.ok(names.includes(`copy-${id}`), `copy-${id} (a live copy) stays`);
    const events = (await serve.call<{ type: string; subject: string }[]>('GET', '/v1/events?limit=10000')).body.map((e) => `${e.type} ${e.subject}`);
    assert.ok(events.includes('reconcile.orphan-copy orphan-1'), events.filter((e) => e.startsWith('reconcile.')).join('\n'));
    assert.ok(events.some((e) => e.startsWith('reconcile.orphan-image ') && e.includes(strayImage)));
    const again = await provision('host-a', 'bootable');
    assert.equal((await ok('nbdinfo', ['--size', uriFor(again, await keyOf('host-a'))])).trim(), String(golden.sizeBytes), 'host A reaches its copy after the restart');
  });
});
