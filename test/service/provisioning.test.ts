import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { open, rm, stat } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { advance, newForecast, observe } from '../../src/pool/index.js';
import { openSqliteStore } from '../../src/store/index.js';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { allocatedBytes, makeTempDir, sha256File, waitFor, writeRandomFile, writeSparseFile } from '../helpers/files.js';

interface ProvisionReply {
  copyId: string;
  outcome: 'warm' | 'joined' | 'cold';
  existing: boolean;
  waitMs: number;
  access: { kind: 'path'; path: string };
}
interface PoolReply { ready: number; making: number; mapped: number; target: number }
interface ImageReply { ref: string; sha256: string; volume: string; version: number }

async function poolReady(t: TestApp, source: string, n: number, timeoutMs = 120_000): Promise<void> {
  await waitFor(`${n} ready spares of ${source}`, async () => {
    const r = await t.call<PoolReply>('GET', `/v1/pools/${source}`);
    return r.body.ready >= n && r.body.making === 0;
  }, timeoutMs);
}

async function addHosts(t: TestApp, prefix: string, n: number): Promise<string[]> {
  const ids = Array.from({ length: n }, (_, i) => `${prefix}${i}`);
  for (const id of ids) assert.equal((await t.call('POST', '/v1/hosts', { id })).status, 201);
  return ids;
}

describe('provisioning with real files', () => {
  let t: TestApp;
  let src: string;
  let golden: ImageReply;
  before(async () => {
    t = await startTestApp();
    src = join(await makeTempDir(), 'small.raw');
    await writeRandomFile(src, 1 << 20);
    const r = await t.call<ImageReply>('POST', '/v1/images', { name: 'small', path: src });
    assert.equal(r.status, 201);
    golden = r.body;
  });
  after(() => t.close());

  it('imports content-addressed and sealed read-only, sha256 of the file', async () => {
    assert.equal(golden.sha256, await sha256File(src));
    assert.equal(golden.ref, 'small@1');
    assert.equal((await stat(golden.volume)).mode & 0o777, 0o400);
  });

  it('200 concurrent provisions against a pool of 200 hand out 200 distinct warm copies', async () => {
    assert.equal((await t.call('PUT', '/v1/pools/small', { min: 200, max: 400 })).status, 200);
    await poolReady(t, 'small', 200);
    const hosts = await addHosts(t, 'w', 200);
    const replies = await Promise.all(hosts.map((h) => t.call<ProvisionReply>('POST', `/v1/hosts/${h}/provision`, { source: 'small' })));
    assert.ok(replies.every((r) => r.status === 200), JSON.stringify(replies.find((r) => r.status !== 200)));
    assert.equal(new Set(replies.map((r) => r.body.copyId)).size, 200, 'no copy handed out twice');
    assert.ok(replies.every((r) => r.body.outcome === 'warm'));
    assert.equal(new Set(replies.map((r) => r.body.access.path)).size, 200);
    for (const h of hosts) assert.equal((await t.call('POST', `/v1/hosts/${h}/release`)).status, 200);
  });

  it('200 concurrent provisions against 20 spares: 200 distinct copies, the rest joined or cold', async () => {
    await t.call('PUT', '/v1/pools/small', { min: 20, max: 20 });
    await waitFor('the pool to shrink to its new max', async () => {
      const p = (await t.call<PoolReply>('GET', '/v1/pools/small')).body;
      return p.ready === 20 && p.making === 0;
    });
    const hosts = await addHosts(t, 'x', 200);
    const replies = await Promise.all(hosts.map((h) => t.call<ProvisionReply>('POST', `/v1/hosts/${h}/provision`, { source: 'small' })));
    assert.ok(replies.every((r) => r.status === 200), JSON.stringify(replies.find((r) => r.status !== 200)));
    assert.equal(new Set(replies.map((r) => r.body.copyId)).size, 200, 'no copy handed out twice');
    const outcomes = replies.map((r) => r.body.outcome);
    assert.ok(outcomes.filter((o) => o === 'warm').length >= 20);
    assert.ok(outcomes.some((o) => o !== 'warm'), 'some had to wait for a copy');
    for (const r of replies) assert.equal(await sha256File(r.body.access.path), golden.sha256, 'every copy handed out is complete');
    for (const h of hosts) assert.equal((await t.call('POST', `/v1/hosts/${h}/release`)).status, 200);
  });

  it('a provision with a spare ready never waits for a copy; again is the same mapping; another source conflicts', async () => {
    await t.call('PUT', '/v1/pools/small', { min: 2, max: 4 });
    await poolReady(t, 'small', 2);
    const [h] = await addHosts(t, 'y', 1);
    const first = await t.call<ProvisionReply>('POST', `/v1/hosts/${h}/provision`, { source: 'small' });
    assert.equal(first.body.outcome, 'warm');
    const again = await t.call<ProvisionReply>('POST', `/v1/hosts/${h}/provision`, { source: 'small' });
    assert.equal(again.status, 200);
    assert.equal(again.body.copyId, first.body.copyId);
    assert.equal(again.body.existing, true);
    const other = await t.call<{ error: { code: string } }>('POST', `/v1/hosts/${h}/provision`, { source: 'small@1' });
    assert.equal(other.status, 409);
    assert.equal(other.body.error.code, 'PRESTAGE_CONFLICT');
    const rel = await t.call('POST', `/v1/hosts/${h}/release`);
    assert.equal(rel.status, 200);
    await assert.rejects(stat(first.body.access.path), /ENOENT/, 'the released copy is deleted');
    assert.equal((await t.call('POST', `/v1/hosts/${h}/release`)).status, 404);
    await poolReady(t, 'small', 2);
  });

  it("the golden's sha256 is unchanged after 1,000 provisions and releases, hosts writing their copies", async () => {
    await t.call('PUT', '/v1/pools/small', { min: 8, max: 16 });
    await poolReady(t, 'small', 8);
    const hosts = await addHosts(t, 'z', 10);
    let n = 0;
    while (n < 1000) {
      const replies = await Promise.all(hosts.map((h) => t.call<ProvisionReply>('POST', `/v1/hosts/${h}/provision`, { source: 'small' })));
      for (const r of replies) {
        assert.equal(r.status, 200);
        const fh = await open(r.body.access.path, 'r+');
        await fh.write(randomBytes(4096), 0, 4096, 0);
        await fh.close();
      }
      await Promise.all(hosts.map((h) => t.call('POST', `/v1/hosts/${h}/release`)));
      n += hosts.length;
    }
    assert.equal(await sha256File(golden.volume), golden.sha256);
    assert.equal((await stat(golden.volume)).mode & 0o777, 0o400);
    const events = await t.call<{ type: string }[]>('GET', '/v1/events?limit=10000');
    assert.ok(events.body.filter((e) => e.type === 'host.mapped').length >= 1000);
  });
});

describe('sparse images stay sparse', () => {
  let t: TestApp;
  after(() => t.close());
  it('a sparse 1 GiB image with 10 MiB of data makes copies with ~10 MiB allocated', async () => {
    t = await startTestApp();
    const src = join(await makeTempDir(), 'sparse.raw');
    const MiB = 1 << 20;
    await writeSparseFile(src, 1024 * MiB, [0, 100, 500, 900, 1020].map((m, i) => ({ offset: m * MiB, length: i === 0 ? 2 * MiB : 2 * MiB })));
    const img = await t.call<ImageReply>('POST', '/v1/images', { name: 'sparse', path: src });
    assert.equal(img.status, 201);
    assert.ok((await allocatedBytes(img.body.volume)) < 12 * MiB, 'the stored golden keeps its holes');
    await t.call('PUT', '/v1/pools/sparse', { min: 2, max: 2 });
    await poolReady(t, 'sparse', 2);
    await t.call('POST', '/v1/hosts', { id: 's1' });
    const p = await t.call<ProvisionReply>('POST', '/v1/hosts/s1/provision', { source: 'sparse' });
    assert.equal(p.body.outcome, 'warm');
    const st = await stat(p.body.access.path);
    assert.equal(st.size, 1024 * MiB);
    const alloc = st.blocks * 512;
    assert.ok(alloc >= 10 * MiB && alloc < 12 * MiB, `copy allocates ${alloc} bytes`);
    assert.equal(await sha256File(p.body.access.path), img.body.sha256);
    const copies = await t.call<{ id: string; method: string }[]>('GET', '/v1/copies?state=mapped');
    assert.equal(copies.body.find((c) => c.id === p.body.copyId)?.method, 'sparse-copy');
  });
});

describe('pools sized by cost, and what their last spare buys', () => {
  type Plan = { reason: string; wanted: number; granted: number; historyCap: number | null; lastSpareHitsPerHour: number | null; lastSpareHitsPerHourPerGiB: number | null };
  type Pool = { source: string; policy: Record<string, unknown>; target: number; ready: number; plan: Plan | null };
  let t: TestApp;
  let dataDir: string;
  after(async () => {
    await t?.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('sets a cost pool through the API and explains its target from the demand history', async () => {
    dataDir = await makeTempDir();
    t = await startTestApp({ dataDir }, { sqlite: true }); // its history is written into state.db
    const files = await makeTempDir();
    for (const name of ['busy', 'idle']) {
      await writeRandomFile(join(files, `${name}.raw`), 1 << 20);
      assert.equal((await t.call('POST', '/v1/images', { name, path: join(files, `${name}.raw`) })).status, 201);
    }
    const set = await t.call<Pool>('PUT', '/v1/pools/busy', { policy: 'cost', missCost: 2 });
    assert.equal(set.status, 200, JSON.stringify(set.body));
    assert.deepEqual(set.body.policy, { kind: 'cost', missCostSpareHours: 2, min: 0, max: 100 }, 'min 0 and max 100 like a predictive pool');
    assert.deepEqual((await t.call<Pool>('PUT', '/v1/pools/busy', { max: 20 })).body.policy, { kind: 'cost', missCostSpareHours: 2, min: 0, max: 20 }, 'the miss cost stays');
    assert.deepEqual((await t.call<Pool>('PUT', '/v1/pools/idle', { min: 1, max: 1 })).body.policy, { kind: 'static', min: 1, max: 1 });
    await t.close({ keepData: true });

    // Six hours of one request every 30 s, as a previous run would have kept them.
    const store = await openSqliteStore({ file: join(dataDir, 'state.db') });
    const now = Date.now() / 1000;
    const history = newForecast({ coalesceS: 1 });
    for (let s = now - 6 * 3600; s < now - 60; s += 30) observe(history, s, 1);
    advance(history, now);
    await store.savePoolForecast('busy', JSON.stringify(history));
    await store.close();

    t = await startTestApp({ dataDir }, { sqlite: true });
    const pools = await waitFor('both pools planned', async () => {
      const r = await t.call<Pool[]>('GET', '/v1/pools');
      return r.body.every((p) => p.plan !== null) && r.body;
    }, 10_000);
    const busy = pools.find((p) => p.source === 'busy')!;
    const idle = pools.find((p) => p.source === 'idle')!;
    assert.match(busy.plan!.reason, /^cost: a cold wait = 2 spare-hours → \d+ \(fill [0-9.]+ %\)/);
    assert.ok(busy.target >= 1, `a pool asked every 30 s keeps a spare: ${JSON.stringify(busy)}`);
    assert.ok(busy.plan!.historyCap !== null && busy.plan!.historyCap >= 1);
    assert.equal(busy.plan!.granted, busy.plan!.wanted, 'no budget');
    // The last spare pays for itself: the warm requests it buys, at 2 spare-hours each, are worth an hour of holding it.
    assert.ok(busy.plan!.lastSpareHitsPerHour! * 2 >= 1, `last spare ${busy.plan!.lastSpareHitsPerHour} warm/h`);
    assert.ok(busy.plan!.lastSpareHitsPerHourPerGiB! > busy.plan!.lastSpareHitsPerHour!, 'a 1 MiB copy: more per GiB');
    // A static pool with no demand: its spare buys nothing, and it has no history cap.
    assert.deepEqual([idle.plan!.reason, idle.plan!.historyCap, idle.plan!.lastSpareHitsPerHour], ['static 1', null, 0]);

    // The OpenAPI document describes the cost policy and the plan's new fields.
    type Schema = { properties?: Record<string, Schema>; anyOf?: Schema[] };
    type OpenApi = { paths: Record<string, { put?: { requestBody: { content: Record<string, { schema: Schema }> } } }>; components: { schemas: Record<string, Schema> } };
    const doc = (await t.call<OpenApi>('GET', '/openapi.json')).body;
    assert.deepEqual(doc.paths['/v1/pools/{source}']!.put!.requestBody.content['application/json']!.schema.properties!.missCost, {
      type: 'number',
      exclusiveMinimum: 0,
      maximum: 8760,
      description: 'cost: a cold wait costs as much as holding one spare this many hours, e.g. 2 (needed when a pool becomes a cost pool)',
    });
    const poolSchema = Object.values(doc.components.schemas).find((s) => s.properties?.prewarm !== undefined)!;
    assert.ok(poolSchema.properties!.policy!.properties!.missCostSpareHours);
    // OpenAPI 3.1: the nullable plan is `anyOf: [null, object]`.
    const plan = poolSchema.properties!.plan!.anyOf!.find((s) => s.properties !== undefined)!;
    for (const field of ['granted', 'historyCap', 'lastSpareHitsPerHour', 'lastSpareHitsPerHourPerGiB']) assert.ok(plan.properties![field], field);
  });
});
