/**
 * Demand traces: arrivals of batches of requests for sources, in time order. Readers take the
 * file's text (the caller reads the file) and fail with `FILE:LINE: what is wrong`.
 */
import { InputError } from '../../domain/index.js';

/** Arrivals in columns, sorted by time; one row is one batch of `counts[i]` requests at one instant. */
export interface Trace {
  /** Where it came from, for messages and plot titles. */
  readonly name: string;
  readonly format: 'csv' | 'azure';
  /** Source names; `source[i]` indexes into it. */
  readonly sources: readonly string[];
  /** Seconds since the epoch (UTC), non-decreasing. */
  readonly times: Float64Array;
  readonly source: Uint16Array;
  readonly counts: Uint32Array;
  /** The span the trace covers, seconds since the epoch (the azure format's first bin starts before its first line's time). */
  readonly start: number;
  readonly end: number;
}

/** A small, fast, seeded PRNG (mulberry32): the same seed spreads batches the same way on every run. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SOURCE = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$/;
const MAX_SOURCES = 65_535;

class Builder {
  private readonly names: string[] = [];
  private readonly index = new Map<string, number>();
  times: number[] = [];
  source: number[] = [];
  counts: number[] = [];

  constructor(private readonly where: string) {}

  sourceId(name: string, line: number): number {
    let id = this.index.get(name);
    if (id === undefined) {
      if (this.names.length >= MAX_SOURCES) throw new InputError(`${this.where}:${line}: more than ${MAX_SOURCES} sources`, { line });
      id = this.names.length;
      this.names.push(name);
      this.index.set(name, id);
    }
    return id;
  }

  add(t: number, source: number, count: number): void {
    this.times.push(t);
    this.source.push(source);
    this.counts.push(count);
  }

  build(format: Trace['format'], start: number | undefined, end: number | undefined): Trace {
    // Stable sort by time: arrivals at one instant keep the file's order.
    const order = this.times.map((_, i) => i);
    let sorted = true;
    for (let i = 1; i < this.times.length; i++) if (this.times[i]! < this.times[i - 1]!) sorted = false;
    if (!sorted) order.sort((a, b) => this.times[a]! - this.times[b]! || a - b);
    const times = Float64Array.from(order, (i) => this.times[i]!);
    const first = times.length > 0 ? times[0]! : 0;
    const last = times.length > 0 ? times[times.length - 1]! : 0;
    return {
      name: this.where,
      format,
      sources: [...this.names],
      times,
      source: Uint16Array.from(order, (i) => this.source[i]!),
      counts: Uint32Array.from(order, (i) => this.counts[i]!),
      start: start ?? Math.floor(first),
      end: Math.max(end ?? last, start ?? first),
    };
  }
}

/**
 * Plain CSV: `time_s,source[,count]` per line — seconds since the epoch (UTC; any origin works,
 * but time-of-day and weekday are read as if it were the epoch), a source name, and how many
 * requests arrive together (default 1). Blank lines, `#` comments and a header line are skipped.
 */
export function parseCsvTrace(text: string, file = 'trace.csv'): Trace {
  const b = new Builder(file);
  const lines = text.split('\n');
  let sawData = false;
  for (let n = 0; n < lines.length; n++) {
    const raw = lines[n]!.replace(/\r$/, '');
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const at = `${file}:${n + 1}`;
    const fields = line.split(',').map((f) => f.trim());
    if (!sawData && /^time/i.test(fields[0] ?? '')) {
      sawData = true;
      continue;
    }
    sawData = true;
    if (fields.length < 2 || fields.length > 3) throw new InputError(`${at}: expected time_s,source[,count], got '${line}'`, { line: n + 1 });
    const [ts, src, cs] = fields as [string, string, string | undefined];
    const t = /^[0-9]+(\.[0-9]+)?$/.test(ts) ? Number(ts) : NaN;
    if (!Number.isFinite(t)) throw new InputError(`${at}: time '${ts}' is not a number of seconds ≥ 0`, { line: n + 1 });
    if (!SOURCE.test(src)) throw new InputError(`${at}: source '${src}' is not a source name (letters, digits, . _ - @)`, { line: n + 1 });
    const count = cs === undefined ? 1 : /^[0-9]+$/.test(cs) ? Number(cs) : NaN;
    if (!Number.isSafeInteger(count) || count < 1 || count > 0xffffffff) throw new InputError(`${at}: count '${cs ?? ''}' is not a whole number ≥ 1`, { line: n + 1 });
    b.add(t, b.sourceId(src, n + 1), count);
  }
  return b.build('csv', undefined, undefined);
}

export interface AzureOptions {
  /** Seed of the spread of batches over their bin. Default 1. */
  readonly seed?: number;
  /** Bin length, seconds. Default 300. */
  readonly binS?: number;
}

/**
 * The Azure VM trace, binned (see data/traces/azure-v1/README.md): one line per bin,
 * `<t_seconds> <tokens>`, tokens comma-separated; a letter a–p is one VM of that flavor, `|`
 * closes a batch. `t` is the bin's end. Each flavor is a source. A batch arrives at one instant,
 * drawn uniformly over its bin from a PRNG seeded with `seed`; its VMs of one flavor form one
 * batch of that source.
 */
export function parseAzureTrace(text: string, file = 'azure.txt', options: AzureOptions = {}): Trace {
  const binS = options.binS ?? 300;
  const rand = mulberry32(options.seed ?? 1);
  const b = new Builder(file);
  const lines = text.split('\n');
  let first: number | undefined;
  let last: number | undefined;
  const counts = new Map<number, number>();
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n]!.replace(/\r$/, '');
    if (line.trim() === '') continue;
    const at = `${file}:${n + 1}`;
    const m = /^([0-9]+)(?:[ \t]+(.*))?$/.exec(line.trim());
    if (!m) throw new InputError(`${at}: expected '<t_seconds> <tokens>', got '${line.slice(0, 60)}'`, { line: n + 1 });
    const end = Number(m[1]);
    if (end < binS) throw new InputError(`${at}: bin end ${end} is before the end of the first bin (${binS})`, { line: n + 1 });
    if (last !== undefined && end <= last) throw new InputError(`${at}: bin end ${end} does not come after ${last}`, { line: n + 1 });
    first ??= end;
    last = end;
    const startOfBin = end - binS;
    const arrivals: { t: number; flavor: number; count: number }[] = [];
    const flush = () => {
      if (counts.size === 0) return;
      const t = startOfBin + rand() * binS;
      for (const [flavor, count] of counts) arrivals.push({ t, flavor, count });
      counts.clear();
    };
    for (const tok of (m[2] ?? '').split(',')) {
      const token = tok.trim();
      if (token === '') continue;
      if (token === '|') {
        flush();
        continue;
      }
      if (!/^[a-p]$/.test(token)) throw new InputError(`${at}: token '${token.slice(0, 20)}' is neither a flavor letter a–p nor '|'`, { line: n + 1 });
      const id = b.sourceId(token, n + 1);
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    flush();
    arrivals.sort((x, y) => x.t - y.t);
    for (const a of arrivals) b.add(a.t, a.flavor, a.count);
  }
  return b.build('azure', first === undefined ? undefined : first - binS, last);
}

/** Requests per source, busiest first. */
export function demandBySource(trace: Trace): { source: string; requests: number }[] {
  const totals = new Float64Array(trace.sources.length);
  for (let i = 0; i < trace.times.length; i++) totals[trace.source[i]!]! += trace.counts[i]!;
  return trace.sources.map((source, i) => ({ source, requests: totals[i]! })).sort((a, b) => b.requests - a.requests || a.source.localeCompare(b.source));
}

/** The n busiest sources. */
export function busiestSources(trace: Trace, n: number): string[] {
  return demandBySource(trace)
    .filter((d) => d.requests > 0)
    .slice(0, n)
    .map((d) => d.source);
}
