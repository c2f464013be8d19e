import { useRef, useState } from 'preact/hooks';
import type { Reply } from '../../../src/api/types.js';
import { api } from '../api.js';
import { percent, wait } from '../format.js';
import { useAction, useLoad } from '../hooks.js';
import { Chart } from './Chart.js';
import { Notice } from './Notice.js';

type Result = Reply<'/v1/simulate', 'post'>;

/** Four inputs: the API compares at most four policies at once. */
const DEFAULT_POLICIES = ['predictive:0.999', 'static-share:1477', '', ''];
/** The browser reads the chosen file; the API takes at most this much of it. */
const MAX_CHARS = 1_000_000;

/** `prestage simulate` in the browser: pick a trace and policies, get its table and its plot. */
export function Simulator() {
  const traces = useLoad(() => api.get('/v1/simulate/traces', '/v1/simulate/traces'), 'traces');
  const [from, setFrom] = useState<'bundled' | 'file'>('bundled');
  const [bundled, setBundled] = useState('azure-v1');
  const [policies, setPolicies] = useState(DEFAULT_POLICIES);
  const [top, setTop] = useState('5');
  const [hours, setHours] = useState('24');
  const [lead, setLead] = useState('120');
  const file = useRef<HTMLInputElement>(null);
  const [result, setResult] = useState<Result | null>(null);
  const action = useAction();

  const submit = (e: Event) => {
    e.preventDefault();
    void action.run(async () => {
      const num = (s: string) => (s.trim() === '' ? undefined : Number(s));
      let trace: { bundled: string } | { text: string; name: string };
      if (from === 'file') {
        const f = file.current?.files?.[0];
        if (!f) throw new Error('choose a trace file (CSV time_s,source[,count] or the Azure V1 format)');
        if (f.size > MAX_CHARS) throw new Error(`${f.name} is ${f.size} bytes; the dashboard simulates at most ${MAX_CHARS} (run \`prestage simulate\` for bigger traces)`);
        trace = { text: await f.text(), name: f.name };
      } else {
        trace = { bundled };
      }
      const r = await api.post('/v1/simulate', '/v1/simulate', {
        ...(trace as { bundled: 'azure-v1' }),
        policies: policies.map((p) => p.trim()).filter((p) => p !== ''),
        top: num(top),
        hours: num(hours),
        leadTimeS: num(lead),
      });
      setResult(r);
      return `simulated ${r.rows.length} ${r.rows.length === 1 ? 'policy' : 'policies'} on ${r.sources.length} pools of ${r.trace}`;
    });
  };

  return (
    <main id="main" class="grid">
      <section class="card wide" aria-labelledby="sim-h">
        <h2 id="sim-h">Simulator</h2>
        <p>Replays a demand trace through the same planner the pools run, on a simulated clock, and compares policies: as <code>prestage simulate</code> does. Nothing is copied.</p>
        <form onSubmit={submit} class="panel">
          <fieldset>
            <legend>Trace</legend>
            <label class="inline">
              <input type="radio" name="from" checked={from === 'bundled'} onChange={() => setFrom('bundled')} /> shipped with prestage
            </label>
            <select aria-label="Shipped trace" value={bundled} disabled={from !== 'bundled'} onChange={(e) => setBundled(e.currentTarget.value)}>
              {(traces.data ?? []).map((t) => (
                <option key={t.name} value={t.name}>
                  {t.name}: {t.title}
                </option>
              ))}
            </select>
            <label class="inline">
              <input type="radio" name="from" checked={from === 'file'} onChange={() => setFrom('file')} /> a file of mine
            </label>
            <input type="file" ref={file} aria-label="Trace file" accept=".csv,.txt,text/csv,text/plain" disabled={from !== 'file'} />
          </fieldset>
          <fieldset>
            <legend>Policies</legend>
            <div class="fields">
              {policies.map((p, i) => (
                <label key={i}>
                  Policy {i + 1}
                  <input
                    value={p}
                    autocomplete="off"
                    placeholder={i === 0 ? 'predictive:0.999' : 'static:4, cost:2, …'}
                    onInput={(e) => setPolicies(policies.map((q, j) => (j === i ? e.currentTarget.value : q)))}
                  />
                </label>
              ))}
            </div>
          </fieldset>
          <div class="fields">
            <label>
              Busiest pools
              <input type="number" min={1} max={10} value={top} onInput={(e) => setTop(e.currentTarget.value)} />
            </label>
            <label>
              Hours scored (empty: all)
              <input type="number" min={1} step="any" value={hours} onInput={(e) => setHours(e.currentTarget.value)} />
            </label>
            <label>
              Copy time (s)
              <input type="number" min={1} step="any" value={lead} onInput={(e) => setLead(e.currentTarget.value)} />
            </label>
          </div>
          <div class="buttons">
            <button type="submit" disabled={action.busy}>
              {action.busy ? 'Simulating…' : 'Simulate'}
            </button>
          </div>
          <Notice error={action.error ?? traces.error} done={action.done} />
        </form>
      </section>
      {result && <Results r={result} />}
    </main>
  );
}

function Results({ r }: { readonly r: Result }) {
  const [pool, setPool] = useState(0);
  const [policy, setPolicy] = useState(0);
  const s = r.series[Math.min(policy, r.series.length - 1)];
  const p = Math.min(pool, r.sources.length - 1);
  return (
    <section class="card wide" aria-labelledby="sim-results-h">
      <h2 id="sim-results-h">Results</h2>
      <p>
        {r.sources.length} pools ({r.sources.join(', ')}) of {r.trace}
        {r.learnedOn ? `, learned on ${r.learnedOn}` : ''}, {(r.spanS / 3600).toFixed(1)} h scored, copy time {r.leadTimeS} s.
      </p>
      <div class="scroll">
        <table class="sim">
          <thead>
            <tr>
              <th scope="col">Policy</th>
              <th scope="col" class="num">Requests</th>
              <th scope="col" class="num">Warm</th>
              <th scope="col" class="num">P50 wait</th>
              <th scope="col" class="num">P99 wait</th>
              <th scope="col" class="num">Mean spares</th>
              <th scope="col" class="num">Peak spares</th>
              <th scope="col" class="num">Copies</th>
              <th scope="col" class="num">Copies/req</th>
              <th scope="col" class="num">Discards</th>
              <th scope="col" class="num">Violations</th>
            </tr>
          </thead>
          <tbody>
            {r.rows.map((x) => (
              <tr key={x.policy}>
                <th scope="row">{x.policy}</th>
                <td class="num">{x.requests}</td>
                <td class="num">{percent(x.hitRate, 2)}</td>
                <td class="num">{wait(x.waitP50S)}</td>
                <td class="num">{wait(x.waitP99S)}</td>
                <td class="num">{x.meanSpares.toFixed(1)}</td>
                <td class="num">{x.peakSpares}</td>
                <td class="num">{x.copies}</td>
                <td class="num">{x.copiesPerRequest.toFixed(2)}</td>
                <td class="num">{x.discards}</td>
                <td class="num">{x.budgetViolations + x.boundViolations}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {s && r.sources.length > 0 && (
        <>
          <div class="fields">
            <label>
              Plot of policy
              <select value={policy} onChange={(e) => setPolicy(Number(e.currentTarget.value))}>
                {r.series.map((x, i) => (
                  <option key={x.policy} value={i}>
                    {x.policy}
                  </option>
                ))}
              </select>
            </label>
            <label>
              Pool
              <select value={p} onChange={(e) => setPool(Number(e.currentTarget.value))}>
                {r.sources.map((x, i) => (
                  <option key={x} value={i}>
                    {x}
                  </option>
                ))}
              </select>
            </label>
          </div>
          <Chart
            title={`${s.policy}, pool ${r.sources[p]}: demand, target and ready spares per ${r.bucketS / 60} min (UTC)`}
            time={r.time}
            height={260}
            utc
            lines={[
              { label: 'demand', color: '#64748b', values: s.demand[p] ?? [] },
              { label: 'target', color: '#1f2937', values: s.target[p] ?? [], dash: true },
              { label: 'ready spares', color: '#15803d', values: s.spares[p] ?? [] },
            ]}
            summary={`Pool ${r.sources[p]} under ${s.policy}: ${percent(r.rows[policy]?.pools[p]?.hitRate ?? null, 2)} warm, mean target ${r.rows[policy]?.pools[p]?.meanTarget.toFixed(1) ?? '–'}.`}
          />
        </>
      )}
      {r.attribution && <p class="attribution">Trace: {r.attribution}</p>}
    </section>
  );
}
