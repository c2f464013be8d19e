/** Checks on what a client hands in for a server-side download. */
import { InputError } from '../domain/index.js';

/** An http(s) URL, nothing else (no file:, data: or other scheme the fetcher might know). */
export function parseFetchUrl(url: string): URL {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new InputError(`'${url.slice(0, 200)}' is not a URL`, {});
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new InputError(`only http and https URLs can be fetched, not ${u.protocol}`, { url: redact(u) });
  return u;
}

/** The URL without credentials or query (which may hold tokens), for logs and events. */
export function redact(u: URL): string {
  return `${u.protocol}//${u.host}${u.pathname}`;
}

/** A lower-case hex SHA-256, or a clear refusal. */
export function checkSha256(value: string): string {
  const v = value.toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(v)) throw new InputError(`a sha256 is 64 hex digits, not '${value.slice(0, 80)}'`, {});
  return v;
}

/** Why a fetch() failed, from undici's cause chain (its own message is only "fetch failed"). */
export function fetchFailure(e: unknown): string {
  const cause = e instanceof Error && e.cause instanceof Error ? e.cause : e;
  if (cause instanceof Error) return 'code' in cause && typeof cause.code === 'string' ? `${cause.code} ${cause.message}` : cause.message;
  return String(cause);
}
