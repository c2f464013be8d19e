import { Type } from '@fastify/type-provider-typebox';
import { NotFoundError, UnauthorizedError } from '../../domain/index.js';
import { errors } from '../schemas.js';
import type { Api, RouteContext } from './api.js';

const DOCUMENTS = ['meta-data', 'user-data', 'network-config', 'vendor-data'] as const;

/** A reply in plain text, as cloud-init reads it. */
const Text = (description: string) => ({ description, content: { 'text/plain': { schema: Type.String() } } });

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
  const Id = Type.String({ minLength: 1, maxLength: 63 });

  /** Unknown host, wrong secret, another host's secret: one answer, and nothing about the host. */
  const authenticate = async (id: string, header: string | undefined, reply: { header(k: string, v: string): unknown }): Promise<void> => {
    const cred = basicAuth(header);
    if (!cred || cred.user !== id || !(await hosts.checkMetaCredential(id, cred.secret))) {
      reply.header('www-authenticate', 'Basic realm="prestage meta"');
      throw new UnauthorizedError("meta-data needs the host id and its meta-data credential (HTTP Basic); `prestage host meta-url HOST` shows the URL");
    }
  };

  // cloud-init's NoCloud-net asks for the seed URL itself first (`s=…/HOST/`): the documents there.
  app.get(
    '/v1/meta/:id/',
    {
      config: { access: 'public' },
      schema: {
        summary: "The list of a host's cloud-init documents (HTTP Basic: the host id and its meta-data credential)",
        params: Type.Object({ id: Id }),
        response: { 200: Text('the names of the documents, one a line'), ...errors(401) },
      },
    },
    async (req, reply) => {
      await authenticate(req.params.id, req.headers.authorization, reply);
      return reply.type('text/plain; charset=utf-8').send(DOCUMENTS.map((d) => `${d}\n`).join(''));
    },
  );

  app.get(
    '/v1/meta/:id/:doc',
    {
      // Public to tokens: the host proves itself with its meta-data credential instead.
      config: { access: 'public' },
      schema: {
        summary: "A host's cloud-init NoCloud-net document (HTTP Basic: the host id and its meta-data credential)",
        params: Type.Object({ id: Id, doc: Type.Union(DOCUMENTS.map((d) => Type.Literal(d))) }),
        response: { 200: Text('the document (YAML), as cloud-init reads it'), ...errors(401, 404) },
      },
    },
    async (req, reply) => {
      await authenticate(req.params.id, req.headers.authorization, reply);
      const text = await templates.perHostDocument(req.params.id, req.params.doc);
      if (text === undefined) throw new NotFoundError(req.params.doc, req.params.id);
      return reply.type('text/plain; charset=utf-8').send(text);
    },
  );
}
