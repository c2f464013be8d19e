/**
 * The package as a user gets it: `npm pack`, installed into an empty folder, then served, fed an
 * image and a host, and read over NBD by nbdcopy — all from the installed copy, which holds
 * compiled JavaScript only (no src/, no tsx).
 *
 * The install skips dependency build scripts and takes better-sqlite3's native module from this
 * checkout's node_modules (the same version, built by npm for this Node): building it again from
 * source would add minutes and test npm, not prestage.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { makeTempDir, waitFor, writeRandomFile } from '../helpers/files.js';
import { freePort } from '../helpers/server.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const MiB = 1 << 20;

describe('the packed package, installed into an empty folder', () => {
  let dir: string;
  let app: string;
  let bin: string;
  let serve: ChildProcess | undefined;

  before(async () => {
    dir = await makeTempDir('prestage-pack-');
    const packed = JSON.parse(execFileSync('npm', ['pack', '--json', '--pack-destination', dir], { cwd: REPO, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })) as { filename: string }[];
    const tarball = join(dir, packed[0]!.filename);
    app = join(dir, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'tryout', private: true }));
    execFileSync('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--ignore-scripts', '--loglevel=error', tarball], { cwd: app, stdio: ['ignore', 'pipe', 'pipe'] });
    const release = join(app, 'node_modules', 'better-sqlite3', 'build', 'Release');
    mkdirSync(release, { recursive: true });
    copyFileSync(join(REPO, 'node_modules', 'better-sqlite3', 'build', 'Release', 'better_sqlite3.node'), join(release, 'better_sqlite3.node'));
    bin = join(app, 'node_modules', '.bin', 'prestage');
  });
  after(async () => {
    if (serve && serve.exitCode === null) {
      serve.kill('SIGTERM');
      await once(serve, 'exit');
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('is a real package: compiled code, its licence and docs, no sources, no TypeScript runtime', () => {
    const pkg = join(app, 'node_modules', 'prestage');
    const manifest = JSON.parse(readFileSync(join(pkg, 'package.json'), 'utf8')) as { private?: boolean; license?: string; files?: string[] };
    assert.equal(manifest.private, undefined);
    assert.equal(manifest.license, 'Apache-2.0');
    assert.ok(Array.isArray(manifest.files));
    for (const f of ['LICENSE', 'README.md', 'bin/prestage.js', 'dist/cli/main.js', 'dist/drivers/file/copy-worker.js', 'dist/service/simulation-worker.js', 'dist/web/index.html', 'docs/design.md', 'data/traces/azure-v1/LICENSE']) {
      assert.ok(existsSync(join(pkg, f)), `${f} is in the package`);
    }
    assert.ok(!existsSync(join(pkg, 'src')), 'no TypeScript sources');
    assert.ok(!existsSync(join(pkg, 'test')), 'no tests');
    assert.ok(!existsSync(join(app, 'node_modules', 'tsx')), 'tsx is not installed: nothing compiles TypeScript at run time');
  });

  it('answers --version', () => {
    const r = runBin(['--version']);
    const version = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
    assert.equal(r.trim(), version);
  });

  it('serves, imports, provisions, and the host reads its copy over NBD', async () => {
    const data = join(dir, 'data');
    const port = await freePort();
    const nbdPort = await freePort();
    serve = spawn(process.execPath, [bin, 'serve', '--data', data, '--listen', `127.0.0.1:${port}`, '--nbd-listen', `127.0.0.1:${nbdPort}`, '--log-level', 'warn'], {
      cwd: app,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    serve.stderr!.setEncoding('utf8').on('data', (s: string) => (err += s));
    const url = `http://127.0.0.1:${port}`;
    await waitFor('the packaged server to answer', async () => {
      if (serve!.exitCode !== null) throw new Error(`prestage serve exited ${serve!.exitCode}: ${err}`);
      return (await fetch(`${url}/healthz`).catch(() => undefined))?.ok === true;
    });
    const image = join(dir, 'golden.raw');
    await writeRandomFile(image, 8 * MiB);
    const sha = createHash('sha256').update(readFileSync(image)).digest('hex');
    // The CLI on this machine finds the server's admin token in its data directory.
    const env = { PRESTAGE_URL: url, PRESTAGE_DATA: data };
    const cli = (...args: string[]) => runBin(args, env);
    assert.match(cli('image', 'import', 'golden', image), /^imported golden@1 /);
    cli('pool', 'set', 'golden', '--min', '1', '--max', '2');
    cli('host', 'add', 'h1');
    const p = JSON.parse(cli('provision', 'h1', 'golden', '--json')) as { copyId: string; access: { uri: string } };
    assert.match(p.access.uri, new RegExp(`^nbds://h1@127\\.0\\.0\\.1:${nbdPort}/${p.copyId}$`));
    const keyFile = join(dir, 'h1.psk');
    cli('host', 'key', 'h1', '--out', keyFile);
    const size = execFileSync('nbdinfo', ['--size', `${p.access.uri}?tls-psk-file=${keyFile}`], { encoding: 'utf8' });
    assert.equal(Number(size.trim()), 8 * MiB, 'nbdinfo sees the host its copy');
    const sum = execFileSync('bash', ['-o', 'pipefail', '-c', `nbdcopy '${p.access.uri}?tls-psk-file=${keyFile}' - | sha256sum`], { encoding: 'utf8' });
    assert.equal(sum.split(' ')[0], sha, 'the host reads exactly the golden image');
    cli('release', 'h1');
  });

  function runBin(args: string[], env: NodeJS.ProcessEnv = {}): string {
    const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PRESTAGE_')));
    return execFileSync(process.execPath, [bin, ...args], { cwd: app, env: { ...clean, ...env }, encoding: 'utf8' });
  }
});
