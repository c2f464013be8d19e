import { Type } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import type { HostView } from '../../service/index.js';
import { seesSecrets } from '../access.js';
import { HostAccessSchema, HostKeySchema, HostParam, IscsiCredentialSchema, MetaCredentialSchema, errors, ref } from '../schemas.js';
import type { Api, RouteContext } from './api.js';
import { Page, paged } from './paging.js';

/** What a reader sees of a host's values: their names, not what they hold. */
export const HIDDEN = '[hidden]';

function hostView(req: FastifyRequest, h: HostView): HostView {
  return seesSecrets(req) ? h : { ...h, vars: Object.fromEntries(Object.keys(h.vars).map((k) => [k, HIDDEN])) };
}

const HostKey = ref(HostKeySchema);
const MetaCredential = ref(MetaCredentialSchema);
const IscsiCredential = ref(IscsiCredentialSchema);

export function hostRoutes(app: Api, { deps }: RouteContext): void {
  const { hosts, provisioning, tokens } = deps;
  app.post(
    '/v1/hosts',
    {
      config: { access: 'operate' },
      schema: {
        body: Type.Object(
          {
            id: Type.String({ minLength: 1, maxLength: 63 }),
            mac: Type.Optional(Type.String({ maxLength: 17 })),
            labels: Type.Optional(Type.Record(Type.String(), Type.String())),
            vars: Type.Optional(Type.Record(Type.String(), Type.String(), { description: "values for templates' per-host params" })),
            iqn: Type.Optional(Type.String({ maxLength: 223, description: 'its iSCSI initiator name; made from the id when not given' })),
            boot: Type.Optional(Type.String({ maxLength: 80, description: 'the source it is provisioned from when it network-boots with no copy' })),
            exporter: Type.Optional(Type.Union([Type.Literal('nbd'), Type.Literal('iscsi')], { description: "the exporter that serves it (with --exporter both); default the server's" })),
          },
          { additionalProperties: false },
        ),
        response: { 201: { $ref: 'Host#' }, ...errors(400, 409) },
      },
    },
    async (req, reply) => reply.status(201).send(await hosts.add(req.body)),
  );
  app.get('/v1/hosts', { config: { access: 'read' }, schema: { querystring: Page, response: { 200: Type.Array(Type.Unsafe({ $ref: 'Host#' })) } } }, async (req, reply) =>
    paged(req, reply, await hosts.listWithMappings(), (h) => h.id).map((h) => hostView(req, h)),
  );
  app.get('/v1/hosts/:id', { config: { access: 'host-read' }, schema: { params: HostParam, response: { 200: { $ref: 'Host#' }, ...errors(404) } } }, async (req) =>
    hostView(req, await hosts.getWithMapping(req.params.id)),
  );
  app.delete('/v1/hosts/:id', { config: { access: 'operate' }, schema: { params: HostParam, response: { 204: Type.Null(), ...errors(404, 409) } } }, async (req, reply) => {
    try {
      await hosts.remove(req.params.id);
    } finally {
      // The host's tokens went with it (store.deleteHost): none may still pass from the token cache.
      tokens.invalidate();
    }
    return reply.status(204).send(null);
  });
  app.patch(
    '/v1/hosts/:id/vars',
    {
      config: { access: 'operate' },
      schema: {
        summary: "Set (a string) or remove (null) the host's values for templates' per-host data",
        params: HostParam,
        body: Type.Record(Type.String(), Type.Unsafe<string | null>({ type: ['string', 'null'] })),
        response: { 200: { $ref: 'Host#' }, ...errors(400, 404) },
      },
    },
    (req) => hosts.setVars(req.params.id, req.body),
  );
  app.get(
    '/v1/hosts/:id/key',
    { config: { access: 'operate' }, schema: { summary: "The host's TLS-PSK key (made on first use)", params: HostParam, response: { 200: HostKey, ...errors(404) } } },
    (req) => hosts.key(req.params.id),
  );
  // No body, or an empty object: anything else is a mistake to report, not a rotation.
  const emptyBody = { body: Type.Object({}, { additionalProperties: false }) };
  const noBodyIsEmpty = (req: FastifyRequest, _reply: unknown, done: () => void) => {
    req.body ??= {};
    done();
  };
  app.post(
    '/v1/hosts/:id/key',
    {
      config: { access: 'operate' },
      schema: { summary: "Rotate the host's TLS-PSK key (its open NBD connections are cut)", params: HostParam, ...emptyBody, response: { 200: HostKey, ...errors(400, 404) } },
      preValidation: noBodyIsEmpty,
    },
    (req) => hosts.rotateKey(req.params.id),
  );
  app.get(
    '/v1/hosts/:id/access',
    {
      config: { access: 'host-read' },
      schema: {
        summary: 'How the host reaches its copy over each exporter of this server: what it dials, how it proves itself (no secret), its sessions now',
        params: HostParam,
        response: { 200: ref(HostAccessSchema), ...errors(404) },
      },
    },
    (req) => hosts.access(req.params.id),
  );
  app.get(
    '/v1/hosts/:id/iscsi-credential',
    {
      config: { access: 'operate' },
      schema: { summary: "The host's iSCSI login: initiator name, CHAP user and secret (and mutual CHAP's), made on first use", params: HostParam, response: { 200: IscsiCredential, ...errors(404) } },
    },
    (req) => hosts.iscsiCredential(req.params.id),
  );
  app.post(
    '/v1/hosts/:id/iscsi-credential',
    {
      config: { access: 'operate' },
      schema: {
        summary: "Rotate the host's CHAP secrets (the initiator name stays): its iSCSI sessions end, new ones need the new secrets",
        params: HostParam,
        ...emptyBody,
        response: { 200: IscsiCredential, ...errors(400, 404, 409) },
      },
      preValidation: noBodyIsEmpty,
    },
    (req) => hosts.iscsiCredential(req.params.id, true),
  );
  app.get(
    '/v1/hosts/:id/meta-credential',
    {
      config: { access: 'operate' },
      schema: { summary: "The host's credential for its own cloud-init documents at /v1/meta/HOST/ (HTTP Basic)", params: HostParam, response: { 200: MetaCredential, ...errors(404) } },
    },
    (req) => hosts.metaCredential(req.params.id),
  );
  app.post(
    '/v1/hosts/:id/meta-credential',
    {
      config: { access: 'operate' },
      schema: { summary: "Rotate the host's meta-data credential", params: HostParam, ...emptyBody, response: { 200: MetaCredential, ...errors(400, 404) } },
      preValidation: noBodyIsEmpty,
    },
    (req) => hosts.rotateMetaCredential(req.params.id),
  );
  app.post(
    '/v1/hosts/:id/provision',
    {
      config: { access: 'host-operate' },
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
    { config: { access: 'host-operate' }, schema: { params: HostParam, response: { 200: Type.Object({ hostId: Type.String(), copyId: Type.String() }), ...errors(404) } } },
    (req) => provisioning.release(req.params.id),
  );
}
