import { formatBytes } from '../domain/index.js';

export interface Column<T> {
  readonly header: string;
  readonly value: (row: T) => string;
  /** Numbers read best right-aligned. Default left. */
  readonly align?: 'left' | 'right';
}

/** A plain text table: one header line, columns padded to the widest cell, two spaces apart. */
export function table<T>(rows: readonly T[], columns: readonly Column<T>[]): string {
  const cells = rows.map((r) => columns.map((c) => c.value(r)));
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((row) => row[i]!.length)));
  const line = (values: readonly string[]) =>
    values
      .map((v, i) => (columns[i]!.align === 'right' ? v.padStart(widths[i]!) : v.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(columns.map((c) => c.header)), ...cells.map(line)].join('\n') + '\n';
}

/** `key  value` lines with the keys padded to one width. */
export function keyValues(pairs: readonly (readonly [string, string])[]): string {
  const width = Math.max(0, ...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${k.padEnd(width)}  ${v}`.trimEnd()).join('\n') + '\n';
}

export function json(value: unknown): string {
  return JSON.stringify(value, null, 2) + '\n';
}

export const bytes = (n: number): string => formatBytes(n);

/** Milliseconds with a precision that suits their size: 0.42 ms, 12.3 ms, 1530 ms. */
export function ms(n: number): string {
  if (n < 1) return `${n.toFixed(2)} ms`;
  if (n < 100) return `${n.toFixed(1)} ms`;
  return `${Math.round(n)} ms`;
}

export function percent(done: number, total: number): string {
  if (total <= 0) return '-';
  return `${Math.floor((100 * Math.min(done, total)) / total)}%`;
}

/** An ISO timestamp shortened to the second, in UTC: 2025-01-31 14:02:11Z. */
export function when(iso: string | null | undefined): string {
  if (!iso) return '-';
  const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})/.exec(iso);
  return m ? `${m[1]} ${m[2]}Z` : iso;
}

export const dash = (v: string | null | undefined): string => (v === null || v === undefined || v === '' ? '-' : v);

export function labels(l: Readonly<Record<string, string>>): string {
  const entries = Object.entries(l);
  return entries.length === 0 ? '-' : entries.map(([k, v]) => `${k}=${v}`).join(',');
}
