import type { ErrorCode } from '../domain/index.js';

/**
 * Codes the CLI can fail with: the API's error codes plus two that only a client meets
 * (a command line it cannot parse, a server it cannot reach).
 */
export type CliErrorCode = ErrorCode | 'PRESTAGE_USAGE' | 'PRESTAGE_UNREACHABLE';

/** Each error code has one exit code; this table is the only place that says which. */
export const EXIT_CODES: Readonly<Record<CliErrorCode, number>> = {
  PRESTAGE_INTERNAL: 1,
  PRESTAGE_USAGE: 2,
  PRESTAGE_INPUT: 2,
  PRESTAGE_NOT_FOUND: 3,
  PRESTAGE_CONFLICT: 4,
  PRESTAGE_BAD_IMAGE: 5,
  PRESTAGE_NO_SPACE: 6,
  PRESTAGE_UNAVAILABLE: 7,
  PRESTAGE_UNREACHABLE: 7,
  PRESTAGE_UNAUTHORIZED: 8,
  PRESTAGE_FORBIDDEN: 8,
};

export const EXIT_OK = 0;

export function isCliErrorCode(code: unknown): code is CliErrorCode {
  return typeof code === 'string' && Object.hasOwn(EXIT_CODES, code);
}

/** The exit code for an error code; one the table does not know (a newer server) counts as internal. */
export function exitCodeFor(code: string): number {
  return isCliErrorCode(code) ? EXIT_CODES[code] : EXIT_CODES.PRESTAGE_INTERNAL;
}
