/**
 * The event log as it grows. `GET /v1/events` with `Accept: text/event-stream` streams it
 * (Server-Sent Events: id = seq, event = type, data = the event), from the newest event on;
 * read with fetch, because the browser's EventSource cannot send the Authorization header and
 * the token must not go in a URL. On reconnecting it resumes with Last-Event-ID. The last
 * BACKLOG events before the stream began are fetched once as a JSON page. A server that answers
 * the stream's request with a JSON page instead is polled with `after=SEQ`.
 */
import { createParser } from 'eventsource-parser';
import type { Event as ApiEvent } from '../../src/api/types.js';
import { authHeaders, messageOf } from './api.js';

export type FeedState = 'connecting' | 'live' | 'polling' | 'offline';

export interface FeedOptions {
  /** New events, oldest first. */
  readonly onEvents: (events: readonly ApiEvent[]) => void;
  readonly onState: (state: FeedState, detail?: string) => void;
}

const PAGE = 1000;
/** Events from before the page opened that it shows. */
const BACKLOG = 50;
/** The stream's own messages (where it starts; that it ends and wants a reconnect): not events of the log. */
const STREAM_OPEN = 'stream.open';
const STREAM_RESUME = 'stream.resume';
const POLL_MS = 2000;
const RETRY_MS = 2000;

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
  });

/** Follows the log until the returned function is called. */
export function followEvents(o: FeedOptions): () => void {
  const stop = new AbortController();
  const { signal } = stop;
  let last: number | undefined;

  const backlog = async (upTo: number): Promise<void> => {
    const res = await fetch(`/v1/events?after=${Math.max(0, upTo - BACKLOG)}&limit=${BACKLOG}`, { headers: authHeaders(), signal });
    if (res.ok) o.onEvents(((await res.json()) as ApiEvent[]).filter((e) => e.seq <= upTo));
  };

  const stream = async (res: Response): Promise<void> => {
    o.onState('live');
    const batch: ApiEvent[] = [];
    const parser = createParser({
      onEvent: (m) => {
        if (m.event === STREAM_RESUME) return;
        if (m.event === STREAM_OPEN) {
          const from = Number(m.id);
          if (last === undefined && Number.isSafeInteger(from)) void backlog(from).catch(() => undefined);
          last ??= from;
          return;
        }
        const e = JSON.parse(m.data) as ApiEvent;
        last = e.seq;
        batch.push(e);
      },
    });
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      parser.feed(value);
      if (batch.length > 0) o.onEvents(batch.splice(0));
    }
  };

  /** The JSON pages: from the start (or where the stream left off), then every POLL_MS. */
  const poll = async (first: readonly ApiEvent[]): Promise<void> => {
    o.onState('polling');
    let page = first;
    while (!signal.aborted) {
      if (page.length > 0) {
        last = page[page.length - 1]!.seq;
        o.onEvents(page);
      }
      if (page.length < PAGE) await sleep(POLL_MS, signal);
      if (signal.aborted) return;
      const res = await fetch(`/v1/events?after=${last ?? 0}&limit=${PAGE}`, { headers: authHeaders(), signal });
      if (!res.ok) throw new Error(`the event log answered ${res.status}`);
      page = (await res.json()) as ApiEvent[];
    }
  };

  void (async () => {
    while (!signal.aborted) {
      try {
        o.onState('connecting');
        const res = await fetch('/v1/events', {
          headers: { ...authHeaders(), accept: 'text/event-stream', ...(last !== undefined && { 'last-event-id': String(last) }) },
          signal,
        });
        if (!res.ok) throw new Error(`the event log answered ${res.status}`);
        if ((res.headers.get('content-type') ?? '').startsWith('text/event-stream')) await stream(res);
        else await poll((await res.json()) as ApiEvent[]);
      } catch (e) {
        if (signal.aborted) return;
        o.onState('offline', messageOf(e));
      }
      await sleep(RETRY_MS, signal);
    }
  })();
  return () => stop.abort();
}
