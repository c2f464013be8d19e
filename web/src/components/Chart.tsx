import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

export interface Line {
  readonly label: string;
  readonly color: string;
  readonly values: readonly (number | null)[];
  /** Steps for counts (a pool holds 3, then 2), straight lines for rates and times. */
  readonly stepped?: boolean;
  readonly dash?: boolean;
}

export interface ChartProps {
  readonly title: string;
  /** x values: seconds since the epoch. */
  readonly time: readonly number[];
  readonly lines: readonly Line[];
  /** Values are milliseconds: the axis says so (ms, or s from 1,000 on). */
  readonly millis?: boolean;
  readonly height?: number;
  /** What a screen reader hears instead of the canvas. */
  readonly summary: string;
  /** Times in UTC rather than the browser's zone (a trace's times are UTC). */
  readonly utc?: boolean;
}

/**
 * A time series chart (uPlot), as wide as its container. The canvas is hidden from assistive
 * technology; `summary` says what it shows, and uPlot's legend gives the values under the cursor.
 */
/** An axis tick of milliseconds, as short as it reads. */
const tickMs = (v: number) => (Math.abs(v) >= 1000 ? `${+(v / 1000).toFixed(2)} s` : `${+v.toFixed(1)} ms`);

export function Chart({ title, time, lines, millis = false, height = 180, summary, utc = false }: ChartProps) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const shape = lines.map((l) => `${l.label}|${l.color}|${l.stepped ? 1 : 0}`).join(',') + `|${millis}|${height}|${utc}`;

  useEffect(() => {
    const el = box.current;
    if (!el) return undefined;
    const stepped = uPlot.paths.stepped!({ align: 1 });
    const opts: uPlot.Options = {
      width: Math.max(200, el.clientWidth),
      height,
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
      ...(utc && { tzDate: (ts: number) => uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC') }),
      scales: { x: { time: true } },
      axes: [{}, { size: 64, ...(millis && { values: (_u: uPlot, ticks: number[]) => ticks.map(tickMs) }) }],
      series: [
        {},
        ...lines.map((l) => ({
          label: l.label,
          stroke: l.color,
          width: 2,
          ...(l.dash && { dash: [6, 4] }),
          ...(l.stepped && { paths: stepped }),
          points: { show: false },
          spanGaps: false,
        })),
      ],
    };
    const u = new uPlot(opts, [[], ...lines.map(() => [])] as unknown as uPlot.AlignedData, el);
    plot.current = u;
    const resize = new ResizeObserver(() => u.setSize({ width: Math.max(200, el.clientWidth), height }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      u.destroy();
      plot.current = null;
    };
    // Rebuilt only when the lines themselves change; new values go through setData below.
  }, [shape]);

  useEffect(() => {
    plot.current?.setData([time as number[], ...lines.map((l) => l.values as (number | null)[])] as uPlot.AlignedData);
  }, [time, lines, shape]);

  return (
    <figure class="chart">
      <figcaption>{title}</figcaption>
      <div ref={box} aria-hidden="true" />
      <p class="sr-only">{summary}</p>
    </figure>
  );
}
