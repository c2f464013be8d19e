/**
 * What the iSCSI exporter accepts as names and secrets, checked before anything reaches tgtd, and
 * the names and secrets it makes. Pure: no I/O but the random bytes of a new secret.
 */
import { createHash, randomBytes } from 'node:crypto';
import { InputError, type ChapAccount, type IscsiHostAuth } from '../../domain/index.js';

export type { ChapAccount, IscsiHostAuth };

/** RFC 3720 §3.2.6.1: an iSCSI name is at most 223 bytes. */
export const ISCSI_NAME_MAX = 223;

/** Target names are `<prefix>:<host>` (the month is when the io.prestage name was taken for this use). */
export const DEFAULT_TARGET_PREFIX = 'iqn.2026-12.io.prestage';

// After RFC 3722's normalization an iSCSI name holds only lowercase letters, digits, '-', '.' and ':'
// (its other ASCII characters are prohibited); a name sent in another case would not match tgt's
// byte-wise ACL check, so it is refused rather than silently lowered.
const LABEL = '[a-z0-9](?:[a-z0-9-]*[a-z0-9])?';
const IQN_PREFIX = `iqn\\.\\d{4}-(?:0[1-9]|1[0-2])\\.${LABEL}(?:\\.${LABEL})*`;
const IQN_RE = new RegExp(`^${IQN_PREFIX}(?::[a-z0-9.:-]+)?$`);
const IQN_PREFIX_RE = new RegExp(`^${IQN_PREFIX}$`);
const EUI_RE = /^eui\.[0-9A-Fa-f]{16}$/;
const NAA_RE = /^naa\.(?:[0-9A-Fa-f]{16}|[0-9A-Fa-f]{32})$/;

/**
 * A CHAP user name. tgtd parses `user=NAME,password=…` on its control socket, so a ',' or '='
 * would cut the name; '%' and '@' would break the iscsi:// URLs of libiscsi and qemu.
 */
const CHAP_USER_RE = /^[A-Za-z0-9._:-]{1,223}$/;
/**
 * A CHAP secret: 12 to 16 characters of RFC 3986's unreserved set (safe unquoted in any URL or
 * initiator configuration). 12 bytes is RFC 3720's 96-bit floor; Microsoft's initiator takes at
 * most 16. tgt itself only needs it shorter than 256 bytes and free of its separators.
 */
const CHAP_SECRET_RE = /^[A-Za-z0-9._~-]{12,16}$/;

/** Whether the text is an iSCSI name (an ACL entry may be an address instead). */
export function isIscsiName(name: string): boolean {
  return Buffer.byteLength(name) <= ISCSI_NAME_MAX && (IQN_RE.test(name) || EUI_RE.test(name) || NAA_RE.test(name));
}

/** Checks an iSCSI name (`iqn.`, `eui.` or `naa.` form); `what` names it in the error. */
export function checkIscsiName(name: string, what = 'iSCSI name'): string {
  if (typeof name !== 'string' || name.length === 0) throw new InputError(`${what} is missing`, { field: what });
  if (Buffer.byteLength(name) > ISCSI_NAME_MAX) throw new InputError(`${what} is longer than ${ISCSI_NAME_MAX} bytes (RFC 3720)`, { field: what });
  if (IQN_RE.test(name) || EUI_RE.test(name) || NAA_RE.test(name)) return name;
  const hint = name.toLowerCase() !== name && IQN_RE.test(name.toLowerCase()) ? ' (iSCSI names are lowercase: RFC 3722)' : '';
  throw new InputError(
    `${what} '${printable(name)}' is not an iSCSI name${hint}: use iqn.YYYY-MM.reversed.domain[:unique] with lowercase letters, digits, '-', '.', ':', or eui.<16 hex>, or naa.<16 or 32 hex>`,
    { field: what },
  );
}

export function checkChapUser(user: string, what = 'CHAP user'): string {
  if (typeof user === 'string' && CHAP_USER_RE.test(user)) return user;
  throw new InputError(`${what} '${printable(user)}' is not allowed: use 1-223 characters of A-Z, a-z, 0-9, '.', '_', ':', '-'`, { field: what });
}

/** Checks a secret; the error never contains it. */
export function checkChapSecret(secret: string, what = 'CHAP secret'): string {
  if (typeof secret === 'string' && CHAP_SECRET_RE.test(secret)) return secret;
  const len = typeof secret === 'string' ? secret.length : 0;
  throw new InputError(`${what} is not allowed (${len} characters): use 12-16 characters of A-Z, a-z, 0-9, '.', '_', '~', '-' (16 for 96 bits and more)`, { field: what });
}

/** Checks a host's whole iSCSI credentials; returns them frozen. */
export function checkHostAuth(auth: IscsiHostAuth): IscsiHostAuth {
  checkIscsiName(auth.initiator, 'initiator name');
  checkChapUser(auth.chap.user);
  checkChapSecret(auth.chap.secret);
  if (auth.mutual) {
    checkChapUser(auth.mutual.user, 'mutual CHAP user');
    checkChapSecret(auth.mutual.secret, 'mutual CHAP secret');
    // tgt keeps accounts in one table by name, and a secret used both ways lets a false target
    // learn the host's response by replaying its own challenge (RFC 3720 §8.2.1).
    if (auth.mutual.user === auth.chap.user) throw new InputError('the mutual CHAP user must differ from the host\'s CHAP user', { field: 'mutual CHAP user' });
    if (auth.mutual.secret === auth.chap.secret) throw new InputError('the mutual CHAP secret must differ from the host\'s CHAP secret', { field: 'mutual CHAP secret' });
  }
  const chap = Object.freeze({ user: auth.chap.user, secret: auth.chap.secret });
  const mutual = auth.mutual && Object.freeze({ user: auth.mutual.user, secret: auth.mutual.secret });
  return Object.freeze({ initiator: auth.initiator, chap, ...(mutual && { mutual }) });
}

/** 96 random bits as 16 base64url characters: the most every initiator accepts. */
export function newChapSecret(): string {
  return randomBytes(12).toString('base64url');
}

/**
 * New credentials for a host: its CHAP user is its id, and with `mutual` the target proves
 * itself as its own target name. Both secrets are fresh.
 */
export function newHostAuth(hostId: string, initiator: string, opts: { readonly mutual?: boolean; readonly targetPrefix?: string } = {}): IscsiHostAuth {
  const chap = { user: hostId, secret: newChapSecret() };
  let mutual: ChapAccount | undefined;
  if (opts.mutual) {
    let secret = newChapSecret();
    while (secret === chap.secret) secret = newChapSecret();
    mutual = { user: targetNameFor(hostId, opts.targetPrefix), secret };
  }
  return checkHostAuth({ initiator, chap, ...(mutual && { mutual }) });
}

/** The prefix of the initiator names made for hosts added without one. */
export const DEFAULT_INITIATOR_PREFIX = 'iqn.2026-12.io.prestage.initiator';

/** The initiator name a host added without one gets: `<prefix>:<host id>`, normalized as target names are. */
export function initiatorNameFor(hostId: string, prefix = DEFAULT_INITIATOR_PREFIX): string {
  return targetNameFor(hostId, prefix);
}

/** Checks a target prefix: an IQN without the part after ':', leaving room for the host part. */
export function checkTargetPrefix(prefix: string): string {
  if (typeof prefix !== 'string' || !IQN_PREFIX_RE.test(prefix)) {
    throw new InputError(`target prefix '${printable(prefix)}' is not allowed: use iqn.YYYY-MM.reversed.domain (lowercase, no ':'), e.g. ${DEFAULT_TARGET_PREFIX}`, { field: 'targetPrefix' });
  }
  // 1 for ':', 63 for the longest host id, 9 for a ':' and 8 hex digits.
  if (prefix.length > ISCSI_NAME_MAX - 73) throw new InputError(`target prefix is longer than ${ISCSI_NAME_MAX - 73} characters`, { field: 'targetPrefix' });
  return prefix;
}

/**
 * The target name of a host: `<prefix>:<host id>`. Host ids may hold uppercase letters and '_',
 * which iSCSI names may not; such an id is lowered, '_' becomes '-', and 8 hex digits of its
 * SHA-256 follow after a ':' — a character host ids never hold, so no other id's name can equal it.
 */
export function targetNameFor(hostId: string, prefix = DEFAULT_TARGET_PREFIX): string {
  checkTargetPrefix(prefix);
  if (!/^[A-Za-z0-9._-]{1,63}$/.test(hostId)) throw new InputError(`invalid host id '${printable(hostId)}': use 1-63 characters of A-Z, a-z, 0-9, '.', '_', '-'`, { field: 'hostId' });
  const plain = hostId.toLowerCase().replaceAll('_', '-');
  const suffix = plain === hostId ? '' : `:${createHash('sha256').update(hostId).digest('hex').slice(0, 8)}`;
  return checkIscsiName(`${prefix}:${plain}${suffix}`, 'target name');
}

/** A name quoted in an error: control characters shown escaped, long input cut. */
function printable(s: unknown): string {
  const text = typeof s === 'string' ? s : String(s);
  const cut = text.length > 80 ? `${text.slice(0, 80)}…` : text;
  return JSON.stringify(cut).slice(1, -1);
}
