import { Type } from '@sinclair/typebox';
import { NewTokenSchema, RoleSchema as Role, TokenSchema, errors, ref } from '../schemas.js';
import type { Api, RouteContext } from './api.js';
import { Page, paged } from './paging.js';

/** API tokens: admin only. The secret is in the reply that makes it and nowhere else. */
export function tokenRoutes(app: Api, { deps }: RouteContext): void {
  const { tokens } = deps;
  app.post(
    '/v1/tokens',
    {
      config: { access: 'admin' },
      schema: {
        summary: 'Make an API token; its secret is shown in this reply only',
        body: Type.Object(
          {
            name: Type.String({ minLength: 1, maxLength: 63 }),
            role: Role,
            hostId: Type.Optional(Type.String({ minLength: 1, maxLength: 63, description: "role 'host': the host it acts for" })),
            expiresInS: Type.Optional(Type.Integer({ minimum: 60, description: 'lifetime in seconds; none: until revoked' })),
          },
          { additionalProperties: false },
        ),
        response: { 201: ref(NewTokenSchema), ...errors(400, 404, 409) },
      },
    },
    async (req, reply) => reply.status(201).send(await tokens.create(req.body)),
  );
  app.get('/v1/tokens', { config: { access: 'admin' }, schema: { querystring: Page, response: { 200: Type.Array(ref(TokenSchema)) } } }, async (req, reply) =>
    paged(req, reply, await tokens.list(), (t) => t.name),
  );
  app.delete(
    '/v1/tokens/:name',
    { config: { access: 'admin' }, schema: { params: Type.Object({ name: Type.String({ minLength: 1, maxLength: 63 }) }), response: { 204: Type.Null(), ...errors(404) } } },
    async (req, reply) => {
      await tokens.revoke(req.params.name);
      return reply.status(204).send(null);
    },
  );
}
