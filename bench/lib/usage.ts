/** Bad command-line input: run.ts prints it with the usage and exits 2. */
export class UsageError extends Error {}

export function isUsageError(e: unknown): e is Error {
  return e instanceof UsageError || (e instanceof Error && String((e as NodeJS.ErrnoException).code).startsWith('ERR_PARSE_ARGS'));
}

/** A bench's plan from `--quick` and `--rounds N`: the quick or full one, with N rounds when given. */
export function planFromArgs<P extends { readonly rounds: number }>(quick: boolean | undefined, rounds: string | undefined, plans: { readonly quick: P; readonly full: P }): P {
  const base = quick === true ? plans.quick : plans.full;
  const n = rounds === undefined ? base.rounds : Number(rounds);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--rounds: a whole number ≥ 1, not '${rounds}'`);
  return { ...base, rounds: n };
}
