import type { EventRecord, Store } from '../domain/index.js';

/** The event log, read in order of its sequence numbers. */
export class EventService {
  constructor(private readonly store: Store) {}

  list(afterSeq: number, limit: number): Promise<EventRecord[]> {
    return this.store.listEvents({ afterSeq, limit });
  }
}
