/** The iSCSI exporter's pure parts: names and secrets, tgtadm's output, tgtd's request layout. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { InputError } from '../../src/domain/index.js';
import { checkChapSecret, checkChapUser, checkIscsiName, newChapSecret, newHostAuth, targetNameFor } from '../../src/exporters/iscsi/names.js';
import { controlPortOf } from '../../src/exporters/iscsi/proc.js';
import { parseAccounts, parseConnections, parsePortals, parseSystem, parseTargets } from '../../src/exporters/iscsi/tgtadm-show.js';
import { decodeReply, encodeRequest, TGT_MODE, TGT_OP } from '../../src/exporters/iscsi/tgtd-ipc.js';

describe('iSCSI names and secrets', () => {
  it('accepts RFC 3720 names and refuses the rest with the reason', () => {
    for (const ok of ['iqn.2026-12.io.prestage:web-1', 'iqn.1991-05.com.microsoft:host.example.com', 'iqn.2001-04.com.example', 'iqn.2026-01.test:a:b.c', 'eui.02004567A425678D', 'naa.52004567BA64678D', 'naa.62004567BA64678D0123456789ABCDEF']) {
      assert.equal(checkIscsiName(ok), ok);
    }
    const bad: [string, RegExp][] = [
      ['', /missing/],
      ['iqn.2026-12.IO.prestage:web', /lowercase/],
      ['iqn.2026-00.io.prestage', /not an iSCSI name/],
      ['iqn.26-01.io.prestage', /not an iSCSI name/],
      ['iqn.2026-01.-bad.label', /not an iSCSI name/],
      ['iqn.2026-01.io.prestage:under_score', /not an iSCSI name/],
      ['iqn.2026-01.io.prestage:sp ace', /not an iSCSI name/],
      ['iqn.2026-01.io.prestage:', /not an iSCSI name/],
      ['eui.0123', /not an iSCSI name/],
      ['naa.0123456789abcdef0', /not an iSCSI name/],
      ['web-1', /not an iSCSI name/],
      [`iqn.2026-01.io.prestage:${'a'.repeat(200)}`, /223 bytes/],
      ['iqn.2026-01.io.prestage:x\nALL', /not an iSCSI name/],
    ];
    for (const [name, message] of bad) assert.throws(() => checkIscsiName(name), (e: unknown) => e instanceof InputError && message.test(e.message), JSON.stringify(name));
  });

  it("checks CHAP users and secrets against tgt's separators and initiators' limits, never quoting a secret", () => {
    assert.equal(checkChapUser('Db_2'), 'Db_2');
    assert.equal(checkChapUser('iqn.2026-12.io.prestage:db-2'), 'iqn.2026-12.io.prestage:db-2');
    for (const bad of ['', 'a,b', 'a=b', 'a b', 'a%b', 'a@b', 'x'.repeat(224)]) assert.throws(() => checkChapUser(bad), InputError, bad);
    assert.equal(checkChapSecret('abcdefghijkl'), 'abcdefghijkl');
    assert.equal(checkChapSecret('A-b_c.d~e0123456'), 'A-b_c.d~e0123456');
    for (const bad of ['abcdefghijk', 'abcdefghijklmnopq', 'abcdefgh,ijkl', 'abcdefgh=ijkl', 'abcdefgh ijkl', 'abcdefgh%ijkl', 'abcdefgh\u00e9ijkl']) {
      assert.throws(() => checkChapSecret(bad), (e: unknown) => e instanceof InputError && !e.message.includes(bad), bad);
    }
  });

  it('makes 16-character secrets of 96 random bits, and mutual ones that differ', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 100; i++) {
      const s = newChapSecret();
      assert.equal(checkChapSecret(s), s);
      assert.equal(s.length, 16);
      seen.add(s);
    }
    assert.equal(seen.size, 100);
    const auth = newHostAuth('Db_2', 'iqn.2026-01.test:db-2', { mutual: true });
    assert.equal(auth.chap.user, 'Db_2');
    assert.equal(auth.mutual?.user, targetNameFor('Db_2'));
    assert.notEqual(auth.chap.secret, auth.mutual?.secret);
    assert.ok(Object.isFrozen(auth) && Object.isFrozen(auth.chap));
  });

  it('names a target per host; ids that are no iSCSI name as they are get a hash no other id can produce', () => {
    assert.equal(targetNameFor('web-1'), 'iqn.2026-12.io.prestage:web-1');
    assert.equal(targetNameFor('web-1', 'iqn.2001-04.com.example'), 'iqn.2001-04.com.example:web-1');
    const upper = targetNameFor('Web-1');
    const underscore = targetNameFor('web_1');
    assert.match(upper, /^iqn\.2026-12\.io\.prestage:web-1:[0-9a-f]{8}$/);
    assert.match(underscore, /^iqn\.2026-12\.io\.prestage:web-1:[0-9a-f]{8}$/);
    assert.equal(new Set([targetNameFor('web-1'), upper, underscore, targetNameFor('WEB_1')]).size, 4);
    assert.equal(targetNameFor('Web-1'), upper); // stable
    assert.throws(() => targetNameFor('web 1'), InputError);
    assert.throws(() => targetNameFor('web-1', 'iqn.2026-12.io.prestage:x'), InputError);
    assert.throws(() => targetNameFor('web-1', 'prestage'), InputError);
  });
});

describe("tgtadm's output", () => {
  it('reads the system: state, drivers, backing stores', () => {
    const text = `System:
    State: ready
    debug: off
LLDs:
    iscsi: ready
    iser: error
Backing stores:
    sheepdog
    bsg
    null
    rdwr (bsoflags sync:direct)
    aio
Device types:
    disk
iSNS:
    iSNS=Off
`;
    assert.deepEqual(parseSystem(text), { state: 'ready', llds: { iscsi: 'ready', iser: 'error' }, backingStores: ['sheepdog', 'bsg', 'null', 'rdwr', 'aio'] });
  });

  it('reads portals and accounts', () => {
    assert.deepEqual(parsePortals('Portal: 127.0.0.1:13260,1\nPortal: [::]:3260,1\n'), ['127.0.0.1:13260', '[::]:3260']);
    assert.deepEqual(parseAccounts('Account list:\n    h1\n    iqn.2026-12.io.prestage:h1\n'), ['h1', 'iqn.2026-12.io.prestage:h1']);
    assert.deepEqual(parseAccounts(''), []);
  });

  it('reads targets with their sessions, LUNs, accounts and ACL', () => {
    const text = `Target 1: iqn.2026-12.io.prestage:h1
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
        I_T nexus: 5
            Initiator: iqn.2026-01.test:init1 alias: none
            Connection: 0
                IP Address: 127.0.0.1
    LUN information:
        LUN: 0
            Type: controller
            SCSI ID: IET     00010000
            Size: 0 MB, Block size: 1
            Backing store type: null
            Backing store path: None
            Backing store flags: 
        LUN: 1
            Type: disk
            SCSI ID: IET     00010001
            Size: 67 MB, Block size: 512
            Backing store type: rdwr
            Backing store path: /data/copies/c 1.raw
            Backing store flags: 
    Account information:
        h1
        iqn.2026-12.io.prestage:h1 (outgoing)
    ACL information:
        iqn.2026-01.test:init1
Target 2: iqn.2026-12.io.prestage:h2
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
    LUN information:
        LUN: 0
            Type: controller
            Backing store type: null
            Backing store path: None
    Account information:
    ACL information:
        ALL
`;
    assert.deepEqual(parseTargets(text), [
      {
        tid: 1,
        name: 'iqn.2026-12.io.prestage:h1',
        state: 'ready',
        sessions: [{ sid: 5, initiator: 'iqn.2026-01.test:init1', cid: 0, address: '127.0.0.1' }],
        luns: [
          { lun: 0, type: 'controller', backingStoreType: 'null', backingStorePath: 'None' },
          { lun: 1, type: 'disk', backingStoreType: 'rdwr', backingStorePath: '/data/copies/c 1.raw' },
        ],
        incomingAccounts: ['h1'],
        outgoingAccount: 'iqn.2026-12.io.prestage:h1',
        acl: ['iqn.2026-01.test:init1'],
      },
      { tid: 2, name: 'iqn.2026-12.io.prestage:h2', state: 'ready', sessions: [], luns: [{ lun: 0, type: 'controller', backingStoreType: 'null', backingStorePath: 'None' }], incomingAccounts: [], outgoingAccount: null, acl: ['ALL'] },
    ]);
    assert.deepEqual(parseTargets(''), []);
  });

  it('reads the connections of a target, several per session', () => {
    const text = `Session: 5
    Connection: 0
        Initiator: iqn.2026-01.test:init1
        IP Address: 127.0.0.1
    Connection: 1
        Initiator: iqn.2026-01.test:init1
        IP Address: 127.0.0.2
Session: 7
    Connection: 0
        Initiator: iqn.2026-01.test:init1
        IP Address: ::1
`;
    assert.deepEqual(parseConnections(text), [
      { sid: 5, cid: 0, initiator: 'iqn.2026-01.test:init1', address: '127.0.0.1' },
      { sid: 5, cid: 1, initiator: 'iqn.2026-01.test:init1', address: '127.0.0.2' },
      { sid: 7, cid: 0, initiator: 'iqn.2026-01.test:init1', address: '::1' },
    ]);
  });

  it("finds tgtd's control port in its command line", () => {
    assert.equal(controlPortOf(['tgtd', '-f']), 0);
    assert.equal(controlPortOf(['tgtd', '-f', '-C', '7', '--iscsi', 'portal=1.2.3.4:3260']), 7);
    assert.equal(controlPortOf(['tgtd', '--control-port', '12']), 12);
    assert.equal(controlPortOf(['tgtd', '--control-port=13']), 13);
    assert.equal(controlPortOf(['tgtd', '-C14']), 14);
  });
});

describe("tgtd's control socket request", () => {
  it("lays out struct tgtadm_req: header, lld, length, tid, then the NUL-terminated parameters", () => {
    const buf = encodeRequest({ mode: TGT_MODE.account, op: TGT_OP.new, params: 'user=h1,password=abcdefghijkl' });
    const body = 'user=h1,password=abcdefghijkl\0';
    assert.equal(buf.length, 120 + body.length);
    assert.equal(buf.readUInt32LE(0), 7);
    assert.equal(buf.readUInt32LE(4), 0);
    assert.equal(buf.subarray(8, 13).toString(), 'iscsi');
    assert.equal(buf[13], 0);
    assert.equal(buf.readUInt32LE(72), buf.length);
    assert.equal(buf.readInt32LE(76), -1, 'no target, as tgtadm sends it');
    assert.equal(buf.readBigUInt64LE(80), 0n);
    assert.equal(buf.readBigUInt64LE(88), 0xffff_ffff_ffff_ffffn, 'no LUN, as tgtadm sends it');
    assert.ok(buf.subarray(96, 120).every((b) => b === 0));
    assert.equal(buf.subarray(120).toString(), body);
  });

  it('places the target, session, connection, LUN, account direction and force where tgtd reads them', () => {
    const buf = encodeRequest({ mode: TGT_MODE.connection, op: TGT_OP.delete, tid: 7, sid: 0x1_0000_0001, cid: 3, lun: 1, acDir: 1, force: true, params: '' });
    assert.deepEqual(
      [buf.readUInt32LE(0), buf.readUInt32LE(4), buf.readInt32LE(76), buf.readBigUInt64LE(80), buf.readBigUInt64LE(88), buf.readUInt32LE(96), buf.readUInt32LE(108), buf.readUInt32LE(116)],
      [6, 1, 7, 0x1_0000_0001n, 1n, 3, 1, 1],
    );
  });

  it("reads tgtd's reply and names its error as tgtadm does", () => {
    const header = Buffer.alloc(8);
    header.writeUInt32LE(14, 0);
    header.writeUInt32LE(8, 4);
    assert.deepEqual(decodeReply(header), { err: 14, message: 'this account already exists', text: '' });
    const ok = Buffer.concat([Buffer.from([0, 0, 0, 0, 12, 0, 0, 0]), Buffer.from('ok\n\0')]);
    assert.deepEqual(decodeReply(ok), { err: 0, message: 'success', text: 'ok\n' });
    assert.throws(() => decodeReply(Buffer.alloc(3)), /shorter than its header/);
  });
});
