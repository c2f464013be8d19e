import { InvalidArgumentError } from '@commander-js/extra-typings';

/** A whole number ≥ 0 (pool sizes). Commander reports the throw as a usage error. */
export function count(raw: string): number {
  const n = /^\s*[0-9]+\s*$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(n)) throw new InvalidArgumentError('expected a whole number ≥ 0.');
  return n;
}

/** A whole number ≥ 1 (copy concurrency). */
export function positive(raw: string): number {
  const n = count(raw);
  if (n < 1) throw new InvalidArgumentError('expected a whole number ≥ 1.');
  return n;
}

const LABEL = /^([A-Za-z0-9][A-Za-z0-9._/-]{0,62})=(.{0,256})$/s;

/** `--label k=v`, repeatable: collects into one record; a key given twice keeps the last value. */
export function label(raw: string, previous: Record<string, string> = {}): Record<string, string> {
  const m = LABEL.exec(raw);
  if (!m) throw new InvalidArgumentError("expected KEY=VALUE with KEY of A-Z, a-z, 0-9, '.', '_', '/', '-'.");
  return { ...previous, [m[1]!]: m[2]! };
}

const VAR = /^([A-Za-z_][A-Za-z0-9_.-]{0,62})=(.*)$/s;

/** `--var NAME=VALUE`, repeatable; `@FILE` as the value reads it from a file later (kept as is here). */
export function hostVar(raw: string, previous: Record<string, string> = {}): Record<string, string> {
  const m = VAR.exec(raw);
  if (!m) throw new InvalidArgumentError("expected NAME=VALUE with NAME of a letter or '_', then A-Z, a-z, 0-9, '_', '.', '-'.");
  return { ...previous, [m[1]!]: m[2]! };
}
