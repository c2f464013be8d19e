/**
 * The NBD server against the real clients (libnbd's nbdinfo / nbdcopy / nbdsh, qemu's qemu-img
 * and qemu-io), with TLS-PSK and without. A missing client fails the suite and names the package.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { join } from 'node:path';
import { ConflictError, InputError, UnavailableError } from '../../src/domain/index.js';
import { DEFAULT_PSK_CIPHERS, NbdServer, nbdProtocol as p } from '../../src/exporters/nbd/index.js';
import { makeTempDir, sha256File, waitFor, writeRandomFile, writeSparseFile } from '../helpers/files.js';
import { fileExport, MemoryDevice, mutate, prng } from './nbd-helpers.js';
import { nbdToolEnv, ok, run } from '../helpers/nbd-tools.js';

const MiB = 1 << 20;
const env = nbdToolEnv;
const TOOLS: Record<string, string> = { nbdinfo: 'libnbd-bin', nbdcopy: 'libnbd-bin', nbdsh: 'python3-libnbd', 'qemu-img': 'qemu-utils', 'qemu-io': 'qemu-utils' };

function requireTools(): void {
  const missing = Object.entries(TOOLS).filter(([tool]) => spawnSync('sh', ['-c', `command -v ${tool}`], { env }).status !== 0);
  if (missing.length > 0) throw new Error(`NBD clients missing: ${missing.map(([t, pkg]) => `${t} (apt-get install ${pkg})`).join(', ')}`);
}

/**
 * nbdsh arguments that run `lines` of Python after connecting to `uri` (itself, because reading
 * a tls-psk-file must be allowed first); `opt` stops in option mode instead of attaching.
 */
function nbdsh(uri: string, lines: readonly string[], opt = false): string[] {
  const connect = ['h.set_uri_allow_local_file(True)', ...(opt ? ['h.set_opt_mode(True)'] : []), `h.connect_uri(${JSON.stringify(uri)})`];
  return ['-c', [...connect, ...lines].join('\n')];
}

/**
 * A fuzz client's conversation: sends `packets` and waits for the server to hang up. With `psk`
 * it first upgrades properly (flags, STARTTLS, TLS as that identity) and sends them over TLS.
 */
function exchange(port: number, packets: readonly Buffer[], psk?: { identity: string; key: Buffer }, timeoutMs = 5000): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket: Socket = connect(port, '127.0.0.1');
    let stream: Socket = socket;
    const timer = setTimeout(() => {
      stream.destroy();
      reject(new Error(`the server did not close the connection: ${packets.map((b) => b.toString('hex')).join(' ')}`));
    }, timeoutMs);
    const send = (to: Socket) => {
      for (const packet of packets) to.write(packet);
      to.end();
    };
    const done = () => {
      clearTimeout(timer);
      resolve();
    };
    socket.on('error', () => undefined); // a reset is one way to be hung up on
    socket.on('close', done);
    if (psk === undefined) {
      socket.resume(); // read (and drop) the replies, or the server's close is never seen
      socket.once('connect', () => send(socket));
      return;
    }
    socket.once('connect', () => socket.write(Buffer.concat([p.clientFlags(p.NBD_FLAG_C_FIXED_NEWSTYLE | p.NBD_FLAG_C_NO_ZEROES), p.clientOption(p.NBD_OPT.STARTTLS)])));
    let got = 0;
    const onData = (b: Buffer) => {
      got += b.length;
      if (got < 18 + 20) return; // greeting, then the ACK to STARTTLS
      socket.off('data', onData);
      const secure = tlsConnect({ socket, pskCallback: () => ({ identity: psk.identity, psk: psk.key }), ciphers: DEFAULT_PSK_CIPHERS, checkServerIdentity: () => undefined });
      stream = secure;
      secure.on('error', () => undefined);
      secure.on('close', done);
      secure.resume();
      secure.once('secureConnect', () => send(secure));
    };
    socket.on('data', onData);
  });
}

it('has the real NBD clients installed (a missing one fails here, naming its package)', () => requireTools());

const SPARSE_DATA = [
  { offset: 4 * MiB, length: 2 * MiB },
  { offset: 40 * MiB, length: 1 * MiB },
];

for (const tls of ['psk', 'off'] as const) {
  describe(`NBD server with real clients, TLS ${tls}`, () => {
    let dir = '';
    let server: NbdServer;
    let port = 0;
    let keyFile = '';
    let qemuPskDir = '';
    const keys = new Map<string, Buffer>([
      ['hostA', randomBytes(32)],
      ['hostB', randomBytes(32)],
    ]);
    const file = (name: string) => join(dir, name);

    /** The libnbd URI of an export; with TLS, as `host` with the keys in `keys`. */
    const uri = (exportName: string, host = 'hostA', keys = keyFile) =>
      tls === 'psk' ? `nbds://${host}@127.0.0.1:${port}/${exportName}?tls-psk-file=${keys}` : `nbd://127.0.0.1:${port}/${exportName}`;
    /** qemu's way to the same export (a raw image over an nbd node), as arguments before `-c` or the file. */
    const qemu = (exportName: string): string[] => {
      const node = `driver=raw,file.driver=nbd,file.host=127.0.0.1,file.port=${port},file.export=${exportName}`;
      return tls === 'psk'
        ? ['--object', `tls-creds-psk,id=tls0,endpoint=client,dir=${qemuPskDir},username=hostA`, '--image-opts', `${node},file.tls-creds=tls0`]
        : ['--image-opts', node];
    };

    before(async () => {
      requireTools();
      dir = await makeTempDir('prestage-nbd-');
      keyFile = file('keys.psk');
      await writeFile(keyFile, [...keys].map(([id, k]) => `${id}:${k.toString('hex')}\n`).join(''), { mode: 0o600 });
      qemuPskDir = file('qemu-psk');
      await mkdir(qemuPskDir);
      await writeFile(join(qemuPskDir, 'keys.psk'), `hostA:${keys.get('hostA')?.toString('hex')}\n`, { mode: 0o600 });
      await writeSparseFile(file('a.img'), 64 * MiB, SPARSE_DATA);
      await writeRandomFile(file('b.img'), 8 * MiB);
      await writeRandomFile(file('src.img'), 64 * MiB);
      for (const name of ['upload.img', 'scratch.img', 'temp.img', 'fuzz.img']) {
        await writeFile(file(name), '');
        await truncate(file(name), 64 * MiB);
      }
      // A deadline from accept: long enough for nbdinfo --list over 6 exports (about 200 ms per
      // export in plaintext), short enough that a stalled fuzz conversation ends within exchange()'s 5 s.
      server = new NbdServer({ tls, keys: (id) => keys.get(id), negotiationTimeoutMs: 3000, stopTimeoutMs: 2000 });
      await server.addExport(await fileExport({ name: 'a-disk', path: file('a.img'), hostId: 'hostA', readOnly: true, description: 'A, sealed' }));
      await server.addExport(await fileExport({ name: 'b-disk', path: file('b.img'), hostId: 'hostB' }));
      for (const name of ['upload', 'scratch', 'temp', 'fuzz']) await server.addExport(await fileExport({ name: `a-${name}`, path: file(`${name}.img`), hostId: 'hostA' }));
      ({ port } = await server.start({ host: '127.0.0.1', port: 0 }));
    });

    after(async () => {
      await server?.stop();
      assert.equal(server?.state, 'STOPPED');
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    it('nbdinfo --list shows a host its own exports only', async () => {
      const listed = JSON.parse(await ok('nbdinfo', ['--list', '--json', uri('')])) as { TLS: boolean; exports: { 'export-name': string }[] };
      const names = listed.exports.map((e) => e['export-name']).sort();
      assert.equal(listed.TLS, tls === 'psk');
      if (tls === 'psk') assert.deepEqual(names, ['a-disk', 'a-fuzz', 'a-scratch', 'a-temp', 'a-upload']);
      else assert.ok(names.includes('b-disk') && names.includes('a-disk'), 'without TLS nobody is identified: all is listed');
    });

    it('nbdinfo --json describes the export', async () => {
      const info = JSON.parse(await ok('nbdinfo', ['--json', uri('a-disk')])) as { structured: boolean; exports: Record<string, unknown>[] };
      assert.equal(info.structured, true);
      const e = info.exports[0] ?? {};
      assert.equal(e['export-size'], 64 * MiB);
      assert.equal(e.description, 'A, sealed');
      assert.equal(e.is_read_only, true);
      assert.deepEqual(e.contexts, ['base:allocation']);
      assert.deepEqual([e.block_size_minimum, e.block_size_preferred, e.block_size_maximum], [1, 4096, 32 * MiB]);
    });

    it('nbdinfo --map=base:allocation shows holes as holes', async () => {
      const map = JSON.parse(await ok('nbdinfo', ['--map=base:allocation', '--json', uri('a-disk')])) as { offset: number; length: number; type: number }[];
      const data = map.filter((e) => (e.type & p.NBD_STATE_HOLE) === 0).map(({ offset, length }) => ({ offset, length }));
      assert.deepEqual(data, SPARSE_DATA);
      assert.equal(map.reduce((n, e) => n + e.length, 0), 64 * MiB);
      assert.ok(map.filter((e) => e.type & p.NBD_STATE_HOLE).every((e) => e.type & p.NBD_STATE_ZERO), 'holes read as zeros');
    });

    it('nbdinfo --can: flush, trim, zero, fua, multi-conn; --is read-only', async () => {
      for (const can of ['flush', 'trim', 'zero', 'fua', 'multi-conn']) await ok('nbdinfo', ['--can', can, uri('a-scratch')]);
      await ok('nbdinfo', ['--is', 'read-only', uri('a-disk')]);
      assert.equal((await run('nbdinfo', ['--is', 'read-only', uri('a-scratch')])).code, 2);
    });

    it('nbdcopy reads an export to null: and copies a file in and out unchanged', async () => {
      await ok('nbdcopy', [uri('a-disk'), 'null:']);
      await ok('nbdcopy', ['--flush', file('src.img'), uri('a-upload')]);
      assert.equal(await sha256File(file('upload.img')), await sha256File(file('src.img')));
      await ok('nbdcopy', [uri('a-disk'), file('a-copy.img')]);
      assert.equal(await sha256File(file('a-copy.img')), await sha256File(file('a.img')));
    });

    it('qemu-img info, convert and compare', async () => {
      const info = JSON.parse(await ok('qemu-img', ['info', '--output=json', ...qemu('a-disk')])) as { 'virtual-size': number };
      assert.equal(info['virtual-size'], 64 * MiB);
      await ok('qemu-img', ['convert', '-O', 'raw', ...qemu('a-disk'), file('converted.img')]);
      assert.equal(await sha256File(file('converted.img')), await sha256File(file('a.img')));
      // With --image-opts every image is given as options, the local file too.
      const local = `driver=raw,file.driver=file,file.filename=${file('a.img')}`;
      assert.match(await ok('qemu-img', ['compare', ...qemu('a-disk'), local]), /Images are identical/);
    });

    it('qemu-io writes patterns, zeroes, discards and flushes; the file shows it', async () => {
      const out = await ok('qemu-io', [
        ...qemu('a-scratch'),
        ...['-c', 'write -P 0xab 0 64k', '-c', 'read -P 0xab 0 64k'],
        ...['-c', 'write -P 0x11 64k 64k', '-c', 'write -z 64k 64k', '-c', 'read -P 0 64k 64k'],
        ...['-c', 'write -P 0x22 1M 1M', '-c', 'discard 1M 1M'],
        ...['-c', 'write -f -P 0xcd 3M 4k', '-c', 'flush', '-c', 'read -P 0xcd 3M 4k'],
      ]);
      assert.doesNotMatch(out, /fail|error/i);
      const bytes = await readFile(file('scratch.img'));
      assert.ok(bytes.subarray(0, 65536).every((b) => b === 0xab));
      assert.ok(bytes.subarray(65536, 131072).every((b) => b === 0));
      assert.ok(bytes.subarray(3 * MiB, 3 * MiB + 4096).every((b) => b === 0xcd));
      // A read that does not match is reported: the test would notice a server that lies.
      assert.notEqual((await run('qemu-io', [...qemu('a-scratch'), '-c', 'read -P 0xee 0 4k'])).code, 0);
    });

    it('refuses writes to a read-only export with EPERM', async () => {
      const before = await sha256File(file('a.img'));
      // qemu honours NBD_FLAG_READ_ONLY and will not even open it for writing...
      assert.notEqual((await run('qemu-io', [...qemu('a-disk'), '-c', 'write -P 0x66 0 4k'])).code, 0);
      // ...so libnbd, told not to check, sends the writes and gets the server's answer.
      const tries = ['h.pwrite(b"x" * 4096, 0)', 'h.zero(4096, 0)', 'h.trim(4096, 0)'];
      const out = await ok('nbdsh', nbdsh(uri('a-disk'), ['h.set_strict_mode(0)', ...tries.flatMap((t) => ['try:', `    ${t}`, '    print("written")', 'except nbd.Error as e:', '    print(e.errno)'])]));
      assert.deepEqual(out.trim().split('\n'), ['EPERM', 'EPERM', 'EPERM']);
      assert.equal(await sha256File(file('a.img')), before);
    });

    it('answers requests past the end with EINVAL or ENOSPC', async () => {
      const tries = ['h.pread(4096, 64 * 2**20 - 512)', 'h.pwrite(b"x" * 4096, 64 * 2**20 - 512)', 'h.trim(2**20, 64 * 2**20)', 'h.zero(2**20, 2**40)', 'h.pread(0, 0)'];
      const out = await ok('nbdsh', nbdsh(uri('a-scratch'), ['h.set_strict_mode(0)', ...tries.flatMap((t) => ['try:', `    ${t}`, '    print("done")', 'except nbd.Error as e:', '    print(e.errno)'])]));
      assert.deepEqual(out.trim().split('\n'), ['EINVAL', 'ENOSPC', 'EINVAL', 'ENOSPC', 'EINVAL']);
    });

    if (tls === 'psk') {
      it('serves TLS 1.2 clients too: GnuTLS (qemu) limited to TLS 1.2 with ECDHE-PSK, and with plain PSK', async () => {
        const node = `driver=raw,file.driver=nbd,file.host=127.0.0.1,file.port=${port},file.export=a-disk,file.tls-creds=tls0`;
        for (const kx of ['+ECDHE-PSK', '+PSK']) {
          const priority = `NORMAL:-VERS-TLS1.3:-KX-ALL:${kx}`;
          const creds = `tls-creds-psk,id=tls0,endpoint=client,dir=${qemuPskDir},username=hostA,priority=${priority}`;
          const info = JSON.parse(await ok('qemu-img', ['info', '--output=json', '--object', creds, '--image-opts', node])) as { 'virtual-size': number };
          assert.equal(info['virtual-size'], 64 * MiB, priority);
          await ok('qemu-img', ['convert', '-O', 'raw', '--object', creds, '--image-opts', node, file('tls12.img')]);
          assert.equal(await sha256File(file('tls12.img')), await sha256File(file('a.img')), priority);
        }
        // The same limit with a wrong key ends in the handshake.
        const wrongDir = file('qemu-wrong');
        await mkdir(wrongDir, { recursive: true });
        await writeFile(join(wrongDir, 'keys.psk'), `hostA:${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
        const wrong = await run('qemu-img', ['info', '--object', `tls-creds-psk,id=tls0,endpoint=client,dir=${wrongDir},username=hostA,priority=NORMAL:-VERS-TLS1.3`, '--image-opts', node]);
        assert.notEqual(wrong.code, 0);
        assert.equal(wrong.stdout, '');
      });

      it('refuses a wrong key, an unknown host and a plaintext client', async () => {
        const wrong = file('wrong.psk');
        await writeFile(wrong, `hostA:${randomBytes(32).toString('hex')}\nhostC:${randomBytes(32).toString('hex')}\n`);
        const badKey = await run('nbdinfo', [uri('a-disk', 'hostA', wrong)]);
        assert.notEqual(badKey.code, 0);
        assert.match(badKey.stderr, /tls|handshake/i);
        assert.notEqual((await run('nbdinfo', [uri('a-disk', 'hostC', wrong)])).code, 0);
        const plain = await run('nbdinfo', [`nbd://127.0.0.1:${port}/a-disk`]);
        assert.notEqual(plain.code, 0);
        assert.equal((await run('nbdcopy', [`nbd://127.0.0.1:${port}/a-disk`, 'null:'])).code === 0, false);
      });

      it("refuses another host's export with the right key, and gives no data", async () => {
        const r = await run('nbdinfo', [uri('b-disk', 'hostA')]);
        assert.notEqual(r.code, 0);
        assert.doesNotMatch(r.stdout, /export-size/);
        assert.notEqual((await run('nbdcopy', [uri('b-disk', 'hostA'), file('stolen.img')])).code, 0);
        // Asked directly, the server answers as if the export did not exist.
        const probe = await ok('nbdsh', nbdsh(uri('b-disk', 'hostA'), ['try:', '    h.opt_info()', '    print("got", h.get_size())', 'except nbd.Error as e:', '    print("refused", e.errno)'], true));
        assert.match(probe, /^refused ENOENT/m);
        // And its owner gets it.
        await ok('nbdcopy', [uri('b-disk', 'hostB'), 'null:']);
      });
    }

    it('removeExport cuts an open connection and refuses new ones', async () => {
      const script = [
        'import sys',
        'h.pread(512, 0)',
        'print("ready", flush=True)',
        'sys.stdin.readline()',
        'try:',
        '    h.pread(512, 0)',
        '    print("still open", flush=True)',
        'except nbd.Error as e:',
        '    print("cut", flush=True)',
      ];
      const child = spawn('nbdsh', nbdsh(uri('a-temp'), script), { env });
      let out = '';
      child.stdout.on('data', (b: Buffer) => (out += b.toString()));
      child.stderr.on('data', (b: Buffer) => (out += b.toString()));
      const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
      await waitFor('nbdsh to attach', () => Promise.resolve(out.includes('ready')), 20_000);
      await server.removeExport('a-temp');
      child.stdin.end('\n');
      await exited;
      assert.match(out, /cut/);
      assert.notEqual((await run('nbdinfo', [uri('a-temp')])).code, 0);
    });

    it('drops a client that goes quiet during negotiation', async () => {
      const started = Date.now();
      const greeting = await new Promise<Buffer>((resolve) => {
        const got: Buffer[] = [];
        const socket = connect(port, '127.0.0.1');
        socket.on('data', (b) => got.push(b));
        socket.on('close', () => resolve(Buffer.concat(got)));
      });
      assert.deepEqual(greeting, p.serverGreeting());
      assert.ok(Date.now() - started >= 900, 'not before the timeout');
    });

    it('survives 1,000 mutated packets from a fuzz client, then serves nbdinfo', async () => {
      const rand = prng(tls === 'psk' ? 1 : 2);
      const flags = p.clientFlags(p.NBD_FLAG_C_FIXED_NEWSTYLE | p.NBD_FLAG_C_NO_ZEROES);
      const options = [
        p.clientOption(p.NBD_OPT.STRUCTURED_REPLY),
        p.clientOption(p.NBD_OPT.SET_META_CONTEXT, p.metaContextRequestData('a-fuzz', ['base:allocation'])),
        p.clientOption(p.NBD_OPT.LIST),
        p.clientOption(p.NBD_OPT.INFO, p.infoRequestData('b-disk', [1, 2, 3])),
        p.clientOption(p.NBD_OPT.GO, p.infoRequestData('a-fuzz', [3])),
      ];
      const requests = [
        p.clientRequest({ flags: 0, type: p.NBD_CMD.WRITE, handle: 1n, offset: 4096, length: 4096, data: Buffer.alloc(4096, 0x5a) }),
        p.clientRequest({ flags: 0, type: p.NBD_CMD.READ, handle: 2n, offset: 0, length: 65536 }),
        p.clientRequest({ flags: p.NBD_CMD_FLAG.FUA, type: p.NBD_CMD.WRITE_ZEROES, handle: 3n, offset: 0, length: MiB }),
        p.clientRequest({ flags: 0, type: p.NBD_CMD.BLOCK_STATUS, handle: 4n, offset: 0, length: 64 * MiB }),
        p.clientRequest({ flags: 0, type: p.NBD_CMD.TRIM, handle: 5n, offset: MiB, length: MiB }),
        p.clientRequest({ flags: 0, type: p.NBD_CMD.FLUSH, handle: 6n, offset: 0, length: 0 }),
      ];
      const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
      const conversations: { packets: Buffer[]; overTls: boolean }[] = [];
      for (let sent = 0; sent < 1000; ) {
        // A well-formed opening cut short at random, then packets with one to three mutations
        // each, so every stage gets bad bytes. With TLS, most conversations first upgrade
        // properly as hostA, the rest fuzz the plaintext part.
        const overTls = tls === 'psk' && rand() < 0.75;
        const keep = Math.floor(rand() * (options.length + 1));
        const packets = [...(overTls ? [] : [flags]), ...options.slice(0, keep)];
        const pool = keep === options.length ? requests : [flags, ...options];
        for (let i = 1 + Math.floor(rand() * 4); i > 0 && sent < 1000; i--, sent++) packets.push(mutate(pick(pool), rand));
        conversations.push({ packets, overTls });
      }
      const psk = { identity: 'hostA', key: keys.get('hostA') ?? Buffer.alloc(0) };
      for (let i = 0; i < conversations.length; i += 8) {
        await Promise.all(conversations.slice(i, i + 8).map((c) => exchange(port, c.packets, c.overTls ? psk : undefined)));
      }
      assert.equal(server.state, 'RUNNING');
      await waitFor('every fuzz connection to be gone', () => Promise.resolve(server.connectionsOpen === 0), 10_000);
      await ok('nbdinfo', [uri('a-disk')]);
    });
  });
}

describe('NBD server lifecycle', () => {
  it('stop() ends attached clients and closes the listener', async () => {
    requireTools();
    const dir = await makeTempDir('prestage-nbd-');
    const server = new NbdServer({ tls: 'off', stopTimeoutMs: 500 });
    try {
      await writeSparseFile(join(dir, 'x.img'), 4 * MiB, []);
      await server.addExport(await fileExport({ name: 'x', path: join(dir, 'x.img'), hostId: 'h' }));
      const { port } = await server.start({ host: '127.0.0.1', port: 0 });
      const child = spawn('nbdsh', ['-u', `nbd://127.0.0.1:${port}/x`, '-c', 'import time\nh.pread(512, 0)\nprint("ready", flush=True)\ntime.sleep(30)'], { env });
      let out = '';
      child.stdout.on('data', (b: Buffer) => (out += b.toString()));
      const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
      await waitFor('nbdsh to attach', () => Promise.resolve(out.includes('ready')), 20_000);
      assert.equal(server.connectionsOpen, 1);
      const t0 = Date.now();
      await server.stop();
      assert.ok(Date.now() - t0 < 2000);
      assert.equal(server.state, 'STOPPED');
      assert.equal(server.connectionsOpen, 0);
      assert.notEqual((await run('nbdinfo', [`nbd://127.0.0.1:${port}/x`])).code, 0);
      child.kill();
      await exited;
    } finally {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('NBD server API', () => {
  it('checks options, export specs and its lifecycle', async () => {
    assert.throws(() => new NbdServer({}), InputError, 'TLS-PSK needs keys');
    assert.throws(() => new NbdServer({ tls: 'off', maxRequestLength: 100 }), InputError);
    assert.throws(() => new NbdServer({ tls: 'off', maxInFlight: 0 }), InputError);
    const dir = await makeTempDir('prestage-nbd-');
    const server = new NbdServer({ tls: 'psk', keys: () => undefined });
    try {
      await writeSparseFile(join(dir, 'x.img'), MiB, []);
      await server.addExport(await fileExport({ name: 'x', path: join(dir, 'x.img'), hostId: 'h1' }));
      await server.addExport(await fileExport({ name: 'y', path: join(dir, 'x.img'), hostId: 'h1', readOnly: true }));
      await server.addExport(await fileExport({ name: 'z', path: join(dir, 'x.img'), hostId: 'h2' }));
      await assert.rejects(server.addExport(await fileExport({ name: 'x', path: join(dir, 'x.img'), hostId: 'h2' })), ConflictError);
      await assert.rejects(server.addExport(await fileExport({ name: '', path: join(dir, 'x.img'), hostId: 'h2' })), InputError);
      await assert.rejects(fileExport({ name: 'dir', path: dir, hostId: 'h2', readOnly: true }).then((spec) => server.addExport(spec)), InputError);
      await assert.rejects(fileExport({ name: 'gone', path: join(dir, 'missing.img'), hostId: 'h2' }).then((spec) => server.addExport(spec)), /ENOENT/);
      assert.deepEqual(server.listExports().map((e) => [e.name, e.size, e.readOnly]), [['x', MiB, false], ['y', MiB, true], ['z', MiB, false]]);
      await server.start({ host: '127.0.0.1', port: 0 });
      await assert.rejects(server.start({ host: '127.0.0.1', port: 0 }), ConflictError);
      await server.closeHost('h1');
      assert.deepEqual(server.listExports().map((e) => e.name), ['z']);
      await server.removeExport('z');
      await server.removeExport('z'); // absent is fine
    } finally {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    }
    assert.equal(server.state, 'STOPPED');
    await assert.rejects(server.addExport({ name: 'late', device: new MemoryDevice(4096), volume: 'memory', hostId: 'h' }), UnavailableError);
  });
});
