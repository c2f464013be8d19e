// The device an NBD export serves while its volume opens in the background. Unit test of the
// wrapper: the volume under it is a real file (FileDevice); only its open is delayed or failed.
import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { BlockDevice } from '../../src/domain/index.js';
import { FileDevice } from '../../src/drivers/file/file-device.js';
import { BackgroundDevice } from '../../src/exporters/background-device.js';
import { makeTempDir, writeRandomFile } from '../helpers/files.js';

const SIZE = 64 << 10;

describe('a device opened in the background', () => {
  let dir: string;
  let file: string;
  let bytes: Buffer;

  before(async () => {
    dir = await makeTempDir('prestage-bgdev-');
    file = join(dir, 'copy.raw');
    await writeRandomFile(file, SIZE);
    bytes = await readFile(file);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  /** Opens the file once `gate` resolves; counts the opens and keeps what it opened. */
  function gatedOpen(gate: Promise<void>) {
    const opened: BlockDevice[] = [];
    let calls = 0;
    return {
      opened,
      calls: () => calls,
      open: async () => {
        calls++;
        await gate;
        const d = await FileDevice.open(file, false);
        opened.push(d);
        return d;
      },
    };
  }

  it('answers its size at once and serves the first read when the open finishes', async () => {
    let letOpen!: () => void;
    const o = gatedOpen(new Promise((r) => (letOpen = r)));
    const errors: unknown[] = [];
    const dev = new BackgroundDevice(SIZE, o.open, (e) => errors.push(e));
    assert.equal(dev.size, SIZE);
    const buf = Buffer.alloc(4096);
    let done = false;
    const read = dev.read(buf, 8192).then(() => (done = true));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(done, false, 'the read waits for the open');
    letOpen();
    await read;
    assert.deepEqual(buf, bytes.subarray(8192, 8192 + 4096));
    assert.equal(o.calls(), 1, 'opened once, in the background, not again by the read');
    assert.deepEqual(errors, []);
    await dev.close();
    await assert.rejects(dev.read(buf, 0), /closed/);
  });

  it('a failed open fails the requests meanwhile, is reported, and the next request opens again', async () => {
    let fail = true;
    let calls = 0;
    const errors: unknown[] = [];
    const dev = new BackgroundDevice(
      SIZE,
      async () => {
        calls++;
        if (fail) throw Object.assign(new Error('ENOENT: no such volume'), { code: 'ENOENT' });
        return FileDevice.open(file, false);
      },
      (e) => errors.push(e),
    );
    const buf = Buffer.alloc(512);
    await assert.rejects(dev.read(buf, 0), /ENOENT/);
    assert.ok(errors.length >= 1, 'the failure was reported');
    fail = false;
    await dev.read(buf, 512);
    assert.deepEqual(buf, bytes.subarray(512, 1024));
    assert.ok(calls >= 2);
    await dev.close();
  });

  it('refuses a volume whose size is not its image size, and closes it', async () => {
    const o = gatedOpen(Promise.resolve());
    const errors: unknown[] = [];
    const dev = new BackgroundDevice(SIZE * 2, o.open, (e) => errors.push(e));
    await assert.rejects(dev.read(Buffer.alloc(512), 0), /holds 65536 bytes, not the 131072/);
    await assert.rejects(o.opened[0]!.read(Buffer.alloc(512), 0), 'the wrong volume was closed');
    await dev.close();
  });

  it('closed while it opens: the open finishes, then what it opened is closed', async () => {
    let letOpen!: () => void;
    const o = gatedOpen(new Promise((r) => (letOpen = r)));
    const errors: unknown[] = [];
    const dev = new BackgroundDevice(SIZE, o.open, (e) => errors.push(e));
    const closing = dev.close();
    letOpen();
    await closing;
    assert.equal(o.opened.length, 1);
    await assert.rejects(o.opened[0]!.read(Buffer.alloc(512), 0), 'closed with its export');
    assert.deepEqual(errors, [], 'a close is not an open failure');
  });
});
