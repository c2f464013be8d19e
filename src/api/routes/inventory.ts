import { Type } from '@fastify/type-provider-typebox';
import type { CopyState } from '../../domain/index.js';
import { EventSchema, InstanceSchema, StatusSchema, TaskSchema, errors, ref } from '../schemas.js';
import { EventStreams, STREAM_OPEN, STREAM_RESUME, wantsEventStream } from '../event-stream.js';
import type { Api, IscsiStatusSource, RouteContext } from './api.js';
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
  app.get('/v1/tasks', { config: { access: 'read' }, schema: { response: { 200: Type.Array(ref(TaskSchema)) } } }, () => tasks.list());
  // Closing the server ends the open streams first: each would hold the close forever.
  const streams = new EventStreams();
  app.addHook('preClose', (done) => {
    streams.endAll('shutdown');
    done();
  });
  app.get(
    '/v1/events',
    {
      config: { access: 'read' },
      schema: {
        summary: 'The event log in order; page on with after=SEQ of the last event seen. With Accept: text/event-stream, the events as they come',
        description:
          'As Server-Sent Events: id = the sequence number, event = the type, data = the event as JSON. The stream starts after the Last-Event-ID header, else after `after`, else at the newest event now; ' +
          `its first message (${STREAM_OPEN}) names where it starts, and a ${STREAM_RESUME} message ends it when the server closes it (shutting down, or the client reads too slowly): connect again with Last-Event-ID. ` +
          'A comment line comes every 15 s while no event does.',
        querystring: Type.Object(
          {
            after: Type.Optional(Type.Integer({ minimum: 0, description: 'the sequence number of the last event seen' })),
            limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 10000, description: 'events in the JSON reply (default 1000); not for a stream' })),
          },
          { additionalProperties: false },
        ),
        headers: Type.Object({
          'last-event-id': Type.Optional(Type.String({ pattern: '^[0-9]{1,15}$', description: 'a stream: where to resume (an EventSource sends it when it reconnects); over `after`' })),
        }),
        response: {
          200: {
            description: 'The events after `after`, oldest first; or the stream of them',
            content: {
              'application/json': { schema: Type.Array(ref(EventSchema)) },
              'text/event-stream': { schema: Type.String({ description: 'Server-Sent Events, one an event' }) },
            },
          },
          ...errors(400),
        },
      },
    },
    async (req, reply) => {
      if (!wantsEventStream(req.headers.accept)) return deps.events.list(req.query.after ?? 0, req.query.limit ?? 1000);
      // A reconnecting EventSource keeps the URL it opened (with its `after`) and says in the header how far it got.
      const resumeFrom = req.headers['last-event-id'];
      const after = resumeFrom !== undefined ? Number(resumeFrom) : (req.query.after ?? (await deps.events.last()));
      reply.hijack();
      const stream = streams.start(reply.raw, after);
      stream.attach(
        deps.events.follow(
          after,
          (events) => stream.push(events),
          (err) => {
            req.log.warn({ err }, 'an event stream could not read the log; it asks its client to resume');
            stream.end('error');
          },
        ),
      );
      return reply;
    },
  );
  app.get(
    '/v1/instances',
    {
      config: { access: 'read' },
      schema: {
        summary: 'The prestage instances sharing this state: the pools each leads and its last heartbeat',
        response: { 200: Type.Array(ref(InstanceSchema)) },
      },
    },
    async () => (await deps.instances()).map((i) => ({ ...i, pools: [...i.pools] })),
  );
  app.get('/v1/status', { config: { access: 'read' }, schema: { summary: 'The one-screen summary: counts, copies in flight, pools, instances', response: { 200: ref(StatusSchema) } } }, async () => {
    const { images, pools, hosts, provisioning, replenisher } = deps;
    const [imgs, poolViews, hostList, instances, iscsi] = await Promise.all([images.list(), pools.list(), hosts.listWithMappings(), deps.instances(), iscsiStatus(deps.iscsi)]);
    return {
      instances: instances.map((i) => ({ id: i.id, name: i.name, live: i.live, self: i.self, heartbeatAt: i.heartbeatAt, pools: i.pools })),
      ...deps.info,
      replenisher: replenisher.state,
      problems: problems(ctx),
      images: imgs.length,
      hosts: hostList.length,
      mapped: hostList.filter((h) => h.mapping !== null).length,
      waitingProvisions: provisioning.waitingCount(),
      copiesInFlight: replenisher.copiesInFlight().map((c) => ({ copyId: c.copyId, imageId: c.imageId, pool: c.pool, ...c.progress })),
      pools: poolViews,
      iscsi,
    };
  });
}

async function iscsiStatus(source: IscsiStatusSource | null) {
  if (!source) return null;
  const s = source.status();
  // A tgtd that is down holds no sessions; asking it would only fail.
  const sessions = s.tgtd.state === 'RUNNING' ? await source.sessions().catch(() => []) : [];
  return { portal: s.portal, tgtd: s.tgtd.state, restarts: s.tgtd.restarts, exported: s.exported, sessions: sessions.map((x) => ({ hostId: x.hostId, initiator: x.initiator, address: x.address })) };
}
