/**
 * API tokens and HTTPS as a person meets them: `prestage token …` against a real `prestage serve`,
 * every way the CLI finds a token, the refusals (exit 8), and a server on TLS reached with and
 * without its CA. Every server listens on loopback except the one `--insecure-http` case.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { access, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { assertOneErrorLine, parse, prestage, type Run } from '../helpers/cli-run.js';
import { makeTempDir, waitFor } from '../helpers/files.js';
import { makePki } from '../helpers/pki.js';
import { BIN, freePort, startServe, type ServeProcess } from '../helpers/server.js';

/** A token's secret: the prefix and 32 random bytes in base64url (43 characters, no padding). */
const SECRET = /^pst_[A-Za-z0-9_-]{43,}$/;

interface TokenJson {
  name: string;
  role: string;
  hostId: string | null;
  createdAt: string;
  expiresAt: string | null;
}

/**
 * The environment of a CLI run that finds nothing by accident: every PRESTAGE_* variable and
 * NODE_EXTRA_CA_CERTS of this process unset (spawn drops keys whose value is undefined), HOME
 * an empty directory of the test's, then what the case sets.
 */
function isolatedEnv(home: string, env: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const cleared: NodeJS.ProcessEnv = {};
  for (const k of Object.keys(process.env)) if (k.startsWith('PRESTAGE_') || k === 'NODE_EXTRA_CA_CERTS') cleared[k] = undefined;
  return { ...cleared, HOME: home, ...env };
}

/** A `prestage serve` this file starts itself (https, or a listen address startServe does not take). */
interface Launched {
  readonly child: ChildProcess;
  stderr(): string;
  stop(): Promise<number | null>;
}

/** Spawns `prestage serve --data DIR ARGS` and waits until `ready` says it answers. */
async function launchServe(dataDir: string, args: readonly string[], ready: () => Promise<boolean>): Promise<Launched> {
  const child = spawn(process.execPath, [BIN, 'serve', '--data', dataDir, '--nbd-listen', '127.0.0.1:0', '--log-level', 'warn', ...args], {
    env: isolatedEnv(dataDir),
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  try {
    await waitFor('prestage serve to answer', async () => {
      if (child.exitCode !== null) throw new Error(`prestage serve exited ${child.exitCode}: ${err}`);
      return ready().catch(() => false);
    });
  } catch (e) {
    if (child.exitCode === null) child.kill('SIGKILL');
    throw e;
  }
  return {
    child,
    stderr: () => err,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const [code] = await exited;
      return code;
    },
  };
}

/** A GET over node:https; resolves with the status and body, rejects with the TLS error. */
function httpsGet(url: string, opts: RequestOptions = {}): Promise<{ status: number; body: string; peerCn: unknown }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { ...opts, agent: false }, (res) => {
      const peer = (res.socket as TLSSocket).getPeerCertificate();
      let body = '';
      res.setEncoding('utf8').on('data', (s: string) => (body += s));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, peerCn: peer.subject?.CN }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

describe('API tokens through the CLI', () => {
  let dir: string;
  let home: string;
  let dataDir: string;
  let serve: ServeProcess;
  /** A run as the admin, with the token given the usual way ($PRESTAGE_TOKEN). */
  let admin: (...args: string[]) => Promise<Run>;
  /** A run with this environment (on top of the isolated one that points at the server). */
  let as: (env: NodeJS.ProcessEnv, ...args: string[]) => Promise<Run>;
  let readerSecret: string;

  before(async () => {
    dir = await makeTempDir('prestage-tokens-');
    home = join(dir, 'home');
    await mkdir(home);
    dataDir = join(dir, 'data');
    // trace: the most the server ever logs, to check no secret is in it.
    serve = await startServe(dataDir, ['--log-level', 'trace']);
    as = (env, ...args) => prestage(args, { env: isolatedEnv(home, { PRESTAGE_URL: serve.url, ...env }), cwd: home });
    admin = (...args) => as({ PRESTAGE_TOKEN: serve.token }, ...args);
  });

  after(async () => {
    await serve?.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  it('wrote the first admin token where only its user reads it', async () => {
    assert.match(serve.token, SECRET);
    assert.equal((await stat(join(dataDir, 'admin.token'))).mode & 0o777, 0o600);
    assert.equal((await stat(dataDir)).mode & 0o777, 0o700);
  });

  it('prints a new secret once, on stdout alone, and never lists it', async () => {
    const made = await admin('token', 'create', 'ci', '--role', 'reader');
    assert.equal(made.code, 0, made.stderr);
    const lines = made.stdout.split('\n');
    assert.equal(lines.length, 2, `one line on stdout, got: ${made.stdout}`);
    assert.equal(lines[1], '');
    readerSecret = lines[0]!;
    assert.match(readerSecret, SECRET);
    assert.notEqual(readerSecret, serve.token);
    assert.match(made.stderr, /token 'ci' \(reader\).*not shown again/);
    assert.ok(!made.stderr.includes(readerSecret), 'the secret is on stdout only');

    const [list, listJson] = await Promise.all([admin('token', 'list'), admin('token', 'list', '--json')]);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /^NAME +ROLE +HOST +CREATED +EXPIRES$/m);
    assert.match(list.stdout, /^ci +reader +- +\S+ \S+ +never$/m);
    assert.match(list.stdout, /^admin-\S+ +admin +- /m);
    const tokens = parse<TokenJson[]>(listJson);
    const ci = tokens.find((t) => t.name === 'ci');
    assert.deepEqual(ci && { ...ci, createdAt: typeof ci.createdAt }, { name: 'ci', role: 'reader', hostId: null, createdAt: 'string', expiresAt: null });
    for (const t of tokens) assert.deepEqual(Object.keys(t).sort(), ['createdAt', 'expiresAt', 'hostId', 'name', 'role']);
    for (const r of [list, listJson]) {
      assert.ok(!r.stdout.includes('pst_') && !r.stderr.includes('pst_'), `a secret was listed:\n${r.stdout}${r.stderr}`);
    }
  });

  it('lets a reader token read but not write, from --token, $PRESTAGE_TOKEN, --token-file and $PRESTAGE_TOKEN_FILE', async () => {
    const file = join(dir, 'reader.token');
    await writeFile(file, `  ${readerSecret}\n\n`, { mode: 0o600 });
    const poolSet = ['pool', 'set', 'base', '--min', '1'];
    const hostAdd = ['host', 'add', 'h9'];
    const ways: { how: string; env: NodeJS.ProcessEnv; flags: string[]; write: string[] }[] = [
      { how: '--token', env: {}, flags: ['--token', readerSecret], write: poolSet },
      { how: '$PRESTAGE_TOKEN', env: { PRESTAGE_TOKEN: readerSecret }, flags: [], write: hostAdd },
      { how: '--token-file', env: {}, flags: ['--token-file', file], write: poolSet },
      { how: '$PRESTAGE_TOKEN_FILE', env: { PRESTAGE_TOKEN_FILE: file }, flags: [], write: hostAdd },
    ];
    const runs = await Promise.all(ways.map(({ env, flags, write }) => Promise.all([as(env, ...flags, 'image', 'list'), as(env, ...flags, ...write)])));
    ways.forEach(({ how, write }, i) => {
      const [read, refused] = runs[i]!;
      assert.equal(read.code, 0, `${how}: image list: ${read.stderr}`);
      assert.match(read.stdout, /no images/, how);
      assert.equal(refused.code, 8, `${how}: ${write.join(' ')}: ${refused.stderr}`);
      assertOneErrorLine(refused, write === poolSet ? /role 'reader' may not PUT \/v1\/pools\/:source/ : /role 'reader' may not POST \/v1\/hosts/);
      assert.equal(refused.stdout, '', how);
    });
    const [flagOverEnv, hosts] = await Promise.all([
      // --token wins over $PRESTAGE_TOKEN: the admin token in the environment is not used.
      as({ PRESTAGE_TOKEN: serve.token }, '--token', readerSecret, ...hostAdd),
      admin('host', 'list', '--json'),
    ]);
    assert.equal(flagOverEnv.code, 8, flagOverEnv.stderr);
    assertOneErrorLine(flagOverEnv, /role 'reader' may not POST \/v1\/hosts/);
    // The refused writes changed nothing.
    assert.deepEqual(parse<unknown[]>(hosts), []);
  });

  it('says which token file it cannot use (exit 2)', async () => {
    const empty = join(dir, 'empty.token');
    await writeFile(empty, '\n');
    const [missing, blank] = await Promise.all([
      as({}, '--token-file', join(dir, 'nope.token'), 'image', 'list'),
      as({ PRESTAGE_TOKEN_FILE: empty }, 'image', 'list'),
    ]);
    assert.equal(missing.code, 2, missing.stderr);
    assertOneErrorLine(missing, /--token-file .*nope\.token: cannot read it \(ENOENT\)/);
    assert.equal(blank.code, 2, blank.stderr);
    assertOneErrorLine(blank, /\$PRESTAGE_TOKEN_FILE .*empty\.token: the file is empty/);
  });

  it('refuses a token it does not know (exit 8)', async () => {
    const unknown = `pst_${'A'.repeat(43)}`;
    const runs = await Promise.all([
      as({ PRESTAGE_TOKEN: unknown }, 'image', 'list'),
      // The admin token with one character changed.
      as({}, '--token', serve.token.slice(0, -1) + (serve.token.endsWith('A') ? 'B' : 'A'), 'token', 'list'),
    ]);
    for (const r of runs) {
      assert.equal(r.code, 8, r.stderr);
      assertOneErrorLine(r, /needs a valid API token.*prestage token create/);
      assert.equal(r.stdout, '');
    }
  });

  it('refuses a second token of the same name (exit 4) and keeps the first one working', async () => {
    const dup = await admin('token', 'create', 'ci', '--role', 'admin');
    assert.equal(dup.code, 4, dup.stderr);
    assertOneErrorLine(dup, /token 'ci' exists already/);
    assert.equal(dup.stdout, '');
    // It is still valid and still the reader it was, not the admin the refused request asked for.
    const still = await as({ PRESTAGE_TOKEN: readerSecret }, 'token', 'list');
    assert.equal(still.code, 8, still.stderr);
    assertOneErrorLine(still, /role 'reader' may not GET \/v1\/tokens/);
  });

  it('checks what a token is made with: name, role, --host and --expires', async () => {
    const cases: { args: string[]; exit: number; says: RegExp }[] = [
      { args: ['token', 'create', 'h', '--role', 'host'], exit: 2, says: /a token of role 'host' names its host \(--host ID\)/ },
      { args: ['token', 'create', 'h', '--role', 'host', '--host', 'ghost'], exit: 3, says: /host 'ghost' not found/ },
      { args: ['token', 'create', 'r', '--role', 'reader', '--host', 'ghost'], exit: 2, says: /only a token of role 'host' names a host/ },
      { args: ['token', 'create', 'bad name', '--role', 'reader'], exit: 2, says: /invalid token name 'bad name'/ },
      { args: ['token', 'create', 'r', '--role', 'reader', '--expires', '30s'], exit: 2, says: /--expires 30s: a token lives at least 1 minute/ },
    ];
    const runs = await Promise.all(cases.map((c) => admin(...c.args)));
    cases.forEach((c, i) => {
      const r = runs[i]!;
      assert.equal(r.code, c.exit, `${c.args.join(' ')}: ${r.stderr}`);
      assertOneErrorLine(r, c.says);
      assert.equal(r.stdout, '', c.args.join(' '));
    });
    const expiring = parse<TokenJson & { token: string }>(await admin('token', 'create', 'month', '--role', 'reader', '--expires', '30d', '--json'));
    assert.match(expiring.token, SECRET);
    assert.equal(Date.parse(expiring.expiresAt!) - Date.parse(expiring.createdAt), 30 * 86_400_000);
    const listed = await admin('token', 'list');
    assert.match(listed.stdout, /^month +reader +- +\S+ \S+ +\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$/m);
    const names = [...listed.stdout.matchAll(/^(\S+) /gm)].map((m) => m[1]);
    assert.ok(!names.includes('h') && !names.includes('r') && !names.includes('bad'), `a refused token was made: ${names.join(', ')}`);
  });

  it('gives a host token its own host and nothing else', async () => {
    assert.equal((await admin('host', 'add', 'h1')).code, 0);
    const made = parse<TokenJson & { token: string }>(await admin('token', 'create', 'h1-token', '--role', 'host', '--host', 'h1', '--json'));
    assert.deepEqual({ ...made, token: typeof made.token, createdAt: typeof made.createdAt }, { name: 'h1-token', role: 'host', hostId: 'h1', createdAt: 'string', expiresAt: null, token: 'string' });
    assert.match(made.token, SECRET);
    const env = { PRESTAGE_TOKEN: made.token };
    const [own, other, images] = await Promise.all([as(env, 'release', 'h1'), as(env, 'release', 'h2'), as(env, 'image', 'list')]);
    // Its own host gets past the check to the route (h1 has nothing mapped to release).
    assert.equal(own.code, 3, own.stderr);
    assertOneErrorLine(own, /mapping of host 'h1' not found/);
    for (const r of [other, images]) {
      assert.equal(r.code, 8, r.stderr);
      assertOneErrorLine(r, /token 'h1-token' acts for host 'h1' only/);
    }
  });

  it('refuses a revoked token at once (exit 8)', async () => {
    const revoked = await admin('token', 'revoke', 'ci');
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.equal(revoked.stdout, 'revoked token ci\n');
    const [use, again] = await Promise.all([as({}, '--token', readerSecret, 'image', 'list'), admin('token', 'revoke', 'ci')]);
    assert.equal(use.code, 8, use.stderr);
    assertOneErrorLine(use, /needs a valid API token/);
    assert.equal(again.code, 3, again.stderr);
    assertOneErrorLine(again, /token 'ci' not found/);
  });

  it('without any token refuses (exit 8), and uses the local admin.token only where it finds one', async () => {
    const elsewhere = join(dir, 'elsewhere');
    await mkdir(elsewhere);
    const homeWithToken = join(dir, 'home-with-token');
    await mkdir(join(homeWithToken, '.local', 'share', 'prestage'), { recursive: true });
    await writeFile(join(homeWithToken, '.local', 'share', 'prestage', 'admin.token'), `${serve.token}\n`, { mode: 0o600 });
    const port = new URL(serve.url).port;
    const [none, viaData, viaHome] = await Promise.all([
      // HOME and cwd are empty directories, no PRESTAGE_TOKEN*, no PRESTAGE_DATA.
      prestage(['token', 'list'], { env: isolatedEnv(elsewhere, { PRESTAGE_URL: serve.url }), cwd: elsewhere }),
      prestage(['--server', `http://localhost:${port}`, 'token', 'list'], { env: isolatedEnv(elsewhere, { PRESTAGE_DATA: dataDir }), cwd: elsewhere }),
      prestage(['token', 'list'], { env: isolatedEnv(homeWithToken, { PRESTAGE_URL: serve.url }), cwd: elsewhere }),
    ]);
    assert.equal(none.code, 8, none.stderr);
    assertOneErrorLine(none, /needs a valid API token/);
    assert.equal(none.stdout, '');
    for (const r of [viaData, viaHome]) {
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^admin-\S+ +admin /m);
    }
  });

  it('never logged a secret', () => {
    const log = serve.stderr();
    assert.ok(log.length > 0, 'the server logged nothing at trace level');
    assert.ok(!log.includes(readerSecret), 'the reader token is in the server log');
    assert.ok(!log.includes(serve.token), 'the admin token is in the server log');
    assert.ok(!/pst_[A-Za-z0-9_-]{43}/.test(log), 'a token is in the server log');
  });
});

describe('the API over HTTPS', () => {
  let dir: string;
  let home: string;
  let dataDir: string;
  let caFile: string;
  let otherCaFile: string;
  let url: string;
  let token: string;
  let server: Launched;
  const cli = (env: NodeJS.ProcessEnv, ...args: string[]) => prestage(args, { env: isolatedEnv(home, env), cwd: home });

  before(async () => {
    dir = await makeTempDir('prestage-tls-');
    home = join(dir, 'home');
    await mkdir(home);
    dataDir = join(dir, 'data');
    const [pki, other] = await Promise.all([makePki(join(dir, 'pki'), []), makePki(join(dir, 'other-pki'), [], 'some-other-ca')]);
    caFile = join(pki.serverDir, 'ca-cert.pem');
    otherCaFile = join(other.serverDir, 'ca-cert.pem');
    const ca = await readFile(caFile);
    const port = await freePort();
    url = `https://127.0.0.1:${port}`;
    server = await launchServe(
      dataDir,
      ['--listen', `127.0.0.1:${port}`, '--tls-cert', join(pki.serverDir, 'server-cert.pem'), '--tls-key', join(pki.serverDir, 'server-key.pem')],
      async () => (await httpsGet(`${url}/healthz`, { ca })).status === 200,
    );
    token = (await readFile(join(dataDir, 'admin.token'), 'utf8')).trim();
  });

  after(async () => {
    if (server && server.child.exitCode === null && server.child.signalCode === null) server.child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  it('says it serves https', () => {
    assert.match(server.stderr(), new RegExp(`^prestage serving on ${url.replaceAll('.', '\\.')} \\(data `, 'm'));
  });

  it('answers /healthz to a client that trusts its CA, and to no other', async () => {
    const ok = await httpsGet(`${url}/healthz`, { ca: await readFile(caFile) });
    assert.equal(ok.status, 200);
    assert.equal((JSON.parse(ok.body) as { ok: boolean }).ok, true);
    assert.equal(ok.peerCn, 'localhost');
    await assert.rejects(httpsGet(`${url}/healthz`), (e: NodeJS.ErrnoException) => {
      assert.equal(e.code, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE');
      return true;
    });
    await assert.rejects(httpsGet(`${url}/healthz`, { ca: await readFile(otherCaFile) }), /certificate/);
  });

  it('serves the CLI given NODE_EXTRA_CA_CERTS', async () => {
    const env = { PRESTAGE_URL: url, PRESTAGE_TOKEN: token, NODE_EXTRA_CA_CERTS: caFile };
    const [images, tokens] = await Promise.all([
      cli(env, 'image', 'list'),
      // The certificate names localhost too; the token is the local server's DATA/admin.token.
      cli({ NODE_EXTRA_CA_CERTS: caFile, PRESTAGE_DATA: dataDir }, '--server', url.replace('127.0.0.1', 'localhost'), 'token', 'list'),
    ]);
    assert.equal(images.code, 0, images.stderr);
    assert.match(images.stdout, /no images/);
    assert.equal(tokens.code, 0, tokens.stderr);
    assert.match(tokens.stdout, /^admin-\S+ +admin /m);

    const made = await cli(env, 'token', 'create', 'tls-reader', '--role', 'reader');
    assert.equal(made.code, 0, made.stderr);
    const reader = made.stdout.trim();
    assert.match(reader, SECRET);
    const write = await cli({ ...env, PRESTAGE_TOKEN: reader }, 'host', 'add', 'h1');
    assert.equal(write.code, 8, write.stderr);
    assertOneErrorLine(write, /role 'reader' may not POST \/v1\/hosts/);
  });

  it('cannot reach it without the CA, with another CA, or over plain http (exit 7)', async () => {
    const plain = url.replace('https:', 'http:');
    const [noCa, otherCa, http] = await Promise.all([
      cli({ PRESTAGE_URL: url, PRESTAGE_TOKEN: token }, 'image', 'list'),
      cli({ PRESTAGE_URL: url, PRESTAGE_TOKEN: token, NODE_EXTRA_CA_CERTS: otherCaFile }, 'image', 'list'),
      cli({ PRESTAGE_URL: plain, PRESTAGE_TOKEN: token, NODE_EXTRA_CA_CERTS: caFile }, 'image', 'list'),
    ]);
    for (const r of [noCa, otherCa]) {
      assert.equal(r.code, 7, r.stderr);
      assertOneErrorLine(r, new RegExp(`cannot reach prestage at ${url.replaceAll('.', '\\.')}: .*certificate`));
      assert.equal(r.stdout, '');
    }
    assert.equal(http.code, 7, http.stderr);
    assertOneErrorLine(http, new RegExp(`cannot reach prestage at ${plain.replaceAll('.', '\\.')}: `));
    assert.equal(http.stdout, '');
    // None of it disturbed the server.
    assert.equal((await httpsGet(`${url}/healthz`, { ca: await readFile(caFile) })).status, 200);
  });

  it('stops cleanly on SIGTERM', async () => {
    assert.equal(await server.stop(), 0);
    assert.match(server.stderr(), /prestage stopped/);
  });
});

describe('serve refuses an API open to the network without TLS', () => {
  let dir: string;

  before(async () => {
    dir = await makeTempDir('prestage-listen-');
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const serveRun = (args: string[]) => prestage(['serve', '--nbd-listen', '127.0.0.1:0', '--log-level', 'warn', ...args], { env: isolatedEnv(dir), cwd: dir });

  it('refuses --listen 0.0.0.0 without TLS at once, naming --tls-cert and --insecure-http, and makes nothing', { timeout: 30_000 }, async () => {
    const data = join(dir, 'open');
    const port = await freePort();
    const r = await serveRun(['--data', data, '--listen', `0.0.0.0:${port}`]);
    assert.equal(r.code, 2, r.stderr);
    assertOneErrorLine(r, /--listen 0\.0\.0\.0: beyond loopback the API needs TLS \(--tls-cert FILE --tls-key FILE\), or --insecure-http/);
    assert.equal(r.stdout, '');
    assert.equal(await exists(data), false, 'the refused serve made its data directory');
    // Nothing listens on the port it was asked for.
    await assert.rejects(fetch(`http://127.0.0.1:${port}/healthz`));
  });

  it('refuses --tls-cert without --tls-key, before it makes anything', { timeout: 30_000 }, async () => {
    const pem = join(dir, 'any.pem');
    await writeFile(pem, 'not used\n');
    // On 0.0.0.0: the pairing is what it names, not the missing TLS.
    const r = await serveRun(['--data', join(dir, 'cert-only'), '--listen', '0.0.0.0:0', '--tls-cert', pem]);
    assert.equal(r.code, 2, r.stderr);
    assertOneErrorLine(r, /--tls-cert and --tls-key go together/);
    assert.equal(r.stdout, '');
    assert.equal(await exists(join(dir, 'cert-only')), false);
  });

  it('starts on 0.0.0.0 with --insecure-http, and stops', { timeout: 60_000 }, async () => {
    const port = await freePort();
    const server = await launchServe(join(dir, 'insecure'), ['--listen', `0.0.0.0:${port}`, '--insecure-http'], async () => (await fetch(`http://127.0.0.1:${port}/healthz`)).ok);
    try {
      assert.match(server.stderr(), new RegExp(`^prestage serving on http://0\\.0\\.0\\.0:${port} `, 'm'));
      const token = (await readFile(join(dir, 'insecure', 'admin.token'), 'utf8')).trim();
      const r = await prestage(['image', 'list'], { env: isolatedEnv(dir, { PRESTAGE_URL: `http://127.0.0.1:${port}`, PRESTAGE_TOKEN: token }), cwd: dir });
      assert.equal(r.code, 0, r.stderr);
    } finally {
      assert.equal(await server.stop(), 0);
    }
    assert.match(server.stderr(), /prestage stopped/);
  });
});
