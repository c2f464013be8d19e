/**
 * The event stream of two `prestage serve` instances on one PostgreSQL state: a follower of one
 * hears at once what the other appends (woken over LISTEN/NOTIFY, not by polling), and resuming
 * on the other instance with Last-Event-ID misses nothing and repeats nothing.
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { Event } from '../../src/api/types.js';
import { makeTempDir, waitFor } from '../helpers/files.js';
import { TEST_PG_URL, pgSchema, type PgSchema } from '../helpers/postgres.js';
import { startServe, type ServeProcess } from '../helpers/server.js';
import { sse, type SseClient } from '../helpers/sse.js';

describe('the event stream over two instances on PostgreSQL', () => {
  const instances: ServeProcess[] = [];
  let schema: PgSchema | undefined;
  let dir: string | undefined;
  after(async () => {
    for (const s of instances) await s.kill('SIGKILL');
    await schema?.drop();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it('a follower of one instance gets what the other appends, and resumes on it without a gap or a repeat', async () => {
    schema = await pgSchema();
    dir = await makeTempDir('prestage-events-');
    // The poll that stands behind lost wake-ups runs every 15 s: within this test only a wake-up brings an event.
    const start = (name: string) => startServe(join(dir!, 'data'), ['--db', TEST_PG_URL, '--db-schema', schema!.name, '--instance-name', name]);
    const a = await start('a');
    instances.push(a);
    const b = await start('b');
    instances.push(b);
    const log = async () => (await a.call<Event[]>('GET', '/v1/events?after=0&limit=10000')).body;
    const addHosts = async (via: ServeProcess, prefix: string, n: number) => {
      const replies = await Promise.all(Array.from({ length: n }, (_, i) => via.call('POST', '/v1/hosts', { id: `${prefix}-${i}` })));
      assert.deepEqual(replies.filter((r) => r.status !== 201), []);
    };
    const reached = (c: SseClient, seq: number) => waitFor(`the stream to reach event ${seq}`, () => Promise.resolve((c.events.at(-1)?.seq ?? 0) >= seq), 10_000);

    const onA = sse(a.url, a.token, { after: 0 });
    await addHosts(b, 'b', 30);
    const firstPart = await log();
    await reached(onA, firstPart.at(-1)!.seq);
    onA.abort();
    await onA.closed;

    // Away: both write, then it resumes on the other instance.
    await Promise.all([addHosts(a, 'a', 20), addHosts(b, 'bb', 20)]);
    const onB = sse(b.url, b.token, { lastEventId: String(onA.events.at(-1)!.seq) });
    await addHosts(a, 'aa', 20);
    const all = await log();
    await reached(onB, all.at(-1)!.seq);
    onB.abort();
    await onB.closed;

    const got = [...onA.events, ...onB.events].map((e) => e.seq).filter((s) => s <= all.at(-1)!.seq);
    assert.deepEqual(got, all.map((e) => e.seq), 'every event of the log once, in order');
  });
});
