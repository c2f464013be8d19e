/**
 * The event log as Server-Sent Events (`GET /v1/events` with `Accept: text/event-stream`).
 *
 * Each event is one message: `id:` its sequence number, `event:` its type, `data:` the event as
 * JSON (as the JSON reply lists it). A client that reconnects with the `Last-Event-ID` header (a
 * browser's EventSource does it by itself) gets what came after that event, each once.
 *
 * Two messages are the stream's own: `stream.open` first, whose `id:` is where the stream
 * starts (so a client that reconnects before any event came still says where it was), and
 * `stream.resume` last, when the server ends the stream — it shuts down, or the client reads
 * slower than events come — telling the client to connect again with its Last-Event-ID. Between
 * events a comment line every `heartbeatMs` keeps proxies from taking a quiet stream for dead.
 *
 * A client that does not keep up does not make the server hold more and more for it: past
 * `maxQueuedBytes` waiting for its socket, the stream ends (stream.resume, reason slow-client).
 */
import type { ServerResponse } from 'node:http';
import type { EventRecord } from '../domain/index.js';
import type { Following } from '../service/index.js';

export const STREAM_OPEN = 'stream.open';
export const STREAM_RESUME = 'stream.resume';

/** Why the server ended a stream; the client connects again in every case. */
export type StreamEndReason = 'slow-client' | 'shutdown' | 'error';

export interface EventStreamOptions {
  /** A comment line this often while no event comes. Default 15 s. */
  readonly heartbeatMs?: number;
  /** Bytes of events held for a client whose socket is full; past it the stream ends. Default 1 MiB. */
  readonly maxQueuedBytes?: number;
  /** How long the last bytes of an ended stream may wait for a client that does not read before the connection is cut. Default 5 s. */
  readonly closeGraceMs?: number;
  /** How long an EventSource waits before it connects again (the `retry:` field). Default 1 s. */
  readonly retryMs?: number;
}

/** The headers that make a reply an event stream, through proxies that would buffer it otherwise. */
const HEADERS = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache, no-transform',
  'x-accel-buffering': 'no',
  connection: 'keep-alive',
};

/** One line of a field: a value with a line break in it would end the field early. */
const oneLine = (s: string) => s.replace(/[\r\n]+/g, ' ');

export function eventFrame(e: EventRecord): string {
  return `id: ${e.seq}\nevent: ${oneLine(e.type)}\ndata: ${JSON.stringify(e)}\n\n`;
}

/** One client's stream on its (hijacked) response. */
export class EventStream {
  private readonly queue: { frame: string; seq: number }[] = [];
  private queuedBytes = 0;
  /** The socket took more than it wanted: write again on 'drain'. */
  private blocked = false;
  private ended = false;
  /** The last event handed to the socket: where the client resumes after a stream.resume. */
  private lastWritten: number;
  private readonly heartbeat: NodeJS.Timeout;
  private following: Following | undefined;

  constructor(
    private readonly res: ServerResponse,
    after: number,
    private readonly opts: EventStreamOptions,
    private readonly onEnd: () => void,
  ) {
    this.lastWritten = after;
    res.writeHead(200, HEADERS);
    res.write(`retry: ${opts.retryMs ?? 1000}\nid: ${after}\nevent: ${STREAM_OPEN}\ndata: ${JSON.stringify({ after })}\n\n`);
    res.on('drain', () => this.drain());
    // The client went away (or the connection was cut): nothing more to send.
    res.on('close', () => this.dispose());
    res.on('error', () => this.dispose());
    this.heartbeat = setInterval(() => {
      if (!this.blocked && !res.write(': keep-alive\n\n')) this.blocked = true;
    }, opts.heartbeatMs ?? 15_000);
  }

  /** The events come from here until the stream ends. */
  attach(following: Following): void {
    if (this.ended) following.close();
    else this.following = following;
  }

  /** Events in order, each after the last one sent. */
  push(events: readonly EventRecord[]): void {
    for (const e of events) {
      if (this.ended) return;
      const frame = eventFrame(e);
      if (this.blocked) {
        this.queue.push({ frame, seq: e.seq });
        this.queuedBytes += frame.length;
        if (this.queuedBytes > (this.opts.maxQueuedBytes ?? 1 << 20)) this.end('slow-client');
        continue;
      }
      this.lastWritten = e.seq;
      if (!this.res.write(frame)) this.blocked = true;
    }
  }

  /** Ends the stream with `stream.resume`: the client connects again from the last event it got. */
  end(reason: StreamEndReason): void {
    if (this.ended) return;
    // What waits in the queue never reached the client: it resumes after the last event written.
    this.queue.length = 0;
    this.queuedBytes = 0;
    const last = this.lastWritten;
    this.dispose();
    this.res.end(`event: ${STREAM_RESUME}\ndata: ${JSON.stringify({ reason, lastEventId: String(last) })}\n\n`);
    // A client that does not read would keep the socket, and its buffer, forever.
    const cut = setTimeout(() => this.res.destroy(), this.opts.closeGraceMs ?? 5000).unref();
    this.res.once('close', () => clearTimeout(cut));
  }

  private drain(): void {
    this.blocked = false;
    while (!this.blocked && !this.ended && this.queue.length > 0) {
      const { frame, seq } = this.queue.shift()!;
      this.queuedBytes -= frame.length;
      this.lastWritten = seq;
      if (!this.res.write(frame)) this.blocked = true;
    }
  }

  private dispose(): void {
    if (this.ended) return;
    this.ended = true;
    clearInterval(this.heartbeat);
    this.following?.close();
    this.onEnd();
  }
}

/** The open streams of one server, so that closing it ends them (an open stream would hold the close forever). */
export class EventStreams {
  private readonly open = new Set<EventStream>();

  constructor(private readonly opts: EventStreamOptions = {}) {}

  start(res: ServerResponse, after: number): EventStream {
    const stream: EventStream = new EventStream(res, after, this.opts, () => this.open.delete(stream));
    this.open.add(stream);
    return stream;
  }

  endAll(reason: StreamEndReason): void {
    for (const s of [...this.open]) s.end(reason);
  }

  get size(): number {
    return this.open.size;
  }
}

/** Whether the request asks for the event stream rather than a JSON page. */
export function wantsEventStream(accept: string | undefined): boolean {
  return (accept ?? '').split(',').some((t) => t.trim().toLowerCase().startsWith('text/event-stream'));
}
