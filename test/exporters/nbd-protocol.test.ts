import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  ALLOCATION_CONTEXT_ID,
  Handshake,
  NbdProtocolError,
  execute,
  nbdProtocol as p,
  type HandshakeConfig,
  type HandshakeOutput,
  type NbdExportInfo,
  type TransmissionContext,
} from '../../src/exporters/nbd/index.js';
import { MemoryDevice, decodeOptionReplies, twoPieces, type OptionReply } from './nbd-helpers.js';

const hex = (b: Buffer) => b.toString('hex');

describe('NBD serializers', () => {
  it('write the bytes the spec lays out', () => {
    assert.equal(hex(p.serverGreeting()), '4e42444d41474943' + '49484156454f5054' + '0003');
    assert.equal(hex(p.optionReply(p.NBD_OPT.ABORT, p.NBD_REP.ACK)), '0003e889045565a9' + '00000002' + '00000001' + '00000000');
    assert.equal(hex(p.optionError(7, p.NBD_REP.ERR_UNKNOWN, 'no')), '0003e889045565a9' + '00000007' + '80000006' + '00000002' + '6e6f');
    assert.equal(hex(p.serverEntry(3, 'ab', 'd')), '0003e889045565a9' + '00000003' + '00000002' + '00000007' + '00000002' + '6162' + '64');
    assert.equal(hex(p.infoExport(7, 0x1_0000_0000, 0x1ed).subarray(20)), '0000' + '0000000100000000' + '01ed');
    assert.equal(hex(p.infoName(7, 'x').subarray(16)), '00000003' + '0001' + '78');
    assert.equal(hex(p.infoDescription(6, 'y').subarray(20)), '0002' + '79');
    assert.equal(hex(p.infoBlockSize(7, 1, 4096, 32 << 20).subarray(16)), '0000000e' + '0003' + '00000001' + '00001000' + '02000000');
    assert.equal(hex(p.metaContext(10, 1, 'base:allocation').subarray(12)), '00000004' + '00000013' + '00000001' + Buffer.from('base:allocation').toString('hex'));
    assert.equal(hex(p.exportNameReply(512, 0x10d, true)), '0000000000000200' + '010d');
    assert.equal(p.exportNameReply(512, 0x10d, false).length, 10 + 124);
    assert.ok(p.exportNameReply(512, 0x10d, false).subarray(10).every((b) => b === 0));
  });

  it('write transmission replies', () => {
    assert.equal(hex(p.simpleReply(0x0102030405060708n, 22)), '67446698' + '00000016' + '0102030405060708');
    assert.equal(hex(p.offsetDataHeader(9n, 4096, 512, true)), '668e33ef' + '0001' + '0001' + '0000000000000009' + '00000208' + '0000000000001000');
    assert.equal(hex(p.structuredError(9n, 5, 'io')), '668e33ef' + '0001' + '8001' + '0000000000000009' + '00000008' + '00000005' + '0002' + '696f');
    assert.equal(hex(p.offsetHole(9n, 512, 4096, false)), '668e33ef' + '0000' + '0002' + '0000000000000009' + '0000000c' + '0000000000000200' + '00001000');
    assert.equal(hex(p.structuredErrorOffset(9n, 5, 512, 'x')), '668e33ef' + '0001' + '8002' + '0000000000000009' + '0000000f' + '00000005' + '0001' + '78' + '0000000000000200');
    assert.equal(hex(p.structuredNone(9n)), '668e33ef' + '0001' + '0000' + '0000000000000009' + '00000000');
    assert.equal(
      hex(p.blockStatusReply(9n, 1, [{ length: 4096, flags: 3 }, { length: 512, flags: 0 }])),
      '668e33ef' + '0001' + '0005' + '0000000000000009' + '00000014' + '00000001' + '00001000' + '00000003' + '00000200' + '00000000',
    );
  });

  it('cut error messages to 4096 bytes without splitting a character', () => {
    const long = 'é'.repeat(3000); // 6000 bytes
    const reply = p.structuredError(1n, 5, long);
    const msgLength = reply.readUInt16BE(24);
    assert.ok(msgLength <= 4096);
    assert.equal(reply.subarray(26).toString('utf8'), 'é'.repeat(msgLength / 2));
  });
});

describe('NBD parsers', () => {
  const negotiation = Buffer.concat([
    p.clientFlags(p.NBD_FLAG_C_FIXED_NEWSTYLE | p.NBD_FLAG_C_NO_ZEROES),
    p.clientOption(p.NBD_OPT.STRUCTURED_REPLY),
    p.clientOption(p.NBD_OPT.GO, p.infoRequestData('disk', [p.NBD_INFO.BLOCK_SIZE])),
    p.clientOption(99, Buffer.from('whatever')),
  ]);
  const parseOptions = (pieces: Buffer[]) => {
    const parser = new p.OptionParser(65536);
    const out = [];
    for (const piece of pieces) {
      parser.push(piece);
      for (let m = parser.next(); m !== undefined; m = parser.next()) out.push(m);
    }
    return out;
  };

  it('read negotiation split at every byte', () => {
    const whole = parseOptions([negotiation]);
    assert.deepEqual(whole, [
      { kind: 'flags', flags: 3 },
      { kind: 'option', option: p.NBD_OPT.STRUCTURED_REPLY, data: Buffer.alloc(0) },
      { kind: 'option', option: p.NBD_OPT.GO, data: p.infoRequestData('disk', [3]) },
      { kind: 'option', option: 99, data: Buffer.from('whatever') },
    ]);
    for (const pieces of twoPieces(negotiation)) assert.deepEqual(parseOptions(pieces), whole);
    assert.deepEqual(parseOptions([...negotiation].map((b) => Buffer.from([b]))), whole);
  });

  it('refuse a bad magic and an option over the length limit', () => {
    const parser = new p.OptionParser(100);
    parser.push(Buffer.concat([p.clientFlags(1), p.clientOption(1, Buffer.alloc(101))]));
    assert.equal(parser.next()?.kind, 'flags');
    assert.throws(() => parser.next(), NbdProtocolError);
    const bad = new p.OptionParser(100);
    bad.push(Buffer.concat([p.clientFlags(1), Buffer.from('IHAVEOPX'), Buffer.alloc(8)]));
    bad.next();
    assert.throws(() => bad.next(), NbdProtocolError);
  });

  const requests = [
    { flags: 0, type: p.NBD_CMD.READ, handle: 1n, offset: 0, length: 4096 },
    { flags: p.NBD_CMD_FLAG.FUA, type: p.NBD_CMD.WRITE, handle: 0xffffffffffffffffn, offset: 512, length: 5, data: Buffer.from('hello') },
    { flags: 0, type: p.NBD_CMD.FLUSH, handle: 3n, offset: 0, length: 0 },
    { flags: 0, type: p.NBD_CMD.WRITE, handle: 4n, offset: 2 ** 40, length: 3, data: Buffer.from('abc') },
    { flags: 0, type: p.NBD_CMD.DISC, handle: 5n, offset: 0, length: 0 },
  ];
  const stream = Buffer.concat(requests.map((r) => p.clientRequest(r)));
  const parseRequests = (pieces: Buffer[]) => {
    const parser = new p.RequestParser(1 << 20);
    const out = [];
    for (const piece of pieces) {
      parser.push(piece);
      for (let r = parser.next(); r !== undefined; r = parser.next()) out.push({ ...r, ...(r.data ? { data: Buffer.from(r.data) } : {}) });
    }
    return out;
  };

  it('read requests and write payloads split at every byte', () => {
    assert.deepEqual(parseRequests([stream]), requests);
    for (const pieces of twoPieces(stream)) assert.deepEqual(parseRequests(pieces), requests);
    assert.deepEqual(parseRequests([...stream].map((b) => Buffer.from([b]))), requests);
  });

  it('refuse a bad request magic and a write over the payload limit', () => {
    const parser = new p.RequestParser(1024);
    parser.push(p.clientRequest({ flags: 0, type: p.NBD_CMD.WRITE, handle: 1n, offset: 0, length: 1025 }));
    assert.throws(() => parser.next(), NbdProtocolError);
    const bad = new p.RequestParser(1024);
    bad.push(Buffer.alloc(28, 0x41));
    assert.throws(() => bad.next(), NbdProtocolError);
    // A READ of any length carries no payload: it is the server's to refuse, not the parser's.
    const read = new p.RequestParser(1024);
    read.push(p.clientRequest({ flags: 0, type: p.NBD_CMD.READ, handle: 1n, offset: 0, length: 0xffffffff }));
    assert.equal(read.next()?.length, 0xffffffff);
  });

  it('decode option data, refusing anything malformed', () => {
    assert.deepEqual(p.parseInfoRequest(p.infoRequestData('disk', [1, 3])), { name: 'disk', requests: [1, 3] });
    assert.equal(p.parseInfoRequest(Buffer.concat([p.infoRequestData('disk', [1]), Buffer.from([0])])), undefined);
    assert.equal(p.parseInfoRequest(Buffer.from([0, 0, 0, 9, 0, 0])), undefined);
    assert.equal(p.parseInfoRequest(p.infoRequestData('a\0b')), undefined, 'NUL in a name');
    assert.equal(p.parseInfoRequest(Buffer.from([0, 0, 0, 1, 0xff, 0, 0])), undefined, 'not UTF-8');
    assert.equal(p.parseInfoRequest(p.infoRequestData('x'.repeat(4097))), undefined, 'over 4096 bytes');
    assert.deepEqual(p.parseMetaContextRequest(p.metaContextRequestData('disk', ['base:allocation', 'x:y'])), { exportName: 'disk', queries: ['base:allocation', 'x:y'] });
    assert.equal(p.parseMetaContextRequest(p.metaContextRequestData('disk', ['q']).subarray(0, -1)), undefined);
    const hugeCount = Buffer.concat([p.metaContextRequestData('disk', []).subarray(0, -4), Buffer.from([0xff, 0xff, 0xff, 0xff])]);
    assert.equal(p.parseMetaContextRequest(hugeCount), undefined);
  });
});

// ---------------------------------------------------------------------------------------------

interface TestExport extends NbdExportInfo {
  readonly hostId: string;
}
const DISK_A: TestExport = { name: 'disk-a', size: 1 << 20, readOnly: false, description: 'A', hostId: 'host-a' };
const DISK_B: TestExport = { name: 'secret-b', size: 0x0bad_5000, readOnly: false, hostId: 'host-b' };
const EXPORTS = [DISK_A, DISK_B];

function config(tlsRequired: boolean): HandshakeConfig<TestExport> {
  // Without TLS nobody is identified: the tests then let every client see disk-a only.
  const visible = (identity: string | null, e: TestExport) => (tlsRequired ? e.hostId === identity : e === DISK_A);
  return {
    tlsRequired,
    maxOptionLength: 65536,
    maxOptionsBeforeTls: 32,
    maxOptions: 256,
    blockSizes: { min: 1, preferred: 4096, max: 32 << 20 },
    authorize: (identity, name) => EXPORTS.find((e) => e.name === name && visible(identity, e)),
    list: (identity) => EXPORTS.filter((e) => visible(identity, e)),
  };
}

/**
 * Feeds pieces until the machine stops asking for more; returns all it sent, its last step and
 * the pieces it was not given.
 */
function converse(hs: Handshake<TestExport>, pieces: Buffer[]): { sent: Buffer; last: HandshakeOutput<TestExport>['next']; unfed: Buffer } {
  const sent: Buffer[] = [];
  let last: HandshakeOutput<TestExport>['next'] = { kind: 'continue' };
  let i = 0;
  while (i < pieces.length && last.kind === 'continue') {
    const out = hs.receive(pieces[i++] ?? Buffer.alloc(0));
    sent.push(...out.send);
    last = out.next;
  }
  return { sent: Buffer.concat(sent), last, unfed: Buffer.concat(pieces.slice(i)) };
}

const opt = (option: number, data?: Buffer) => p.clientOption(option, data);
const FLAGS = p.clientFlags(p.NBD_FLAG_C_FIXED_NEWSTYLE | p.NBD_FLAG_C_NO_ZEROES);

describe('NBD handshake without TLS', () => {
  const read = p.clientRequest({ flags: 0, type: p.NBD_CMD.READ, handle: 7n, offset: 0, length: 512 });
  const conversation = Buffer.concat([
    FLAGS,
    opt(p.NBD_OPT.LIST),
    opt(p.NBD_OPT.STRUCTURED_REPLY),
    opt(p.NBD_OPT.SET_META_CONTEXT, p.metaContextRequestData('disk-a', ['base:allocation'])),
    opt(p.NBD_OPT.INFO, p.infoRequestData('disk-a', [p.NBD_INFO.NAME, p.NBD_INFO.DESCRIPTION, p.NBD_INFO.BLOCK_SIZE])),
    opt(p.NBD_OPT.INFO, p.infoRequestData('secret-b')),
    opt(p.NBD_OPT.STARTTLS),
    opt(p.NBD_OPT.EXTENDED_HEADERS),
    opt(p.NBD_OPT.GO, p.infoRequestData('disk-a')),
    read,
  ]);

  it('answers every option and enters transmission, however the bytes are split', () => {
    const whole = converse(new Handshake(config(false)), [conversation]);
    const replies = decodeOptionReplies(whole.sent);
    const summary = replies.map((r) => [r.option, r.type]);
    assert.deepEqual(summary, [
      [p.NBD_OPT.LIST, p.NBD_REP.SERVER],
      [p.NBD_OPT.LIST, p.NBD_REP.ACK],
      [p.NBD_OPT.STRUCTURED_REPLY, p.NBD_REP.ACK],
      [p.NBD_OPT.SET_META_CONTEXT, p.NBD_REP.META_CONTEXT],
      [p.NBD_OPT.SET_META_CONTEXT, p.NBD_REP.ACK],
      [p.NBD_OPT.INFO, p.NBD_REP.INFO],
      [p.NBD_OPT.INFO, p.NBD_REP.INFO],
      [p.NBD_OPT.INFO, p.NBD_REP.INFO],
      [p.NBD_OPT.INFO, p.NBD_REP.INFO],
      [p.NBD_OPT.INFO, p.NBD_REP.ACK],
      [p.NBD_OPT.INFO, p.NBD_REP.ERR_UNKNOWN],
      [p.NBD_OPT.STARTTLS, p.NBD_REP.ERR_POLICY],
      [p.NBD_OPT.EXTENDED_HEADERS, p.NBD_REP.ERR_UNSUP],
      [p.NBD_OPT.GO, p.NBD_REP.INFO],
      [p.NBD_OPT.GO, p.NBD_REP.INFO],
      [p.NBD_OPT.GO, p.NBD_REP.ACK],
    ]);
    const infos = replies.filter((r) => r.type === p.NBD_REP.INFO && r.option === p.NBD_OPT.INFO).map((r) => r.data);
    assert.deepEqual(infos.map((d) => d.readUInt16BE(0)), [p.NBD_INFO.EXPORT, p.NBD_INFO.NAME, p.NBD_INFO.DESCRIPTION, p.NBD_INFO.BLOCK_SIZE]);
    assert.equal(Number(infos[0]?.readBigUInt64BE(2)), DISK_A.size);
    assert.equal(infos[1]?.subarray(2).toString(), 'disk-a');
    assert.equal(infos[2]?.subarray(2).toString(), 'A');
    assert.equal(replies[0]?.data.subarray(4, 10).toString(), 'disk-a');
    assert.ok(!whole.sent.includes(Buffer.from('secret-b')), 'the forbidden export is never named');

    assert.equal(whole.last.kind, 'transmission');
    if (whole.last.kind !== 'transmission') return;
    assert.equal(whole.last.negotiated.export, DISK_A);
    assert.equal(whole.last.negotiated.structuredReplies, true);
    assert.equal(whole.last.negotiated.allocationContextId, ALLOCATION_CONTEXT_ID);
    assert.equal(whole.last.negotiated.transmissionFlags & p.NBD_FLAG.CAN_MULTI_CONN, p.NBD_FLAG.CAN_MULTI_CONN);
    assert.deepEqual(whole.last.rest, read, 'the first request is handed on');

    for (const pieces of twoPieces(conversation)) {
      const split = converse(new Handshake(config(false)), pieces);
      assert.deepEqual(split.sent, whole.sent);
      assert.equal(split.last.kind, 'transmission');
      // Bytes after the GO may come with it or later; either way they reach transmission whole.
      if (split.last.kind === 'transmission') assert.deepEqual(Buffer.concat([split.last.rest, split.unfed]), read);
    }
  });

  it('ends the negotiation as NBD_OPT_EXPORT_NAME asks, padding unless NO_ZEROES', () => {
    for (const [flags, length] of [[p.NBD_FLAG_C_FIXED_NEWSTYLE | p.NBD_FLAG_C_NO_ZEROES, 10], [p.NBD_FLAG_C_FIXED_NEWSTYLE, 134]] as const) {
      const { sent, last } = converse(new Handshake(config(false)), [Buffer.concat([p.clientFlags(flags), opt(p.NBD_OPT.EXPORT_NAME, Buffer.from('disk-a'))])]);
      assert.equal(sent.length, length);
      assert.equal(Number(sent.readBigUInt64BE(0)), DISK_A.size);
      assert.equal(last.kind, 'transmission');
    }
    const refused = converse(new Handshake(config(false)), [Buffer.concat([FLAGS, opt(p.NBD_OPT.EXPORT_NAME, Buffer.from('secret-b'))])]);
    assert.equal(refused.sent.length, 0, 'EXPORT_NAME cannot carry an error: nothing is sent');
    assert.equal(refused.last.kind, 'close');
  });

  it('handles metadata context options per the spec', () => {
    const listMeta = (queries: string[]) => opt(p.NBD_OPT.LIST_META_CONTEXT, p.metaContextRequestData('disk-a', queries));
    const { sent } = converse(new Handshake(config(false)), [
      Buffer.concat([
        FLAGS,
        listMeta([]), // before structured replies: invalid
        opt(p.NBD_OPT.STRUCTURED_REPLY),
        listMeta([]),
        listMeta(['base:']),
        listMeta(['x-other:thing', 'base:nothing']),
        listMeta(['nocolon']),
        opt(p.NBD_OPT.LIST_META_CONTEXT, p.metaContextRequestData('secret-b', [])),
        opt(p.NBD_OPT.SET_META_CONTEXT, p.metaContextRequestData('disk-a', ['base:'])),
        opt(p.NBD_OPT.SET_META_CONTEXT, Buffer.from([1, 2, 3])),
      ]),
    ]);
    const types = decodeOptionReplies(sent).map((r: OptionReply) => r.type);
    assert.deepEqual(types, [
      p.NBD_REP.ERR_INVALID,
      p.NBD_REP.ACK,
      p.NBD_REP.META_CONTEXT,
      p.NBD_REP.ACK,
      p.NBD_REP.META_CONTEXT,
      p.NBD_REP.ACK,
      p.NBD_REP.ACK,
      p.NBD_REP.ERR_INVALID,
      p.NBD_REP.ERR_UNKNOWN,
      p.NBD_REP.ACK, // 'base:' selects nothing when setting
      p.NBD_REP.ERR_INVALID,
    ]);
  });

  it('gives BLOCK_STATUS only to the export the contexts were set for', () => {
    const { last } = converse(new Handshake(config(false)), [
      Buffer.concat([
        FLAGS,
        opt(p.NBD_OPT.STRUCTURED_REPLY),
        opt(p.NBD_OPT.SET_META_CONTEXT, p.metaContextRequestData('other', ['base:allocation'])),
        opt(p.NBD_OPT.GO, p.infoRequestData('disk-a')),
      ]),
    ]);
    assert.equal(last.kind === 'transmission' && last.negotiated.allocationContextId, undefined);
  });

  it('closes on unknown client flags, acknowledges ABORT, throws on garbage', () => {
    assert.equal(converse(new Handshake(config(false)), [p.clientFlags(0x80)]).last.kind, 'close');
    const abort = converse(new Handshake(config(false)), [Buffer.concat([FLAGS, opt(p.NBD_OPT.ABORT)])]);
    assert.equal(abort.last.kind, 'close');
    assert.deepEqual(decodeOptionReplies(abort.sent).map((r) => r.type), [p.NBD_REP.ACK]);
    assert.throws(() => converse(new Handshake(config(false)), [Buffer.concat([FLAGS, Buffer.alloc(16, 0x55)])]), NbdProtocolError);
    const done = new Handshake(config(false));
    converse(done, [Buffer.concat([FLAGS, opt(p.NBD_OPT.ABORT)])]);
    assert.throws(() => done.receive(Buffer.from([1])), NbdProtocolError, 'nothing is accepted after the end');
  });
});

describe('NBD handshake with TLS required', () => {
  it('refuses everything but STARTTLS and ABORT before TLS', () => {
    const hs = new Handshake(config(true));
    const before = converse(hs, [
      Buffer.concat([
        FLAGS,
        opt(p.NBD_OPT.LIST),
        opt(p.NBD_OPT.INFO, p.infoRequestData('disk-a')),
        opt(p.NBD_OPT.GO, p.infoRequestData('disk-a')),
        opt(p.NBD_OPT.STRUCTURED_REPLY),
        opt(1234),
        opt(p.NBD_OPT.STARTTLS, Buffer.from('x')),
        opt(p.NBD_OPT.STARTTLS),
      ]),
    ]);
    assert.deepEqual(decodeOptionReplies(before.sent).map((r) => r.type), [
      ...new Array<number>(5).fill(p.NBD_REP.ERR_TLS_REQD),
      p.NBD_REP.ERR_INVALID,
      p.NBD_REP.ACK,
    ]);
    assert.equal(before.last.kind, 'starttls');
    assert.throws(() => hs.receive(Buffer.from([0])), NbdProtocolError, 'no plaintext once STARTTLS is acknowledged');
  });

  it('lets a host list and open only its own exports once TLS is up', () => {
    const hs = new Handshake(config(true));
    converse(hs, [Buffer.concat([FLAGS, opt(p.NBD_OPT.STARTTLS)])]);
    hs.tlsEstablished('host-a');
    const { sent, last } = converse(hs, [
      Buffer.concat([
        opt(p.NBD_OPT.STARTTLS),
        opt(p.NBD_OPT.LIST),
        opt(p.NBD_OPT.GO, p.infoRequestData('secret-b', [p.NBD_INFO.NAME])),
        opt(p.NBD_OPT.GO, p.infoRequestData('disk-a')),
      ]),
    ]);
    const replies = decodeOptionReplies(sent);
    assert.deepEqual(replies.map((r) => r.type), [
      p.NBD_REP.ERR_INVALID, // TLS already on
      p.NBD_REP.SERVER,
      p.NBD_REP.ACK,
      p.NBD_REP.ERR_UNKNOWN, // another host's export looks like no export at all
      p.NBD_REP.INFO,
      p.NBD_REP.INFO,
      p.NBD_REP.ACK,
    ]);
    assert.ok(!sent.includes(Buffer.from('secret-b')));
    assert.equal(last.kind === 'transmission' && last.negotiated.export, DISK_A);
    assert.equal(last.kind === 'transmission' && last.negotiated.identity, 'host-a');
  });

  it('hangs up on NBD_OPT_EXPORT_NAME before TLS and on a client without fixed newstyle', () => {
    const early = converse(new Handshake(config(true)), [Buffer.concat([FLAGS, opt(p.NBD_OPT.EXPORT_NAME, Buffer.from('disk-a'))])]);
    assert.equal(early.sent.length, 0);
    assert.equal(early.last.kind, 'close');
    assert.equal(converse(new Handshake(config(true)), [p.clientFlags(0)]).last.kind, 'close');
  });
});

// ---------------------------------------------------------------------------------------------

function context(device: MemoryDevice, over: Partial<TransmissionContext> = {}): TransmissionContext {
  return { device, readOnly: false, structuredReplies: false, allocationContextId: undefined, maxRequestLength: 64 * 1024, ...over };
}

/** What a client makes of one reply. */
function decodeReply(bufs: Buffer[]): { error: number; data?: Buffer; type?: number; payload?: Buffer } {
  const b = Buffer.concat(bufs);
  if (b.readUInt32BE(0) === p.NBD_SIMPLE_REPLY_MAGIC) return { error: b.readUInt32BE(4), data: b.subarray(16) };
  assert.equal(b.readUInt32BE(0), p.NBD_STRUCTURED_REPLY_MAGIC);
  assert.equal(b.readUInt16BE(4) & p.NBD_REPLY_FLAG_DONE, p.NBD_REPLY_FLAG_DONE);
  const type = b.readUInt16BE(6);
  const payload = b.subarray(20, 20 + b.readUInt32BE(16));
  assert.equal(b.length, 20 + payload.length, 'one chunk, nothing after it');
  if (type === p.NBD_REPLY_TYPE.ERROR) return { error: payload.readUInt32BE(0), type, payload };
  return { error: 0, type, payload, ...(type === p.NBD_REPLY_TYPE.OFFSET_DATA ? { data: payload.subarray(8) } : {}) };
}

const req = (type: number, offset: number, length: number, extra: { flags?: number; data?: Buffer } = {}) => ({
  flags: extra.flags ?? 0,
  type,
  handle: 42n,
  offset,
  length,
  ...(extra.data ? { data: extra.data } : {}),
});

describe('NBD transmission', () => {
  it('writes and reads back, with simple and structured replies', async () => {
    const dev = new MemoryDevice(1 << 20);
    const data = Buffer.from('0123456789');
    assert.equal(decodeReply(await execute(req(p.NBD_CMD.WRITE, 1000, 10, { data }), context(dev))).error, 0);
    assert.deepEqual(decodeReply(await execute(req(p.NBD_CMD.READ, 1000, 10), context(dev))).data, data);
    const structured = decodeReply(await execute(req(p.NBD_CMD.READ, 1000, 10), context(dev, { structuredReplies: true })));
    assert.equal(structured.type, p.NBD_REPLY_TYPE.OFFSET_DATA);
    assert.equal(Number(structured.payload?.readBigUInt64BE(0)), 1000);
    assert.deepEqual(structured.data, data);
  });

  it('flushes after a FUA write and on FLUSH', async () => {
    const dev = new MemoryDevice(4096);
    await execute(req(p.NBD_CMD.WRITE, 0, 1, { flags: p.NBD_CMD_FLAG.FUA, data: Buffer.from('x') }), context(dev));
    assert.equal(dev.flushes, 1);
    await execute(req(p.NBD_CMD.FLUSH, 0, 0), context(dev));
    assert.equal(dev.flushes, 2);
  });

  it('answers bad requests with the errors the spec names, never crashing', async () => {
    const dev = new MemoryDevice(1 << 20);
    const cases: [ReturnType<typeof req>, Partial<TransmissionContext>, number][] = [
      [req(p.NBD_CMD.READ, (1 << 20) - 10, 11), {}, p.NBD_E.INVAL],
      [req(p.NBD_CMD.WRITE, (1 << 20) - 1, 2, { data: Buffer.alloc(2) }), {}, p.NBD_E.NOSPC],
      [req(p.NBD_CMD.WRITE_ZEROES, 1 << 20, 1), {}, p.NBD_E.NOSPC],
      [req(p.NBD_CMD.TRIM, 2 ** 60, 1), {}, p.NBD_E.INVAL],
      [req(p.NBD_CMD.WRITE, 0, 1, { data: Buffer.alloc(1) }), { readOnly: true }, p.NBD_E.PERM],
      [req(p.NBD_CMD.TRIM, 0, 1), { readOnly: true }, p.NBD_E.PERM],
      [req(p.NBD_CMD.READ, 0, 0), {}, p.NBD_E.INVAL],
      [req(p.NBD_CMD.READ, 0, 0xffffffff), {}, p.NBD_E.INVAL],
      [req(p.NBD_CMD.FLUSH, 1, 0), {}, p.NBD_E.INVAL],
      [req(p.NBD_CMD.BLOCK_STATUS, 0, 512), {}, p.NBD_E.INVAL],
      [req(p.NBD_CMD.CACHE, 0, 512), {}, p.NBD_E.INVAL],
      [req(99, 0, 512), {}, p.NBD_E.INVAL],
      [req(p.NBD_CMD.READ, 0, 512, { flags: p.NBD_CMD_FLAG.NO_HOLE }), {}, p.NBD_E.INVAL],
      [req(p.NBD_CMD.READ, 0, 512, { flags: p.NBD_CMD_FLAG.DF }), { structuredReplies: false }, p.NBD_E.INVAL],
      [req(p.NBD_CMD.WRITE_ZEROES, 0, 512, { flags: p.NBD_CMD_FLAG.FAST_ZERO }), {}, p.NBD_E.INVAL],
    ];
    for (const [r, over, error] of cases) {
      for (const structured of [false, true]) {
        const ctx = context(dev, { structuredReplies: structured, ...over });
        const reply = decodeReply(await execute(r, ctx));
        assert.equal(reply.error, error, `${JSON.stringify(r, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v))} structured=${ctx.structuredReplies}`);
        if (ctx.structuredReplies) assert.equal(reply.type, p.NBD_REPLY_TYPE.ERROR, 'errors come as structured error chunks');
        else assert.equal(reply.data?.length, 0, 'no payload after an error');
      }
    }
  });

  it('reports holes as holes in BLOCK_STATUS, one extent with REQ_ONE', async () => {
    const dev = new MemoryDevice(64 * 1024);
    await dev.write(Buffer.alloc(4096, 1), 8192);
    const ctx = context(dev, { structuredReplies: true, allocationContextId: 7 });
    const decode = (bufs: Buffer[]) => {
      const { payload, type } = decodeReply(bufs);
      assert.equal(type, p.NBD_REPLY_TYPE.BLOCK_STATUS);
      assert.ok(payload);
      assert.equal(payload.readUInt32BE(0), 7);
      const out = [];
      for (let i = 4; i < payload.length; i += 8) out.push([payload.readUInt32BE(i), payload.readUInt32BE(i + 4)]);
      return out;
    };
    const HZ = p.NBD_STATE_HOLE | p.NBD_STATE_ZERO;
    assert.deepEqual(decode(await execute(req(p.NBD_CMD.BLOCK_STATUS, 0, 65536), ctx)), [[8192, HZ], [4096, 0], [53248, HZ]]);
    assert.deepEqual(decode(await execute(req(p.NBD_CMD.BLOCK_STATUS, 0, 65536, { flags: p.NBD_CMD_FLAG.REQ_ONE }), ctx)), [[8192, HZ]]);
    assert.deepEqual(decode(await execute(req(p.NBD_CMD.BLOCK_STATUS, 9000, 100), ctx)), [[100, 0]]);
  });

  it('zeroes with or without holes as NO_HOLE asks, and trims', async () => {
    const dev = new MemoryDevice(16384);
    await dev.write(Buffer.alloc(16384, 9), 0);
    await execute(req(p.NBD_CMD.WRITE_ZEROES, 0, 4096), context(dev));
    await execute(req(p.NBD_CMD.WRITE_ZEROES, 4096, 4096, { flags: p.NBD_CMD_FLAG.NO_HOLE }), context(dev));
    await execute(req(p.NBD_CMD.TRIM, 8192, 4096), context(dev));
    assert.ok(dev.bytes.subarray(0, 8192).every((b) => b === 0));
    assert.deepEqual(dev.allocated.slice(0, 8), new Array<boolean>(8).fill(false), 'punched');
    assert.deepEqual(dev.allocated.slice(8, 16), new Array<boolean>(8).fill(true), 'NO_HOLE kept it allocated');
  });
});

// ---------------------------------------------------------------------------------------------

describe('NBD protocol under random and mutated input', () => {
  const name = fc.constantFrom('disk-a', 'secret-b', '', 'nope', 'disk-a\0');
  const info = fc.array(fc.integer({ min: 0, max: 5 }), { maxLength: 4 });
  const queries = fc.array(fc.constantFrom('base:allocation', 'base:', 'x:y', 'nocolon', ''), { maxLength: 3 });
  const option = fc.oneof(
    { arbitrary: fc.constant(opt(p.NBD_OPT.LIST)), weight: 4 },
    { arbitrary: fc.constant(opt(p.NBD_OPT.STRUCTURED_REPLY)), weight: 4 },
    { arbitrary: fc.constant(opt(p.NBD_OPT.STARTTLS)), weight: 2 },
    { arbitrary: fc.constant(opt(p.NBD_OPT.ABORT)), weight: 1 },
    { arbitrary: name.map((n) => opt(p.NBD_OPT.EXPORT_NAME, Buffer.from(n))), weight: 1 },
    { arbitrary: fc.tuple(fc.constantFrom(p.NBD_OPT.INFO, p.NBD_OPT.GO), name, info).map(([o, n, i]) => opt(o, p.infoRequestData(n, i))), weight: 4 },
    {
      arbitrary: fc.tuple(fc.constantFrom(p.NBD_OPT.LIST_META_CONTEXT, p.NBD_OPT.SET_META_CONTEXT), name, queries).map(([o, n, q]) => opt(o, p.metaContextRequestData(n, q))),
      weight: 4,
    },
    { arbitrary: fc.tuple(fc.integer({ min: 0, max: 0xffffffff }), fc.uint8Array({ maxLength: 16 })).map(([o, d]) => opt(o, Buffer.from(d))), weight: 4 },
  );
  const request = fc
    .record({
      flags: fc.oneof(fc.constant(0), fc.constantFrom(1, 2, 4, 8, 16), fc.integer({ min: 0, max: 0xffff })),
      type: fc.oneof(fc.constantFrom(0, 1, 3, 4, 6, 7), fc.integer({ min: 0, max: 0xffff })),
      offset: fc.oneof(fc.integer({ min: 0, max: (1 << 20) + 10 }), fc.constant(2 ** 62)),
      length: fc.oneof(fc.integer({ min: 0, max: 70_000 }), fc.constant(0xffffffff)),
    })
    .map((r) => p.clientRequest({ ...r, handle: 1n, ...(r.type === p.NBD_CMD.WRITE && r.length <= 70_000 ? { data: Buffer.alloc(r.length, 7) } : {}) }));
  const mutation = fc.record({ at: fc.nat(), op: fc.integer({ min: 0, max: 3 }), byte: fc.integer({ min: 0, max: 255 }) });
  // Mostly well-formed openings, so that many runs get as far as transmission before mutating.
  const flags = fc.oneof(fc.constant(3), fc.constant(1), fc.integer({ min: 0, max: 7 }));
  const starttls = fc.oneof({ arbitrary: fc.constant(opt(p.NBD_OPT.STARTTLS)), weight: 3 }, { arbitrary: fc.constant(Buffer.alloc(0)), weight: 1 });
  const finish = fc.oneof(
    fc.constant(opt(p.NBD_OPT.GO, p.infoRequestData('disk-a'))),
    fc.constant(Buffer.concat([opt(p.NBD_OPT.STRUCTURED_REPLY), opt(p.NBD_OPT.SET_META_CONTEXT, p.metaContextRequestData('disk-a', ['base:allocation'])), opt(p.NBD_OPT.GO, p.infoRequestData('disk-a'))])),
    fc.constant(opt(p.NBD_OPT.EXPORT_NAME, Buffer.from('disk-a'))),
    name.map((n) => opt(p.NBD_OPT.GO, p.infoRequestData(n))),
    fc.constant(Buffer.alloc(0)),
  );
  const conversation = fc
    .tuple(flags, starttls, fc.array(option, { maxLength: 4 }), finish, fc.array(request, { maxLength: 6 }), fc.oneof(fc.constant([]), fc.array(mutation, { maxLength: 3 })))
    .map(([f, tls, options, end, requests, mutations]) => {
      let b = Buffer.concat([p.clientFlags(f), tls, ...options, end, ...requests]);
      for (const m of mutations) {
        const at = m.at % (b.length + 1);
        if (m.op === 0 && at < b.length) b[at] = m.byte;
        else if (m.op === 1) b = Buffer.concat([b.subarray(0, at), Buffer.from([m.byte]), b.subarray(at)]);
        else if (m.op === 2) b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1)]);
        else b = b.subarray(0, at);
      }
      return b;
    });
  const input = fc.oneof(conversation, conversation, conversation, fc.uint8Array({ maxLength: 600 }).map((a) => Buffer.from(a)));

  const secretSize = Buffer.alloc(8);
  secretSize.writeBigUInt64BE(BigInt(DISK_B.size));

  it('throws nothing but protocol errors and never serves a refused export (10,000 runs)', async () => {
    await fc.assert(
      fc.asyncProperty(input, fc.array(fc.nat(), { maxLength: 6 }), fc.boolean(), async (bytes, cuts, tlsRequired) => {
        const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
        const pieces = [0, ...points].map((start, i) => bytes.subarray(start, [...points, bytes.length][i]));
        const sent: Buffer[] = [];
        const device = new MemoryDevice(1 << 20);
        let parser: InstanceType<typeof p.RequestParser> | undefined;
        let ctx: TransmissionContext | undefined;
        try {
          const hs = new Handshake(config(tlsRequired));
          let negotiating = true;
          for (const piece of pieces) {
            if (!negotiating) {
              parser?.push(piece);
              continue;
            }
            const out = hs.receive(piece);
            sent.push(...out.send);
            if (out.next.kind === 'starttls') hs.tlsEstablished('host-a'); // as if TLS came up
            else if (out.next.kind === 'close') return;
            else if (out.next.kind === 'transmission') {
              const n = out.next.negotiated;
              assert.equal(n.export, DISK_A, 'only an authorized export reaches transmission');
              negotiating = false;
              parser = new p.RequestParser(1 << 16);
              parser.push(out.next.rest);
              ctx = context(device, { structuredReplies: n.structuredReplies, allocationContextId: n.allocationContextId });
            }
          }
          for (let r = parser?.next(); r !== undefined && ctx; r = parser?.next()) {
            if (r.type !== p.NBD_CMD.DISC) sent.push(...(await execute(r, ctx)));
          }
        } catch (e) {
          if (!(e instanceof NbdProtocolError)) throw e;
        }
        const all = Buffer.concat(sent);
        assert.ok(!all.includes(Buffer.from('secret-b')), 'a refused export is never named');
        assert.ok(!all.includes(secretSize), 'nor its size given');
      }),
      { numRuns: 10_000, seed: 20240611 },
    );
  });
});
