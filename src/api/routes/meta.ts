import { Type } from '@fastify/type-provider-typebox';
import { NotFoundError, UnauthorizedError } from '../../domain/index.js';
import type { Api, RouteContext } from './api.js';

/** HTTP Basic credentials, or undefined when absent or malformed. */
function basicAuth(header: string | undefined): { user: string; secret: string } | undefined {
  const m = /^Basic ([A-Za-z0-9+/=]+)$/i.exec(header ?? '');
  if (!m) return undefined;
  const text = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = text.indexOf(':');
  return colon < 0 ? undefined : { user: text.slice(0, colon), secret: text.slice(colon + 1) };
}

/** Per-host cloud-init NoCloud-net documents, for the host's own meta-data credential only. */
export function metaRoutes(app: Api, { deps }: RouteContext): void {
  const { hosts, templates } = deps;
  app.get(
    '/v1/meta/:id/:doc',
    {
      // Public to tokens: the host proves itself with its meta-data credential instead.
      config: { access: 'public' },
      schema: {
        summary: "A host's cloud-init NoCloud-net document (HTTP Basic: the host id and its meta-data credential)",
        params: Type.Object({
          id: Type.String({ minLength: 1, maxLength: 63 }),
          doc: Type.Union([Type.Literal('meta-data'), Type.Literal('user-data'), Type.Literal('network-config'), Type.Literal('vendor-data')]),
        }),
      },
    },
    async (req, reply) => {
      const cred = basicAuth(req.headers.authorization);
      // Unknown host, wrong secret, another host's secret: one answer, and nothing about the host.
      if (!cred || cred.user !== req.params.id || !(await hosts.checkMetaCredential(req.params.id, cred.secret))) {
        void reply.header('www-authenticate', 'Basic realm="prestage meta"');
        throw new UnauthorizedError("meta-data needs the host id and its meta-data credential (HTTP Basic); `prestage host meta-url HOST` shows the URL");
      }
      const text = await templates.perHostDocument(req.params.id, req.params.doc);
      if (text === undefined) throw new NotFoundError(req.params.doc, req.params.id);
      return reply.type('text/plain; charset=utf-8').send(text);
    },
  );
}
