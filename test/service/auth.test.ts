// Who may call what. Every route of the API, with every kind of caller (no token, a wrong one,
// admin, operator, reader, a scrape-only metrics token, a host's own token on itself and on another host), gets the answer
// its declared access says: 401, 403, or through. The table below is the reviewed list of
// routes and their access; a route the server has that the table lacks fails the test, so a new
// route cannot ship without someone deciding who may call it.
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Access } from '../../src/api/index.js';
import { TokenService } from '../../src/service/index.js';
import { openSqliteStore } from '../../src/store/index.js';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { makeTempDir } from '../helpers/files.js';

/** The reviewed access of every route. */
const EXPECTED: Readonly<Record<string, Access>> = {
  'GET /openapi.json': 'public',
  'GET /healthz': 'public',
  'GET /v1/meta/:id/': 'public',
  'GET /v1/meta/:id/:doc': 'public',
  'POST /v1/images': 'operate',
  'PUT /v1/images/:name': 'operate',
  'GET /v1/images': 'read',
  'GET /v1/images/:ref': 'read',
  'DELETE /v1/images/:ref': 'operate',
  'PUT /v1/pools/:source': 'operate',
  'GET /v1/pools': 'read',
  'GET /v1/pools/:source': 'read',
  'DELETE /v1/pools/:source': 'operate',
  'POST /v1/hosts': 'operate',
  'GET /v1/hosts': 'read',
  'GET /v1/hosts/:id': 'host-read',
  'DELETE /v1/hosts/:id': 'operate',
  'PATCH /v1/hosts/:id/vars': 'operate',
  'GET /v1/hosts/:id/key': 'operate',
  'POST /v1/hosts/:id/key': 'operate',
  'GET /v1/hosts/:id/meta-credential': 'operate',
  'POST /v1/hosts/:id/meta-credential': 'operate',
  'GET /v1/hosts/:id/access': 'host-read',
  'GET /v1/hosts/:id/iscsi-credential': 'operate',
  'POST /v1/hosts/:id/iscsi-credential': 'operate',
  'POST /v1/hosts/:id/provision': 'host-operate',
  'POST /v1/hosts/:id/release': 'host-operate',
  'POST /v1/templates': 'operate',
  'GET /v1/templates': 'read',
  'GET /v1/templates/:name': 'read',
  'POST /v1/templates/:name/build': 'operate',
  'GET /v1/templates/:name/builds': 'read',
  'DELETE /v1/templates/:name': 'operate',
  'GET /v1/copies': 'read',
  'GET /v1/tasks': 'read',
  'GET /v1/events': 'read',
  'GET /v1/status': 'read',
  'GET /v1/instances': 'read',
  'GET /v1/pools/:source/history': 'read',
  'GET /v1/simulate/traces': 'read',
  'POST /v1/simulate': 'read',
  'GET /v1/whoami': 'read',
  'GET /': 'public',
  'GET /v1/boot/ipxe': 'public',
  'GET /assets/*': 'public',
  'POST /v1/tokens': 'admin',
  'GET /v1/tokens': 'admin',
  'DELETE /v1/tokens/:name': 'admin',
  'GET /metrics': 'metrics',
};

type Caller = 'none' | 'wrong' | 'admin' | 'operator' | 'reader' | 'metrics' | 'host-self' | 'host-other';
const CALLERS: readonly Caller[] = ['none', 'wrong', 'admin', 'operator', 'reader', 'metrics', 'host-self', 'host-other'];

/** What a caller must get from a route of an access level: refused with 401 or 403, or let through. */
function expected(access: Access, caller: Caller): 401 | 403 | 'through' {
  if (access === 'public') return 'through';
  if (caller === 'none' || caller === 'wrong') return 401;
  const roles: Record<Exclude<Access, 'public'>, readonly Caller[]> = {
    read: ['admin', 'operator', 'reader'],
    operate: ['admin', 'operator'],
    admin: ['admin'],
    'host-read': ['admin', 'operator', 'reader', 'host-self'],
    'host-operate': ['admin', 'operator', 'host-self'],
    metrics: ['admin', 'operator', 'reader', 'metrics'],
  };
  return roles[access].includes(caller) ? 'through' : 403;
}

describe('every route × every role', () => {
  let t: TestApp;
  const secrets: Partial<Record<Caller, string>> = {};

  before(async () => {
    // The boot endpoint answers only listed networks: the injected requests come from loopback.
    t = await startTestApp({ bootNetworks: '127.0.0.0/8' }, { sqlite: true }); // reads state.db itself
    for (const id of ['h1', 'h2']) assert.equal((await t.call('POST', '/v1/hosts', { id, vars: { password: `pw-${id}` } })).status, 201);
    const make = async (name: string, role: string, hostId?: string) => {
      const r = await t.call<{ token: string }>('POST', '/v1/tokens', { name, role, ...(hostId && { hostId }) });
      assert.equal(r.status, 201, r.text);
      assert.match(r.body.token, /^pst_[A-Za-z0-9_-]{43}$/);
      return r.body.token;
    };
    secrets.admin = t.token;
    secrets.operator = await make('ops', 'operator');
    secrets.reader = await make('watch', 'reader');
    secrets.metrics = await make('scrape', 'metrics');
    secrets['host-self'] = await make('h1-self', 'host', 'h1');
    secrets['host-other'] = secrets['host-self'];
    secrets.wrong = `pst_${'A'.repeat(43)}`;
  });
  after(() => t?.close());

  it('the server has exactly the reviewed routes, each with an access level', () => {
    const served = t.app.routes.map((r) => `${r.method} ${r.url}`).sort();
    const missing = served.filter((k) => !(k in EXPECTED));
    assert.deepEqual(missing, [], `routes without an entry in the role table: ${missing.join(', ')}`);
    assert.deepEqual(served, Object.keys(EXPECTED).sort());
    for (const r of t.app.routes) assert.equal(r.access, EXPECTED[`${r.method} ${r.url}`], `${r.method} ${r.url}`);
  });

  it('each caller gets 401, 403 or through, as the access level says', async () => {
    const wrongAnswers: string[] = [];
    for (const route of t.app.routes) {
      for (const caller of CALLERS) {
        // Callers let through meet a resource that is not there (or a body that is not valid),
        // so nothing changes; a host token is tried on its own host and on another one.
        const id = caller === 'host-self' ? 'h1' : caller === 'host-other' ? 'h2' : 'ghost';
        const url = route.url.replace(':id', id).replace(/:[a-z]+/g, 'ghost');
        const secret = secrets[caller];
        const res = await t.app.http.inject({
          method: route.method as 'GET',
          url,
          headers: { ...(secret !== undefined && { authorization: `Bearer ${secret}` }), ...(route.method !== 'GET' && route.method !== 'DELETE' && { 'content-type': 'application/json' }) },
          ...(route.method !== 'GET' && route.method !== 'DELETE' && { payload: '{"__probe":true}' }),
        });
        const want = expected(route.access, caller);
        const got = res.statusCode;
        // /v1/meta is past the token check; its own (HTTP Basic, the host's credential) may answer 401.
        const ownCheck = route.url.startsWith('/v1/meta') && got === 401 && String(res.headers['www-authenticate']).startsWith('Basic');
        const ok = want === 'through' ? (got !== 401 || ownCheck) && got !== 403 && got < 500 : got === want;
        if (!ok) wrongAnswers.push(`${route.method} ${url} as ${caller}: ${got} (want ${want}) ${res.body.slice(0, 120)}`);
        if (got === 401 || got === 403) {
          const body = res.json<{ error: { code: string; message: string } }>();
          assert.equal(body.error.code, got === 401 ? 'PRESTAGE_UNAUTHORIZED' : 'PRESTAGE_FORBIDDEN');
        }
        if (got === 401 && !route.url.startsWith('/v1/meta')) assert.match(String(res.headers['www-authenticate']), /^Bearer/);
      }
    }
    assert.deepEqual(wrongAnswers, []);
  });

  it('a reader sees no keys, no host values and no template spec; a host sees itself only', async () => {
    const as = (caller: Caller, url: string) => t.call<Record<string, unknown>>('GET', url, undefined, { authorization: `Bearer ${secrets[caller]!}` });
    const readerHost = await as('reader', '/v1/hosts/h1');
    assert.equal(readerHost.status, 200);
    assert.deepEqual(readerHost.body.vars, { password: '[hidden]' });
    const readerList = await as('reader', '/v1/hosts');
    assert.ok(!readerList.text.includes('pw-h1') && !readerList.text.includes('pw-h2'), readerList.text);
    assert.equal((await as('reader', '/v1/hosts/h1/key')).status, 403);
    assert.equal((await as('reader', '/v1/hosts/h1/meta-credential')).status, 403);
    const self = await as('host-self', '/v1/hosts/h1');
    assert.equal(self.status, 200);
    assert.deepEqual(self.body.vars, { password: 'pw-h1' });
    assert.equal((await as('host-self', '/v1/hosts/h1/key')).status, 403, 'a host token reads no keys, its own included');
    assert.equal((await as('host-self', '/v1/hosts/h2')).status, 403);
    assert.equal((await as('operator', '/v1/hosts/h1')).body.vars !== undefined, true);
  });

  it('tokens are listed without secrets, stored only hashed, and refused at once when revoked', async () => {
    const made = await t.call<{ token: string }>('POST', '/v1/tokens', { name: 'short-lived', role: 'reader' });
    const secret = made.body.token;
    const list = await t.call<{ name: string }[]>('GET', '/v1/tokens');
    assert.ok(list.body.some((x) => x.name === 'short-lived'));
    assert.ok(!list.text.includes(secret) && !list.text.includes('pst_'), 'no secret in the list');
    // The database holds the SHA-256, never the secret.
    const db = new Database(join(t.dataDir, 'state.db'), { readonly: true });
    try {
      const dump = JSON.stringify(db.prepare('SELECT * FROM api_tokens').all());
      assert.ok(!dump.includes(secret));
      assert.ok(!dump.includes(t.token));
    } finally {
      db.close();
    }
    const as = { authorization: `Bearer ${secret}` };
    assert.equal((await t.call('GET', '/v1/images', undefined, as)).status, 200);
    assert.equal((await t.call('DELETE', '/v1/tokens/short-lived')).status, 204);
    assert.equal((await t.call('GET', '/v1/images', undefined, as)).status, 401);
    assert.equal((await t.call('DELETE', '/v1/tokens/short-lived')).status, 404);
    // Duplicate names, bad roles, a host token without its host.
    assert.equal((await t.call('POST', '/v1/tokens', { name: 'ops', role: 'reader' })).status, 409);
    assert.equal((await t.call('POST', '/v1/tokens', { name: 'x', role: 'root' })).status, 400);
    assert.equal((await t.call('POST', '/v1/tokens', { name: 'x', role: 'host' })).status, 400);
    assert.equal((await t.call('POST', '/v1/tokens', { name: 'x', role: 'host', hostId: 'ghost' })).status, 404);
    assert.equal((await t.call('POST', '/v1/tokens', { name: 'x', role: 'reader', hostId: 'h1' })).status, 400);
  });

  it("a host's tokens go with the host: a new host of the same id does not inherit them", async () => {
    assert.equal((await t.call('POST', '/v1/hosts', { id: 'brief' })).status, 201);
    const made = await t.call<{ token: string }>('POST', '/v1/tokens', { name: 'brief-token', role: 'host', hostId: 'brief' });
    const as = { authorization: `Bearer ${made.body.token}` };
    assert.equal((await t.call('GET', '/v1/hosts/brief', undefined, as)).status, 200);
    assert.equal((await t.call('DELETE', '/v1/hosts/brief')).status, 204);
    assert.ok(!(await t.call<{ name: string }[]>('GET', '/v1/tokens')).body.some((x) => x.name === 'brief-token'));
    assert.equal((await t.call('POST', '/v1/hosts', { id: 'brief' })).status, 201);
    assert.equal((await t.call('GET', '/v1/hosts/brief', undefined, as)).status, 401);
  });

  it('the first start wrote an admin token only its user reads, and a second start keeps it', async () => {
    const st = await stat(t.app.adminTokenFile);
    assert.equal(st.mode & 0o777, 0o600);
    assert.equal((await readFile(t.app.adminTokenFile, 'utf8')).trim(), t.token);
    const dir = await makeTempDir();
    const first = await startTestApp({ dataDir: join(dir, 'data') });
    await first.close({ keepData: true });
    const second = await startTestApp({ dataDir: join(dir, 'data') });
    try {
      assert.equal(second.token, first.token, 'the file is not rewritten while a token exists');
      assert.equal((await second.call('GET', '/v1/tokens')).status, 200, 'and the token still works');
    } finally {
      await second.close();
    }
  });
});

describe('token expiry', () => {
  it('a token past its expiry is refused; one before it is taken', async () => {
    const dir = await makeTempDir();
    const store = await openSqliteStore({ file: join(dir, 'state.db') });
    try {
      let now = Date.parse('2026-01-01T00:00:00Z');
      const tokens = new TokenService(store, () => now);
      const t = await tokens.create({ name: 'a', role: 'reader', expiresInS: 3600 });
      assert.equal(t.expiresAt, '2026-01-01T01:00:00.000Z');
      assert.equal((await tokens.verify(t.token))?.name, 'a');
      now += 3600 * 1000 - 1;
      assert.equal((await tokens.verify(t.token))?.name, 'a');
      now += 1;
      assert.equal(await tokens.verify(t.token), undefined);
      for (const bad of ['', 'pst_', `${t.token}x`, t.token.toUpperCase(), `Bearer ${t.token}`]) assert.equal(await tokens.verify(bad), undefined, bad);
      await assert.rejects(tokens.create({ name: 'b', role: 'reader', expiresInS: 10 }), /at least a minute/);
    } finally {
      await store.close();
    }
  });
});
