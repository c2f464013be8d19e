/**
 * Several `prestage serve` processes on one PostgreSQL state and one data directory, as the
 * README sets them up: claims spread over instances, a leader killed mid-copy, a leader frozen
 * past its lease, and PostgreSQL cut off under load.
 */
import assert from 'node:assert/strict';
import { readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { makeTempDir, sha256File, waitFor, writeRandomFile } from '../helpers/files.js';
import { run as runTool } from '../helpers/nbd-tools.js';
import { pgRelay } from '../helpers/pg-relay.js';
import { TEST_PG_URL, pgSchema, type PgSchema } from '../helpers/postgres.js';
import { startServe, type ServeProcess } from '../helpers/server.js';

interface InstanceRow { id: string; name: string; pid: number; live: boolean; pools: string[]; nbd: string | null }
interface CopyRow { id: string; state: string; progress?: { doneBytes: number; totalBytes: number } }
interface PoolRow { ready: number; making: number; mapped: number }
interface ProvisionReply { copyId: string; outcome: string; error?: { code: string; message: string } }

/** One cluster: a schema, a data directory and the instances started on them. */
class Cluster {
  readonly instances: ServeProcess[] = [];
  private constructor(
    readonly dir: string,
    readonly schema: PgSchema,
    readonly dbUrl: string,
  ) {}

  static async make(dbUrl = TEST_PG_URL): Promise<Cluster> {
    return new Cluster(await makeTempDir('prestage-cluster-'), await pgSchema(), dbUrl);
  }

  get data(): string {
    return join(this.dir, 'data');
  }

  async start(name: string, extra: readonly string[] = []): Promise<ServeProcess> {
    const s = await startServe(this.data, ['--db', this.dbUrl, '--db-schema', this.schema.name, '--instance-name', name, ...extra]);
    this.instances.push(s);
    return s;
  }

  async close(): Promise<void> {
    for (const s of this.instances) {
      if (s.child.signalCode === null && s.child.exitCode === null) s.child.kill('SIGCONT');
      await s.kill('SIGKILL');
    }
    await this.schema.drop();
    await rm(this.dir, { recursive: true, force: true });
  }
}

async function instances(via: ServeProcess): Promise<InstanceRow[]> {
  const r = await via.call<InstanceRow[]>('GET', '/v1/instances');
  assert.equal(r.status, 200);
  return r.body;
}

async function leaderOf(cluster: Cluster, source: string, via: ServeProcess): Promise<ServeProcess> {
  const row = await waitFor(`a leader of ${source}`, async () => (await instances(via)).find((i) => i.pools.includes(source)), 30_000);
  const leader = cluster.instances.find((s) => s.child.pid === row.pid);
  assert.ok(leader, `the leader (pid ${row.pid}) is one of ours`);
  return leader;
}

/** Files in copies/ are exactly the ready and mapped copies: nothing partial, no orphan, none missing. */
async function assertNoOrphans(cluster: Cluster, via: ServeProcess): Promise<void> {
  const making = (await via.call<CopyRow[]>('GET', '/v1/copies?state=making')).body;
  assert.deepEqual(making, [], 'no copy left making');
  const live = [...(await via.call<CopyRow[]>('GET', '/v1/copies?state=ready&limit=5000')).body, ...(await via.call<CopyRow[]>('GET', '/v1/copies?state=mapped&limit=5000')).body].map((c) => `${c.id}.raw`).sort();
  const files = (await readdir(join(cluster.data, 'copies'))).sort();
  assert.deepEqual(files, live, 'copies/ holds the ready and mapped copies, nothing else');
  assert.deepEqual(await readdir(join(cluster.data, 'tmp')), [], 'no temporary file left');
}

describe('several instances on one PostgreSQL state', { concurrency: false }, () => {
  const clusters: Cluster[] = [];
  after(async () => {
    for (const c of clusters) await c.close();
  });

  it('1,000 concurrent provisions over 3 instances: 1,000 distinct copies, one mapping per host, all warm', async () => {
    const cluster = await Cluster.make();
    clusters.push(cluster);
    const [a, b, c] = [await cluster.start('a'), await cluster.start('b'), await cluster.start('c')];
    const all = [a, b, c];
    const seen = await instances(b);
    assert.deepEqual(seen.map((i) => i.name).sort(), ['a', 'b', 'c']);
    assert.ok(seen.every((i) => i.live));

    const src = join(cluster.dir, 'tiny.raw');
    await writeRandomFile(src, 64 << 10);
    assert.equal((await a.call('POST', '/v1/images', { name: 'tiny', path: src })).status, 201);
    assert.equal((await b.call('PUT', '/v1/pools/tiny', { min: 1000, max: 1000 })).status, 200);
    const hosts = Array.from({ length: 1000 }, (_, i) => `h${i}`);
    for (let i = 0; i < hosts.length; i += 100) await Promise.all(hosts.slice(i, i + 100).map((id, k) => all[k % 3]!.call('POST', '/v1/hosts', { id })));
    await waitFor('1,000 spares', async () => (await c.call<PoolRow>('GET', '/v1/pools/tiny')).body.ready >= 1000, 240_000, 250);
    const leaders = (await instances(a)).filter((i) => i.pools.includes('tiny'));
    assert.equal(leaders.length, 1, 'one instance leads the pool');

    const replies = await Promise.all(hosts.map((id, i) => all[i % 3]!.call<ProvisionReply>('POST', `/v1/hosts/${id}/provision`, { source: 'tiny' })));
    const failed = replies.filter((r) => r.status !== 200);
    assert.deepEqual(failed.slice(0, 3), [], 'every provision succeeded');
    assert.deepEqual([...new Set(replies.map((r) => r.body.outcome))], ['warm'], 'none waited while spares were ready');
    assert.equal(new Set(replies.map((r) => r.body.copyId)).size, 1000, '1,000 distinct copies');

    const mapped = (await a.call<{ id: string; hostId: string }[]>('GET', '/v1/copies?state=mapped&limit=5000')).body;
    assert.equal(mapped.length, 1000);
    const byCopy = new Map(replies.map((r, i) => [r.body.copyId, hosts[i]]));
    for (const copy of mapped) assert.equal(copy.hostId, byCopy.get(copy.id), `copy ${copy.id} is mapped to the host it was handed to`);

    // Every instance serves a copy mapped through any of them, with the host's key made on another;
    // a release on a third cuts it everywhere.
    const key = await c.call<{ pskFileLine: string }>('GET', '/v1/hosts/h0/key');
    assert.equal(key.status, 200);
    const pskFile = join(cluster.dir, 'h0.psk');
    await writeFile(pskFile, `${key.body.pskFileLine}\n`, { mode: 0o600 });
    const nbdAddresses = (await instances(a)).map((i) => i.nbd);
    assert.equal(nbdAddresses.length, 3);
    const uriVia = (addr: string | null) => `nbds://h0@${addr}/${replies[0]!.body.copyId}?tls-psk-file=${pskFile}`;
    for (const addr of nbdAddresses) {
      await waitFor(`h0's copy served by ${addr}`, async () => (await runTool('nbdinfo', ['--size', uriVia(addr)])).stdout.trim() === String(64 << 10), 10_000, 100);
    }
    assert.equal((await c.call('POST', '/v1/hosts/h0/release')).status, 200);
    for (const addr of nbdAddresses) {
      await waitFor(`h0's copy no longer served by ${addr}`, async () => (await runTool('nbdinfo', ['--size', uriVia(addr)])).code !== 0, 10_000, 100);
    }
    // A token made on one instance works on all; revoked on another, it is refused everywhere.
    const made = await a.call<{ token: string }>('POST', '/v1/tokens', { name: 'watcher', role: 'reader' });
    assert.equal(made.status, 201);
    const asWatcher = (s: ServeProcess) => fetch(`${s.url}/v1/pools`, { headers: { authorization: `Bearer ${made.body.token}` } }).then((r) => r.status);
    for (const s of all) assert.equal(await asWatcher(s), 200);
    assert.equal((await b.call('DELETE', '/v1/tokens/watcher')).status, 204);
    const revokedAt = performance.now();
    for (const s of all) await waitFor('the revoked token refused', async () => (await asWatcher(s)) === 401, 5_000, 20);
    assert.ok(performance.now() - revokedAt < 2_000, 'revoked everywhere within the cache bound');
  });

  it('an instance starting while another makes a copy leaves that copy alone (its reconcile touches only the dead)', async () => {
    const cluster = await Cluster.make();
    clusters.push(cluster);
    const a = await cluster.start('a', ['--reflink', 'never']);
    const src = join(cluster.dir, 'big.raw');
    await writeRandomFile(src, 96 << 20);
    assert.equal((await a.call('POST', '/v1/images', { name: 'big', path: src })).status, 201);
    await a.call('PUT', '/v1/pools/big', { min: 2, max: 2 });
    const inFlight = await waitFor('a copy under way', async () => (await a.call<CopyRow[]>('GET', '/v1/copies?state=making')).body.find((x) => (x.progress?.doneBytes ?? 0) > 0), 60_000, 2);
    const b = await cluster.start('b', ['--reflink', 'never']);
    await waitFor('the copy ready', async () => (await b.call<CopyRow[]>('GET', '/v1/copies?state=ready&limit=5000')).body.some((x) => x.id === inFlight.id), 60_000, 50);
    const events = (await b.call<{ type: string; subject: string }[]>('GET', '/v1/events?limit=10000')).body;
    assert.deepEqual(events.filter((e) => e.subject === inFlight.id && e.type.startsWith('reconcile.')), [], 'nothing of it was reconciled away');
    await waitFor('the pool at its target', async () => {
      const p = (await b.call<PoolRow>('GET', '/v1/pools/big')).body;
      return p.ready === 2 && p.making === 0;
    }, 120_000, 100);
    await assertNoOrphans(cluster, b);
  });

  it('a spare made ready on the leader goes at once to a provision waiting on another instance', async () => {
    const cluster = await Cluster.make();
    clusters.push(cluster);
    const opts = ['--reflink', 'never'];
    const [a, b] = [await cluster.start('a', opts), await cluster.start('b', opts)];
    const src = join(cluster.dir, 'big.raw');
    await writeRandomFile(src, 160 << 20);
    assert.equal((await a.call('POST', '/v1/images', { name: 'big', path: src })).status, 201);
    await a.call('PUT', '/v1/pools/big', { min: 1, max: 1 });
    await waitFor('a spare', async () => (await a.call<PoolRow>('GET', '/v1/pools/big')).body.ready === 1, 120_000, 50);
    const leader = await leaderOf(cluster, 'big', a);
    const other = leader === a ? b : a;
    for (const id of ['x', 'y']) assert.equal((await a.call('POST', '/v1/hosts', { id })).status, 201);
    // x takes the spare; the leader starts the next one; y asks the other instance while it is under way.
    assert.equal((await other.call<ProvisionReply>('POST', '/v1/hosts/x/provision', { source: 'big' })).body.outcome, 'warm');
    // Well under way, so that it is ready long before a copy y's own instance would start for it.
    const next = await waitFor('the next spare half made', async () => (await leader.call<CopyRow[]>('GET', '/v1/copies?state=making')).body.find((x) => (x.progress?.doneBytes ?? 0) > (160 << 20) / 2), 60_000, 2);
    const y = await other.call<ProvisionReply>('POST', '/v1/hosts/y/provision', { source: 'big' });
    assert.equal(y.status, 200, JSON.stringify(y.body));
    const story = async () => JSON.stringify((await a.call<{ type: string; subject: string; at: string; data: unknown }[]>('GET', '/v1/events?limit=10000')).body.filter((e) => e.type.startsWith('copy.') || e.type === 'host.mapped').map((e) => [e.at.slice(17), e.type, e.subject, e.data]));
    assert.equal(y.body.copyId, next.id, `y got the leader's spare, not a copy of its own instance's: ${await story()}`);
    assert.equal(y.body.outcome, 'joined');
  });

  it('SIGKILL of the leader mid-copy: another takes the pool over, refills it, and nothing is left behind', async (t) => {
    const cluster = await Cluster.make();
    clusters.push(cluster);
    const ttl = ['--lease-ttl', '2s', '--reflink', 'never'];
    const [a, b, c] = [await cluster.start('a', ttl), await cluster.start('b', ttl), await cluster.start('c', ttl)];
    const src = join(cluster.dir, 'big.raw');
    await writeRandomFile(src, 96 << 20);
    const img = await a.call<{ sha256: string }>('POST', '/v1/images', { name: 'big', path: src });
    assert.equal(img.status, 201);
    await a.call('PUT', '/v1/pools/big', { min: 1, max: 1 });
    await waitFor('a first spare', async () => (await a.call<PoolRow>('GET', '/v1/pools/big')).body.ready >= 1, 120_000);
    const leader = await leaderOf(cluster, 'big', b);
    await a.call('PUT', '/v1/pools/big', { min: 4, max: 4 });
    await waitFor('a copy under way on the leader', async () => (await leader.call<CopyRow[]>('GET', '/v1/copies?state=making')).body.find((x) => (x.progress?.doneBytes ?? 0) > 0), 60_000, 5);

    await leader.kill('SIGKILL');
    const killedAt = performance.now();
    const survivors = [a, b, c].filter((s) => s !== leader);
    const next = await waitFor('another leader', async () => (await instances(survivors[0]!)).find((i) => i.pools.includes('big') && i.pid !== leader.child.pid), 30_000, 20);
    const takeoverS = (performance.now() - killedAt) / 1000;
    t.diagnostic(`takeover in ${takeoverS.toFixed(2)} s by ${next.name}`);
    assert.ok(survivors.some((s) => s.child.pid === next.pid));

    await waitFor('the pool back at its target', async () => {
      const p = (await survivors[0]!.call<PoolRow>('GET', '/v1/pools/big')).body;
      return p.ready === 4 && p.making === 0;
    }, 180_000, 200);
    await assertNoOrphans(cluster, survivors[1]!);
    // Every spare is complete: its bytes are the image's.
    for (const copy of (await survivors[0]!.call<CopyRow[]>('GET', '/v1/copies?state=ready&limit=5000')).body) {
      assert.equal(await sha256File(join(cluster.data, 'copies', `${copy.id}.raw`)), img.body.sha256, `spare ${copy.id} is complete`);
    }
    const events = (await survivors[0]!.call<{ type: string; subject: string }[]>('GET', '/v1/events')).body;
    assert.ok(events.some((e) => e.type === 'instance.reaped'), 'the dead instance was reaped');
  });

  it('a leader frozen past its lease (SIGSTOP) does not mark its copy in flight ready once it resumes', async () => {
    const cluster = await Cluster.make();
    clusters.push(cluster);
    // Not shorter: on a loaded machine a busy instance could miss a 1 s lease and be taken for dead too.
    const opts = ['--lease-ttl', '2s', '--reflink', 'never'];
    const [a, b] = [await cluster.start('a', opts), await cluster.start('b', opts)];
    const src = join(cluster.dir, 'big.raw');
    await writeRandomFile(src, 192 << 20);
    assert.equal((await a.call('POST', '/v1/images', { name: 'big', path: src })).status, 201);
    await a.call('PUT', '/v1/pools/big', { min: 2, max: 2 });
    const leader = await leaderOf(cluster, 'big', a);
    const other = leader === a ? b : a;
    const inFlight = await waitFor('a copy under way', async () => (await leader.call<CopyRow[]>('GET', '/v1/copies?state=making')).body.find((x) => (x.progress?.doneBytes ?? 0) > 0), 60_000, 2);

    const frozenId = (await instances(other)).find((i) => i.pid === leader.child.pid)!.id;
    leader.child.kill('SIGSTOP');
    await waitFor('the other instance leading the pool', async () => (await instances(other)).find((i) => i.pools.includes('big') && i.pid === other.child.pid), 30_000, 50);
    // The lease can run out a moment before the heartbeat does: resume only once it was declared dead.
    await waitFor('the frozen instance reaped', async () => (await other.call<{ type: string; subject: string }[]>('GET', '/v1/events?limit=10000')).body.some((e) => e.type === 'instance.reaped' && e.subject === frozenId), 30_000, 50);
    leader.child.kill('SIGCONT');

    // The resumed instance finds out it was declared dead and carries on as a new one.
    await waitFor('the resumed instance registered again', async () => (await instances(other)).some((i) => i.pid === leader.child.pid && i.live), 30_000, 100);
    await waitFor('the pool at its target', async () => {
      const p = (await other.call<PoolRow>('GET', '/v1/pools/big')).body;
      return p.ready === 2 && p.making === 0;
    }, 180_000, 200);
    const ready = (await other.call<CopyRow[]>('GET', '/v1/copies?state=ready&limit=5000')).body.map((x) => x.id);
    assert.ok(!ready.includes(inFlight.id), 'the frozen copy never became a spare');
    const failed = (await other.call<CopyRow[]>('GET', '/v1/copies?state=failed&limit=5000')).body.map((x) => x.id);
    assert.ok(failed.includes(inFlight.id), 'the frozen copy is failed');
    const events = (await other.call<{ type: string; subject: string }[]>('GET', '/v1/events?limit=10000')).body;
    assert.ok(!events.some((e) => e.type === 'copy.ready' && e.subject === inFlight.id), 'no copy.ready was ever recorded for it');
    const reaped = events.filter((e) => e.type === 'instance.reaped').map((e) => e.subject);
    const started = events.filter((e) => e.type === 'instance.started' && (e as { data?: { pid?: number } }).data?.pid === leader.child.pid).map((e) => e.subject);
    assert.ok(started.length >= 2, 'the frozen instance registered again as a new one after it resumed');
    assert.ok(reaped.includes(started[0]!), 'its first incarnation was reaped');
    await assertNoOrphans(cluster, other);
  });

  it('PostgreSQL cut off under load: clear 503s, then every instance serves again without a restart and no mapping is lost or doubled', async () => {
    const { relay, url } = await pgRelay();
    const cluster = await Cluster.make(url);
    clusters.push(cluster);
    try {
      const all = [await cluster.start('a'), await cluster.start('b'), await cluster.start('c')];
      const src = join(cluster.dir, 'tiny.raw');
      await writeRandomFile(src, 64 << 10);
      assert.equal((await all[0]!.call('POST', '/v1/images', { name: 'tiny', path: src })).status, 201);
      await all[0]!.call('PUT', '/v1/pools/tiny', { min: 50, max: 50 });
      const hosts = Array.from({ length: 60 }, (_, i) => `h${i}`);
      for (const id of hosts) await all[0]!.call('POST', '/v1/hosts', { id });
      await waitFor('50 spares', async () => (await all[1]!.call<PoolRow>('GET', '/v1/pools/tiny')).body.ready >= 50, 120_000, 100);

      /** What each host should have, from the replies that said so: a copy, or none. */
      const expected = new Map<string, string | null>();
      const codes = new Map<number, number>();
      const odd: string[] = [];
      let stop = false;
      const worker = async (w: number) => {
        for (let n = 0; !stop; n++) {
          const host = hosts[(w * 7 + n) % hosts.length]!;
          const via = all[n % 3]!;
          const r = await via.call<ProvisionReply>('POST', `/v1/hosts/${host}/provision`, { source: 'tiny' }).catch(() => ({ status: 0, body: {} as ProvisionReply }));
          codes.set(r.status, (codes.get(r.status) ?? 0) + 1);
          if (r.status >= 500 && r.status !== 503) odd.push(`provision: ${JSON.stringify(r.body)}`);
          if (r.status === 200) expected.set(host, r.body.copyId);
          else if (r.status === 503) assert.equal(r.body.error?.code, 'PRESTAGE_UNAVAILABLE', `a 503 says why: ${JSON.stringify(r.body)}`);
          const rel = await via.call('POST', `/v1/hosts/${host}/release`).catch(() => ({ status: 0, body: {} }));
          codes.set(rel.status, (codes.get(rel.status) ?? 0) + 1);
          if (rel.status >= 500 && rel.status !== 503) odd.push(`release: ${JSON.stringify(rel.body)}`);
          if (rel.status === 200) expected.set(host, null);
          await new Promise((r) => setTimeout(r, 5));
        }
      };
      const load = Promise.all([0, 1, 2, 3].map(worker));
      await new Promise((r) => setTimeout(r, 1000));
      await relay.down();
      await new Promise((r) => setTimeout(r, 3000));
      await relay.up();
      await new Promise((r) => setTimeout(r, 1000));
      // Every instance answers again, by itself.
      for (const [i, s] of all.entries()) {
        await waitFor(`instance ${i} serving again`, async () => (await s.call('GET', '/v1/pools/tiny')).status === 200, 30_000, 100);
      }
      await new Promise((r) => setTimeout(r, 1000));
      stop = true;
      await load;
      assert.ok((codes.get(503) ?? 0) > 0, `the outage showed as 503s: ${JSON.stringify([...codes])}`);
      assert.ok((codes.get(200) ?? 0) > 0);
      assert.deepEqual([...codes.keys()].filter((c) => c !== 200 && c !== 503 && c !== 404 && c !== 409).sort(), [], `only 200, 503 and expected 404/409 replies: ${JSON.stringify([...codes])} ${odd.join('; ')}`);

      // After the load: each host's mapping as the store has it is consistent, copies unique.
      const hostRows = (await all[2]!.call<{ id: string; mapping: { copyId: string } | null }[]>('GET', '/v1/hosts?limit=5000')).body;
      const copyIds = hostRows.flatMap((h) => (h.mapping ? [h.mapping.copyId] : []));
      assert.equal(new Set(copyIds).size, copyIds.length, 'no copy mapped twice');
      const mappedCopies = new Map((await all[0]!.call<{ id: string; hostId: string }[]>('GET', '/v1/copies?state=mapped&limit=5000')).body.map((c) => [c.id, c.hostId]));
      for (const h of hostRows) {
        if (h.mapping) assert.equal(mappedCopies.get(h.mapping.copyId), h.id, `host ${h.id}'s copy is mapped to it`);
      }
      // A host whose last successful reply gave it a copy still has that copy (unless a later
      // reply was lost in the outage, which the host would retry: then it has none or that one).
      for (const [host, copy] of expected) {
        const row = hostRows.find((h) => h.id === host)!;
        if (copy !== null && row.mapping) assert.equal(row.mapping.copyId, copy, `host ${host} kept its copy`);
      }
      // Every instance still provisions.
      for (const [i, s] of all.entries()) {
        const host = `after-${i}`;
        assert.equal((await s.call('POST', '/v1/hosts', { id: host })).status, 201);
        const r = await s.call<ProvisionReply>('POST', `/v1/hosts/${host}/provision`, { source: 'tiny' });
        assert.equal(r.status, 200, JSON.stringify(r.body));
      }
    } finally {
      await relay.down();
    }
  });
});
