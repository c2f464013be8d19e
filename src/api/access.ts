/**
 * Who may call which route. Every route declares one access level in its `config.access`; a
 * route without one cannot be registered, so a new route can never be open by accident. One
 * hook checks the bearer token before the body is read (an upload from a stranger is refused
 * before a byte of it is stored).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ForbiddenError, UnauthorizedError, type ApiRole, type ApiToken } from '../domain/index.js';

/**
 * - `public`: no token (health, the OpenAPI document, and `/v1/meta`, which checks a host's own credential)
 * - `read`: admin, operator, reader
 * - `operate`: admin, operator
 * - `admin`: admin only
 * - `host-read` / `host-operate`: as `read` / `operate`, and also the `host` token of the host named by `:id`
 * - `metrics`: as `read`, and also the scrape-only `metrics` role, which may use nothing else
 */
export type Access = 'public' | 'read' | 'operate' | 'admin' | 'host-read' | 'host-operate' | 'metrics';
export const ACCESS_LEVELS: readonly Access[] = ['public', 'read', 'operate', 'admin', 'host-read', 'host-operate', 'metrics'];

const ALLOWED: Readonly<Record<Exclude<Access, 'public'>, readonly ApiRole[]>> = {
  read: ['admin', 'operator', 'reader'],
  operate: ['admin', 'operator'],
  admin: ['admin'],
  'host-read': ['admin', 'operator', 'reader', 'host'],
  'host-operate': ['admin', 'operator', 'host'],
  metrics: ['admin', 'operator', 'reader', 'metrics'],
};

declare module 'fastify' {
  interface FastifyContextConfig {
    access?: Access;
  }
  interface FastifyRequest {
    /** The token the request came with; undefined on public routes. */
    caller?: ApiToken;
  }
}

export interface RouteAccess {
  readonly method: string;
  readonly url: string;
  readonly access: Access;
}

/** Whether `role` may use a route of `access` (for `host`, on its own host). */
export function allows(access: Access, token: ApiToken, hostParam: string | undefined): boolean {
  if (access === 'public') return true;
  if (!ALLOWED[access].includes(token.role)) return false;
  return token.role !== 'host' || (hostParam !== undefined && hostParam === token.hostId);
}

/** Whether the caller may see secrets (keys, host values, seed user-data): not a reader (nor a scraper). */
export function seesSecrets(req: FastifyRequest): boolean {
  return req.caller !== undefined && req.caller.role !== 'reader' && req.caller.role !== 'metrics';
}

function bearer(header: string | undefined): string | undefined {
  const m = /^Bearer +(\S+) *$/i.exec(header ?? '');
  return m?.[1];
}

/**
 * Installs the check. Returns the table of routes and their access, filled as routes are
 * registered (the role test walks it).
 */
export function installAccess(app: FastifyInstance, verify: (secret: string) => Promise<ApiToken | undefined>): RouteAccess[] {
  const table: RouteAccess[] = [];
  app.addHook('onRoute', (route) => {
    const access = route.config?.access;
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    if (access === undefined || !ACCESS_LEVELS.includes(access)) throw new Error(`route ${methods.join(',')} ${route.url} declares no access level`);
    for (const method of methods) if (method !== 'HEAD') table.push({ method, url: route.url, access });
    // The OpenAPI document shows the refusals every guarded route can answer.
    const response = route.schema?.response as Record<string, unknown> | undefined;
    if (access !== 'public' && response) {
      response[401] ??= { $ref: 'Error#' };
      response[403] ??= { $ref: 'Error#' };
    }
  });
  app.addHook('onRequest', async (req) => {
    const access = req.routeOptions.config.access;
    // Unknown routes reach the not-found handler, which hands out nothing.
    if (access === undefined || access === 'public') return;
    const secret = bearer(req.headers.authorization);
    const token = secret === undefined ? undefined : await verify(secret);
    if (!token) throw new UnauthorizedError('this needs a valid API token (Authorization: Bearer TOKEN); `prestage token create` makes one');
    const hostParam = (req.params as Record<string, string | undefined>).id;
    if (!allows(access, token, hostParam)) {
      throw new ForbiddenError(token.role === 'host' ? `token '${token.name}' acts for host '${token.hostId}' only` : `role '${token.role}' may not ${req.method} ${req.routeOptions.url}`, { role: token.role });
    }
    req.caller = token;
  });
  return table;
}
