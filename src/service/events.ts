import type { Logger } from 'pino';
import type { EventRecord, Store } from '../domain/index.js';
import { EventFeed, type EventFeedOptions, type EventSink, type Following } from './event-feed.js';

/** The event log, read in order of its sequence numbers, and followed live. */
export class EventService {
  private readonly feed: EventFeed;

  constructor(
    private readonly store: Store,
    logger: Logger,
    feed: Partial<Pick<EventFeedOptions, 'batch' | 'pollMs' | 'retryMs'>> = {},
  ) {
    this.feed = new EventFeed({ ...feed, store, logger });
  }

  list(afterSeq: number, limit: number): Promise<EventRecord[]> {
    return this.store.listEvents({ afterSeq, limit });
  }

  /** The sequence number of the newest event (0 with none). */
  last(): Promise<number> {
    return this.store.lastEventSeq();
  }

  /** Every event after `after` (undefined: after the newest now) as it is appended, each once and in order. */
  follow(after: number | undefined, sink: EventSink, onError: (err: unknown) => void): Following {
    return this.feed.follow(after, sink, onError);
  }

  /** Events were appended (here or by another instance): followers read on. */
  appended(): void {
    this.feed.wake();
  }

  /** Ends every following. */
  close(): void {
    this.feed.close();
  }
}
