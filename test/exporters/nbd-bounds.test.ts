/**
 * The NBD server's bounds on what one client can make it hold (issue 10), each against the real
 * server over loopback: bytes in flight for a client that never reads its replies (measured as
 * the server process's RSS), a negotiation deadline that trickled bytes do not move, a cap on
 * options before TLS and in all, a cap on connections per host, and a key change cutting the
 * host's open sessions at once.
 */
import assert from 'node:assert/strict';
import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { rm, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { InputError, type Mapping } from '../../src/domain/index.js';
import { NbdExporter } from '../../src/exporters/nbd-exporter.js';
import { FileDevice } from '../../src/drivers/file/file-device.js';
import { Handshake, NbdServer, nbdProtocol as p, type HandshakeConfig, type NbdExportInfo } from '../../src/exporters/nbd/index.js';
import { makeTempDir, sha256File, waitFor, writeRandomFile } from '../helpers/files.js';
import { ok, run } from '../helpers/nbd-tools.js';
import { decodeOptionReplies, fileExport, rawClient, rawRead } from './nbd-helpers.js';
import type { ChildSetup, ChildStats } from './nbd-server-child.js';

const MiB = 1 << 20;
const FLAGS = p.clientFlags(p.NBD_FLAG_C_FIXED_NEWSTYLE | p.NBD_FLAG_C_NO_ZEROES);
const keyA = randomBytes(32);
const keyB = randomBytes(32);

/** Resolves when the stream closes; rejects if it is still open after `ms`. */
async function closedWithin(s: Duplex, ms: number, what: string): Promise<void> {
  if (s.destroyed) return;
  const closed = once(s, 'close').then(() => true);
  assert.ok(await Promise.race([closed, delay(ms).then(() => false)]), `${what}: still open after ${ms} ms`);
}

/** Everything the server sends until it closes the connection. */
function collectUntilClosed(s: Duplex): Promise<Buffer> {
  const got: Buffer[] = [];
  s.on('data', (b: Buffer) => got.push(b));
  return once(s, 'close').then(() => Buffer.concat(got));
}

for (const tls of ['off', 'psk'] as const) {
  describe(`NBD bytes in flight: a client that does not read its replies, TLS ${tls}`, () => {
    // The server's defaults: 32 MiB requests, 64 MiB in flight per connection. It starts a request
    // while under the cap, so the data it holds stays under cap + one request; with TLS, also the
    // encrypted copy of the one reply being written (a TLS socket writes one at a time).
    const maxRequestLength = 32 * MiB;
    const maxInFlightBytes = 64 * MiB;
    /** The V8 heap, the parser's queue, socket buffers and the allocator's own pages. */
    const SLACK = 32 * MiB;
    const BOUND = maxInFlightBytes + maxRequestLength + (tls === 'psk' ? maxRequestLength : 0) + SLACK;
    /** Requests per write: 10,000 READs of 32 MiB, 280 KB of requests. */
    const BATCH = 10_000;

    let dir = '';
    let child: ChildProcess;
    let port = 0;
    const stats = async (): Promise<ChildStats> => {
      child.send('stats');
      const [msg] = (await once(child, 'message')) as [ChildStats];
      return msg;
    };

    before(async () => {
      dir = await makeTempDir('prestage-nbd-bounds-');
      await writeRandomFile(join(dir, 'x.img'), maxRequestLength);
      await writeFile(join(dir, 'keys.psk'), `hostA:${keyA.toString('hex')}\n`, { mode: 0o600 });
      const setup: ChildSetup = {
        options: { tls, stopTimeoutMs: 1000 },
        keys: { hostA: keyA.toString('hex') },
        exports: [{ name: 'x', path: join(dir, 'x.img'), hostId: 'hostA' }],
      };
      // A process of its own: its RSS is the server's alone, not this test's buffers.
      child = fork(new URL('./nbd-server-child.ts', import.meta.url), [JSON.stringify(setup)], { execArgv: ['--import', 'tsx', '--expose-gc'] });
      const [msg] = (await once(child, 'message')) as [{ port: number }];
      port = msg.port;
    });
    after(async () => {
      if (child !== undefined && child.exitCode === null) {
        child.send('stop');
        await once(child, 'exit');
      }
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    it('stops reading from it with the data it holds under the cap, and serves another client meanwhile', async (t) => {
      const baseline = (await stats()).rss;
      const flood = await rawClient(port, 'x', tls === 'psk' ? { psk: { identity: 'hostA', key: keyA } } : {});
      // Never read from here on: the stream stays paused.
      const batch = Buffer.concat(Array.from({ length: BATCH }, (_, i) => p.clientRequest({ flags: 0, type: p.NBD_CMD.READ, handle: BigInt(i), offset: 0, length: maxRequestLength })));
      let requests = 0;
      let stalled = false;
      // Write until the server stops taking requests: no drain for 3 s while it has work queued
      // means it no longer reads the socket (a server that kept reading would drain it at once).
      for (let i = 0; i < 400 && !stalled; i++) {
        requests += BATCH;
        if (flood.write(batch)) continue;
        stalled = !(await Promise.race([once(flood, 'drain').then(() => true), delay(3000).then(() => false)]));
      }
      assert.ok(stalled, `the server kept reading ${requests} requests it could not answer`);
      assert.ok(requests >= 20_000);
      const peakGrowth = (await stats()).peakRss - baseline;
      t.diagnostic(`client queued ${requests} READs of 32 MiB (${(requests * maxRequestLength) / 2 ** 40} TiB asked); server RSS grew at most ${(peakGrowth / MiB).toFixed(1)} MiB (bound ${BOUND / MiB} MiB)`);
      assert.ok(peakGrowth < BOUND, `server RSS grew ${(peakGrowth / MiB).toFixed(1)} MiB, over ${BOUND / MiB} MiB`);
      assert.ok(!flood.destroyed, 'a slow reader is held, not dropped');

      // Another client is served normally while the flood connection sits there.
      const out = join(dir, 'out.img');
      await ok('nbdcopy', [tls === 'psk' ? `nbds://hostA@127.0.0.1:${port}/x?tls-psk-file=${join(dir, 'keys.psk')}` : `nbd://127.0.0.1:${port}/x`, out]);
      assert.equal(await sha256File(out), await sha256File(join(dir, 'x.img')));

      flood.destroy();
      await waitFor('the flood connection to close', async () => (await stats()).connectionsOpen === 0, 10_000, 100);
    });
  });
}

describe('NBD negotiation deadline', () => {
  let server: NbdServer;
  let port = 0;
  let dir = '';
  const TIMEOUT = 1500;

  before(async () => {
    dir = await makeTempDir('prestage-nbd-deadline-');
    await writeRandomFile(join(dir, 'a.img'), MiB);
    server = new NbdServer({ tls: 'psk', keys: (id) => (id === 'hostA' ? keyA : undefined), negotiationTimeoutMs: TIMEOUT, stopTimeoutMs: 500 });
    await server.addExport(await fileExport({ name: 'a', path: join(dir, 'a.img'), hostId: 'hostA' }));
    ({ port } = await server.start({ host: '127.0.0.1', port: 0 }));
  });
  after(async () => {
    await server?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /**
   * Sends `prefix`, then NBD_OPT_LIST over and over, one byte every 200 ms until the server hangs
   * up; the ms from `since` to the close, and the bytes sent.
   */
  async function trickle(s: Duplex, since: number, prefix: Buffer): Promise<{ ms: number; sent: number }> {
    s.resume(); // its replies are dropped; the close is what matters
    const bytes = Buffer.concat([prefix, ...new Array<Buffer>(10).fill(p.clientOption(p.NBD_OPT.LIST))]);
    let sent = 0;
    const closed = once(s, 'close');
    let open = true;
    void closed.then(() => (open = false));
    while (open && Date.now() - since < 4 * TIMEOUT && sent < bytes.length) {
      s.write(bytes.subarray(sent, sent + 1));
      sent++;
      await Promise.race([delay(200), closed]);
    }
    assert.ok(!open, `the trickling client is still connected after ${Date.now() - since} ms`);
    return { ms: Date.now() - since, sent };
  }

  it('cuts a client that trickles option bytes, at the deadline from accept', async () => {
    const since = Date.now();
    const s = connect({ host: '127.0.0.1', port });
    s.on('error', () => undefined);
    await once(s, 'connect');
    const { ms, sent } = await trickle(s, since, FLAGS); // even the flags come a byte at a time
    assert.ok(sent > TIMEOUT / 200, `bytes kept coming (${sent})`);
    // Never before the deadline; that it came at all while bytes kept coming is trickle()'s check.
    assert.ok(ms >= TIMEOUT - 100, `cut after ${ms} ms, before the deadline of ${TIMEOUT} ms`);
  });

  it('keeps the deadline across STARTTLS: TLS up does not restart it', async () => {
    const since = Date.now();
    const s = await rawClient(port, 'a', { psk: { identity: 'hostA', key: keyA }, optionMode: true });
    const { ms } = await trickle(s, since, Buffer.alloc(0));
    // Never before the deadline; that it came at all while bytes kept coming is trickle()'s check.
    assert.ok(ms >= TIMEOUT - 100, `cut after ${ms} ms, before the deadline of ${TIMEOUT} ms`);
  });

  it('does not apply once the client is in transmission', async () => {
    const s = await rawClient(port, 'a', { psk: { identity: 'hostA', key: keyA } });
    await delay(TIMEOUT + 300);
    assert.equal((await rawRead(s, 0, 4096)).length, 4096);
    s.destroy();
  });
});

describe('NBD option count bounds', () => {
  interface X extends NbdExportInfo {
    readonly hostId: string;
  }
  const disk: X = { name: 'd', size: MiB, readOnly: false, hostId: 'hostA' };
  const config = (tlsRequired: boolean): HandshakeConfig<X> => ({
    tlsRequired,
    maxOptionLength: 65536,
    maxOptionsBeforeTls: 32,
    maxOptions: 256,
    blockSizes: { min: 1, preferred: 4096, max: 32 * MiB },
    authorize: (identity, name) => (name === disk.name && (!tlsRequired || identity === disk.hostId) ? disk : undefined),
    list: (identity) => (!tlsRequired || identity === disk.hostId ? [disk] : []),
  });
  const lists = (n: number) => Buffer.concat(Array.from({ length: n }, () => p.clientOption(p.NBD_OPT.LIST)));

  it('answers 32 options before TLS, then refuses and closes (the machine, fed bytes)', () => {
    const hs = new Handshake(config(true));
    const out = hs.receive(Buffer.concat([FLAGS, lists(1000)]));
    const types = decodeOptionReplies(Buffer.concat(out.send)).map((r) => r.type);
    assert.deepEqual(types, [...new Array<number>(32).fill(p.NBD_REP.ERR_TLS_REQD), p.NBD_REP.ERR_POLICY]);
    assert.equal(out.next.kind, 'close');
  });

  it('answers 256 options in all, those before TLS included', () => {
    const hs = new Handshake(config(true));
    assert.equal(hs.receive(Buffer.concat([FLAGS, lists(31), p.clientOption(p.NBD_OPT.STARTTLS)])).next.kind, 'starttls');
    hs.tlsEstablished('hostA');
    const out = hs.receive(lists(1000));
    const replies = decodeOptionReplies(Buffer.concat(out.send));
    assert.equal(replies.filter((r) => r.type === p.NBD_REP.ACK).length, 256 - 32, 'the LISTs after STARTTLS up to 256 options');
    assert.equal(replies.at(-1)?.type, p.NBD_REP.ERR_POLICY);
    assert.equal(out.next.kind, 'close');

    const plain = new Handshake(config(false)).receive(Buffer.concat([FLAGS, lists(300)]));
    assert.equal(decodeOptionReplies(Buffer.concat(plain.send)).filter((r) => r.type === p.NBD_REP.ACK).length, 256, 'without TLS too');
    assert.equal(plain.next.kind, 'close');
  });

  describe('over a socket', () => {
    let server: NbdServer;
    let port = 0;
    let dir = '';
    before(async () => {
      dir = await makeTempDir('prestage-nbd-options-');
      await writeRandomFile(join(dir, 'a.img'), MiB);
      server = new NbdServer({ tls: 'psk', keys: (id) => (id === 'hostA' ? keyA : undefined), stopTimeoutMs: 500 });
      await server.addExport(await fileExport({ name: 'a', path: join(dir, 'a.img'), hostId: 'hostA' }));
      ({ port } = await server.start({ host: '127.0.0.1', port: 0 }));
    });
    after(async () => {
      await server?.stop();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    it('cuts an anonymous client sending endless options after 32', async () => {
      const s = connect({ host: '127.0.0.1', port });
      s.on('error', () => undefined);
      const got = collectUntilClosed(s);
      s.write(Buffer.concat([FLAGS, lists(5000), Buffer.concat(Array.from({ length: 5000 }, (_, i) => p.clientOption(1000 + i)))]));
      const bytes = await got;
      const types = decodeOptionReplies(bytes.subarray(18)).map((r) => r.type);
      assert.deepEqual(types, [...new Array<number>(32).fill(p.NBD_REP.ERR_TLS_REQD), p.NBD_REP.ERR_POLICY]);
    });

    it('cuts a host sending endless options over TLS after 256 in all', async () => {
      const s = await rawClient(port, 'a', { psk: { identity: 'hostA', key: keyA }, optionMode: true });
      const got = collectUntilClosed(s);
      s.write(lists(5000));
      const replies = decodeOptionReplies(await got);
      assert.equal(replies.filter((r) => r.type === p.NBD_REP.ACK).length, 255, 'STARTTLS was the first of the 256');
      assert.equal(replies.at(-1)?.type, p.NBD_REP.ERR_POLICY);
      await waitFor('the connections to close', () => Promise.resolve(server.connectionsOpen === 0), 5000);
    });
  });
});

describe('NBD connections per host', () => {
  let server: NbdServer;
  let port = 0;
  let dir = '';
  const open: Socket[] = [];
  const as = (identity: string, key: Buffer, localAddress: string) => rawClient(port, identity === 'hostA' ? 'a' : 'b', { psk: { identity, key }, localAddress });

  before(async () => {
    dir = await makeTempDir('prestage-nbd-perhost-');
    await writeRandomFile(join(dir, 'a.img'), MiB);
    await writeRandomFile(join(dir, 'b.img'), MiB);
    const keys = new Map([['hostA', keyA], ['hostB', keyB]]);
    server = new NbdServer({ tls: 'psk', keys: (id) => keys.get(id), maxConnectionsPerHost: 3, stopTimeoutMs: 500 });
    await server.addExport(await fileExport({ name: 'a', path: join(dir, 'a.img'), hostId: 'hostA' }));
    await server.addExport(await fileExport({ name: 'b', path: join(dir, 'b.img'), hostId: 'hostB' }));
    ({ port } = await server.start({ host: '127.0.0.1', port: 0 }));
  });
  after(async () => {
    for (const s of open) s.destroy();
    await server?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('has a default of 64 and takes only a positive integer', () => {
    assert.throws(() => new NbdServer({ tls: 'off', maxConnectionsPerHost: 0 }), InputError);
    assert.throws(() => new NbdServer({ tls: 'off', maxOptions: 0 }), InputError);
    assert.throws(() => new NbdServer({ tls: 'off', maxOptionsBeforeTls: 1.5 }), InputError);
  });

  it('serves a host at most its cap, from whichever addresses, while another host is served', async () => {
    // Three addresses: the per-address cap is not what stops the fourth.
    for (const addr of ['127.0.0.2', '127.0.0.3', '127.0.0.4']) open.push(await as('hostA', keyA, addr));
    const refusedBefore = server.connectionsRefused;
    await assert.rejects(as('hostA', keyA, '127.0.0.5'), 'the fourth connection of hostA is closed after TLS');
    assert.equal(server.connectionsRefused, refusedBefore + 1);
    const b = await as('hostB', keyB, '127.0.0.5');
    assert.equal((await rawRead(b, 0, 4096)).length, 4096, 'hostB is served');
    b.destroy();
    for (const s of open) assert.equal((await rawRead(s, 0, 4096)).length, 4096, "hostA's three are served");
  });

  it('frees a place when one of the host’s connections closes', async () => {
    open.shift()?.destroy();
    await waitFor('the connection to close', () => Promise.resolve(server.connectionsOpen === 2), 5000);
    open.push(await as('hostA', keyA, '127.0.0.6'));
    await assert.rejects(as('hostA', keyA, '127.0.0.6'));
  });
});

describe('NBD host key change', () => {
  let exporter: NbdExporter;
  let port = 0;
  let dir = '';
  const hex = (k: Buffer) => k.toString('hex');
  const keyA2 = randomBytes(32);
  const sessions: Socket[] = [];
  const keyFile = (k: Buffer) => join(dir, `${hex(k).slice(0, 8)}.psk`);
  const nbdinfo = (k: Buffer) => run('nbdinfo', ['--size', `nbds://hostA@127.0.0.1:${port}/copy-a?tls-psk-file=${keyFile(k)}`]);

  before(async () => {
    dir = await makeTempDir('prestage-nbd-rotate-');
    for (const [name, size] of [['a.img', MiB], ['b.img', MiB]] as const) await writeRandomFile(join(dir, name), size);
    for (const k of [keyA, keyA2]) await writeFile(keyFile(k), `hostA:${hex(k)}\n`, { mode: 0o600 });
    exporter = new NbdExporter({ listen: { host: '127.0.0.1', port: 0 }, tls: 'psk', openVolume: (volume, o) => FileDevice.open(volume, o.readOnly) });
    ({ port } = await exporter.start());
    exporter.setHostKey('hostA', hex(keyA));
    exporter.setHostKey('hostB', hex(keyB));
    const now = new Date().toISOString();
    for (const [host, id, file] of [['hostA', 'copy-a', 'a.img'], ['hostB', 'copy-b', 'b.img']] as const) {
      const mapping: Mapping = { hostId: host, copyId: id, source: 'golden', imageId: 'img', createdAt: now };
      await exporter.export(mapping, { id, volume: join(dir, file), sizeBytes: MiB });
    }
  });
  after(async () => {
    for (const s of sessions) s.destroy();
    await exporter?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("cuts the host's open sessions at once when its key changes; the new key works and the old one is refused", async () => {
    const attached = await rawClient(port, 'copy-a', { psk: { identity: 'hostA', key: keyA } });
    const negotiating = await rawClient(port, 'copy-a', { psk: { identity: 'hostA', key: keyA }, optionMode: true });
    const other = await rawClient(port, 'copy-b', { psk: { identity: 'hostB', key: keyB } });
    sessions.push(attached, negotiating, other);
    assert.equal((await rawRead(attached, 0, 4096)).length, 4096);

    exporter.setHostKey('hostA', hex(keyA)); // the same key again: nothing changes
    assert.equal((await rawRead(attached, 4096, 4096)).length, 4096, 'the same key keeps the session');

    exporter.setHostKey('hostA', hex(keyA2));
    await closedWithin(attached, 1000, 'the attached session of the old key');
    await closedWithin(negotiating, 1000, 'the negotiating session of the old key');
    assert.equal((await rawRead(other, 0, 4096)).length, 4096, "another host's session goes on");

    await assert.rejects(rawClient(port, 'copy-a', { psk: { identity: 'hostA', key: keyA } }), 'the old key is refused');
    assert.notEqual((await nbdinfo(keyA)).code, 0, 'nbdinfo with the old key is refused');
    assert.equal((await ok('nbdinfo', ['--size', `nbds://hostA@127.0.0.1:${port}/copy-a?tls-psk-file=${keyFile(keyA2)}`])).trim(), String(MiB));
    const renewed = await rawClient(port, 'copy-a', { psk: { identity: 'hostA', key: keyA2 } });
    sessions.push(renewed);
    assert.equal((await rawRead(renewed, 0, 4096)).length, 4096);

    exporter.setHostKey('hostA', null);
    await closedWithin(renewed, 1000, 'the session of a removed key');
    assert.notEqual((await nbdinfo(keyA2)).code, 0, 'no key, no session');
  });

  it('refuses a session whose key changed while its TLS handshake was under way', async () => {
    const keys = new Map([['hostA', keyA]]);
    const server = new NbdServer({
      tls: 'psk',
      // The key changes right after the server looked it up for this handshake.
      keys: (id) => {
        const k = keys.get(id);
        keys.set(id, keyA2);
        return k;
      },
      stopTimeoutMs: 500,
    });
    await server.addExport(await fileExport({ name: 'a', path: join(dir, 'a.img'), hostId: 'hostA' }));
    const at = await server.start({ host: '127.0.0.1', port: 0 });
    try {
      await assert.rejects(rawClient(at.port, 'a', { psk: { identity: 'hostA', key: keyA } }));
    } finally {
      await server.stop();
    }
  });
});
