import type { CopyInFlight } from '../../../src/api/types.js';
import { bytes, percent } from '../format.js';

/** Copies this instance is making now, with how far each has got. */
export function Copies({ copies, waiting }: { readonly copies: readonly CopyInFlight[]; readonly waiting: number }) {
  return (
    <section aria-labelledby="copies-h" class="card">
      <h2 id="copies-h">Copies in flight</h2>
      <p>
        {copies.length === 0 ? 'No copy is being made.' : `${copies.length} being made.`} {waiting > 0 ? `${waiting} provisions waiting for one.` : ''}
      </p>
      {copies.length > 0 && (
        <ul class="copies">
          {copies.map((c) => {
            const share = c.totalBytes > 0 ? c.doneBytes / c.totalBytes : 0;
            return (
              <li key={c.copyId}>
                <label>
                  <span class="what">
                    {c.pool ?? 'on demand'} <code>{c.copyId.slice(0, 8)}</code>
                  </span>
                  <progress max={1} value={share} />
                  <span class="how">
                    {c.totalBytes > 0 ? `${bytes(c.doneBytes)} of ${bytes(c.totalBytes)} (${percent(share, 0)})` : 'starting'}
                  </span>
                </label>
              </li>
            );
          })}
        </ul>
      )}
    </section>
  );
}
