/**
 * The dashboard: a single-page app built from web/ into dist/web/ (`npm run build`), served here
 * as static files. Its routes are public because the page holds no data: everything it shows it
 * fetches from the API with the token the person signs in with.
 */
import { access } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import fastifyStatic from '@fastify/static';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Api } from './api.js';

/** dist/web/ of this package: three levels up from src/api/routes/ and from dist/api/routes/ alike. */
export const WEB_ROOT = fileURLToPath(new URL('../../../dist/web/', import.meta.url));

/**
 * Scripts and styles only from this origin (nothing inline, no eval), no framing, no plugins.
 * The page talks to nothing but this server.
 */
const PAGE_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
};

const NOT_BUILT =
  'prestage: the dashboard is not built here (dist/web/ is missing).\n' +
  'Run `npm run build` in the prestage directory (./scripts/install.sh does), then reload.\n' +
  'The API itself is served as usual under /v1/ (see /openapi.json).\n';

function pageHeaders(_req: FastifyRequest, reply: FastifyReply, done: () => void): void {
  void reply.headers(PAGE_HEADERS);
  done();
}

/** Registers `/` and `/assets/*` serving the built app in `root`. */
export function registerDashboard(app: Api, root: string): void {
  // serve: false: the routes are declared below, each with its access level like every route.
  void app.register(fastifyStatic, { root, serve: false, suppressWarning: true });
  const index = `${root}/index.html`;
  app.get('/', { config: { access: 'public' }, schema: { hide: true }, onRequest: pageHeaders }, async (_req, reply) => {
    const built = await access(index).then(
      () => true,
      () => false,
    );
    if (!built) return reply.status(404).type('text/plain; charset=utf-8').send(NOT_BUILT);
    // The page names its assets by content hash: it is looked at again each time, they never are.
    return reply.header('cache-control', 'no-cache').sendFile('index.html', root, { cacheControl: false });
  });
  app.get('/assets/*', { config: { access: 'public' }, schema: { hide: true }, onRequest: pageHeaders }, (req, reply) => {
    const file = (req.params as Record<string, string>)['*'] ?? '';
    return reply.sendFile(`assets/${file}`, root, { immutable: true, maxAge: '365d' });
  });
}

export function dashboardRoutes(app: Api): void {
  registerDashboard(app, WEB_ROOT);
}
