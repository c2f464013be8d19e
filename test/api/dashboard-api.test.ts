// What the dashboard needs from the server besides the existing API: the page itself with strict
// headers (or a clear word when it is not built), who a token is, a pool's recent history, and
// the simulator, bounded. Through Fastify's inject on a real app (dist/web/ from `npm run build`).
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import Fastify from 'fastify';
import { registerDashboard, WEB_ROOT } from '../../src/api/routes/dashboard.js';
import type { Api } from '../../src/api/routes/api.js';
import { SimulationService } from '../../src/service/index.js';
import { startTestApp, type TestApp } from '../helpers/app.js';

describe('dashboard routes', () => {
  let t: TestApp;
  let reader: string;

  before(async () => {
    t = await startTestApp();
    reader = (await t.call<{ token: string }>('POST', '/v1/tokens', { name: 'watch', role: 'reader' })).body.token;
  });
  after(() => t?.close());

  const asReader = { authorization: '' };
  before(() => {
    asReader.authorization = `Bearer ${reader}`;
  });

  it('serves the page with strict headers, and its assets for good', async () => {
    const page = await t.app.http.inject({ method: 'GET', url: '/' });
    assert.equal(page.statusCode, 200, `${page.body} (is dist/web built? npm run build)`);
    assert.match(String(page.headers['content-type']), /^text\/html/);
    const csp = String(page.headers['content-security-policy']);
    for (const d of ["default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "object-src 'none'"]) assert.ok(csp.includes(d), csp);
    assert.equal(page.headers['x-content-type-options'], 'nosniff');
    assert.equal(page.headers['x-frame-options'], 'DENY');
    assert.equal(page.headers['cache-control'], 'no-cache');
    assert.ok(!/<script>|<script [^>]*>[^<]/.test(page.body), 'no inline script');

    const js = (await readdir(`${WEB_ROOT}/assets`)).find((f) => f.endsWith('.js'))!;
    const asset = await t.app.http.inject({ method: 'GET', url: `/assets/${js}` });
    assert.equal(asset.statusCode, 200);
    assert.match(String(asset.headers['content-type']), /javascript/);
    assert.match(String(asset.headers['cache-control']), /immutable/);
    assert.equal(asset.headers['x-content-type-options'], 'nosniff');
    assert.equal((await t.app.http.inject({ method: 'GET', url: '/assets/missing.js' })).statusCode, 404);
    const escape = await t.app.http.inject({ method: 'GET', url: '/assets/..%2f..%2fpackage.json' });
    assert.ok(escape.statusCode >= 400 && !escape.body.includes('"dependencies"'), `${escape.statusCode} ${escape.body.slice(0, 80)}`);
  });

  it('says how to build the page when dist/web is missing', async () => {
    const app = Fastify() as unknown as Api;
    registerDashboard(app, '/nonexistent/prestage-web');
    const res = await app.inject({ method: 'GET', url: '/' });
    assert.equal(res.statusCode, 404);
    assert.match(res.body, /dashboard is not built.*\n.*npm run build/);
    await app.close();
  });

  it('tells a token who it is, never its secret', async () => {
    const res = await t.call<{ name: string; role: string }>('GET', '/v1/whoami', undefined, asReader);
    assert.equal(res.status, 200);
    assert.equal(res.body.name, 'watch');
    assert.equal(res.body.role, 'reader');
    assert.ok(!res.text.includes(reader));
  });

  it("answers a pool's history, and 404 for a pool that does not exist", async () => {
    const up = await t.app.http.inject({ method: 'PUT', url: '/v1/images/web', headers: { authorization: `Bearer ${t.token}`, 'content-type': 'application/octet-stream' }, payload: Buffer.alloc(1 << 20) });
    assert.equal(up.statusCode, 201, up.body);
    assert.equal((await t.call('PUT', '/v1/pools/web', { min: 0, max: 0 })).status, 200);
    const h = await t.call<{ source: string; at: number[]; ready: number[]; sampleS: number }>('GET', '/v1/pools/web/history?hours=1', undefined, asReader);
    assert.equal(h.status, 200, h.text);
    assert.equal(h.body.source, 'web');
    assert.equal(h.body.at.length, h.body.ready.length);
    assert.equal((await t.call('GET', '/v1/pools/nothing/history', undefined, asReader)).status, 404);
    assert.equal((await t.call('GET', '/v1/pools/web/history?hours=-1', undefined, asReader)).status, 400);
  });

  it('simulates a trace sent by a reader: the table and the series', async () => {
    const lines = ['time_s,source'];
    for (let t0 = 0; t0 < 3 * 3600; t0 += 60) lines.push(`${t0},a`, `${t0 + 30},b`);
    const res = await t.call<{ rows: { policy: string; requests: number; hitRate: number }[]; sources: string[]; time: number[]; series: { demand: number[][] }[] }>(
      'POST',
      '/v1/simulate',
      { text: lines.join('\n'), name: 'mine.csv', policies: ['static:1', 'predictive:0.99'], leadTimeS: 30 },
      asReader,
    );
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(
      res.body.rows.map((r) => r.policy),
      ['static:1', 'predictive:0.99'],
    );
    assert.equal(res.body.rows[0]!.requests, 360);
    assert.deepEqual([...res.body.sources].sort(), ['a', 'b']);
    assert.ok(res.body.time.length > 0 && res.body.time.length <= 400);
    assert.equal(res.body.series[0]!.demand[0]!.length, res.body.time.length);
  });

  it('replays the bundled Azure trace, with its attribution', async () => {
    const res = await t.call<{ attribution: string; learnedOn: string | null; rows: unknown[]; sources: string[] }>(
      'POST',
      '/v1/simulate',
      { bundled: 'azure-v1', learn: false, hours: 2, top: 2, policies: ['static:5'] },
      asReader,
    );
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.attribution, 'Azure Public Dataset V1, CC-BY-4.0');
    assert.equal(res.body.learnedOn, null);
    assert.equal(res.body.sources.length, 2);
  });

  it('refuses what it cannot run, with a message that says why', async () => {
    const bad = async (body: unknown, pattern: RegExp) => {
      const res = await t.call<{ error: { message: string } }>('POST', '/v1/simulate', body, asReader);
      assert.equal(res.status, 400, res.text);
      assert.match(res.body.error.message, pattern);
    };
    await bad({ text: '0,a\n', policies: ['sometimes:3'] }, /sometimes:3/);
    await bad({ text: '0,a\n', bundled: 'azure-v1', policies: ['static:1'] }, /exactly one of bundled .* and text/);
    await bad({ policies: ['static:1'] }, /exactly one of bundled .* and text/);
    await bad({ text: '0,a\n', policies: ['static:1', 'static:2', 'static:3', 'static:4', 'static:5'] }, /policies/);
    await bad({ text: 'zero,a\n', policies: ['static:1'] }, /trace\.csv:1/);
    await bad({ bundled: 'elsewhere', policies: ['static:1'] }, /bundled/);
  });

  it('stops a run that passes its time limit', async () => {
    const sims = new SimulationService({ timeLimitMs: 1 });
    try {
      await assert.rejects(sims.run({ bundled: 'azure-v1', policies: ['predictive:0.999'] }), /ran past 0 s and was stopped/);
    } finally {
      await sims.close();
    }
  });
});
