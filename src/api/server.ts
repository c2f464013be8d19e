import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import swagger from '@fastify/swagger';
import { Type, type TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Logger } from 'pino';
import type { Copy, Image, Store } from '../domain/index.js';
import type { Replenisher } from '../pool/index.js';
import type { HostService, ImageService, PoolService, ProvisioningService } from '../service/index.js';
import { installErrorHandling } from './errors.js';
import {
  CopySchema,
  ErrorSchema,
  HostParam,
  HostSchema,
  ImageSchema,
  PoolSchema,
  ProvisionSchema,
  RefParam,
  SourceParam,
  TaskSchema,
  errors,
} from './schemas.js';
import { TaskBoard } from './tasks.js';

export interface ApiDeps {
  readonly store: Store;
  readonly images: ImageService;
  readonly hosts: HostService;
  readonly pools: PoolService;
  readonly provisioning: ProvisioningService;
  readonly replenisher: Replenisher;
  readonly logger: Logger;
  readonly info: { readonly version: string; readonly dataDir: string; readonly driver: string; readonly exporter: string };
}

const imageView = (i: Image) => ({ ...i, ref: `${i.name}@${i.version}` });

export async function buildApi(deps: ApiDeps): Promise<FastifyInstance> {
  // Per-request lines would drown the log at thousands of provisions a second; errors still show.
  const loggerInstance: FastifyBaseLogger = deps.logger.child({}, { level: deps.logger.levelVal > 40 ? deps.logger.level : 'warn' });
  const app = Fastify({
    loggerInstance,
    bodyLimit: 1 << 20,
    // Unknown fields are a mistake to report, not to drop silently.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array' } },
  }).withTypeProvider<TypeBoxTypeProvider>();
  await app.register(swagger, {
    openapi: {
      info: { title: 'prestage', version: deps.info.version, description: 'Golden images, warm pools and instant provisioning.' },
    },
  });
  app.addSchema(ErrorSchema);
  app.addSchema(ImageSchema);
  app.addSchema(PoolSchema);
  app.addSchema(HostSchema);
  app.addSchema(ProvisionSchema);
  app.addSchema(CopySchema);
  installErrorHandling(app);
  const tasks = new TaskBoard();
  const { store, images, hosts, pools, provisioning, replenisher } = deps;

  app.get('/openapi.json', { schema: { hide: true } }, () => app.swagger());

  app.get('/healthz', { schema: { response: { 200: Type.Object({ ok: Type.Boolean(), replenisher: Type.String() }) } } }, () => ({
    ok: true,
    replenisher: replenisher.state,
  }));

  // images ------------------------------------------------------------------------------
  app.post(
    '/v1/images',
    {
      schema: {
        summary: 'Import an image file (raw or qcow2) as the next version of a name',
        body: Type.Object({ name: Type.String({ minLength: 1, maxLength: 63 }), path: Type.String({ minLength: 1, maxLength: 4096 }) }, { additionalProperties: false }),
        response: { 201: { $ref: 'Image#' }, ...errors(400, 409, 422, 507) },
      },
    },
    async (req, reply) => {
      const task = tasks.begin('import', req.body.name);
      try {
        const image = await images.import(req.body.name, req.body.path, (p) => {
          task.doneBytes = p.doneBytes;
          task.totalBytes = p.totalBytes;
        });
        return await reply.status(201).send(imageView(image));
      } finally {
        tasks.end(task);
      }
    },
  );
  app.get('/v1/images', { schema: { response: { 200: Type.Array(Type.Unsafe({ $ref: 'Image#' })) } } }, async () => (await images.list()).map(imageView));
  app.get('/v1/images/:ref', { schema: { params: RefParam, response: { 200: { $ref: 'Image#' }, ...errors(400, 404) } } }, async (req) =>
    imageView(await images.get(req.params.ref)),
  );
  app.delete('/v1/images/:ref', { schema: { params: RefParam, response: { 200: Type.Object({ removed: Type.Array(Type.String()) }), ...errors(400, 404, 409) } } }, async (req) => ({
    removed: (await images.remove(req.params.ref)).map((i) => `${i.name}@${i.version}`),
  }));

  // pools -------------------------------------------------------------------------------
  app.put(
    '/v1/pools/:source',
    {
      schema: {
        summary: 'Create or change the pool of a source (`name` follows the latest version, `name@N` is pinned)',
        params: SourceParam,
        body: Type.Object({ min: Type.Optional(Type.Integer({ minimum: 0 })), max: Type.Optional(Type.Integer({ minimum: 0 })) }, { additionalProperties: false }),
        response: { 200: { $ref: 'Pool#' }, ...errors(400, 404) },
      },
    },
    async (req) => pools.set(req.params.source, req.body),
  );
  app.get('/v1/pools', { schema: { response: { 200: Type.Array(Type.Unsafe({ $ref: 'Pool#' })) } } }, () => pools.list());
  app.get('/v1/pools/:source', { schema: { params: SourceParam, response: { 200: { $ref: 'Pool#' }, ...errors(400, 404) } } }, (req) => pools.get(req.params.source));
  app.delete('/v1/pools/:source', { schema: { params: SourceParam, response: { 204: Type.Null(), ...errors(400, 404) } } }, async (req, reply) => {
    await pools.remove(req.params.source);
    return reply.status(204).send(null);
  });

  // hosts -------------------------------------------------------------------------------
  app.post(
    '/v1/hosts',
    {
      schema: {
        body: Type.Object(
          {
            id: Type.String({ minLength: 1, maxLength: 63 }),
            mac: Type.Optional(Type.String({ maxLength: 17 })),
            labels: Type.Optional(Type.Record(Type.String(), Type.String())),
          },
          { additionalProperties: false },
        ),
        response: { 201: { $ref: 'Host#' }, ...errors(400, 409) },
      },
    },
    async (req, reply) => reply.status(201).send(await hosts.add(req.body)),
  );
  app.get('/v1/hosts', { schema: { response: { 200: Type.Array(Type.Unsafe({ $ref: 'Host#' })) } } }, async () => {
    const mappings = new Map((await store.listMappings()).map((m) => [m.hostId, m]));
    return (await hosts.list()).map((h) => ({ ...h, mapping: mappings.get(h.id) ?? null }));
  });
  app.get('/v1/hosts/:id', { schema: { params: HostParam, response: { 200: { $ref: 'Host#' }, ...errors(404) } } }, async (req) => ({
    ...(await hosts.get(req.params.id)),
    mapping: (await store.getMapping(req.params.id)) ?? null,
  }));
  app.delete('/v1/hosts/:id', { schema: { params: HostParam, response: { 204: Type.Null(), ...errors(404, 409) } } }, async (req, reply) => {
    await hosts.remove(req.params.id);
    return reply.status(204).send(null);
  });
  const KeySchema = Type.Object({ hostId: Type.String(), identity: Type.String(), key: Type.String(), pskFileLine: Type.String() });
  app.get(
    '/v1/hosts/:id/key',
    { schema: { summary: "The host's TLS-PSK key (made on first use)", params: HostParam, response: { 200: KeySchema, ...errors(404) } } },
    (req) => hosts.key(req.params.id),
  );
  app.post(
    '/v1/hosts/:id/key',
    { schema: { summary: "Rotate the host's TLS-PSK key", params: HostParam, response: { 200: KeySchema, ...errors(404) } } },
    (req) => hosts.rotateKey(req.params.id),
  );
  app.post(
    '/v1/hosts/:id/provision',
    {
      schema: {
        summary: 'Map a copy of the source to the host: a ready spare at once, else the next copy made',
        params: HostParam,
        body: Type.Object({ source: Type.String({ minLength: 1, maxLength: 80 }) }, { additionalProperties: false }),
        response: { 200: { $ref: 'Provision#' }, ...errors(400, 404, 409, 503, 507) },
      },
    },
    (req) => provisioning.provision(req.params.id, req.body.source),
  );
  app.post(
    '/v1/hosts/:id/release',
    { schema: { params: HostParam, response: { 200: Type.Object({ hostId: Type.String(), copyId: Type.String() }), ...errors(404) } } },
    (req) => provisioning.release(req.params.id),
  );

  // copies, tasks, events, status -------------------------------------------------------
  app.get(
    '/v1/copies',
    { schema: { querystring: Type.Object({ state: Type.Optional(Type.String()) }), response: { 200: Type.Array(Type.Unsafe({ $ref: 'Copy#' })) } } },
    async (req) => {
      const progress = new Map(replenisher.copiesInFlight().map((c) => [c.copyId, c.progress]));
      const rows: Copy[] = await store.listCopies(req.query.state ? { state: req.query.state as Copy['state'] } : {});
      return rows.filter((c) => req.query.state || c.state !== 'gone').map((c) => ({ ...c, ...(progress.has(c.id) && { progress: progress.get(c.id) }) }));
    },
  );
  app.get('/v1/tasks', { schema: { response: { 200: Type.Array(TaskSchema) } } }, () => tasks.list());
  app.get(
    '/v1/events',
    {
      schema: {
        querystring: Type.Object({ after: Type.Optional(Type.Integer({ minimum: 0 })), limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 10000 })) }),
      },
    },
    (req) => store.listEvents({ afterSeq: req.query.after ?? 0, limit: req.query.limit ?? 1000 }),
  );
  app.get('/v1/status', async () => {
    const [imgs, poolViews, hostList, mappings] = await Promise.all([images.list(), pools.list(), hosts.list(), store.listMappings()]);
    return {
      ...deps.info,
      replenisher: replenisher.state,
      images: imgs.length,
      hosts: hostList.length,
      mapped: mappings.length,
      waitingProvisions: provisioning.waitingCount(),
      copiesInFlight: replenisher.copiesInFlight().map((c) => ({ copyId: c.copyId, imageId: c.imageId, pool: c.pool, ...c.progress })),
      pools: poolViews,
    };
  });
  return app;
}
