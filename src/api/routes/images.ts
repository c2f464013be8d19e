import { Type } from '@fastify/type-provider-typebox';
import { ForbiddenError, InputError, type Image, type ProgressListener } from '../../domain/index.js';
import { NameParam, RefParam, errors } from '../schemas.js';
import type { Task } from '../tasks.js';
import { SHA256_HEADER } from '../headers.js';
import type { Api, RouteContext } from './api.js';
import { Page, paged, padded } from './paging.js';

export const imageView = (i: Image, driverOf: (volume: string) => string | undefined) => ({ ...i, ref: `${i.name}@${i.version}`, driver: driverOf(i.volume) ?? null });

/** `driver` of an import: a name the API knows; whether it is configured is the service's answer. */
const DriverField = Type.Optional(Type.Union([Type.Literal('file'), Type.Literal('rbd')], { description: 'where the image and its copies go; default: where the latest version of the name is, else serve --driver' }));

export function imageRoutes(app: Api, { deps, tasks }: RouteContext): void {
  const { images } = deps;
  const view = (i: Image) => imageView(i, deps.driverOf);
  // Uploads are streamed to the store as they arrive: the body is not parsed, and no body limit
  // applies (free space is the limit). Only the upload route accepts this type.
  app.addContentTypeParser('application/octet-stream', (_req, _payload, done) => done(null, undefined));

  const track = (kind: Task['kind'], name: string) => {
    const task = tasks.begin(kind, name);
    const onProgress: ProgressListener = (p) => {
      task.doneBytes = p.doneBytes;
      task.totalBytes = p.totalBytes;
    };
    return { onProgress, end: () => tasks.end(task) };
  };

  app.put(
    '/v1/images/:name',
    {
      config: { access: 'operate' },
      schema: {
        summary: 'Upload an image (raw or qcow2, the request body as application/octet-stream) as the next version of a name',
        description: `Streamed to disk as it arrives and hashed on the way; a broken, short or mismatched upload keeps nothing. Optional header ${SHA256_HEADER}: the sha256 (hex) of the body as sent.`,
        params: NameParam,
        querystring: Type.Object({ driver: DriverField }, { additionalProperties: false }),
        headers: Type.Object({ 'content-type': Type.Literal('application/octet-stream'), [SHA256_HEADER]: Type.Optional(Type.String({ pattern: '^[0-9a-fA-F]{64}$' })) }),
        response: { 201: { $ref: 'Image#' }, ...errors(400, 409, 422, 507) },
      },
    },
    async (req, reply) => {
      const length = Number(req.headers['content-length'] ?? NaN);
      const expected = req.headers[SHA256_HEADER];
      const progress = track('upload', req.params.name);
      try {
        const image = await images.importStream(req.params.name, req.raw, {
          sha256: typeof expected === 'string' ? expected : undefined,
          totalBytes: Number.isSafeInteger(length) ? length : undefined,
          origin: { upload: req.caller?.name ?? null },
          onProgress: progress.onProgress,
          ...(req.query.driver !== undefined && { driver: req.query.driver }),
        });
        return await reply.status(201).send(view(image));
      } finally {
        progress.end();
      }
    },
  );

  app.post(
    '/v1/images',
    {
      config: { access: 'operate' },
      schema: {
        summary: 'Import an image (raw or qcow2) the server fetches from an http(s) URL, or (admin only) a file inside its import directories',
        description: 'Exactly one of url and path. Progress shows in /v1/tasks while it runs.',
        body: Type.Object(
          {
            name: Type.String({ minLength: 1, maxLength: 63 }),
            url: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })),
            sha256: Type.Optional(Type.String({ pattern: '^[0-9a-fA-F]{64}$' })),
            path: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })),
            driver: DriverField,
          },
          { additionalProperties: false },
        ),
        response: { 201: { $ref: 'Image#' }, ...errors(400, 409, 422, 507) },
      },
    },
    async (req, reply) => {
      const { name, url, path, sha256, driver } = req.body;
      if ((url === undefined) === (path === undefined)) throw new InputError('give exactly one of url (the server downloads it) and path (a file on the server)', {});
      if (path !== undefined && sha256 !== undefined) throw new InputError('sha256 goes with url; a path is hashed as it is read', {});
      if (path !== undefined && req.caller?.role !== 'admin') throw new ForbiddenError('importing a file on the server takes an admin token; upload it instead (PUT /v1/images/NAME)', {});
      const progress = track(url !== undefined ? 'download' : 'import', name);
      try {
        const opts = { onProgress: progress.onProgress, ...(driver !== undefined && { driver }) };
        const image = url !== undefined ? await images.importUrl(name, url, { ...opts, sha256 }) : await images.importPath(name, path!, opts);
        return await reply.status(201).send(view(image));
      } finally {
        progress.end();
      }
    },
  );
  app.get('/v1/images', { config: { access: 'read' }, schema: { querystring: Page, response: { 200: Type.Array(Type.Unsafe({ $ref: 'Image#' })) } } }, async (req, reply) =>
    paged(req, reply, await images.list(), (i) => `${i.name}@${padded(i.version)}`).map(view),
  );
  app.get('/v1/images/:ref', { config: { access: 'read' }, schema: { params: RefParam, response: { 200: { $ref: 'Image#' }, ...errors(400, 404) } } }, async (req) =>
    view(await images.get(req.params.ref)),
  );
  app.delete(
    '/v1/images/:ref',
    { config: { access: 'operate' }, schema: { params: RefParam, response: { 200: Type.Object({ removed: Type.Array(Type.String()) }), ...errors(400, 404, 409) } } },
    async (req) => ({ removed: (await images.remove(req.params.ref)).map((i) => `${i.name}@${i.version}`) }),
  );
}
