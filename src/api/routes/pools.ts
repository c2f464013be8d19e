import { Type } from '@fastify/type-provider-typebox';
import { MISS_COST_LIMIT } from '../../domain/index.js';
import { PolicyKind, SourceParam, errors } from '../schemas.js';
import type { Api, RouteContext } from './api.js';
import { Page, paged } from './paging.js';

export function poolRoutes(app: Api, { deps }: RouteContext): void {
  const { pools } = deps;
  app.put(
    '/v1/pools/:source',
    {
      config: { access: 'operate' },
      schema: {
        summary: 'Create or change the pool of a source (`name` follows the latest version, `name@N` is pinned)',
        params: SourceParam,
        body: Type.Object(
          {
            min: Type.Optional(Type.Integer({ minimum: 0 })),
            max: Type.Optional(Type.Integer({ minimum: 0 })),
            policy: Type.Optional(PolicyKind),
            fillRate: Type.Optional(Type.Number({ exclusiveMinimum: 0, exclusiveMaximum: 1, description: 'predictive: share of requests to serve warm, e.g. 0.999' })),
            missCost: Type.Optional(
              Type.Number({
                exclusiveMinimum: 0,
                maximum: MISS_COST_LIMIT,
                description: 'cost: a cold wait costs as much as holding one spare this many hours, e.g. 2 (needed when a pool becomes a cost pool)',
              }),
            ),
            prewarm: Type.Optional(Type.Array(Type.String({ maxLength: 64 }), { maxItems: 64, description: 'replaces the events: COUNT@HH:MM[/DAYS], UTC, e.g. 300@09:00/mon-fri' })),
          },
          { additionalProperties: false },
        ),
        response: { 200: { $ref: 'Pool#' }, ...errors(400, 404) },
      },
    },
    async (req) => pools.set(req.params.source, req.body),
  );
  app.get('/v1/pools', { config: { access: 'read' }, schema: { querystring: Page, response: { 200: Type.Array(Type.Unsafe({ $ref: 'Pool#' })) } } }, async (req, reply) =>
    paged(req, reply, await pools.list(), (p) => p.source),
  );
  app.get('/v1/pools/:source', { config: { access: 'read' }, schema: { params: SourceParam, response: { 200: { $ref: 'Pool#' }, ...errors(400, 404) } } }, (req) =>
    pools.get(req.params.source),
  );
  app.delete('/v1/pools/:source', { config: { access: 'operate' }, schema: { params: SourceParam, response: { 204: Type.Null(), ...errors(400, 404) } } }, async (req, reply) => {
    await pools.remove(req.params.source);
    return reply.status(204).send(null);
  });
}
