import { Type } from '@fastify/type-provider-typebox';
import type { Api, RouteContext } from './api.js';

/**
 * Prometheus scrapes here. Its own access level, so that a scrape-only `metrics` token opens this
 * and nothing else; the people's roles may read it too.
 */
export function metricsRoutes(app: Api, { deps }: RouteContext): void {
  app.get(
    '/metrics',
    {
      config: { access: 'metrics' },
      schema: {
        summary: 'Metrics in the Prometheus text format (`prestage_*`, and the Node process)',
        response: { 200: { description: 'The exposition', content: { 'text/plain': { schema: Type.String() } } } },
      },
    },
    async (_req, reply) => {
      const { contentType, body } = await deps.metrics.render();
      return reply.type(contentType).send(body);
    },
  );
}
