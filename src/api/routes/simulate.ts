import { Type } from '@fastify/type-provider-typebox';
import { BUNDLED_TRACES, SIMULATION_LIMITS, type BundledTrace } from '../../service/index.js';
import { errors } from '../schemas.js';
import type { Api, RouteContext } from './api.js';

const L = SIMULATION_LIMITS;
const BUNDLED = Object.keys(BUNDLED_TRACES) as BundledTrace[];

const scoreFields = {
  requests: Type.Integer(),
  warm: Type.Integer({ description: 'requests that found a spare ready' }),
  hitRate: Type.Number({ description: 'share of requests served warm' }),
  waitP50S: Type.Number(),
  waitP99S: Type.Number(),
  meanSpares: Type.Number({ description: 'time-average of ready spares' }),
  peakSpares: Type.Integer(),
  copies: Type.Integer(),
  discards: Type.Integer(),
  copiesPerRequest: Type.Number(),
  boundViolations: Type.Integer({ description: "instants over a pool's bound: 0" }),
};

const PoolRow = Type.Object({ source: Type.String(), meanTarget: Type.Number(), ...scoreFields });
const Lines = Type.Array(Type.Array(Type.Number()), { description: 'one line per pool (in the order of sources), one value per bucket' });

const SimulationSchema = Type.Object({
  trace: Type.String(),
  format: Type.Union([Type.Literal('csv'), Type.Literal('azure')]),
  learnedOn: Type.Union([Type.String(), Type.Null()]),
  attribution: Type.Union([Type.String(), Type.Null()], { description: 'whose data it is: show it with the results' }),
  sources: Type.Array(Type.String(), { description: 'the pools simulated, busiest first' }),
  spanS: Type.Number(),
  leadTimeS: Type.Number(),
  rows: Type.Array(
    Type.Object({ policy: Type.String(), ...scoreFields, budgetViolations: Type.Integer({ description: 'instants over the budget: 0' }), pools: Type.Array(PoolRow) }),
    { description: 'one per policy: what `prestage simulate` prints' },
  ),
  time: Type.Array(Type.Number(), { description: 'bucket starts, seconds since the epoch' }),
  bucketS: Type.Number(),
  series: Type.Array(Type.Object({ policy: Type.String(), demand: Lines, target: Lines, spares: Lines }), {
    description: 'per policy: requests per bucket, and the time-averaged target and ready spares',
  }),
});

/** `prestage simulate` for the dashboard, bounded (see SIMULATION_LIMITS). */
export function simulateRoutes(app: Api, { deps }: RouteContext): void {
  app.get(
    '/v1/simulate/traces',
    {
      config: { access: 'read' },
      schema: {
        summary: 'The demand traces shipped with prestage that POST /v1/simulate can replay',
        response: { 200: Type.Array(Type.Object({ name: Type.String(), title: Type.String(), attribution: Type.String() })) },
      },
    },
    () => BUNDLED.map((name) => ({ name, title: BUNDLED_TRACES[name].title, attribution: BUNDLED_TRACES[name].attribution })),
  );
  app.post(
    '/v1/simulate',
    {
      config: { access: 'read' },
      schema: {
        summary: 'Replay a demand trace through the pool planner and compare policies, as `prestage simulate` does',
        description: `Changes nothing. Bounded: ${L.policies} policies, the ${L.pools} busiest pools, ${L.traceChars.toLocaleString('en')} characters of trace sent, ${L.timeMs / 1000} s of computing (past that: 400), one run at a time with ${L.queued} waiting (more: 503).`,
        body: Type.Object(
          {
            bundled: Type.Optional(Type.Union(BUNDLED.map((n) => Type.Literal(n)), { description: 'a trace shipped with prestage (GET /v1/simulate/traces)' })),
            text: Type.Optional(Type.String({ minLength: 1, maxLength: L.traceChars, description: 'a trace of your own: CSV time_s,source[,count], or the Azure V1 format' })),
            name: Type.Optional(Type.String({ maxLength: 200, description: "the trace's file name, for messages" })),
            learn: Type.Optional(Type.Boolean({ description: 'with a bundled trace: learn on its training part first (default true)' })),
            policies: Type.Array(Type.String({ minLength: 1, maxLength: 200 }), { minItems: 1, maxItems: L.policies, description: 'static:N | static:SRC=N,… | static-share:N | predictive:FILL[,min=N,max=N] | cost:HOURS[,min=N,max=N]' }),
            top: Type.Optional(Type.Integer({ minimum: 1, maximum: L.pools, description: `the N busiest sources (default ${L.pools})` })),
            hours: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 24 * 366, description: 'score only the first hours of the trace' })),
            leadTimeS: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 86_400, description: 'seconds to make one copy (default 120)' })),
            concurrency: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000, description: 'copies in flight at once (default unlimited)' })),
            budget: Type.Optional(Type.String({ maxLength: 32, description: 'cap on all spares: copies (800) or bytes (500GiB)' })),
          },
          { additionalProperties: false },
        ),
        response: { 200: SimulationSchema, ...errors(400, 503) },
      },
    },
    (req) => deps.simulations.run(req.body),
  );
}
