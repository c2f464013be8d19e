import { Type } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import type { TemplateBuild } from '../../domain/index.js';
import type { TemplateView } from '../../service/index.js';
import { seesSecrets } from '../access.js';
import { errors } from '../schemas.js';
import { TemplateSpecBody } from '../template-spec-schema.js';
import type { Api, RouteContext } from './api.js';
import { HIDDEN } from './hosts.js';
import { imageView } from './images.js';
import { Page, PageFields, paged, padded } from './paging.js';

export const buildView = ({ spec: _spec, log: _log, ...b }: TemplateBuild) => b;

/** A reader sees a template's name, base, versions and builds; its spec (files, params, seed documents) may hold secrets. */
function templateView(req: FastifyRequest, t: TemplateView, driverOf: (volume: string) => string | undefined) {
  return {
    ...t,
    spec: seesSecrets(req) ? t.spec : HIDDEN,
    base: t.spec.base,
    rebuild: t.spec.rebuild,
    versions: t.versions.map((i) => imageView(i, driverOf)),
    latestBuild: t.latestBuild && buildView(t.latestBuild),
  };
}

const TemplateParam = Type.Object({ name: Type.String({ minLength: 1, maxLength: 63 }) });

/** A spec as sent is at most this big: files of a template are configuration, not payload. */
export const TEMPLATE_BODY_LIMIT = 1 << 20;

export function templateRoutes(app: Api, { deps, tasks }: RouteContext): void {
  const { templates, images } = deps;
  app.post(
    '/v1/templates',
    {
      config: { access: 'operate' },
      schema: {
        summary: 'Create or update a template from its spec (at most 1 MiB), and build it (a new version when the result differs)',
        body: TemplateSpecBody,
        response: { 201: Type.Object({ template: { $ref: 'Template#' }, build: { $ref: 'TemplateBuild#' } }), ...errors(400, 404, 409, 422, 503, 507) },
      },
      // The schema documents the body; validateTemplateSpec checks it, naming every field at fault.
      validatorCompiler: () => (value: unknown) =>
        typeof value === 'object' && value !== null && !Array.isArray(value) ? { value } : { error: new Error('body must be a template spec (a JSON object)') },
      bodyLimit: TEMPLATE_BODY_LIMIT,
    },
    async (req, reply) => {
      const task = tasks.begin('build', (req.body as { name: string }).name);
      try {
        const r = await templates.apply(req.body);
        return await reply.status(201).send({ template: templateView(req, r.template, deps.driverOf), build: buildView(r.build) });
      } finally {
        tasks.end(task);
      }
    },
  );
  app.get('/v1/templates', { config: { access: 'read' }, schema: { querystring: Page, response: { 200: Type.Array(Type.Unsafe({ $ref: 'Template#' })) } } }, async (req, reply) =>
    paged(req, reply, await templates.list(), (t) => t.name).map((t) => templateView(req, t, deps.driverOf)),
  );
  app.get('/v1/templates/:name', { config: { access: 'read' }, schema: { params: TemplateParam, response: { 200: { $ref: 'Template#' }, ...errors(404) } } }, async (req) =>
    templateView(req, await templates.get(req.params.name), deps.driverOf),
  );
  app.post(
    '/v1/templates/:name/build',
    {
      config: { access: 'operate' },
      schema: { summary: 'Build the template again now', params: TemplateParam, response: { 201: { $ref: 'TemplateBuild#' }, ...errors(404, 409, 422, 503, 507) } },
    },
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
      config: { access: 'read' },
      schema: {
        summary: 'Builds with their logs, newest first; `version` picks the build that made it',
        params: TemplateParam,
        querystring: Type.Object({ version: Type.Optional(Type.Integer({ minimum: 1 })), ...PageFields }, { additionalProperties: false }),
        response: { 200: Type.Array(Type.Unsafe({ $ref: 'TemplateBuild#' })), ...errors(404) },
      },
    },
    async (req, reply) => {
      // Newest first: the key counts down from the far future.
      const builds = (await templates.builds(req.params.name, req.query.version)).map(({ spec: _spec, ...b }) => b);
      return paged(req, reply, builds, (b) => `${padded(9e15 - Date.parse(b.startedAt))}|${b.id}`);
    },
  );
  app.delete('/v1/templates/:name', { config: { access: 'operate' }, schema: { params: TemplateParam, response: { 204: Type.Null(), ...errors(404, 409) } } }, async (req, reply) => {
    await templates.remove(req.params.name, (ref) => images.remove(ref, { template: true }));
    return reply.status(204).send(null);
  });
}
