/**
 * Following the event log over Server-Sent Events (`GET /v1/events`, Accept: text/event-stream),
 * as long as it takes: a dropped connection, a server that restarts or ends the stream (it shuts
 * down, or this client read too slowly) is connected to again with `Last-Event-ID`, so no event
 * is missed and none comes twice.
 */
import { createParser, type EventSourceMessage } from 'eventsource-parser';
import type { Event } from '../api/types.js';
import { ApiError, type ApiClient } from './client.js';
import { pause } from './pause.js';

/** The stream's own messages (src/api/event-stream.ts); every other message is an event of the log. */
const STREAM_OPEN = 'stream.open';
const STREAM_RESUME = 'stream.resume';

export interface FollowOptions {
  /** Start after this event; undefined: at the newest event now. */
  readonly after?: number;
  /** Stops following (Ctrl-C): `followEvents` then resolves. */
  readonly signal: AbortSignal;
  readonly onEvent: (event: Event) => void;
  /** A line for people about the connection (lost, connecting again). */
  readonly onNotice: (text: string) => void;
  /** No byte for this long (the server sends a comment every 15 s) and the connection is taken for dead. Default 45 s. */
  readonly staleMs?: number;
  /** The first pause before connecting again; it doubles up to 10 s while attempts fail. Default the server's `retry:`, else 1 s. */
  readonly retryMs?: number;
}

/** The connection went quiet for longer than the server's heartbeats allow. */
class StaleStream extends Error {}

/**
 * Follows until `signal` aborts. Throws when the first connection fails (nothing listens there, a
 * bad token) or when the server refuses a later one for good (a 4xx); anything else is a dropped
 * connection, connected to again.
 */
export async function followEvents(client: ApiClient, o: FollowOptions): Promise<void> {
  let cursor = o.after;
  let connected = false;
  let retryMs = o.retryMs ?? 1000;
  for (let failures = 0; !o.signal.aborted; ) {
    try {
      const ended = await streamOnce(client, cursor, o, {
        opened: (after) => {
          connected = true;
          failures = 0;
          cursor ??= after;
        },
        event: (e) => {
          // The server sends each event once; a second copy after a reconnect would be its bug, not a reason to print twice.
          if (cursor !== undefined && e.seq <= cursor) return;
          cursor = e.seq;
          o.onEvent(e);
        },
        retry: (ms) => (retryMs = o.retryMs ?? ms),
      });
      if (o.signal.aborted) return;
      o.onNotice(`the server ended the stream (${ended}); connecting again after event ${cursor ?? '-'}`);
    } catch (e) {
      if (o.signal.aborted) return;
      const refused = e instanceof ApiError && e.status < 500;
      if (!connected || refused) throw e;
      failures += 1;
      o.onNotice(`connection lost (${e instanceof Error ? e.message : String(e)}); connecting again after event ${cursor ?? '-'}`);
    }
    await pause(Math.min(retryMs * 2 ** Math.max(0, failures - 1), 10_000), o.signal);
  }
}

interface StreamHandlers {
  opened(after: number): void;
  event(e: Event): void;
  retry(ms: number): void;
}

/** One connection, to its end: resolves with why the server ended it, rejects when it broke. */
async function streamOnce(client: ApiClient, cursor: number | undefined, o: FollowOptions, on: StreamHandlers): Promise<string> {
  const controller = new AbortController();
  const stop = () => controller.abort();
  o.signal.addEventListener('abort', stop, { once: true });
  let stale: NodeJS.Timeout | undefined;
  const watch = () => {
    clearTimeout(stale);
    stale = setTimeout(() => controller.abort(new StaleStream(`no word from the server for ${(o.staleMs ?? 45_000) / 1000} s`)), o.staleMs ?? 45_000);
  };
  let ended = 'the connection closed';
  const parser = createParser({
    onEvent: (m: EventSourceMessage) => {
      if (m.event === STREAM_OPEN) on.opened(Number(m.id));
      else if (m.event === STREAM_RESUME) ended = (JSON.parse(m.data) as { reason?: string }).reason ?? 'no reason given';
      else on.event(JSON.parse(m.data) as Event);
    },
    onRetry: (ms) => on.retry(ms),
  });
  try {
    watch();
    const body = await client.eventStream('/v1/events', { ...(cursor !== undefined && { lastEventId: String(cursor) }), signal: controller.signal });
    const decoder = new TextDecoder();
    for await (const chunk of body) {
      watch();
      parser.feed(decoder.decode(chunk, { stream: true }));
    }
    return ended;
  } catch (e) {
    if (controller.signal.reason instanceof StaleStream) throw controller.signal.reason;
    throw e;
  } finally {
    clearTimeout(stale);
    o.signal.removeEventListener('abort', stop);
  }
}
