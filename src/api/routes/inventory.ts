import { Type } from '@fastify/type-provider-typebox';
import type { CopyState } from '../../domain/index.js';
import { TaskSchema } from '../schemas.js';
import type { Api, RouteContext } from './api.js';
import { problems } from './health.js';
import { PageFields, paged } from './paging.js';

const COPY_STATES: readonly CopyState[] = ['making', 'ready', 'mapped', 'releasing', 'gone', 'failed'];

/** Copies, tasks, events and the one-screen status: what there is and what happens. */
export function inventoryRoutes(app: Api, ctx: RouteContext): void {
  const { deps, tasks } = ctx;
  app.get(
    '/v1/copies',
    {
      config: { access: 'read' },
      schema: {
        summary: 'Copies, oldest first (gone ones only with state=gone)',
        querystring: Type.Object({ state: Type.Optional(Type.Union(COPY_STATES.map((s) => Type.Literal(s)))), ...PageFields }, { additionalProperties: false }),
        response: { 200: Type.Array(Type.Unsafe({ $ref: 'Copy#' })) },
      },
    },
    async (req, reply) => paged(req, reply, await deps.copies.list(req.query.state), (c) => `${c.createdAt}|${c.id}`),
  );
  app.get('/v1/tasks', { config: { access: 'read' }, schema: { response: { 200: Type.Array(TaskSchema) } } }, () => tasks.list());
  app.get(
    '/v1/events',
    {
      config: { access: 'read' },
      schema: {
        summary: 'The event log in order; page on with after=SEQ of the last event seen',
        querystring: Type.Object(
          { after: Type.Optional(Type.Integer({ minimum: 0 })), limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 10000 })) },
          { additionalProperties: false },
        ),
      },
    },
    (req) => deps.events.list(req.query.after ?? 0, req.query.limit ?? 1000),
  );
  app.get('/v1/status', { config: { access: 'read' } }, async () => {
    const { images, pools, hosts, provisioning, replenisher } = deps;
    const [imgs, poolViews, hostList] = await Promise.all([images.list(), pools.list(), hosts.listWithMappings()]);
    return {
      ...deps.info,
      replenisher: replenisher.state,
      problems: problems(ctx),
      images: imgs.length,
      hosts: hostList.length,
      mapped: hostList.filter((h) => h.mapping !== null).length,
      waitingProvisions: provisioning.waitingCount(),
      copiesInFlight: replenisher.copiesInFlight().map((c) => ({ copyId: c.copyId, imageId: c.imageId, pool: c.pool, ...c.progress })),
      pools: poolViews,
    };
  });
}
