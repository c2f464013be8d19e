import { createHash, randomBytes } from 'node:crypto';
import { API_ROLES, InputError, NotFoundError, type ApiRole, type ApiToken, type Store } from '../domain/index.js';

/** What a token's secret looks like: a fixed prefix (so scanners find leaked ones) and 256 random bits. */
const TOKEN_PREFIX = 'pst_';
const TOKEN_SHAPE = /^pst_[A-Za-z0-9_-]{43}$/;
const TOKEN_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const HOST_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
/** Longest lifetime `--expires` accepts: ten years. */
const MAX_LIFETIME_S = 10 * 365 * 86400;

/** A token just made: the only time its secret is seen. */
export interface NewToken extends ApiToken {
  readonly token: string;
}

export interface TokenRequest {
  readonly name: string;
  readonly role: ApiRole;
  readonly hostId?: string | null;
  /** Lifetime in seconds; none means it lasts until revoked. */
  readonly expiresInS?: number | null;
}

const digest = (secret: string) => createHash('sha256').update(secret, 'utf8').digest('hex');

/** How long a token found in the store is taken without asking the store again (see `TokenService.verify`). */
const CACHE_TTL_MS = 1000;
/** Bound on the tokens kept; beyond it the oldest entry goes (there are few tokens, each used often). */
const CACHE_MAX = 1000;

/**
 * API tokens: random, stored hashed, named, revocable. A token is checked by looking up the
 * SHA-256 of what the client sent; 256 random bits make a slow hash unnecessary.
 *
 * Tokens found are kept for at most CACHE_TTL_MS (every API request checks one; the lookup was a
 * store query per request). Revocation stays immediate on this instance: every path that deletes
 * or changes tokens calls `invalidate` once the store has done it (`revoke` here; the removal of a
 * host, whose tokens go with it, in the API's host routes). The TTL is the safety net for the
 * paths this instance does not see — another instance sharing a PostgreSQL database revoking a
 * token — and is the longest such a token stays usable here; a cross-instance notification
 * calls `invalidate` too. Unknown secrets are not kept: a stranger's guesses cannot fill memory,
 * and a token just made on another instance works here at once.
 */
export class TokenService {
  /** SHA-256 of the secret → the token and when it was read (this.now()). */
  private readonly cache = new Map<string, { readonly token: ApiToken; readonly at: number }>();
  /** Raised by every `invalidate`: a lookup that began before one must not put what it read in the cache. */
  private generation = 0;

  constructor(
    private readonly store: Store,
    private readonly now: () => number = Date.now,
    /** Tells the other instances sharing the state (the cluster bus) that tokens changed. */
    private readonly tell?: (name: string | undefined) => void,
  ) {}

  /**
   * Forgets cached tokens: the one named `name`, or all of them, here and (through `tell`) on
   * every other instance. Call it after any change to the tokens in the store.
   */
  invalidate(name?: string): void {
    this.forget(name);
    this.tell?.(name);
  }

  /** Forgets cached tokens on this instance only: for a change another instance told of. */
  forget(name?: string): void {
    this.generation++;
    if (name === undefined) {
      this.cache.clear();
      return;
    }
    for (const [key, entry] of this.cache) if (entry.token.name === name) this.cache.delete(key);
  }

  async create(req: TokenRequest): Promise<NewToken> {
    if (!TOKEN_NAME.test(req.name)) throw new InputError(`invalid token name '${req.name}': use 1-63 characters of A-Z, a-z, 0-9, '.', '_', '-'`, { field: 'name' });
    if (!API_ROLES.includes(req.role)) throw new InputError(`invalid role '${String(req.role)}': one of ${API_ROLES.join(', ')}`, { field: 'role' });
    const hostId = req.hostId ?? null;
    if (req.role === 'host') {
      if (hostId === null || !HOST_ID.test(hostId)) throw new InputError("a token of role 'host' names its host (--host ID)", { field: 'hostId' });
      if (!(await this.store.getHost(hostId))) throw new NotFoundError('host', hostId);
    } else if (hostId !== null) {
      throw new InputError(`only a token of role 'host' names a host; '${req.role}' acts for every host`, { field: 'hostId' });
    }
    const life = req.expiresInS ?? null;
    if (life !== null && (!Number.isInteger(life) || life < 60 || life > MAX_LIFETIME_S)) {
      throw new InputError('a token lasts at least a minute and at most ten years', { field: 'expires' });
    }
    const token = TOKEN_PREFIX + randomBytes(32).toString('base64url');
    const at = this.now();
    const record: ApiToken = {
      name: req.name,
      role: req.role,
      hostId,
      createdAt: new Date(at).toISOString(),
      expiresAt: life === null ? null : new Date(at + life * 1000).toISOString(),
    };
    await this.store.insertToken(record, digest(token), { type: 'token.created', subject: record.name, data: { role: record.role, hostId, expiresAt: record.expiresAt } });
    return { ...record, token };
  }

  /** The token a secret belongs to, when it is one and has not expired; undefined otherwise. */
  async verify(secret: string): Promise<ApiToken | undefined> {
    if (!TOKEN_SHAPE.test(secret)) return undefined;
    const key = digest(secret);
    const now = this.now();
    let token: ApiToken | undefined;
    const cached = this.cache.get(key);
    // A clock that stepped back makes the entry stale too.
    if (cached !== undefined && now - cached.at < CACHE_TTL_MS && now >= cached.at) {
      token = cached.token;
    } else {
      if (cached !== undefined) this.cache.delete(key);
      const generation = this.generation;
      token = await this.store.findToken(key);
      if (token && generation === this.generation) {
        if (this.cache.size >= CACHE_MAX) this.cache.delete(this.cache.keys().next().value!);
        this.cache.set(key, { token, at: now });
      }
    }
    if (!token) return undefined;
    if (token.expiresAt !== null && Date.parse(token.expiresAt) <= this.now()) return undefined;
    return token;
  }

  list(): Promise<ApiToken[]> {
    return this.store.listTokens();
  }

  async revoke(name: string): Promise<void> {
    try {
      await this.store.deleteToken(name, { type: 'token.revoked', subject: name });
    } finally {
      // Also when the store failed: whether the delete was done is not known then.
      this.invalidate(name);
    }
  }

  /** Whether any token exists (the first start makes an admin token when none does). */
  async any(): Promise<boolean> {
    return (await this.store.listTokens()).length > 0;
  }
}
