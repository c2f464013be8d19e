import type { Server as HttpsServer } from 'node:https';
import Fastify, { type FastifyBaseLogger, type FastifyHttpsOptions, type FastifyInstance, type FastifyServerOptions } from 'fastify';
import swagger from '@fastify/swagger';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { installAccess, type RouteAccess } from './access.js';
import { answerFrameworkError, installErrorHandling } from './errors.js';
import { installValidation } from './validation.js';
import { NAMED_SCHEMAS } from './schemas.js';
import { TaskBoard } from './tasks.js';
import type { Api, ApiDeps, RouteContext } from './routes/api.js';
import { bootRoutes } from './routes/boot.js';
import { healthRoutes } from './routes/health.js';
import { hostRoutes } from './routes/hosts.js';
import { imageRoutes } from './routes/images.js';
import { inventoryRoutes } from './routes/inventory.js';
import { metaRoutes } from './routes/meta.js';
import { metricsRoutes } from './routes/metrics.js';
import { dashboardRoutes } from './routes/dashboard.js';
import { historyRoutes } from './routes/history.js';
import { sessionRoutes } from './routes/session.js';
import { simulateRoutes } from './routes/simulate.js';
import { poolRoutes } from './routes/pools.js';
import { templateRoutes } from './routes/templates.js';
import { tokenRoutes } from './routes/tokens.js';

export type { ApiDeps } from './routes/api.js';

/** Everything the API serves, resource by resource; each module declares its routes' access. */
const ROUTE_MODULES: readonly ((app: Api, ctx: RouteContext) => void)[] = [
  healthRoutes,
  imageRoutes,
  poolRoutes,
  hostRoutes,
  templateRoutes,
  metaRoutes,
  bootRoutes,
  inventoryRoutes,
  tokenRoutes,
  metricsRoutes,
  historyRoutes,
  simulateRoutes,
  sessionRoutes,
  dashboardRoutes,
];

export interface ApiOptions {
  /** TLS for the API: PEM certificate chain and key. */
  readonly https?: { readonly cert: Buffer; readonly key: Buffer };
}

export interface BuiltApi {
  readonly app: FastifyInstance;
  /** Every route with its access level (the role test walks it). */
  readonly routes: readonly RouteAccess[];
}

export async function buildApi(deps: ApiDeps, opts: ApiOptions = {}): Promise<BuiltApi> {
  // Per-request lines would drown the log at thousands of provisions a second; errors still show.
  const loggerInstance: FastifyBaseLogger = deps.logger.child({}, { level: deps.logger.levelVal > 40 ? deps.logger.level : 'warn' });
  const options: FastifyServerOptions = {
    loggerInstance,
    bodyLimit: 1 << 20,
    // Errors the framework finds before a route runs (a bad percent-encoding) answer in the catalogue's shape too.
    frameworkErrors: (err, req, reply) => {
      deps.metrics.apiError('PRESTAGE_INPUT');
      answerFrameworkError(err, req, reply);
    },
  };
  // The https variant of the instance differs only in its server type, which no route touches.
  const app = (opts.https ? Fastify({ ...options, https: { ...opts.https } } as FastifyHttpsOptions<HttpsServer>) : Fastify(options)).withTypeProvider<TypeBoxTypeProvider>() as unknown as Api;
  installValidation(app);
  await app.register(swagger, {
    openapi: {
      // 3.1: null is a type of JSON Schema there, so a nullable field is `T | null` to clients, not a 3.0 `nullable` rewrite.
      openapi: '3.1.0',
      info: { title: 'prestage', version: deps.info.version, description: 'Golden images, warm pools and instant provisioning.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
    // A named schema keeps its name in the document (components.schemas.Pool, not def-2): the
    // generated client types (src/api/generated/openapi.ts) are named after it.
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`) },
  });
  for (const schema of NAMED_SCHEMAS) app.addSchema(schema);
  installErrorHandling(app, (code) => deps.metrics.apiError(code));
  const routes = installAccess(app, (secret) => deps.tokens.verify(secret));
  const ctx: RouteContext = { deps, tasks: new TaskBoard() };
  for (const register of ROUTE_MODULES) register(app, ctx);
  return { app: app as unknown as FastifyInstance, routes };
}
