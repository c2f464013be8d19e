/** Text that fits a terminal's width: cells and lines cut where the cut loses least. */
import { table, type Column } from './format.js';

/** Where a cut goes: the end (descriptions), the middle (names whose ends both matter: `ubuntu-2…minimal@3`), the start (paths: `…/lib/prestage`). */
export type Cut = 'end' | 'middle' | 'start';

/** `s` in at most `max` characters; a cut is marked with '…'. */
export function truncate(s: string, max: number, where: Cut = 'end'): string {
  if (s.length <= max) return s;
  if (max <= 1) return '…'.slice(0, Math.max(0, max));
  switch (where) {
    case 'end':
      return `${s.slice(0, max - 1)}…`;
    case 'start':
      return `…${s.slice(s.length - (max - 1))}`;
    case 'middle': {
      const head = Math.ceil((max - 1) / 2);
      const tail = max - 1 - head;
      return `${s.slice(0, head)}…${tail > 0 ? s.slice(-tail) : ''}`;
    }
  }
}

export interface FitColumn<T> extends Column<T> {
  /** This column may be cut, there, to make the table fit; the others keep their width. */
  readonly cut?: Cut;
  /** The narrowest it is cut to. Default 8. */
  readonly min?: number;
  /** Cuttable columns give up width in this order (lowest first), each down to its minimum before the next. Default: their place. */
  readonly order?: number;
}

/**
 * `table`, in at most `width` characters a line: the cuttable columns give up width, one after
 * the other (`order`), down to their minimum; a line still too long (too many fixed columns) is
 * cut at its end.
 */
export function fitTable<T>(rows: readonly T[], columns: readonly FitColumn<T>[], width: number): string {
  const cells = rows.map((r) => columns.map((c) => c.value(r)));
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((row) => row[i]!.length)));
  const floor = columns.map((c, i) => (c.cut === undefined ? widths[i]! : Math.min(widths[i]!, c.min ?? 8)));
  let excess = widths.reduce((a, b) => a + b, 0) + 2 * (columns.length - 1) - width;
  const givers = columns.map((c, i) => ({ i, order: c.order ?? i })).filter(({ i }) => columns[i]!.cut !== undefined).sort((a, b) => a.order - b.order);
  for (const { i } of givers) {
    if (excess <= 0) break;
    const give = Math.min(excess, widths[i]! - floor[i]!);
    widths[i]! -= give;
    excess -= give;
  }
  const text = table(
    cells,
    columns.map((c, i) => ({ header: truncate(c.header, widths[i]!, c.cut), value: (row: string[]) => truncate(row[i]!, widths[i]!, c.cut), ...(c.align && { align: c.align }) })),
  );
  return text
    .split('\n')
    .map((line) => truncate(line, width))
    .join('\n');
}
