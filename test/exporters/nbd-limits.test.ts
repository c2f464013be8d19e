// Connection caps of the NBD server: one address opening many connections is cut off at its cap
// (closed before a byte is sent) while another address is still served, a cap on all
// connections holds, and a real client (nbdinfo) connects once the flood is gone.
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { NbdServer } from '../../src/exporters/nbd/index.js';
import { makeTempDir, waitFor, writeSparseFile } from '../helpers/files.js';
import { ok } from '../helpers/nbd-tools.js';
import { fileExport } from './nbd-helpers.js';

/** Opens a connection from `localAddress` and tells whether the server's greeting (NBDMAGIC) arrived or the socket was closed without one. */
function knock(port: number, localAddress: string): Promise<{ greeted: boolean; socket: Socket }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, localAddress });
    let got = Buffer.alloc(0);
    socket.on('data', (b: Buffer) => {
      got = Buffer.concat([got, b]);
      if (got.length >= 8) resolve({ greeted: got.subarray(0, 8).toString('latin1') === 'NBDMAGIC', socket });
    });
    socket.on('close', () => resolve({ greeted: false, socket }));
    socket.on('error', (e) => (got.length === 0 ? resolve({ greeted: false, socket }) : reject(e)));
  });
}

describe('NBD connection caps', () => {
  let dir: string;
  let server: NbdServer;
  let port = 0;
  const open: Socket[] = [];

  before(async () => {
    dir = await makeTempDir('prestage-nbd-caps-');
    await writeSparseFile(join(dir, 'x.img'), 1 << 20, []);
    server = new NbdServer({ tls: 'off', maxConnections: 30, maxConnectionsPerAddress: 20, negotiationTimeoutMs: 30_000, stopTimeoutMs: 500 });
    await server.addExport(await fileExport({ name: 'x', path: join(dir, 'x.img'), hostId: 'h' }));
    ({ port } = await server.start({ host: '127.0.0.1', port: 0 }));
  });
  after(async () => {
    for (const s of open) s.destroy();
    await server?.stop();
  });

  it('serves at most its cap from one address, and still serves another', async () => {
    const flood = await Promise.all(Array.from({ length: 200 }, () => knock(port, '127.0.0.1')));
    open.push(...flood.map((k) => k.socket));
    assert.equal(flood.filter((k) => k.greeted).length, 20, 'the first 20 from 127.0.0.1 are greeted, the rest closed');
    assert.equal(server.connectionsOpen, 20);
    assert.ok(server.connectionsRefused >= 180);
    const other = await knock(port, '127.0.0.2');
    open.push(other.socket);
    assert.ok(other.greeted, 'another address is still served');
  });

  it('holds the cap on all connections together', async () => {
    const more = await Promise.all(Array.from({ length: 20 }, () => knock(port, '127.0.0.3')));
    open.push(...more.map((k) => k.socket));
    // 21 open already: 9 more fit under 30.
    assert.equal(more.filter((k) => k.greeted).length, 9);
    assert.equal(server.connectionsOpen, 30);
  });

  it('serves a real client once the flood is gone', async () => {
    for (const s of open.splice(0)) s.destroy();
    await waitFor('the connections to close', () => Promise.resolve(server.connectionsOpen === 0), 10_000);
    assert.equal((await ok('nbdinfo', ['--size', `nbd://127.0.0.1:${port}/x`])).trim(), String(1 << 20));
  });
});
