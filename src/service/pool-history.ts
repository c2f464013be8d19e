/**
 * The recent past of every pool, for the dashboard's charts: what the pools held (ready, in
 * flight, target) sampled every `sampleMs`, and the provisions this instance served between two
 * samples with their latency. Kept in memory, in a fixed ring per pool, so it costs the same
 * whatever the load: with the defaults (10 s, 6 h) 2,160 samples of 8 numbers, about 80 KB a
 * pool, for at most 500 pools. A restart starts it empty; with several instances each one counts
 * the provisions it served itself, while the pools' counts come from the shared state.
 */
import type { Logger } from 'pino';
import type { ProvisionOutcome } from '../domain/index.js';
import type { ProvisionObserver } from './provisioning.js';

/** What one sample reads of a pool. */
export interface PoolCounts {
  readonly source: string;
  readonly ready: number;
  readonly making: number;
  readonly target: number;
}

export interface PoolHistoryOptions {
  /** Every pool's counts, now (PoolService.list). */
  readonly pools: () => Promise<readonly PoolCounts[]>;
  readonly logger: Logger;
  /** Between samples. Default 10 s. */
  readonly sampleMs?: number;
  /** How far back samples are kept. Default 6 h. */
  readonly keepMs?: number;
  /** Pools whose history is kept; pools beyond (in name order) have none. Default 500. */
  readonly maxPools?: number;
  readonly now?: () => number;
}

/** One pool's history in columns (what a chart plots), oldest first. */
export interface PoolHistoryView {
  readonly source: string;
  readonly sampleS: number;
  /** Sample times, seconds since the epoch. */
  readonly at: number[];
  readonly ready: number[];
  readonly inFlight: number[];
  readonly target: number[];
  /** Provisions served since the sample before, by this instance. */
  readonly provisions: number[];
  readonly warm: number[];
  /** Provisions asked for that got no copy (none came, the export failed, the server stopped). */
  readonly failed: number[];
  /** Request to answer, of the provisions served; null with none. */
  readonly latencyMeanMs: (number | null)[];
  readonly latencyMaxMs: (number | null)[];
}

/** Provisions seen since the last sample. */
interface Tally {
  provisions: number;
  warm: number;
  failed: number;
  sumMs: number;
  maxMs: number;
}

const FIELDS = ['ready', 'inFlight', 'target', 'provisions', 'warm', 'failed'] as const;

/** A fixed-size ring of samples: the oldest is overwritten once it is full. */
class Ring {
  private readonly at: Float64Array;
  private readonly counts: Record<(typeof FIELDS)[number], Int32Array>;
  private readonly latMean: Float32Array;
  private readonly latMax: Float32Array;
  private next = 0;
  private size = 0;

  constructor(private readonly capacity: number) {
    this.at = new Float64Array(capacity);
    this.counts = Object.fromEntries(FIELDS.map((f) => [f, new Int32Array(capacity)])) as Ring['counts'];
    this.latMean = new Float32Array(capacity);
    this.latMax = new Float32Array(capacity);
  }

  push(atMs: number, c: PoolCounts, t: Tally): void {
    const i = this.next;
    this.at[i] = atMs;
    this.counts.ready[i] = c.ready;
    this.counts.inFlight[i] = c.making;
    this.counts.target[i] = c.target;
    this.counts.provisions[i] = t.provisions;
    this.counts.warm[i] = t.warm;
    this.counts.failed[i] = t.failed;
    this.latMean[i] = t.provisions > 0 ? t.sumMs / t.provisions : NaN;
    this.latMax[i] = t.provisions > 0 ? t.maxMs : NaN;
    this.next = (i + 1) % this.capacity;
    this.size = Math.min(this.size + 1, this.capacity);
  }

  view(source: string, sampleS: number, sinceMs: number): PoolHistoryView {
    const out = emptyHistory(source, sampleS);
    const ms = (x: number) => (Number.isNaN(x) ? null : Math.round(x * 10) / 10);
    for (let k = 0; k < this.size; k++) {
      const i = (this.next - this.size + k + this.capacity) % this.capacity;
      if (this.at[i]! < sinceMs) continue;
      out.at.push(Math.round(this.at[i]! / 1000));
      for (const f of FIELDS) out[f].push(this.counts[f][i]!);
      out.latencyMeanMs.push(ms(this.latMean[i]!));
      out.latencyMaxMs.push(ms(this.latMax[i]!));
    }
    return out;
  }
}

/** The history of a pool with no sample yet. */
export function emptyHistory(source: string, sampleS: number): PoolHistoryView {
  return { source, sampleS, at: [], ready: [], inFlight: [], target: [], provisions: [], warm: [], failed: [], latencyMeanMs: [], latencyMaxMs: [] };
}

const emptyTally = (): Tally => ({ provisions: 0, warm: 0, failed: 0, sumMs: 0, maxMs: 0 });

export class PoolHistory implements ProvisionObserver {
  readonly sampleMs: number;
  readonly keepMs: number;
  private readonly maxPools: number;
  private readonly now: () => number;
  private readonly rings = new Map<string, Ring>();
  private readonly tallies = new Map<string, Tally>();
  private timer: NodeJS.Timeout | undefined;
  private sampling: Promise<void> | undefined;

  constructor(private readonly o: PoolHistoryOptions) {
    this.sampleMs = o.sampleMs ?? 10_000;
    this.keepMs = o.keepMs ?? 6 * 3_600_000;
    this.maxPools = o.maxPools ?? 500;
    this.now = o.now ?? Date.now;
  }

  /** Samples now, then every `sampleMs`, until `stop`. */
  start(): void {
    if (this.timer) return;
    const tick = () => {
      this.sampling = this.sample()
        .catch((err: unknown) => this.o.logger.warn({ err }, 'pool history: sample failed'))
        .finally(() => (this.sampling = undefined));
    };
    tick();
    this.timer = setInterval(tick, this.sampleMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.sampling;
  }

  /** Called on the request path (ProvisionObserver): a counter bump, nothing more. */
  provisioned(source: string, outcome: ProvisionOutcome | 'failed', seconds: number): void {
    // Only pools already sampled are tallied, so a flood of unknown sources cannot grow the map.
    if (!this.rings.has(source)) return;
    let t = this.tallies.get(source);
    if (!t) this.tallies.set(source, (t = emptyTally()));
    if (outcome === 'failed') {
      t.failed++;
      return;
    }
    const ms = seconds * 1000;
    t.provisions++;
    if (outcome === 'warm') t.warm++;
    t.sumMs += ms;
    t.maxMs = Math.max(t.maxMs, ms);
  }

  /** Takes one sample of every pool; pools gone since the last one lose their history. */
  async sample(): Promise<void> {
    const pools = [...(await this.o.pools())].sort((a, b) => a.source.localeCompare(b.source)).slice(0, this.maxPools);
    const at = this.now();
    const seen = new Set<string>();
    const capacity = Math.max(1, Math.ceil(this.keepMs / this.sampleMs));
    for (const p of pools) {
      seen.add(p.source);
      let ring = this.rings.get(p.source);
      if (!ring) this.rings.set(p.source, (ring = new Ring(capacity)));
      ring.push(at, p, this.tallies.get(p.source) ?? emptyTally());
    }
    this.tallies.clear();
    for (const source of this.rings.keys()) if (!seen.has(source)) this.rings.delete(source);
  }

  /** The samples of the last `hours` (at most what is kept); undefined for a pool with none. */
  history(source: string, hours: number): PoolHistoryView | undefined {
    const ring = this.rings.get(source);
    return ring?.view(source, this.sampleMs / 1000, this.now() - Math.min(hours * 3_600_000, this.keepMs));
  }
}
