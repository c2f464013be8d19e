/** A client of the event stream (`GET /v1/events`, Accept: text/event-stream) that keeps all it read, as a test reads it. */
import { createParser, type EventSourceMessage } from 'eventsource-parser';
import type { Event } from '../../src/api/types.js';

export interface SseClient {
  /** The events of the log, in the order they came. */
  readonly events: Event[];
  /** Every message, the stream's own (stream.open, stream.resume) too. */
  readonly messages: EventSourceMessage[];
  /** The comment lines (heartbeats). */
  readonly comments: string[];
  /** The status and content type of the reply. */
  readonly opened: Promise<{ status: number; contentType: string | null }>;
  /** Resolves when the stream ended (the server closed it, or `abort`). */
  readonly closed: Promise<void>;
  /** Drops the connection, as a network cut does. */
  abort(): void;
}

export function sse(baseUrl: string, token: string, opts: { after?: number; lastEventId?: string } = {}): SseClient {
  const controller = new AbortController();
  const events: Event[] = [];
  const messages: EventSourceMessage[] = [];
  const comments: string[] = [];
  const parser = createParser({
    onEvent: (m) => {
      messages.push(m);
      if (!m.event?.startsWith('stream.')) events.push(JSON.parse(m.data) as Event);
    },
    onComment: (c) => comments.push(c),
  });
  const response = fetch(`${baseUrl}/v1/events${opts.after !== undefined ? `?after=${opts.after}` : ''}`, {
    headers: { accept: 'text/event-stream', authorization: `Bearer ${token}`, ...(opts.lastEventId !== undefined && { 'last-event-id': opts.lastEventId }) },
    signal: controller.signal,
  });
  const opened = response.then((r) => ({ status: r.status, contentType: r.headers.get('content-type') }));
  const closed = (async () => {
    try {
      const res = await response;
      if (!res.body) return;
      const decoder = new TextDecoder();
      for await (const chunk of res.body as AsyncIterable<Uint8Array>) parser.feed(decoder.decode(chunk, { stream: true }));
    } catch (e) {
      if (!controller.signal.aborted) throw e;
    }
  })();
  return { events, messages, comments, opened, closed, abort: () => controller.abort() };
}
