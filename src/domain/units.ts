import { InputError } from './errors.js';

const SIZE_UNITS: Readonly<Record<string, number>> = {
  '': 1, b: 1,
  k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12,
  kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40,
};

/** "4GiB", "512m", "1000" → bytes. */
export function parseSize(raw: string | number, field = 'size'): number {
  if (typeof raw === 'number') {
    if (!Number.isSafeInteger(raw) || raw < 0) throw new InputError(`${field}: expected a non-negative whole number of bytes`, { field });
    return raw;
  }
  const m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$/.exec(raw);
  const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new InputError(`${field}: cannot read '${raw}' as a size (e.g. 512MiB, 4GiB)`, { field });
  return Math.round(Number(m[1]) * unit);
}

const DURATION_UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "90s", "5m", "250ms", "30d" → milliseconds. */
export function parseDuration(raw: string | number, field = 'duration'): number {
  if (typeof raw === 'number') {
    if (!Number.isFinite(raw) || raw < 0) throw new InputError(`${field}: expected a non-negative number of milliseconds`, { field });
    return raw;
  }
  const m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)\s*$/.exec(raw);
  if (!m) throw new InputError(`${field}: cannot read '${raw}' as a duration (e.g. 250ms, 90s, 5m, 30d)`, { field });
  return Number(m[1]) * DURATION_UNITS[m[2]!]!;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}
