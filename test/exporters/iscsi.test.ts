/**
 * The iSCSI exporter against a real tgtd it supervises and real initiators: libiscsi's tools and
 * qemu's iscsi driver. Copies are made by the real file driver from a golden image.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ConflictError, InputError, type ExportedCopy, type Mapping } from '../../src/domain/index.js';
import { FileDriver } from '../../src/drivers/index.js';
import { IscsiExporter, newHostAuth, Tgtd, type IscsiHostAuth } from '../../src/exporters/iscsi/index.js';
import { makeTempDir, sha256File, waitFor, writeRandomFile } from '../helpers/files.js';
import { freePort, holdSession, iscsiInq, iscsiLs, qemuIscsi, readCapacity, requireIscsiTools, runTool, type Login } from '../helpers/iscsi-tools.js';

const MiB = 1 << 20;
const SIZE = 8 * MiB;

function mapping(hostId: string, copyId: string): Mapping {
  return { hostId, copyId, source: 'golden', imageId: 'img-1', createdAt: new Date(0).toISOString() };
}

/** How the host logs in with its credentials (and checks the target's, with mutual CHAP). */
function loginOf(auth: IscsiHostAuth): Login {
  return { initiator: auth.initiator, user: auth.chap.user, secret: auth.chap.secret, ...(auth.mutual && { targetUser: auth.mutual.user, targetSecret: auth.mutual.secret }) };
}

describe('iSCSI exporter (tgtd, libiscsi, qemu)', () => {
  let dir: string;
  let driver: FileDriver;
  let tgtd: Tgtd;
  let exporter: IscsiExporter;
  let portal: string;
  let golden: { volume: string; sha256: string; sizeBytes: number };
  const copies: Record<string, ExportedCopy> = {};
  // web-1 logs in with CHAP; Db_2 (an id that is no iSCSI name as it is) with mutual CHAP too.
  const authA = newHostAuth('web-1', 'iqn.2026-01.test.prestage:web-1');
  let authB = newHostAuth('Db_2', 'iqn.2026-01.test.prestage:db-2', { mutual: true });
  let targetA: string;
  let targetB: string;

  before(async () => {
    requireIscsiTools();
    dir = await makeTempDir('prestage-iscsi-');
    driver = await FileDriver.open({ dataDir: join(dir, 'data') });
    await writeRandomFile(join(dir, 'golden.raw'), SIZE);
    golden = await driver.importImage(join(dir, 'golden.raw'));
    for (const id of ['c-a', 'c-b', 'c-a2']) {
      await driver.makeCopy(golden, id);
      copies[id] = { id, volume: driver.copyVolumeFor(id), sizeBytes: SIZE };
    }
    tgtd = new Tgtd({ runDir: join(dir, 'run'), portal: { host: '127.0.0.1', port: await freePort() } });
    exporter = new IscsiExporter({ tgtd });
    await exporter.start();
    portal = exporter.portal;
    await exporter.setHostAuth('web-1', authA);
    await exporter.setHostAuth('Db_2', authB);
    targetA = (await exporter.export(mapping('web-1', 'c-a'), copies['c-a']!)).target;
    targetB = (await exporter.export(mapping('Db_2', 'c-b'), copies['c-b']!)).target;
  });

  after(async () => {
    await exporter?.close();
    await driver?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('hands out the access: portal, target per host, LUN 1, the initiator and CHAP users, no secret', async () => {
    const access = await exporter.export(mapping('Db_2', 'c-b'), copies['c-b']!);
    assert.deepEqual(access, { kind: 'iscsi', portal, target: targetB, lun: 1, initiator: authB.initiator, chapUser: 'Db_2', mutualChapUser: targetB });
    assert.equal(targetA, 'iqn.2026-12.io.prestage:web-1');
    assert.match(targetB, /^iqn\.2026-12\.io\.prestage:db-2:[0-9a-f]{8}$/);
    assert.ok(!JSON.stringify(access).includes(authB.chap.secret) && !JSON.stringify(access).includes(authB.mutual!.secret));
    assert.deepEqual([...exporter.exportedHosts()].sort(), ['Db_2', 'web-1']);
  });

  it("the host's IQN with its CHAP secret sees exactly its LUN, of the copy's size", async () => {
    const ls = await iscsiLs(portal, loginOf(authA));
    assert.equal(ls.code, 0, ls.stderr);
    const targets = ls.stdout.split('\n').filter((l) => l.startsWith('Target:'));
    assert.deepEqual(targets.map((l) => /^Target:(\S+)/.exec(l)?.[1]), [targetA]);
    const disks = ls.stdout.split('\n').filter((l) => /^Lun:\d+\s+Type:DIRECT_ACCESS/.test(l));
    assert.equal(disks.length, 1, ls.stdout);
    assert.match(disks[0]!, /^Lun:1\s/);
    const inq = await iscsiInq(portal, loginOf(authA), targetA);
    assert.equal(inq.code, 0, inq.stderr);
    assert.match(inq.stdout, /Peripheral Device Type:DIRECT_ACCESS/);
    assert.equal(await readCapacity(portal, loginOf(authA), targetA), SIZE);
    // Mutual CHAP: the host checks the target's secret as well.
    assert.equal(await readCapacity(portal, loginOf(authB), targetB), SIZE);
  });

  it("refuses another host's IQN, a wrong CHAP secret, no CHAP, and a target that does not prove itself", async () => {
    const a = loginOf(authA);
    const refusals: [string, Login, string][] = [
      ["another host's IQN with this host's secret", { ...a, initiator: authB.initiator }, targetA],
      ["another host's IQN and secret", { initiator: authB.initiator, user: authB.chap.user, secret: authB.chap.secret }, targetA],
      ['a wrong CHAP secret', { ...a, secret: 'wrong-secret-123' }, targetA],
      ["another host's CHAP account", { ...a, user: authB.chap.user, secret: authB.chap.secret }, targetA],
      ['no CHAP', { initiator: authA.initiator }, targetA],
      ['a wrong secret expected of the target (mutual CHAP)', { ...loginOf(authB), targetSecret: 'not-the-target1' }, targetB],
    ];
    for (const [what, login, target] of refusals) {
      const r = await readCapacity(portal, login, target);
      assert.ok(typeof r !== 'number', `${what}: logged in`);
      assert.notEqual(r.code, 0, what);
      assert.match(r.stderr + r.stdout, /Login Failed|Failed to log in|Authentication|Invalid CHAP_R|Target not found/, what);
    }
    // Discovery shows an initiator only its own target; an unknown initiator sees none.
    const ls = await iscsiLs(portal, { initiator: 'iqn.2026-01.test.prestage:stranger' });
    assert.doesNotMatch(ls.stdout, /Target:/);
  });

  it('the LUN read over iSCSI equals the golden; a host\'s writes reach only its own copy', async () => {
    const a = qemuIscsi(portal, loginOf(authA), targetA);
    const same = await runTool('qemu-img', ['compare', ...a.objects, '-f', 'raw', golden.volume, a.filename]);
    assert.equal(same.code, 0, same.stderr + same.stdout);
    const pattern = 0x5a;
    const write = await runTool('qemu-io', [...a.objects, '-c', `write -P ${pattern} ${MiB} ${64 * 1024}`, '-c', 'flush', a.filename]);
    assert.equal(write.code, 0, write.stderr + write.stdout);
    // The write is in the copy's file...
    const fh = await open(copies['c-a']!.volume, 'r');
    const got = Buffer.alloc(64 * 1024);
    await fh.read(got, 0, got.length, MiB);
    await fh.close();
    assert.ok(got.every((b) => b === pattern));
    // ...and not in the golden, nor in the other host's copy.
    assert.equal(await sha256File(golden.volume), golden.sha256);
    assert.equal(await sha256File(copies['c-b']!.volume), golden.sha256);
    const differs = await runTool('qemu-img', ['compare', ...a.objects, '-f', 'raw', golden.volume, a.filename]);
    assert.equal(differs.code, 1, differs.stderr + differs.stdout);
    const b = qemuIscsi(portal, loginOf(authB), targetB);
    const bSame = await runTool('qemu-img', ['compare', ...b.objects, '-f', 'raw', golden.volume, b.filename]);
    assert.equal(bSame.code, 0, bSame.stderr + bSame.stdout);
  });

  it('exporting the exported copy again changes nothing; another copy for a mapped host is a conflict', async () => {
    const before = await tgtd.admin.targets();
    const again = await exporter.export(mapping('web-1', 'c-a'), copies['c-a']!);
    assert.equal(again.target, targetA);
    await assert.rejects(exporter.export(mapping('web-1', 'c-a2'), copies['c-a2']!), (e: unknown) => e instanceof ConflictError && /c-a/.test(e.message));
    assert.deepEqual(await tgtd.admin.targets(), before);
  });

  it('refuses bad names and secrets with a clear error and changes nothing', async () => {
    const targets = await tgtd.admin.targets();
    const accounts = await tgtd.admin.accounts();
    const good = newHostAuth('web-3', 'iqn.2026-01.test.prestage:web-3', { mutual: true });
    const bad: [string, IscsiHostAuth, RegExp][] = [
      ['uppercase IQN', { ...good, initiator: 'iqn.2026-01.Test.prestage:web-3' }, /lowercase/],
      ['not an IQN', { ...good, initiator: 'web-3' }, /not an iSCSI name/],
      ['bad month', { ...good, initiator: 'iqn.2026-13.test:web-3' }, /not an iSCSI name/],
      ['too long', { ...good, initiator: `iqn.2026-01.test:${'x'.repeat(220)}` }, /223 bytes/],
      ['short secret', { ...good, chap: { user: 'web-3', secret: 'short-secret'.slice(0, 8) } }, /12-16 characters/],
      ['long secret', { ...good, chap: { user: 'web-3', secret: 'a'.repeat(17) } }, /12-16 characters/],
      ['comma in secret', { ...good, chap: { user: 'web-3', secret: 'abc,defghijklm' } }, /CHAP secret is not allowed/],
      ['comma in user', { ...good, chap: { user: 'web,3', secret: good.chap.secret } }, /CHAP user/],
      ['same secret both ways', { ...good, mutual: { user: good.mutual!.user, secret: good.chap.secret } }, /must differ/],
    ];
    for (const [what, auth, message] of bad) {
      await assert.rejects(exporter.setHostAuth('web-3', auth), (e: unknown) => e instanceof InputError && message.test(e.message) && !e.message.includes(auth.chap.secret), what);
    }
    await assert.rejects(exporter.setHostAuth('web 3', good), InputError);
    // Another host's initiator name or CHAP user is taken.
    await assert.rejects(exporter.setHostAuth('web-3', { ...good, initiator: authA.initiator }), (e: unknown) => e instanceof ConflictError && /web-1/.test(e.message));
    await assert.rejects(exporter.setHostAuth('web-3', { ...good, chap: { user: 'web-1', secret: good.chap.secret } }), ConflictError);
    // A host without credentials, and a volume that is not a file, are refused before tgtd is touched.
    await assert.rejects(exporter.export(mapping('web-3', 'c-a2'), copies['c-a2']!), (e: unknown) => e instanceof ConflictError && /no iSCSI initiator name/.test(e.message));
    await exporter.setHostAuth('web-3', good);
    await assert.rejects(exporter.export(mapping('web-3', 'c-x'), { id: 'c-x', volume: 'rbd:pool/copy-c-x', sizeBytes: SIZE }), (e: unknown) => e instanceof ConflictError && /not a local file.*rbd/.test(e.message));
    await assert.rejects(exporter.export(mapping('web-3', 'c-y'), { id: 'c-y', volume: join(dir, 'missing.raw'), sizeBytes: SIZE }), ConflictError);
    await exporter.setHostAuth('web-3', null);
    await assert.rejects(exporter.setHostAuth('web-1', null), (e: unknown) => e instanceof ConflictError && /unexport it/.test(e.message));
    assert.deepEqual(await tgtd.admin.targets(), targets);
    assert.deepEqual(await tgtd.admin.accounts(), accounts);
    assert.equal(await readCapacity(portal, loginOf(authA), targetA), SIZE);
  });

  it('re-applies every target after tgtd is killed with SIGKILL', async () => {
    const before = await tgtd.admin.targets();
    const { pid, restarts } = tgtd.status();
    const { reapplied } = exporter.status();
    assert.ok(pid);
    process.kill(pid, 'SIGKILL');
    await waitFor('tgtd back with its targets', () => Promise.resolve(exporter.status().reapplied === reapplied + 1));
    assert.equal(tgtd.status().restarts, restarts + 1);
    assert.notEqual(tgtd.status().pid, pid);
    assert.deepEqual(
      (await tgtd.admin.targets()).map((t) => ({ ...t, sessions: [] })),
      before.map((t) => ({ ...t, sessions: [] })),
    );
    assert.equal(await readCapacity(portal, loginOf(authA), targetA), SIZE);
    assert.equal(await readCapacity(portal, loginOf(authB), targetB), SIZE);
    const stillRefused = await readCapacity(portal, { ...loginOf(authA), secret: 'wrong-secret-123' }, targetA);
    assert.ok(typeof stillRefused !== 'number');
  });

  it('new credentials for an exported host end its session; the old secret is refused', async () => {
    const session = holdSession(portal, loginOf(authB), targetB);
    try {
      await waitFor('a session of Db_2', async () => (await exporter.sessions()).some((s) => s.hostId === 'Db_2'));
      const next = newHostAuth('Db_2', authB.initiator, { mutual: true });
      await exporter.setHostAuth('Db_2', next);
      // The old session's reconnect uses the old secret: refused, so the tool gives up.
      const { code } = await session.exited;
      assert.notEqual(code, 0);
      assert.ok(!(await exporter.sessions()).some((s) => s.hostId === 'Db_2'));
      assert.ok(typeof (await readCapacity(portal, loginOf(authB), targetB)) !== 'number');
      assert.equal(await readCapacity(portal, loginOf(next), targetB), SIZE);
      authB = next;
    } finally {
      session.child.kill('SIGKILL');
    }
  });

  it('release removes the LUN and the target and ends the session at once, without a tgtd restart', async () => {
    const { pid, restarts } = tgtd.status();
    const session = holdSession(portal, loginOf(authA), targetA);
    try {
      await waitFor('a session of web-1', async () => (await exporter.sessions()).some((s) => s.hostId === 'web-1'));
      await exporter.unexport('web-1');
      assert.ok(!(await exporter.sessions()).some((s) => s.target === targetA));
      const targets = await tgtd.admin.targets();
      assert.ok(!targets.some((t) => t.name === targetA));
      assert.ok(!(await tgtd.admin.accounts()).includes('web-1'));
      const { code, output } = await session.exited;
      assert.notEqual(code, 0);
      assert.match(output, /Target not found|Failed to log in|failed/i);
      assert.ok(typeof (await readCapacity(portal, loginOf(authA), targetA)) !== 'number');
      assert.deepEqual(exporter.exportedHosts(), ['Db_2']);
      // The other host is untouched, and tgtd did not go down on the way.
      assert.equal(await readCapacity(portal, loginOf(authB), targetB), SIZE);
      assert.equal(tgtd.status().pid, pid);
      assert.equal(tgtd.status().restarts, restarts);
      await exporter.unexport('web-1'); // again: nothing to do
    } finally {
      session.child.kill('SIGKILL');
    }
  });

  it('a target made behind its back holds the next id: the export takes another and leaves that one alone', async () => {
    const taken = new Set((await tgtd.admin.targets()).map((t) => t.tid));
    let next = 1;
    while (taken.has(next)) next++;
    await tgtd.admin.newTarget(next, 'iqn.2026-01.test.prestage:by-hand');
    const authC = newHostAuth('web-5', 'iqn.2026-01.test.prestage:web-5');
    await exporter.setHostAuth('web-5', authC);
    const access = await exporter.export(mapping('web-5', 'c-a2'), copies['c-a2']!);
    const now = await tgtd.admin.targets();
    assert.ok(now.some((t) => t.tid === next && t.name === 'iqn.2026-01.test.prestage:by-hand' && t.luns.length === 1), 'the hand-made target is untouched');
    assert.ok(now.some((t) => t.tid !== next && t.name === access.target));
    assert.equal(await readCapacity(portal, loginOf(authC), access.target), SIZE);
    await exporter.unexport('web-5');
    await exporter.setHostAuth('web-5', null);
    await tgtd.admin.deleteTarget(next);
  });

  it('reconcile exports exactly the mappings given and removes any other target', async () => {
    // A target nobody asked for, open to all, as a crash or a hand might leave one.
    await tgtd.admin.newTarget(40, 'iqn.2026-01.test.prestage:stray');
    await tgtd.admin.newLun(40, 1, { path: copies['c-a2']!.volume, type: 'rdwr' });
    await runTool('tgtadm', ['-C', '0', '--lld', 'iscsi', '--op', 'bind', '--mode', 'target', '--tid', '40', '-I', 'ALL'], { TGT_IPC_SOCKET: join(dir, 'run', 'tgtd') });
    assert.ok((await tgtd.admin.targets()).some((t) => t.tid === 40 && t.acl.includes('ALL')));
    const report = await exporter.reconcile([
      { mapping: mapping('web-1', 'c-a'), copy: copies['c-a']! },
      { mapping: mapping('Db_2', 'c-b'), copy: copies['c-b']! },
      { mapping: mapping('nobody', 'c-n'), copy: copies['c-a2']! },
    ]);
    assert.deepEqual([...report.exported].sort(), ['Db_2', 'web-1']);
    assert.deepEqual(report.failed.map((f) => f.hostId), ['nobody']);
    const names = (await tgtd.admin.targets()).map((t) => t.name).sort();
    assert.deepEqual(names, [targetB, targetA].sort());
    assert.equal(await readCapacity(portal, loginOf(authA), targetA), SIZE);
    assert.equal(await readCapacity(portal, loginOf(authB), targetB), SIZE);
  });
});
