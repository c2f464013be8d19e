// A qcow2 that names a backing file or an external data file is refused from its header, before
// qemu-img opens anything: headers made by the real qemu-img, hostile bytes of every length, and
// an import of an image whose backing file is a URL on a port this test listens on (no connection
// may arrive).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { pino } from 'pino';
import { BadImageError } from '../../src/domain/index.js';
import { FileDriver } from '../../src/drivers/index.js';
import { QCOW2_HEADER_BYTES, checkQcow2Header } from '../../src/drivers/file/qcow2-header.js';
import { makeTempDir } from '../helpers/files.js';

const qemuImg = (...args: string[]) => execFileSync('qemu-img', args, { stdio: ['ignore', 'ignore', 'pipe'] });
const head = (path: string) => readFileSync(path).subarray(0, QCOW2_HEADER_BYTES);

describe('qcow2 headers', () => {
  let dir: string;
  let server: Server;
  let port = 0;
  let connections = 0;

  before(async () => {
    dir = await makeTempDir('prestage-qcow2-');
    server = createServer((s) => {
      connections++;
      s.destroy();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as { port: number }).port;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('takes self-contained images (v2 and v3) and refuses backing files and external data files', () => {
    qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'v3.qcow2'), '4M');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', join(dir, 'v2.qcow2'), '4M');
    qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', `nbd://127.0.0.1:${port}/x`, '-F', 'raw', join(dir, 'url.qcow2'), '4M');
    qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', '/etc/shadow', '-F', 'raw', join(dir, 'local.qcow2'), '4M');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', `data_file=${join(dir, 'data.raw')}`, join(dir, 'data.qcow2'), '4M');
    assert.deepEqual(checkQcow2Header(head(join(dir, 'v3.qcow2'))), { ok: true, version: 3, virtualSize: 4 << 20 });
    assert.deepEqual(checkQcow2Header(head(join(dir, 'v2.qcow2'))), { ok: true, version: 2, virtualSize: 4 << 20 });
    for (const f of ['url.qcow2', 'local.qcow2']) {
      const v = checkQcow2Header(head(join(dir, f)));
      assert.ok(!v.ok && /backing file/.test(v.reason), f);
    }
    const data = checkQcow2Header(head(join(dir, 'data.qcow2')));
    assert.ok(!data.ok && /external data file/.test(data.reason));
  });

  it('answers every byte string with a verdict, never a throw, and takes none that names a backing file', () => {
    const good = head(join(dir, 'v3.qcow2'));
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), fc.integer({ min: 0, max: 120 }), fc.boolean(), (bytes, cut, onGood) => {
        // Either raw bytes, or the good header with a stretch overwritten and cut short.
        const b = onGood ? Buffer.concat([good.subarray(0, cut), Buffer.from(bytes), good.subarray(cut + bytes.length)]).subarray(0, Math.max(cut, 4) + bytes.length) : Buffer.from(bytes);
        const v = checkQcow2Header(b);
        if (v.ok) {
          assert.ok(b.length >= 72);
          assert.equal(b.readBigUInt64BE(8), 0n, 'no backing file offset');
          if (v.version === 3) assert.equal(b.readBigUInt64BE(72) & 4n, 0n, 'no external data file');
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('refuses to import an image backed by a URL, and nothing connects to it', async () => {
    const driver = await FileDriver.open({ dataDir: join(dir, 'data'), logger: pino({ level: 'silent' }) });
    try {
      await assert.rejects(driver.importImage(join(dir, 'url.qcow2')), (e: unknown) => e instanceof BadImageError && /backing file/.test(e.message));
      await assert.rejects(driver.importImage(join(dir, 'data.qcow2')), (e: unknown) => e instanceof BadImageError && /external data file/.test(e.message));
      const ok = await driver.importImage(join(dir, 'v3.qcow2'));
      assert.equal(ok.format, 'qcow2');
      assert.equal(ok.sizeBytes, 4 << 20);
    } finally {
      await driver.close();
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(connections, 0, 'qemu-img never opened the backing URL');
  });
});
