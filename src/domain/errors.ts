/**
 * The domain's error family. Each condition has one class with a stable code; the API maps
 * codes to HTTP status and the CLI maps them to exit codes, each in one place.
 */
export type ErrorCode =
  | 'PRESTAGE_INPUT'
  | 'PRESTAGE_NOT_FOUND'
  | 'PRESTAGE_CONFLICT'
  | 'PRESTAGE_NO_SPACE'
  | 'PRESTAGE_BAD_IMAGE'
  | 'PRESTAGE_UNAVAILABLE'
  | 'PRESTAGE_UNAUTHORIZED'
  | 'PRESTAGE_FORBIDDEN'
  | 'PRESTAGE_INTERNAL';

export class PrestageError extends Error {
  readonly code: ErrorCode;
  readonly details: Readonly<Record<string, unknown>>;
  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.details = details;
  }
}

/** A request or argument that can never succeed as given. */
export class InputError extends PrestageError {
  constructor(message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super('PRESTAGE_INPUT', message, details, options);
  }
}

export class NotFoundError extends PrestageError {
  constructor(readonly kind: string, readonly id: string, options?: { cause?: unknown }) {
    super('PRESTAGE_NOT_FOUND', `${kind} '${id}' not found`, { kind, id }, options);
  }
}

/** The request clashes with the current state (a name taken, a host mapped elsewhere). */
export class ConflictError extends PrestageError {
  constructor(message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super('PRESTAGE_CONFLICT', message, details, options);
  }
}

/** The version number a writer picked was taken by another writer of the same name meanwhile. */
export class VersionTakenError extends ConflictError {}

export class NoSpaceError extends PrestageError {
  constructor(message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super('PRESTAGE_NO_SPACE', message, details, options);
  }
}

/** An image file that cannot be used: unreadable, truncated, of an unknown or broken format. */
export class BadImageError extends PrestageError {
  constructor(message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super('PRESTAGE_BAD_IMAGE', message, details, options);
  }
}

/** The service cannot do it now (stopping, a copy failed for a waiting provision). */
export class UnavailableError extends PrestageError {
  constructor(message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super('PRESTAGE_UNAVAILABLE', message, details, options);
  }
}

/** No credential, or one that is wrong, expired or revoked: nothing about why is told. */
export class UnauthorizedError extends PrestageError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super('PRESTAGE_UNAUTHORIZED', message, details);
  }
}

/** A valid credential whose role may not do this. */
export class ForbiddenError extends PrestageError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super('PRESTAGE_FORBIDDEN', message, details);
  }
}

export function isPrestageError(e: unknown): e is PrestageError {
  return e instanceof PrestageError;
}

/** Node system errors carry an errno code; this reads it without trusting the shape. */
export function errnoCode(e: unknown): string | undefined {
  if (typeof e !== 'object' || e === null || !('code' in e)) return undefined;
  const { code } = e;
  return typeof code === 'string' ? code : undefined;
}

/** Out of space: our NoSpaceError, or a system error of a full disk or an exhausted quota. */
export function isNoSpace(e: unknown): boolean {
  const code = errnoCode(e);
  return code === 'PRESTAGE_NO_SPACE' || code === 'ENOSPC' || code === 'EDQUOT';
}
