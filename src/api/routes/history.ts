import { Type } from '@fastify/type-provider-typebox';
import { formatSourceSpec, parseSourceSpec } from '../../domain/index.js';
import { emptyHistory } from '../../service/index.js';
import { SourceParam, errors } from '../schemas.js';
import type { Api, RouteContext } from './api.js';

const Counts = (description: string) => Type.Array(Type.Integer(), { description });
const Latency = (description: string) => Type.Array(Type.Union([Type.Number(), Type.Null()]), { description });

const HistorySchema = Type.Object({
  source: Type.String(),
  sampleS: Type.Number({ description: 'seconds between samples' }),
  at: Type.Array(Type.Integer(), { description: 'sample times, seconds since the epoch, oldest first; every other array has one value per sample' }),
  ready: Counts('spares ready at the sample'),
  inFlight: Counts('copies being made for the pool at the sample'),
  target: Counts("the pool's target at the sample"),
  provisions: Counts('provisions this instance served from the pool since the sample before'),
  warm: Counts('of those, served by a spare that was ready'),
  failed: Counts('provisions asked for that got no copy'),
  latencyMeanMs: Latency('mean time from request to answer of those served; null with none'),
  latencyMaxMs: Latency('longest of them; null with none'),
});

/** What the dashboard's charts plot: the recent past of a pool, sampled in memory (see PoolHistory). */
export function historyRoutes(app: Api, { deps }: RouteContext): void {
  const { history } = deps;
  app.get(
    '/v1/pools/:source/history',
    {
      config: { access: 'read' },
      schema: {
        summary: "A pool's ready spares, copies in flight, target, provisions and their latency over the last hours",
        description: `Sampled every ${history.sampleMs / 1000} s and kept ${history.keepMs / 3_600_000} h in memory by the instance answering (empty after its restart); provisions are those this instance served.`,
        params: SourceParam,
        querystring: Type.Object({ hours: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 24 * 7, description: 'how far back (at most what is kept); default all of it' })) }, { additionalProperties: false }),
        response: { 200: HistorySchema, ...errors(400, 404) },
      },
    },
    async (req) => {
      const source = formatSourceSpec(parseSourceSpec(req.params.source));
      const found = history.history(source, req.query.hours ?? Infinity);
      if (found) return found;
      // A pool made since the last sample has no history yet; one that does not exist is a 404.
      const pool = await deps.pools.get(source);
      return emptyHistory(pool.source, history.sampleMs / 1000);
    },
  );
}
