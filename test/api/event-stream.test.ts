/**
 * One event stream on a real HTTP server and a real socket: what a slow client costs the server
 * is bounded (the stream ends with stream.resume rather than holding more), a client that never
 * reads loses its connection, and a quiet stream sends heartbeats.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import { after, describe, it } from 'node:test';
import { createParser, type EventSourceMessage } from 'eventsource-parser';
import { EventStream, type EventStreamOptions } from '../../src/api/event-stream.js';
import type { EventRecord } from '../../src/domain/index.js';
import { waitFor } from '../helpers/files.js';

const event = (seq: number): EventRecord => ({ seq, at: new Date(0).toISOString(), type: 'host.added', subject: `host-${seq}`, data: { pad: 'x'.repeat(200) } });

/** A server whose every request becomes an EventStream, and a raw client socket that reads only when told. */
async function streamPair(opts: EventStreamOptions): Promise<{ stream: EventStream; ended: Promise<void>; client: Socket; server: Server; res: ServerResponse }> {
  let resolveEnded!: () => void;
  const ended = new Promise<void>((r) => (resolveEnded = r));
  const server = createServer();
  const got = new Promise<ServerResponse>((resolve) => {
    server.once('request', (_req, res: ServerResponse) => resolve(res));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  const client = connect(port, '127.0.0.1');
  // HTTP/1.0: no chunked encoding to undo, and the server closes the connection at the end of the stream.
  client.write(`GET /v1/events HTTP/1.0\r\nhost: x\r\naccept: text/event-stream\r\n\r\n`);
  const res = await got;
  const stream = new EventStream(res, 0, opts, resolveEnded);
  return { stream, ended, client, server, res };
}

/** Every SSE message in what a client read. */
function messages(bytes: string): EventSourceMessage[] {
  const out: EventSourceMessage[] = [];
  createParser({ onEvent: (m) => out.push(m) }).feed(bytes.slice(bytes.indexOf('\r\n\r\n') + 4));
  return out;
}

describe('an event stream and its client', () => {
  const servers: Server[] = [];
  after(() => {
    for (const s of servers) s.close();
  });

  it('a client that stops reading costs a bounded queue; the stream then ends with stream.resume at the last event written', async () => {
    const { stream, ended, client, server } = await streamPair({ maxQueuedBytes: 64 << 10, closeGraceMs: 30_000 });
    servers.push(server);
    client.pause();
    let pushed = 0;
    let done = false;
    void ended.then(() => (done = true));
    // Batches between turns of the event loop, so the kernel's socket buffers fill as they would.
    while (!done && pushed < 500_000) {
      stream.push(Array.from({ length: 200 }, (_, i) => event(pushed + i + 1)));
      pushed += 200;
      await new Promise((r) => setImmediate(r));
    }
    assert.ok(done, `the stream ended before ${pushed} events (${(pushed * 300) >> 20} MiB) were pushed`);

    // The client reads again: consecutive events from the first, then where to resume.
    let text = '';
    client.setEncoding('utf8').on('data', (s: string) => (text += s));
    client.resume();
    await once(client, 'end');
    const got = messages(text);
    const end = got.at(-1)!;
    assert.equal(end.event, 'stream.resume');
    const { reason, lastEventId } = JSON.parse(end.data) as { reason: string; lastEventId: string };
    assert.equal(reason, 'slow-client');
    const seqs = got.filter((m) => m.event === 'host.added').map((m) => Number(m.id));
    assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i + 1), 'what was written arrives whole and in order');
    assert.equal(lastEventId, String(seqs.at(-1)), 'it resumes right after the last event it got');
    assert.ok(seqs.length < pushed, 'what did not fit was dropped, not held');
  });

  it('a client that never reads again loses its connection once the stream ended', async () => {
    const { stream, ended, client, server, res } = await streamPair({ maxQueuedBytes: 16 << 10, closeGraceMs: 50 });
    servers.push(server);
    client.pause();
    client.on('error', () => undefined);
    const cut = once(res, 'close');
    let done = false;
    void ended.then(() => (done = true));
    for (let n = 0; !done; n += 200) {
      stream.push(Array.from({ length: 200 }, (_, i) => event(n + i + 1)));
      await new Promise((r) => setImmediate(r));
    }
    // The server let go of the socket (and what it held for it) though the client never read.
    await cut;
    assert.equal(res.socket?.destroyed ?? true, true);
    client.destroy();
  });

  it('a quiet stream sends heartbeat comments', async () => {
    const { client, server, stream } = await streamPair({ heartbeatMs: 10 });
    servers.push(server);
    let text = '';
    client.setEncoding('utf8').on('data', (s: string) => (text += s));
    await waitFor('two heartbeats', () => Promise.resolve(text.split(': keep-alive\n').length > 2));
    stream.end('shutdown');
    await once(client, 'end');
    assert.equal(messages(text)[0]!.event, 'stream.open');
  });
});
