/**
 * The event log followed live over Server-Sent Events, on a real server over real HTTP: each
 * event once, in order, across a dropped connection resumed with Last-Event-ID (events appended
 * while it was down included), and under concurrent writers — on PostgreSQL too (npm run
 * test:postgres), where events are numbered before they commit and may commit out of order.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Event } from '../../src/api/types.js';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { waitFor } from '../helpers/files.js';
import { sse, type SseClient } from '../helpers/sse.js';

const dialect = process.env.PRESTAGE_TEST_DIALECT === 'postgres' ? 'PostgreSQL' : 'SQLite';

describe(`the event stream (${dialect})`, () => {
  let t: TestApp;
  let base: string;
  before(async () => {
    t = await startTestApp({ listen: '127.0.0.1:0' }, { listen: true });
    base = `http://${t.app.address}`;
  });
  after(() => t.close());

  /** `n` hosts added at once: events from concurrent transactions. */
  const addHosts = async (prefix: string, n: number) => {
    const replies = await Promise.all(Array.from({ length: n }, (_, i) => t.call('POST', '/v1/hosts', { id: `${prefix}-${i}` })));
    assert.deepEqual(replies.filter((r) => r.status !== 201), []);
  };
  const log = async () => (await t.call<Event[]>('GET', '/v1/events?after=0&limit=10000')).body;
  const until = (c: SseClient, seq: number) => waitFor(`the stream to reach event ${seq}`, () => Promise.resolve(c.events.at(-1)?.seq === seq || (c.events.at(-1)?.seq ?? 0) > seq));

  it('a client that drops its connection and resumes with Last-Event-ID gets every event once, those of the gap too', async () => {
    const first = sse(base, t.token, { after: 0 });
    assert.deepEqual(await first.opened, { status: 200, contentType: 'text/event-stream; charset=utf-8' });
    const writing = addHosts('a', 40);
    // Cut while events still come.
    await waitFor('some events', () => Promise.resolve(first.events.length >= 30));
    first.abort();
    await first.closed;
    await writing;
    const lastSeen = first.events.at(-1)!.seq;
    await addHosts('b', 40); // while it is away

    const second = sse(base, t.token, { lastEventId: String(lastSeen) });
    await addHosts('c', 40);
    const all = await log();
    await until(second, all.at(-1)!.seq);
    second.abort();
    await second.closed;

    const got = [...first.events, ...second.events].map((e) => e.seq).filter((s) => s <= all.at(-1)!.seq);
    assert.deepEqual(got, all.map((e) => e.seq), 'every event of the log, once, in order');
    assert.deepEqual(second.events.find((e) => e.subject === 'b-7'), all.find((e) => e.subject === 'b-7'), 'an event appended while away comes as the log has it');
    assert.equal(second.messages[0]?.event, 'stream.open');
    assert.equal(second.messages[0]?.id, String(lastSeen), 'stream.open names where it resumes');
  });

  it('followers from now get exactly what 100 concurrent changes appended, in order', async () => {
    const before = (await log()).at(-1)!.seq;
    const followers = [sse(base, t.token), sse(base, t.token)];
    // Each says where it starts before anything is written.
    await waitFor('the streams to open', () => Promise.resolve(followers.every((f) => f.messages.length > 0)));
    for (const f of followers) assert.equal(f.messages[0]!.id, String(before));
    await addHosts('d', 100);
    const all = (await log()).filter((e) => e.seq > before);
    assert.ok(all.filter((e) => e.type === 'host.added').length === 100, 'the 100 hosts are in the log');
    for (const f of followers) {
      await until(f, all.at(-1)!.seq);
      f.abort();
      await f.closed;
      assert.deepEqual(f.events.map((e) => e.seq), all.map((e) => e.seq));
    }
  });

  it('without Accept: text/event-stream the reply is the JSON page as before; a bad Last-Event-ID is refused', async () => {
    const r = await t.call<Event[]>('GET', '/v1/events?after=0&limit=2');
    assert.equal(r.status, 200);
    assert.equal(r.body.length, 2);
    assert.deepEqual(Object.keys(r.body[0]!).sort(), ['at', 'data', 'seq', 'subject', 'type']);
    const bad = sse(base, t.token, { lastEventId: 'twelve' });
    assert.equal((await bad.opened).status, 400);
    await bad.closed;
    const anonymous = sse(base, 'not-a-token');
    assert.equal((await anonymous.opened).status, 401);
    await anonymous.closed;
  });

  it('stopping the server ends open streams with stream.resume (and does not wait on them)', async () => {
    const follower = sse(base, t.token);
    await waitFor('the stream to open', () => Promise.resolve(follower.messages.length > 0));
    await addHosts('e', 2);
    const last = (await log()).at(-1)!.seq;
    await until(follower, last);
    await t.app.stop();
    await follower.closed;
    const end = follower.messages.at(-1)!;
    assert.equal(end.event, 'stream.resume');
    assert.equal((JSON.parse(end.data) as { reason: string }).reason, 'shutdown');
    assert.ok(Number((JSON.parse(end.data) as { lastEventId: string }).lastEventId) >= last);
  });
});
