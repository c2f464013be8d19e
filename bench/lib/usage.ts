/** Bad command-line input: run.ts prints it with the usage and exits 2. */
export class UsageError extends Error {}

export function isUsageError(e: unknown): e is Error {
  return e instanceof UsageError || (e instanceof Error && String((e as NodeJS.ErrnoException).code).startsWith('ERR_PARSE_ARGS'));
}
