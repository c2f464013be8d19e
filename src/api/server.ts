import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import swagger from '@fastify/swagger';
import { Type, type TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Logger } from 'pino';
import type { Copy, Image, Store } from '../domain/index.js';
import { shortageText, type Replenisher } from '../pool/index.js';
import type { HostService, ImageService, PoolService, ProvisioningService, TemplateService, TemplateView } from '../service/index.js';
import { MISS_COST_LIMIT, TemplateSpecBody, type TemplateBuild } from '../domain/index.js';
import { answerFrameworkError, installErrorHandling } from './errors.js';
import { installValidation } from './validation.js';
import {
  CopySchema,
  ErrorSchema,
  HostParam,
  HostSchema,
  ImageSchema,
  PolicyKind,
  PoolSchema,
  ProblemSchema,
  TemplateBuildSchema,
  TemplateSchema,
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
  readonly templates: TemplateService;
  readonly replenisher: Replenisher;
  readonly logger: Logger;
  readonly info: { readonly version: string; readonly dataDir: string; readonly driver: string; readonly exporter: string };
}

const imageView = (i: Image) => ({ ...i, ref: `${i.name}@${i.version}` });
const templateView = (t: TemplateView) => ({ ...t, base: t.spec.base, rebuild: t.spec.rebuild, versions: t.versions.map(imageView), latestBuild: t.latestBuild && buildView(t.latestBuild) });
const buildView = ({ spec: _spec, log: _log, ...b }: TemplateBuild) => b;

/** HTTP Basic credentials, or undefined when absent or malformed. */
function basicAuth(header: string | undefined): { user: string; secret: string } | undefined {
  const m = /^Basic ([A-Za-z0-9+/=]+)$/i.exec(header ?? '');
  if (!m) return undefined;
  const text = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = text.indexOf(':');
  return colon < 0 ? undefined : { user: text.slice(0, colon), secret: text.slice(colon + 1) };
}

export async function buildApi(deps: ApiDeps): Promise<FastifyInstance> {
  // Per-request lines would drown the log at thousands of provisions a second; errors still show.
  const loggerInstance: FastifyBaseLogger = deps.logger.child({}, { level: deps.logger.levelVal > 40 ? deps.logger.level : 'warn' });
  const app = Fastify({
    loggerInstance,
    bodyLimit: 1 << 20,
    // Errors the framework finds before a route runs (a bad percent-encoding) answer in the catalogue's shape too.
    frameworkErrors: answerFrameworkError,
  }).withTypeProvider<TypeBoxTypeProvider>();
  installValidation(app);
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
  app.addSchema(TemplateBuildSchema);
  app.addSchema(TemplateSchema);
  installErrorHandling(app);
  const tasks = new TaskBoard();
  const { store, images, hosts, pools, provisioning, replenisher, templates } = deps;

  app.get('/openapi.json', { schema: { hide: true } }, () => app.swagger());

  /** What needs an operator: pools short of space. */
  const problems = () => replenisher.shortages().map((s) => ({ ...s, message: `${s.source}: ${shortageText(s)}` }));

  // Always 200 while the process serves (a liveness probe reads the status code); `ok` is false
  // and `status` 'degraded' while something needs attention, listed in `problems`.
  app.get(
    '/healthz',
    {
      schema: {
        response: {
          200: Type.Object({
            ok: Type.Boolean({ description: 'false while anything needs attention' }),
            status: Type.Union([Type.Literal('ok'), Type.Literal('degraded')]),
            replenisher: Type.String(),
            problems: Type.Array(ProblemSchema),
          }),
        },
      },
    },
    () => {
      const list = problems();
      return { ok: list.length === 0, status: list.length === 0 ? ('ok' as const) : ('degraded' as const), replenisher: replenisher.state, problems: list };
    },
  );

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
            vars: Type.Optional(Type.Record(Type.String(), Type.String(), { description: "values for templates' per-host params" })),
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
  app.patch(
    '/v1/hosts/:id/vars',
    {
      schema: {
        summary: "Set (a string) or remove (null) the host's values for templates' per-host data",
        params: HostParam,
        // Not a union: ajv's type coercion would turn a null into "" before the handler sees it.
        body: Type.Record(Type.String(), Type.Unsafe<string | null>({ type: ['string', 'null'] })),
        response: { 200: { $ref: 'Host#' }, ...errors(400, 404) },
      },
    },
    (req) => hosts.setVars(req.params.id, req.body),
  );
  const KeySchema = Type.Object({ hostId: Type.String(), identity: Type.String(), key: Type.String(), pskFileLine: Type.String() });
  app.get(
    '/v1/hosts/:id/key',
    { schema: { summary: "The host's TLS-PSK key (made on first use)", params: HostParam, response: { 200: KeySchema, ...errors(404) } } },
    (req) => hosts.key(req.params.id),
  );
  app.post(
    '/v1/hosts/:id/key',
    {
      // No body, or an empty object: anything else is a mistake to report, not a rotation.
      schema: { summary: "Rotate the host's TLS-PSK key", params: HostParam, body: Type.Object({}, { additionalProperties: false }), response: { 200: KeySchema, ...errors(400, 404) } },
      preValidation: (req, _reply, done) => {
        req.body ??= {};
        done();
      },
    },
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

  // templates ---------------------------------------------------------------------------
  const TemplateParam = Type.Object({ name: Type.String({ minLength: 1, maxLength: 63 }) });
  app.post(
    '/v1/templates',
    {
      schema: {
        summary: 'Create or update a template from its spec, and build it (a new version when the result differs)',
        body: TemplateSpecBody,
        response: { 201: Type.Object({ template: { $ref: 'Template#' }, build: { $ref: 'TemplateBuild#' } }), ...errors(400, 404, 409, 422, 507) },
      },
      // The schema documents the body; validateTemplateSpec checks it, naming every field at fault.
      validatorCompiler: () => (value: unknown) =>
        typeof value === 'object' && value !== null && !Array.isArray(value) ? { value } : { error: new Error('body must be a template spec (a JSON object)') },
      bodyLimit: 64 << 20,
    },
    async (req, reply) => {
      const task = tasks.begin('build', (req.body as { name: string }).name);
      try {
        const r = await templates.apply(req.body);
        return await reply.status(201).send({ template: templateView(r.template), build: buildView(r.build) });
      } finally {
        tasks.end(task);
      }
    },
  );
  app.get('/v1/templates', { schema: { response: { 200: Type.Array(Type.Unsafe({ $ref: 'Template#' })) } } }, async () => (await templates.list()).map(templateView));
  app.get('/v1/templates/:name', { schema: { params: TemplateParam, response: { 200: { $ref: 'Template#' }, ...errors(404) } } }, async (req) => templateView(await templates.get(req.params.name)));
  app.post(
    '/v1/templates/:name/build',
    { schema: { summary: 'Build the template again now', params: TemplateParam, response: { 201: { $ref: 'TemplateBuild#' }, ...errors(404, 409, 422, 507) } } },
    async (req, reply) => {
      const task = tasks.begin('build', req.params.name);
      try {
        return await reply.status(201).send(buildView(await templates.build(req.params.name, 'build')));
      } finally {
        tasks.end(task);
      }
    },
  );
  app.get(
    '/v1/templates/:name/builds',
    {
      schema: {
        summary: 'Builds with their logs, newest first; `version` picks the build that made it',
        params: TemplateParam,
        querystring: Type.Object({ version: Type.Optional(Type.Integer({ minimum: 1 })) }),
        response: { 200: Type.Array(Type.Unsafe({ $ref: 'TemplateBuild#' })), ...errors(404) },
      },
    },
    async (req) => (await templates.builds(req.params.name, req.query.version)).map(({ spec: _spec, ...b }) => b),
  );
  app.delete('/v1/templates/:name', { schema: { params: TemplateParam, response: { 204: Type.Null(), ...errors(404, 409) } } }, async (req, reply) => {
    await templates.remove(req.params.name, (ref) => images.remove(ref, { template: true }));
    return reply.status(204).send(null);
  });

  // per-host cloud-init NoCloud-net data, for the host's own credentials only -------------
  app.get(
    '/v1/meta/:id/:doc',
    {
      schema: {
        summary: "A host's cloud-init NoCloud-net document (HTTP Basic: the host id and its key in hex)",
        params: Type.Object({ id: Type.String({ minLength: 1, maxLength: 63 }), doc: Type.Union([Type.Literal('meta-data'), Type.Literal('user-data'), Type.Literal('network-config'), Type.Literal('vendor-data')]) }),
      },
    },
    async (req, reply) => {
      const cred = basicAuth(req.headers.authorization);
      // Unknown host, wrong key, another host's key: one answer, and nothing about the host.
      if (!cred || cred.user !== req.params.id || !(await hosts.checkKey(req.params.id, cred.secret))) {
        return reply.status(401).header('www-authenticate', 'Basic realm="prestage meta"').send({ error: { code: 'PRESTAGE_UNAUTHORIZED', message: 'meta-data needs the host id and its key (HTTP Basic)' } });
      }
      const text = await templates.perHostDocument(req.params.id, req.params.doc);
      if (text === undefined) return reply.status(404).send({ error: { code: 'PRESTAGE_NOT_FOUND', message: `no ${req.params.doc} for host '${req.params.id}'` } });
      return reply.type('text/plain; charset=utf-8').send(text);
    },
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
      problems: problems(),
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
