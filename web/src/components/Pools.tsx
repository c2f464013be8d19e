import { useState } from 'preact/hooks';
import type { Image, Pool } from '../../../src/api/types.js';
import { api, seg } from '../api.js';
import { bytes, percent } from '../format.js';
import { useAction } from '../hooks.js';
import { Notice } from './Notice.js';
import { PoolCharts } from './PoolCharts.js';

interface Props {
  readonly pools: readonly Pool[];
  readonly images: readonly Image[];
  readonly canAct: boolean;
  readonly onChanged: () => void;
}

function policyText(p: Pool['policy']): string {
  switch (p.kind) {
    case 'static':
      return 'static';
    case 'predictive':
      return `predictive ${percent(p.fillRate ?? null, 2)}`;
    case 'cost':
      return `cost ${p.missCostSpareHours ?? '?'} h`;
  }
}

/** Ready spares, copies in flight and mapped copies at the image's size: the most the pool's copies hold (reflinks share blocks and hold less). */
function storage(p: Pool, sizes: ReadonlyMap<string, number>): string {
  const size = p.image === null ? undefined : sizes.get(p.image);
  return size === undefined ? '–' : bytes((p.ready + p.making + p.mapped) * size);
}

export function Pools({ pools, images, canAct, onChanged }: Props) {
  const [editing, setEditing] = useState<string | null>(null);
  const [charted, setCharted] = useState<string | null>(null);
  const sizes = new Map(images.map((i) => [i.ref, i.sizeBytes]));
  const shown = charted !== null && pools.some((p) => p.source === charted) ? charted : (pools[0]?.source ?? null);
  return (
    <section aria-labelledby="pools-h" class="card wide">
      <h2 id="pools-h">Pools</h2>
      {pools.length === 0 ? (
        <p>No pools yet: importing an image makes one.</p>
      ) : (
        <div class="scroll">
          <table>
            <thead>
              <tr>
                <th scope="col">Pool</th>
                <th scope="col" class="num">Ready</th>
                <th scope="col" class="num">In flight</th>
                <th scope="col" class="num">Target</th>
                <th scope="col" class="num">Min–max</th>
                <th scope="col">Policy</th>
                <th scope="col">Why</th>
                <th scope="col" class="num" title="share of requests the plan expects to serve warm at its target">Warm (expected)</th>
                <th scope="col" class="num" title="ready, in flight and mapped copies × the image size (reflinks share blocks and take less)">Storage</th>
                {canAct && <th scope="col">Actions</th>}
              </tr>
            </thead>
            <tbody>
              {pools.map((p) => (
                <tr key={p.source} data-pool={p.source} class={p.shortage ? 'short' : undefined}>
                  <th scope="row">{p.source}</th>
                  <td class="num" data-col="ready">
                    {p.ready}
                  </td>
                  <td class="num" data-col="making">
                    {p.making}
                  </td>
                  <td class="num" data-col="target">
                    {p.target}
                  </td>
                  <td class="num">
                    {p.policy.min}–{p.policy.max}
                  </td>
                  <td>{policyText(p.policy)}</td>
                  <td class="why">{p.shortage ? 'short of space' : (p.plan?.reason ?? '–')}</td>
                  <td class="num">{percent(p.plan?.expectedFill ?? null)}</td>
                  <td class="num">{storage(p, sizes)}</td>
                  {canAct && (
                    <td>
                      <button type="button" aria-expanded={editing === p.source} onClick={() => setEditing(editing === p.source ? null : p.source)}>
                        Set policy<span class="sr-only"> of {p.source}</span>
                      </button>
                    </td>
                  )}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {canAct && editing !== null && pools.some((p) => p.source === editing) && (
        <PolicyForm key={editing} pool={pools.find((p) => p.source === editing)!} onDone={onChanged} onClose={() => setEditing(null)} />
      )}
      {shown !== null && (
        <>
          <label class="inline">
            Charts of{' '}
            <select value={shown} onChange={(e) => setCharted(e.currentTarget.value)}>
              {pools.map((p) => (
                <option key={p.source} value={p.source}>
                  {p.source}
                </option>
              ))}
            </select>
          </label>
          <PoolCharts source={shown} />
        </>
      )}
    </section>
  );
}

function PolicyForm({ pool, onDone, onClose }: { readonly pool: Pool; readonly onDone: () => void; readonly onClose: () => void }) {
  const [kind, setKind] = useState(pool.policy.kind);
  const [min, setMin] = useState(String(pool.policy.min));
  const [max, setMax] = useState(String(pool.policy.max));
  const [fill, setFill] = useState(String((pool.policy.fillRate ?? 0.999) * 100));
  const [cost, setCost] = useState(String(pool.policy.missCostSpareHours ?? 2));
  const action = useAction();
  const id = `policy-${pool.source}`;
  // The API checks every value and names what is wrong; the form only turns text into numbers.
  const num = (s: string) => (s.trim() === '' ? undefined : Number(s));
  const submit = (e: Event) => {
    e.preventDefault();
    void action.run(async () => {
      const p = await api.put('/v1/pools/{source}', `/v1/pools/${seg(pool.source)}`, {
        policy: kind,
        min: num(min),
        max: num(max),
        ...(kind === 'predictive' && { fillRate: (num(fill) ?? NaN) / 100 }),
        ...(kind === 'cost' && { missCost: num(cost) }),
      });
      onDone();
      return `${p.source}: ${policyText(p.policy)}, ${p.policy.min}–${p.policy.max}, target ${p.target}`;
    });
  };
  return (
    <form class="panel" onSubmit={submit} aria-labelledby={`${id}-h`}>
      <h3 id={`${id}-h`}>Policy of {pool.source}</h3>
      <div class="fields">
        <label>
          Policy
          <select value={kind} onChange={(e) => setKind(e.currentTarget.value as Pool['policy']['kind'])}>
            <option value="static">static: keep min spares</option>
            <option value="predictive">predictive: serve a share warm</option>
            <option value="cost">cost: weigh a cold wait against spares held</option>
          </select>
        </label>
        <label>
          Min
          <input type="number" inputMode="numeric" value={min} onInput={(e) => setMin(e.currentTarget.value)} />
        </label>
        <label>
          Max
          <input type="number" inputMode="numeric" value={max} onInput={(e) => setMax(e.currentTarget.value)} />
        </label>
        {kind === 'predictive' && (
          <label>
            Served warm (%)
            <input type="number" step="any" value={fill} onInput={(e) => setFill(e.currentTarget.value)} />
          </label>
        )}
        {kind === 'cost' && (
          <label>
            A cold wait costs (spare-hours)
            <input type="number" step="any" value={cost} onInput={(e) => setCost(e.currentTarget.value)} />
          </label>
        )}
      </div>
      <div class="buttons">
        <button type="submit" disabled={action.busy}>
          Save policy
        </button>
        <button type="button" onClick={onClose}>
          Close
        </button>
      </div>
      <Notice error={action.error} done={action.done} />
    </form>
  );
}
