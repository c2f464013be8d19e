import type { Logger } from 'pino';
import type { EventRecord, Store } from '../domain/index.js';

export interface EventFeedOptions {
  readonly store: Pick<Store, 'tailEvents' | 'lastEventSeq'>;
  readonly logger: Logger;
  /** Events read from the store at once. Default 500. */
  readonly batch?: number;
  /**
   * While anyone follows, the log is also read this often: a wake-up lost on the way (another
   * instance's, while the bus was down) delays an event by this much at most. Default 15 s.
   */
  readonly pollMs?: number;
  /** After a failed read, the next one waits this long. Default 1 s. */
  readonly retryMs?: number;
}

/** Where a follower's events go, in order, each once. */
export type EventSink = (events: readonly EventRecord[]) => void;

export interface Following {
  /** Stops the events; none is delivered after it returns. */
  close(): void;
}

interface Follower {
  /** The last event it was given (or where it started). */
  cursor: number;
  readonly sink: EventSink;
  closed: boolean;
}

/**
 * Followers of the event log, each from where it asks. One reader for all of them: told that
 * events were appended (`wake`: by the store in this process, by the bus from other instances),
 * it reads what came after the last event it saw, once, and hands it to every follower that has
 * caught up. A new follower first reads on its own from where it starts until it has caught up
 * with that reader, then joins it. Every event reaches a follower once, in order: each follower
 * keeps its cursor and takes only what lies after it.
 */
export class EventFeed {
  private readonly live = new Set<Follower>();
  /** The last event handed to the live followers; undefined while there are none. */
  private head: number | undefined;
  private reading = false;
  /** Events may have come since the read in progress started. */
  private pending = false;
  private closed = false;
  private poll: NodeJS.Timeout | undefined;
  private readonly batch: number;

  constructor(private readonly o: EventFeedOptions) {
    this.batch = o.batch ?? 500;
  }

  /** Events may have been appended: the live followers get them. Cheap when nobody follows. */
  wake(): void {
    if (this.closed || this.live.size === 0) return;
    this.pending = true;
    if (!this.reading) void this.read();
  }

  /**
   * Delivers every event after `after` to `sink` as it is appended, from `after` on (undefined:
   * from the newest event now). `onError` hears of a read that failed while catching up (the
   * follower is closed then).
   */
  follow(after: number | undefined, sink: EventSink, onError: (err: unknown) => void): Following {
    const follower: Follower = { cursor: after ?? -1, sink, closed: false };
    void this.catchUp(follower, after).catch((err: unknown) => {
      if (follower.closed) return;
      follower.closed = true;
      onError(err);
    });
    return {
      close: () => {
        follower.closed = true;
        this.live.delete(follower);
        if (this.live.size === 0) this.idle();
      },
    };
  }

  /** Stops every follower (they get nothing more) and the reading. */
  close(): void {
    this.closed = true;
    for (const f of this.live) f.closed = true;
    this.live.clear();
    this.idle();
  }

  /** Reads on its own until it has what the live followers have, then joins them. */
  private async catchUp(f: Follower, after: number | undefined): Promise<void> {
    f.cursor = after ?? this.head ?? (await this.o.store.lastEventSeq());
    while (!f.closed && !this.closed && (this.head === undefined || f.cursor < this.head)) {
      const events = await this.o.store.tailEvents(f.cursor, this.batch);
      if (f.closed) return;
      this.give(f, events);
      // Fewer than a batch: it has all there is now. (Behind the head with nothing to read: what
      // lies between is gone, pruned; the live reader hands it what comes next.)
      if (events.length < this.batch && (this.head === undefined || f.cursor >= this.head || events.length === 0)) break;
    }
    if (f.closed || this.closed) return;
    this.head ??= f.cursor;
    this.live.add(f);
    this.poll ??= setInterval(() => this.wake(), this.o.pollMs ?? 15_000).unref();
    // Anything appended while it caught up.
    this.wake();
  }

  private async read(): Promise<void> {
    this.reading = true;
    try {
      while (this.pending && !this.closed && this.live.size > 0 && this.head !== undefined) {
        this.pending = false;
        const events = await this.o.store.tailEvents(this.head, this.batch);
        if (events.length === 0 || this.live.size === 0) continue;
        this.head = events.at(-1)!.seq;
        for (const f of this.live) this.give(f, events);
        // More may follow: a full batch, or a read the store cut short before a gap still in flight then.
        this.pending = true;
      }
    } catch (err) {
      this.o.logger.warn({ err }, 'reading the event log for its followers failed; trying again');
      setTimeout(() => this.wake(), this.o.retryMs ?? 1000).unref();
    } finally {
      this.reading = false;
      if (this.live.size === 0) this.idle();
    }
  }

  /** Hands a follower the events after its cursor. */
  private give(f: Follower, events: readonly EventRecord[]): void {
    const fresh = events.filter((e) => e.seq > f.cursor);
    if (fresh.length === 0 || f.closed) return;
    f.cursor = fresh.at(-1)!.seq;
    try {
      f.sink(fresh);
    } catch (err) {
      this.o.logger.error({ err }, 'an event follower failed to take its events');
    }
  }

  /** Nobody follows: nothing to read until someone does. */
  private idle(): void {
    if (this.live.size > 0) return;
    if (!this.reading) this.head = undefined;
    if (this.poll) clearInterval(this.poll);
    this.poll = undefined;
  }
}
