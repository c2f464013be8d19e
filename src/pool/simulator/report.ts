/**
 * What a simulation leaves behind for people: a CSV of the series and an SVG plot of demand,
 * target and ready spares over time, one panel per pool. Plain strings; the caller writes files.
 */
import type { Series } from './simulate.js';

const r2 = (x: number) => String(Math.round(x * 100) / 100);

/** `time_s,<src>_demand,<src>_target,<src>_spares,…`, one row per bucket (time = the bucket's start). */
export function seriesCsv(s: Series): string {
  const header = ['time_s', ...s.sources.flatMap((src) => [`${src}_demand`, `${src}_target`, `${src}_spares`])];
  const rows = [header.join(',')];
  const n = s.demand[0]?.length ?? 0;
  for (let b = 0; b < n; b++) {
    const cells = [String(s.start + b * s.bucketS)];
    for (let i = 0; i < s.sources.length; i++) cells.push(String(s.demand[i]![b]!), r2(s.target[i]![b]!), r2(s.spares[i]![b]!));
    rows.push(cells.join(','));
  }
  return rows.join('\n') + '\n';
}

const escapeXml = (t: string) => t.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** A round number ≥ x for the top of an axis: 1, 2, 2.5, 5 × 10ⁿ. */
function niceCeil(x: number): number {
  if (!(x > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

export interface PlotOptions {
  readonly title: string;
  /** A line under the plot (e.g. the data's attribution). */
  readonly footer?: string;
}

const COLORS = { demand: '#9aa5b1', target: '#1f6feb', spares: '#2da44e' } as const;

/**
 * One panel per pool, stacked, sharing the time axis: requests per bucket (grey), target (blue)
 * and time-averaged ready spares (green), all counted in copies on one y axis per panel.
 */
export function seriesSvg(s: Series, options: PlotOptions): string {
  const W = 1000;
  const left = 60;
  const right = 20;
  const panelH = 150;
  const gap = 34;
  const top = 64;
  const n = s.demand[0]?.length ?? 0;
  const plotW = W - left - right;
  const H = top + s.sources.length * (panelH + gap) + 30;
  const spanS = n * s.bucketS;
  const days = spanS >= 2 * 86_400;
  const unitS = days ? 86_400 : 3600;
  const x = (b: number) => left + (n <= 1 ? 0 : (b / (n - 1)) * plotW);
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  out.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${escapeXml(options.title)}</text>`);
  // Legend.
  const legend: [string, string][] = [
    [COLORS.demand, `requests per ${Math.round(s.bucketS / 60)} min`],
    [COLORS.target, 'target'],
    [COLORS.spares, 'ready spares (time average)'],
  ];
  let lx = left;
  for (const [color, label] of legend) {
    out.push(`<rect x="${lx}" y="36" width="14" height="4" fill="${color}"/><text x="${lx + 20}" y="42">${escapeXml(label)}</text>`);
    lx += 30 + label.length * 6.5;
  }
  s.sources.forEach((src, i) => {
    const y0 = top + i * (panelH + gap);
    let max = 0;
    for (let b = 0; b < n; b++) max = Math.max(max, s.demand[i]![b]!, s.target[i]![b]!, s.spares[i]![b]!);
    const yMax = niceCeil(max);
    const y = (v: number) => y0 + panelH - (v / yMax) * panelH;
    out.push(`<text x="${left}" y="${y0 - 6}" font-weight="bold">${escapeXml(src)}</text>`);
    out.push(`<rect x="${left}" y="${y0}" width="${plotW}" height="${panelH}" fill="none" stroke="#d0d7de"/>`);
    for (const v of [0, yMax / 2, yMax]) {
      out.push(`<line x1="${left - 4}" x2="${left + plotW}" y1="${y(v)}" y2="${y(v)}" stroke="#eaeef2"/>`);
      out.push(`<text x="${left - 6}" y="${y(v) + 4}" text-anchor="end">${r2(v)}</text>`);
    }
    // Time ticks at whole days (or hours) since the start.
    const ticks = Math.floor(spanS / unitS);
    const every = Math.max(1, Math.ceil(ticks / 12));
    for (let k = 0; k <= ticks; k += every) {
      const b = (k * unitS) / s.bucketS;
      const px = x(Math.min(n - 1, b));
      out.push(`<line x1="${px}" x2="${px}" y1="${y0 + panelH}" y2="${y0 + panelH + 4}" stroke="#57606a"/>`);
      out.push(`<text x="${px}" y="${y0 + panelH + 15}" text-anchor="middle">${k}${days ? ' d' : ' h'}</text>`);
    }
    for (const [key, data] of [['demand', s.demand[i]!], ['target', s.target[i]!], ['spares', s.spares[i]!]] as const) {
      const pts: string[] = [];
      for (let b = 0; b < n; b++) pts.push(`${x(b).toFixed(1)},${y(data[b]!).toFixed(1)}`);
      out.push(`<polyline fill="none" stroke="${COLORS[key]}" stroke-width="${key === 'demand' ? 1 : 1.4}" points="${pts.join(' ')}"/>`);
    }
  });
  const yAxis = top + s.sources.length * (panelH + gap) - gap + 30;
  out.push(`<text x="${left}" y="${yAxis}">time since the start of the trace (${days ? 'days' : 'hours'}); y: copies (spares, target) and requests per bucket</text>`);
  if (options.footer) out.push(`<text x="${W - right}" y="${yAxis}" text-anchor="end" fill="#57606a">${escapeXml(options.footer)}</text>`);
  out.push('</svg>');
  return out.join('\n') + '\n';
}
