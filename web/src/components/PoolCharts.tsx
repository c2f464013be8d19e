import { api, seg } from '../api.js';
import { ms, percent } from '../format.js';
import { useLoad } from '../hooks.js';
import { Chart } from './Chart.js';

const HOURS = 6;
/** As often as the server samples (its default); more often would only fetch the same points. */
const REFRESH_MS = 10_000;

const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);
const last = <T,>(xs: readonly T[]): T | undefined => xs[xs.length - 1];

/** Demand, spares and provision latency of one pool over the last hours. */
export function PoolCharts({ source }: { readonly source: string }) {
  const h = useLoad(() => api.get('/v1/pools/{source}/history', `/v1/pools/${seg(source)}/history?hours=${HOURS}`), source, REFRESH_MS);
  if (h.error) return <p class="notice error" role="alert">{h.error}</p>;
  const d = h.data;
  if (!d) return <p>Loading the history of {source}…</p>;
  if (d.at.length === 0) return <p>No samples of {source} yet: the server samples its pools every {d.sampleS} s.</p>;
  const served = sum(d.provisions);
  const warm = sum(d.warm);
  const lat = d.latencyMeanMs.filter((x): x is number => x !== null);
  const perMin = 60 / d.sampleS;
  return (
    <div class="charts">
      <p class="summary">
        Last {HOURS} h of {source}, sampled every {d.sampleS} s: {served} provisions served by this instance, {served > 0 ? `${percent(warm / served)} warm` : 'none yet'}
        {sum(d.failed) > 0 ? `, ${sum(d.failed)} failed` : ''}.
      </p>
      <Chart
        title="Demand (provisions per minute)"
        time={d.at}
        lines={[
          { label: 'provisions', color: '#1d4ed8', values: d.provisions.map((x) => x * perMin) },
          { label: 'warm', color: '#15803d', values: d.warm.map((x) => x * perMin), dash: true },
          { label: 'failed', color: '#b91c1c', values: d.failed.map((x) => x * perMin) },
        ]}
        summary={`${served} provisions in the last ${HOURS} hours, ${warm} of them warm.`}
      />
      <Chart
        title="Spares"
        time={d.at}
        lines={[
          { label: 'ready', color: '#15803d', values: d.ready, stepped: true },
          { label: 'in flight', color: '#b45309', values: d.inFlight, stepped: true },
          { label: 'target', color: '#1f2937', values: d.target, stepped: true, dash: true },
        ]}
        summary={`Now ${last(d.ready) ?? 0} ready, ${last(d.inFlight) ?? 0} in flight, target ${last(d.target) ?? 0}.`}
      />
      <Chart
        title="Provision latency"
        time={d.at}
        millis
        lines={[
          { label: 'mean', color: '#1d4ed8', values: d.latencyMeanMs },
          { label: 'max', color: '#7c3aed', values: d.latencyMaxMs, dash: true },
        ]}
        summary={lat.length > 0 ? `Mean latency over the samples with provisions: ${ms(sum(lat) / lat.length)}.` : 'No provisions, so no latency, in this window.'}
      />
    </div>
  );
}
