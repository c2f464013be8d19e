// Every write route, fed generated bodies of every JSON type (wrong and right, and right ones with
// one field replaced by anything): every answer is a 2xx or a 4xx in the error catalogue's shape,
// never a 500, and a refused request changes nothing (state, files and event log compared).
// PRESTAGE_PROPERTY_RUNS sets the number of requests (npm test: a short sample).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { makeTempDir, writeRandomFile } from '../helpers/files.js';
import { volumeFiles } from '../helpers/snapshot.js';

const RUNS = Math.max(100, Number(process.env.PRESTAGE_PROPERTY_RUNS ?? 40) * 5);
const CODES = new Set(['PRESTAGE_FORBIDDEN', 'PRESTAGE_INPUT', 'PRESTAGE_NOT_FOUND', 'PRESTAGE_CONFLICT', 'PRESTAGE_BAD_IMAGE', 'PRESTAGE_UNAVAILABLE', 'PRESTAGE_NO_SPACE']);

type Method = 'POST' | 'PUT' | 'PATCH' | 'DELETE';
interface Route {
  readonly method: Method;
  readonly url: fc.Arbitrary<string>;
  /** A body the route takes (fields may still name things that do not exist). */
  readonly good: fc.Arbitrary<Record<string, unknown>> | null;
  /** Bytes the route takes as application/octet-stream (an upload), besides any JSON. */
  readonly octets?: fc.Arbitrary<Uint8Array>;
}

const name = fc.constantFrom('base', 'base@1', 'nope', 'x', 'Bad Name', '', 'a'.repeat(70), '..', 'base@0', 'base@99999999999');
const host = fc.constantFrom('h1', 'h2', 'ghost', 'H 1', '%2e%2e', 'a'.repeat(70));
const anyJson = fc.jsonValue({ maxDepth: 3 });

describe(`write routes take any body without a 500 or a half-done change (${RUNS} requests)`, () => {
  let t: TestApp;
  let dir: string;

  before(async () => {
    t = await startTestApp();
    dir = await makeTempDir();
    await writeRandomFile(join(dir, 'base.raw'), 1 << 20);
    assert.equal((await t.call('POST', '/v1/images', { name: 'base', path: join(dir, 'base.raw') })).status, 201);
    assert.equal((await t.call('POST', '/v1/hosts', { id: 'h1' })).status, 201);
  });
  after(() => t?.close());

  const routes = (): Route[] => [
    { method: 'POST', url: fc.constant('/v1/images'), good: fc.record({ name, path: fc.constantFrom(join(dir, 'base.raw'), join(dir, 'missing.raw'), dir, 'relative.raw') }) },
    {
      method: 'PUT',
      url: name.map((n) => `/v1/pools/${encodeURIComponent(n)}`),
      good: fc.record(
        {
          min: fc.integer({ min: 0, max: 3 }),
          max: fc.integer({ min: 0, max: 4 }),
          policy: fc.constantFrom('static', 'predictive', 'cost'),
          fillRate: fc.double({ min: 0.5, max: 0.999, noNaN: true }),
          missCost: fc.double({ min: 0.1, max: 10, noNaN: true }),
          prewarm: fc.array(fc.constantFrom('2@09:00', '1@23:59/mon-fri', '999999999@09:00', '3@25:00'), { maxLength: 2 }),
        },
        { requiredKeys: [] },
      ),
    },
    { method: 'DELETE', url: name.map((n) => `/v1/pools/${encodeURIComponent(n)}`), good: null },
    { method: 'POST', url: fc.constant('/v1/hosts'), good: fc.record({ id: host, mac: fc.constantFrom('52:54:00:00:00:02', 'zz'), labels: fc.dictionary(fc.string({ maxLength: 5 }), fc.string({ maxLength: 5 }), { maxKeys: 2 }) }, { requiredKeys: ['id'] }) },
    { method: 'PATCH', url: host.map((h) => `/v1/hosts/${encodeURIComponent(h)}/vars`), good: fc.dictionary(fc.constantFrom('hostname', 'ssh_key', 'bad key', ''), fc.oneof(fc.string({ maxLength: 8 }), fc.constant(null)), { maxKeys: 3 }) },
    { method: 'POST', url: host.map((h) => `/v1/hosts/${encodeURIComponent(h)}/key`), good: fc.constant({}) },
    { method: 'POST', url: host.map((h) => `/v1/hosts/${encodeURIComponent(h)}/provision`), good: fc.record({ source: name }) },
    { method: 'POST', url: host.map((h) => `/v1/hosts/${encodeURIComponent(h)}/release`), good: null },
    { method: 'DELETE', url: host.map((h) => `/v1/hosts/${encodeURIComponent(h)}`), good: null },
    { method: 'POST', url: fc.constant('/v1/templates'), good: fc.record({ name: fc.constantFrom('web', 'Bad'), base: name, params: fc.constant({}) }, { requiredKeys: ['name', 'base'] }) },
    { method: 'POST', url: fc.constantFrom('/v1/templates/web/build', '/v1/templates/nope/build'), good: null },
    { method: 'DELETE', url: name.map((n) => `/v1/images/${encodeURIComponent(n)}`), good: null },
    {
      method: 'PUT',
      url: name.map((n) => `/v1/images/${encodeURIComponent(n)}`),
      good: null,
      // Sizes around the 512-byte sector: some are images, most are not.
      octets: fc.oneof(fc.uint8Array({ maxLength: 1100 }), fc.integer({ min: 1, max: 3 }).map((n) => new Uint8Array(n * 512).fill(n))),
    },
    {
      method: 'POST',
      url: fc.constant('/v1/images'),
      good: fc.record({ name, url: fc.constantFrom('http://127.0.0.1:1/x', 'file:///etc/passwd', 'gopher://x', ''), sha256: fc.constantFrom('0'.repeat(64), 'xyz') }, { requiredKeys: ['name', 'url'] }),
    },
    {
      method: 'POST',
      url: fc.constant('/v1/tokens'),
      good: fc.record({ name: fc.constantFrom('ci', 'Bad Name', '', 'a'.repeat(70)), role: fc.constantFrom('reader', 'host', 'root'), hostId: host, expiresInS: fc.constantFrom(59, 60, 3600, -1, 1e12) }, { requiredKeys: ['name', 'role'] }),
    },
    { method: 'DELETE', url: fc.constantFrom('/v1/tokens/ci', '/v1/tokens/nope', '/v1/tokens/%zz'), good: null },
    { method: 'POST', url: host.map((h) => `/v1/hosts/${encodeURIComponent(h)}/meta-credential`), good: fc.constant({}) },
  ];

  /** A right body, a right body with one field replaced by any JSON, or any JSON at all. */
  const bodyFor = (r: Route): fc.Arbitrary<unknown> => {
    const variants: fc.Arbitrary<unknown>[] = [anyJson, fc.constant(undefined)];
    if (r.octets) variants.push(r.octets.map((b) => Buffer.from(b)));
    if (r.good) {
      variants.push(r.good);
      variants.push(
        fc.tuple(r.good, fc.string({ maxLength: 8 }), anyJson).map(([b, k, v]) => {
          const keys = Object.keys(b);
          const key = keys.length > 0 && k.length % 2 === 0 ? keys[k.length % keys.length]! : k;
          return { ...b, [key]: v };
        }),
      );
    }
    return fc.oneof(...variants);
  };

  /** What a person can see changed: images, pools, hosts with their mappings, templates, copies, files, and the events of those changes. */
  const state = async () => {
    await t.app.replenisher.whenIdle();
    const get = async (url: string) => (await t.call('GET', url)).body;
    const pools = (await get('/v1/pools')) as { source: string; policy: unknown; prewarm: unknown }[];
    return {
      images: await get('/v1/images'),
      pools: pools.map((p) => [p.source, p.policy, p.prewarm]),
      hosts: await get('/v1/hosts'),
      templates: await get('/v1/templates'),
      copies: ((await get('/v1/copies')) as { id: string; state: string }[]).map((c) => [c.id, c.state]),
      tokens: await get('/v1/tokens'),
      metaCredential: await get('/v1/hosts/h1/meta-credential'),
      files: await volumeFiles(t.dataDir),
    };
  };
  let seen = 0;
  /** The newest event's number (paging on from the last one seen). */
  const lastSeq = async () => {
    for (;;) {
      const page = (await t.call<{ seq: number }[]>('GET', `/v1/events?after=${seen}&limit=10000`)).body;
      if (page.length === 0) return seen;
      seen = page.at(-1)!.seq;
    }
  };
  /** Events after `seq` other than the replenisher's own work (copies made for pools a 2xx set up). */
  const changesAfter = async (seq: number) =>
    (await t.call<{ type: string }[]>('GET', `/v1/events?after=${seq}&limit=10000`)).body.filter((e) => !e.type.startsWith('copy.') && !e.type.startsWith('pool.s')).map((e) => e.type);

  it('answers 2xx or a catalogue 4xx, and a 4xx changes nothing', async () => {
    const all = routes();
    const request = fc.integer({ min: 0, max: all.length - 1 }).chain((i) => fc.tuple(fc.constant(i), all[i]!.url, bodyFor(all[i]!)));
    await fc.assert(
      fc.asyncProperty(request, async ([i, url, body]) => {
        const route = all[i]!;
        const before = await state();
        const seq = await lastSeq();
        const auth = { authorization: `Bearer ${t.token}` };
        const octets = Buffer.isBuffer(body);
        const res = await t.app.http.inject({
          method: route.method,
          url,
          headers: body === undefined ? auth : { ...auth, 'content-type': octets ? 'application/octet-stream' : 'application/json' },
          ...(body !== undefined && { payload: octets ? body : JSON.stringify(body) }),
        });
        const shown = octets ? `<${body.length} bytes>` : JSON.stringify(body)?.slice(0, 200);
        const what = `${route.method} ${url} ${shown} → ${res.statusCode} ${res.body.slice(0, 300)}`;
        if (process.env.PRESTAGE_PROPERTY_LOG) console.log(`${route.method} ${url.split("/").slice(0, 3).join("/")} ${res.statusCode}`);
        assert.ok(res.statusCode < 500, what);
        if (res.statusCode >= 400) {
          const reply = res.json<{ error?: { code?: unknown; message?: unknown } }>();
          assert.ok(typeof reply.error?.code === 'string' && CODES.has(reply.error.code), `not in the catalogue: ${what}`);
          assert.ok(typeof reply.error.message === 'string' && reply.error.message.length > 5, what);
          assert.deepEqual(await state(), before, `a refused request changed something: ${what}`);
          assert.deepEqual(await changesAfter(seq), [], `a refused request wrote events: ${what}`);
        }
      }),
      { numRuns: RUNS, seed: Number(process.env.PRESTAGE_PROPERTY_SEED ?? 20261201) },
    );
  });
});
