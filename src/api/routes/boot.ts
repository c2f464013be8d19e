import { Type } from '@fastify/type-provider-typebox';
import { ForbiddenError, isPrestageError, type Host } from '../../domain/index.js';
import { ipxeRetryScript, ipxeSanbootScript } from '../../service/boot-script.js';
import { errors } from '../schemas.js';
import type { Api, RouteContext } from './api.js';

/**
 * Network boot: iPXE asks `GET /v1/boot/ipxe?mac=${net0/mac}` and gets a script that boots the
 * host from its copy over iSCSI, with the host's own initiator name and CHAP credentials.
 *
 * Trust: no token — firmware has none. The provisioning network is trusted to present MACs
 * honestly, so the endpoint answers only `--boot-networks` (none by default); what a script
 * reveals opens that one host's target only.
 */
export function bootRoutes(app: Api, { deps }: RouteContext): void {
  const { hosts, provisioning, boot } = deps;
  app.get(
    '/v1/boot/ipxe',
    {
      config: { access: 'public' },
      schema: {
        summary: 'An iPXE script that boots the host (by MAC or id) from its copy over iSCSI; only from --boot-networks',
        querystring: Type.Object({ mac: Type.Optional(Type.String({ maxLength: 64 })), host: Type.Optional(Type.String({ maxLength: 63 })) }),
        response: { 200: { description: 'the iPXE script', content: { 'text/plain': { schema: Type.String() } } }, ...errors(400, 403) },
      },
    },
    async (req, reply) => {
      if (!boot.networks.allows(req.socket.remoteAddress)) {
        throw new ForbiddenError(`boot scripts are served to --boot-networks only (${boot.networks.empty ? 'none configured' : boot.networks.cidrs.join(', ')}); ${req.socket.remoteAddress ?? 'this address'} is not in them`);
      }
      const { mac, host: hostId } = req.query;
      // Asks again for the same host: the retry keeps the MAC or id it was asked with.
      const self = `${req.protocol}://${req.host}/v1/boot/ipxe?${mac !== undefined ? `mac=${encodeURIComponent(mac.toLowerCase())}` : `host=${encodeURIComponent(hostId ?? '')}`}`;
      const send = (script: string) => reply.type('text/plain; charset=utf-8').header('cache-control', 'no-store').send(script);
      let host: Host | undefined;
      if (mac !== undefined) host = await hosts.getByMac(mac);
      else if (hostId !== undefined) host = await hosts.get(hostId).catch(() => undefined);
      if (!host) return send(ipxeRetryScript(`no host is registered with ${mac !== undefined ? `MAC ${mac}` : `id ${hostId ?? '(none given)'}`}: prestage host add ID --mac MAC --boot SOURCE`, self));
      const mapped = await hosts.getWithMapping(host.id);
      const source = mapped.mapping?.source ?? host.boot;
      if (source === null) return send(ipxeRetryScript(`host ${host.id} has no copy and no boot source: prestage provision ${host.id} SOURCE, or host add --boot SOURCE`, self));
      try {
        // Idempotent for a mapped host; otherwise a claim (warm when a spare is ready).
        const p = await provisioning.provision(host.id, source);
        if (p.access.kind !== 'iscsi') return send(ipxeRetryScript(`host ${host.id} is served over ${p.access.kind}, not iSCSI: network boot needs --exporter iscsi (or both, with the host's exporter iscsi)`, self));
        const auth = await hosts.iscsiAuth(host.id);
        return send(ipxeSanbootScript({ hostId: host.id, portal: p.access.portal, target: p.access.target, lun: p.access.lun, initiator: auth.initiator, chap: auth.chap, ...(auth.mutual && { mutual: auth.mutual }) }, self));
      } catch (err) {
        if (!isPrestageError(err)) throw err;
        return send(ipxeRetryScript(`host ${host.id} cannot be provisioned from ${source} now: ${err.message}`, self));
      }
    },
  );
}
