/**
 * Images over the wire: uploads (PUT /v1/images/:name), downloads the server makes
 * (POST /v1/images {url}), and server-side paths confined to the import directories.
 * Real sockets, real files, the real CLI.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { request, createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { prestage } from '../helpers/cli-run.js';
import { makeTempDir, sha256File, waitFor, writeRandomFile, writeSparseFile } from '../helpers/files.js';
import { freePort, startServe } from '../helpers/server.js';
import { requireTools } from '../customize/fixtures.js';

const MiB = 1 << 20;
const GiB = 1 << 30;

interface Reply {
  status: number;
  body: { error?: { code: string; message: string }; sha256?: string; ref?: string; sizeBytes?: number };
}

/** A PUT of `body` over a real socket; `cutAfter` bytes sent, the socket is destroyed instead of finished. */
function put(base: string, path: string, body: Buffer, opts: { token?: string; headers?: Record<string, string>; cutAfter?: number; length?: number } = {}): Promise<Reply | 'cut'> {
  return new Promise((resolve, reject) => {
    const req = request(`${base}${path}`, {
      method: 'PUT',
      headers: {
        'content-type': 'application/octet-stream',
        'content-length': String(opts.length ?? body.length),
        ...(opts.token !== undefined && { authorization: `Bearer ${opts.token}` }),
        ...opts.headers,
      },
    });
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (s: string) => (text += s));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text ? (JSON.parse(text) as Reply['body']) : {} }));
    });
    if (opts.cutAfter !== undefined) {
      req.on('error', () => resolve('cut'));
      req.write(body.subarray(0, opts.cutAfter), () => setTimeout(() => req.destroy(), 200));
      return;
    }
    req.on('error', reject);
    req.end(body);
  });
}

function entries(dir: string): string[] {
  return fs.readdirSync(dir);
}

describe('PUT /v1/images/:name: uploads', () => {
  let t: TestApp;
  let base: string;
  let dir: string;
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  const image = Buffer.alloc(4 * MiB);

  before(async () => {
    dir = await makeTempDir();
    t = await startTestApp({ listen: '127.0.0.1:0' }, { listen: true });
    base = `http://${t.app.address}`;
    image.fill(7, 0, MiB); // data, then zeros: a hole the upload need not write
  });
  after(async () => {
    await t.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('stores a raw upload as the next version, hashed as it arrives, with the expected digest', async () => {
    const r = await put(base, '/v1/images/up', image, { token: t.token, headers: { 'x-prestage-sha256': sha(image).toUpperCase() } });
    assert.notEqual(r, 'cut');
    assert.equal((r as Reply).status, 201, JSON.stringify(r));
    assert.equal((r as Reply).body.sha256, sha(image));
    assert.equal((r as Reply).body.ref, 'up@1');
    assert.deepEqual(entries(join(t.dataDir, 'tmp')), []);
  });

  it('refuses a wrong digest with 422 and keeps nothing', async () => {
    const other = Buffer.alloc(MiB, 3);
    const r = (await put(base, '/v1/images/wrong', other, { token: t.token, headers: { 'x-prestage-sha256': sha(image) } })) as Reply;
    assert.equal(r.status, 422);
    assert.equal(r.body.error?.code, 'PRESTAGE_BAD_IMAGE');
    assert.match(r.body.error?.message ?? '', /not the expected/);
    assert.equal((await t.call('GET', '/v1/images/wrong')).status, 404);
    assert.deepEqual(entries(join(t.dataDir, 'tmp')), []);
    assert.equal(entries(join(t.dataDir, 'images')).length, 1, 'only the first upload is stored');
  });

  it('keeps nothing of an upload cut in the middle', async () => {
    const big = Buffer.alloc(64 * MiB, 9);
    assert.equal(await put(base, '/v1/images/cut', big, { token: t.token, cutAfter: 8 * MiB }), 'cut');
    await waitFor('the cut upload to be cleaned up', () => Promise.resolve(entries(join(t.dataDir, 'tmp')).length === 0), 10_000);
    assert.equal((await t.call('GET', '/v1/images/cut')).status, 404);
    const events = (await t.call<Array<{ type: string; subject: string }>>('GET', '/v1/events')).body;
    assert.ok(!events.some((e) => e.subject.startsWith('cut@')), 'no event names the cut upload');
  });

  it('refuses a stranger before reading the body, and a reader token with 403', async () => {
    const none = (await put(base, '/v1/images/anon', image)) as Reply;
    assert.equal(none.status, 401);
    const reader = (await t.call<{ token: string }>('POST', '/v1/tokens', { name: 'up-reader', role: 'reader' })).body.token;
    const r = (await put(base, '/v1/images/anon', image, { token: reader })) as Reply;
    assert.equal(r.status, 403);
    assert.equal((await t.call('GET', '/v1/images/anon')).status, 404);
  });

  it('refuses a body that is not an image (422), a bad name (400) and a bad digest header (400)', async () => {
    const odd = (await put(base, '/v1/images/odd', Buffer.alloc(1000, 1), { token: t.token })) as Reply;
    assert.equal(odd.status, 422);
    assert.match(odd.body.error!.message, /multiple of 512/);
    assert.equal(((await put(base, '/v1/images/Bad%20Name', image, { token: t.token })) as Reply).status, 400);
    const badHeader = (await put(base, '/v1/images/hdr', image, { token: t.token, headers: { 'x-prestage-sha256': 'abc' } })) as Reply;
    assert.equal(badHeader.status, 400);
    assert.equal(badHeader.body.error?.code, 'PRESTAGE_INPUT');
    assert.deepEqual(entries(join(t.dataDir, 'tmp')), []);
  });

  it('converts a qcow2 upload, and refuses one with a backing file', async () => {
    requireTools('qemu-img');
    const raw = join(dir, 'q.raw');
    fs.writeFileSync(raw, image);
    const q = join(dir, 'q.qcow2');
    execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, q]);
    const r = (await put(base, '/v1/images/q', fs.readFileSync(q), { token: t.token })) as Reply;
    assert.equal(r.status, 201, JSON.stringify(r));
    assert.equal(r.body.sha256, sha(image), 'the image is the raw content of the qcow2');
    const overlay = join(dir, 'overlay.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', 'nbd://127.0.0.1:9/x', '-F', 'raw', overlay, '4M']);
    const refused = (await put(base, '/v1/images/overlay', fs.readFileSync(overlay), { token: t.token })) as Reply;
    assert.equal(refused.status, 422);
    assert.match(refused.body.error!.message, /backing file/);
    assert.deepEqual(entries(join(t.dataDir, 'tmp')), []);
  });
});

describe('POST /v1/images {url}: the server downloads', () => {
  let t: TestApp;
  let web: Server;
  let webBase: string;
  const body = Buffer.alloc(24 * MiB, 5);
  const sha = createHash('sha256').update(body).digest('hex');
  let slowRequests = 0;

  before(async () => {
    t = await startTestApp();
    web = createServer((req, res) => {
      if (req.url === '/image.raw') return res.writeHead(200, { 'content-length': body.length }).end(body);
      if (req.url === '/slow.raw') {
        // 1 MiB at a time, so a client polling the tasks sees the download under way.
        slowRequests++;
        res.writeHead(200, { 'content-length': body.length });
        let at = 0;
        const next = () => {
          if (at >= body.length) return res.end();
          res.write(body.subarray(at, (at += MiB)));
          setTimeout(next, 40);
        };
        return next();
      }
      res.writeHead(404).end('no');
    });
    web.listen(0, '127.0.0.1');
    await new Promise((r) => web.once('listening', r));
    webBase = `http://127.0.0.1:${(web.address() as AddressInfo).port}`;
  });
  after(async () => {
    web.close();
    await t.close();
  });

  it('fetches an http URL, checks the digest, and shows progress in /v1/tasks while it runs', async () => {
    const pending = t.call<{ sha256: string; ref: string }>('POST', '/v1/images', { name: 'web', url: `${webBase}/slow.raw`, sha256: sha });
    const task = await waitFor('the download task', async () => {
      const tasks = (await t.call<Array<{ kind: string; subject: string; doneBytes: number; totalBytes: number }>>('GET', '/v1/tasks')).body;
      return tasks.find((x) => x.kind === 'download' && x.subject === 'web' && x.doneBytes > 0);
    });
    assert.equal(task.totalBytes, body.length);
    const r = await pending;
    assert.equal(r.status, 201, r.text);
    assert.equal(r.body.sha256, sha);
    assert.equal(slowRequests, 1);
  });

  it('refuses a wrong digest, a 404, an unreachable port and a non-http scheme, keeping nothing', async () => {
    const wrong = await t.call<{ error: { code: string } }>('POST', '/v1/images', { name: 'w2', url: `${webBase}/image.raw`, sha256: '0'.repeat(64) });
    assert.equal(wrong.status, 422);
    const missing = await t.call<{ error: { message: string } }>('POST', '/v1/images', { name: 'w3', url: `${webBase}/none` });
    assert.equal(missing.status, 422);
    assert.match(missing.body.error.message, /404/);
    const closed = await t.call<{ error: { message: string } }>('POST', '/v1/images', { name: 'w4', url: `http://127.0.0.1:${await freePort()}/x.raw` });
    assert.equal(closed.status, 422);
    assert.match(closed.body.error.message, /ECONNREFUSED/);
    for (const url of ['file:///etc/passwd', 'ftp://127.0.0.1/x', 'not a url']) {
      const r = await t.call<{ error: { code: string } }>('POST', '/v1/images', { name: 'w5', url });
      assert.equal(r.status, 400, url);
    }
    const both = await t.call('POST', '/v1/images', { name: 'w6', url: `${webBase}/image.raw`, path: '/tmp/x' });
    assert.equal(both.status, 400);
    assert.deepEqual((await t.call<Array<{ name: string }>>('GET', '/v1/images')).body.map((i) => i.name), ['web']);
    assert.deepEqual(entries(join(t.dataDir, 'tmp')), []);
  });
});

describe('POST /v1/images {path}: server-side files, admin only, inside --import-dir', () => {
  let t: TestApp;
  let root: string;
  let inside: string;
  let outside: string;

  before(async () => {
    root = await makeTempDir();
    inside = join(root, 'imports');
    outside = join(root, 'elsewhere');
    fs.mkdirSync(inside);
    fs.mkdirSync(outside);
    await writeRandomFile(join(inside, 'ok.raw'), MiB);
    await writeRandomFile(join(outside, 'secret.raw'), MiB);
    fs.symlinkSync(join(outside, 'secret.raw'), join(inside, 'link.raw'));
    fs.symlinkSync(outside, join(inside, 'dir-link'));
    // The data directory sits inside the import directory: its state.db must still be refused.
    t = await startTestApp({ dataDir: join(inside, 'data'), importDirs: [inside] });
  });
  after(async () => {
    await t.close();
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('imports a file inside an import directory with an admin token', async () => {
    const r = await t.call('POST', '/v1/images', { name: 'ok', path: join(inside, 'ok.raw') });
    assert.equal(r.status, 201, r.text);
  });

  it('refuses outside paths, symlinks out, the data directory and missing files with one message', async () => {
    const paths = [
      join(outside, 'secret.raw'),
      join(outside, 'missing.raw'),
      join(inside, 'link.raw'),
      join(inside, 'dir-link', 'secret.raw'),
      join(inside, 'dir-link', 'missing.raw'),
      join(inside, 'missing.raw'),
      join(inside, 'data', 'state.db'),
      join(inside, '..', 'elsewhere', 'secret.raw'),
      '/etc/shadow',
      '/nonexistent/shadow',
    ];
    for (const path of paths) {
      const r = await t.call<{ error: { code: string; message: string } }>('POST', '/v1/images', { name: 'x', path });
      assert.equal(r.status, 403, `${path}: ${r.text}`);
      assert.equal(r.body.error.message, `cannot import ${path}: not a file inside this server's import directories (--import-dir)`);
    }
    assert.equal((await t.call('POST', '/v1/images', { name: 'x', path: 'imports/ok.raw' })).status, 400, 'a relative path');
    assert.deepEqual((await t.call<Array<{ name: string }>>('GET', '/v1/images')).body.map((i) => i.name), ['ok']);
  });

  it('refuses an operator token (403) even for a file inside', async () => {
    const op = (await t.call<{ token: string }>('POST', '/v1/tokens', { name: 'op', role: 'operator' })).body.token;
    const r = await t.call<{ error: { message: string } }>('POST', '/v1/images', { name: 'op', path: join(inside, 'ok.raw') }, { authorization: `Bearer ${op}` });
    assert.equal(r.status, 403);
    assert.match(r.body.error.message, /admin/);
  });

  it('imports no server-side path at all without --import-dir', async () => {
    const bare = await startTestApp({ importDirs: [] });
    try {
      const r = await bare.call<{ error: { message: string } }>('POST', '/v1/images', { name: 'ok', path: join(inside, 'ok.raw') });
      assert.equal(r.status, 403);
      assert.match(r.body.error.message, /--import-dir/);
    } finally {
      await bare.close();
    }
  });
});

describe('prestage image import: uploads to a server in another data directory', () => {
  it('sends a 1 GiB sparse image with a progress-free pipe, and the sha256 matches', async () => {
    const dir = await makeTempDir();
    const serve = await startServe(join(dir, 'server-data'));
    try {
      const file = join(dir, 'sparse.raw');
      await writeSparseFile(file, GiB, [
        { offset: 0, length: MiB },
        { offset: 512 * MiB, length: MiB },
        { offset: GiB - MiB, length: MiB },
      ]);
      const expected = await sha256File(file);
      const r = await prestage(['image', 'import', 'sparse', file, '--sha256', expected, '--json'], { env: serve.env, cwd: dir });
      assert.equal(r.code, 0, r.stderr);
      const img = JSON.parse(r.stdout) as { sha256: string; sizeBytes: number };
      assert.equal(img.sha256, expected);
      assert.equal(img.sizeBytes, GiB);
      const stored = fs.readdirSync(join(dir, 'server-data', 'images'));
      assert.deepEqual(stored, [`${expected}.raw`]);
      const st = fs.statSync(join(dir, 'server-data', 'images', stored[0]!));
      assert.ok(st.blocks * 512 < 64 * MiB, `the stored image stays sparse (${st.blocks * 512} bytes allocated)`);
      const wrong = await prestage(['image', 'import', 'sparse2', file, '--sha256', 'f'.repeat(64)], { env: serve.env, cwd: dir });
      assert.equal(wrong.code, 5, wrong.stderr);
      assert.match(wrong.stderr, /not the expected/);
      const missing = await prestage(['image', 'import', 'gone', 'missing.raw'], { env: serve.env, cwd: dir });
      assert.equal(missing.code, 5);
      assert.match(missing.stderr, /missing\.raw.*ENOENT/);
      assert.deepEqual(fs.readdirSync(join(dir, 'server-data', 'tmp')), []);
    } finally {
      await serve.kill('SIGTERM');
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
