import type { Event as ApiEvent } from '../../../src/api/types.js';
import type { FeedState } from '../events.js';
import { clock } from '../format.js';

const STATE_TEXT: Record<FeedState, string> = {
  connecting: 'connecting…',
  live: 'live',
  polling: 'live (polled every 2 s)',
  offline: 'reconnecting',
};

/** The data of an event in one line: its fields as name=value. */
function details(data: Readonly<Record<string, unknown>>): string {
  return Object.entries(data)
    .filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' ');
}

export function Events({ events, state, detail }: { readonly events: readonly ApiEvent[]; readonly state: FeedState; readonly detail: string | undefined }) {
  return (
    <section aria-labelledby="events-h" class="card wide">
      <h2 id="events-h">Recent events</h2>
      <p role="status" class={`feed ${state}`}>
        Event log: {STATE_TEXT[state]}
        {state === 'offline' && detail ? ` (${detail})` : ''}
      </p>
      {events.length === 0 ? (
        <p>No events yet.</p>
      ) : (
        <ol class="events" reversed>
          {events.map((e) => (
            <li key={e.seq} data-seq={e.seq}>
              <time dateTime={e.at}>{clock(e.at)}</time> <strong>{e.type}</strong> <span class="subject">{e.subject}</span> <span class="data">{details(e.data)}</span>
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}
