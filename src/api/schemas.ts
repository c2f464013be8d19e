import { Type, type Static } from '@sinclair/typebox';

export const ErrorSchema = Type.Object(
  {
    error: Type.Object({
      code: Type.String({ description: 'stable error code, e.g. PRESTAGE_NOT_FOUND' }),
      message: Type.String(),
      details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    }),
  },
  { $id: 'Error' },
);

export const errors = (...codes: number[]) => Object.fromEntries(codes.map((c) => [c, { $ref: 'Error#' }]));

export const ImageSchema = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    version: Type.Integer(),
    ref: Type.String({ description: 'name@version' }),
    sha256: Type.String(),
    sizeBytes: Type.Integer(),
    volume: Type.String(),
    state: Type.String(),
    createdAt: Type.String(),
    kind: Type.Union([Type.Literal('golden'), Type.Literal('template')]),
    baseImageId: Type.Union([Type.String(), Type.Null()], { description: 'for a template version: the golden version it was built from' }),
  },
  { $id: 'Image' },
);

export const ShortageSchema = Type.Object(
  {
    kind: Type.Literal('space'),
    neededBytes: Type.Integer({ description: 'bytes one copy needs' }),
    freeBytes: Type.Integer({ description: 'free bytes not promised to copies in flight, at the last look' }),
    marginBytes: Type.Integer({ description: 'bytes kept free besides' }),
    since: Type.String(),
  },
  { description: 'why the pool cannot reach its target now' },
);

/** What /healthz and /v1/status list as needing attention. */
export const ProblemSchema = Type.Object({
  kind: Type.Literal('space'),
  source: Type.String({ description: 'the pool, or a source asked for on demand' }),
  message: Type.String(),
  neededBytes: Type.Integer(),
  freeBytes: Type.Integer(),
  marginBytes: Type.Integer(),
  since: Type.String(),
});

export const PolicyKind = Type.Union([Type.Literal('static'), Type.Literal('predictive'), Type.Literal('cost')], {
  description:
    'static: keep min spares; predictive: the fewest spares that serve fillRate of requests warm; cost: the spares that maximize cold waits avoided × missCostSpareHours − spares held',
});

export const PoolSchema = Type.Object(
  {
    source: Type.String(),
    policy: Type.Object({
      kind: PolicyKind,
      min: Type.Integer(),
      max: Type.Integer(),
      fillRate: Type.Optional(Type.Number({ description: 'predictive: share of requests to serve warm' })),
      missCostSpareHours: Type.Optional(Type.Number({ description: 'cost: a cold wait costs as much as holding one spare this many hours' })),
    }),
    prewarm: Type.Array(Type.String(), { description: 'known demand ahead: COUNT@HH:MM[/DAYS], UTC' }),
    image: Type.Union([Type.String(), Type.Null()]),
    target: Type.Integer({ description: 'spares the pool holds now: the policy, pre-warm events and the storage budget together' }),
    plan: Type.Union([
      Type.Null(),
      Type.Object({
        requestsPerHour: Type.Number({ description: 'forecast over the next lead time' }),
        meanBatch: Type.Number(),
        leadTimeS: Type.Number({ description: 'one copy, as measured here' }),
        wanted: Type.Integer({ description: 'spares the policy and pre-warm events ask for, before the budget' }),
        granted: Type.Integer({ description: 'what the budget grants of wanted; the target stays above it only while a lowered target falls' }),
        historyCap: Type.Union([Type.Integer(), Type.Null()], {
          description: 'most requests seen within about one lead time: the most a predictive or cost pool asks for; null for a static pool',
        }),
        expectedFill: Type.Union([Type.Number(), Type.Null()], { description: 'expected share of requests served warm at the target' }),
        lastSpareHitsPerHour: Type.Union([Type.Number(), Type.Null()], {
          description: 'warm requests per hour the last spare of the target buys (the marginal value the budget compares between pools)',
        }),
        lastSpareHitsPerHourPerGiB: Type.Union([Type.Number(), Type.Null()], { description: 'the same per GiB of one copy (what a budget in bytes compares)' }),
        reason: Type.String(),
      }),
    ]),
    ready: Type.Integer(),
    making: Type.Integer(),
    mapped: Type.Integer(),
    shortage: Type.Union([Type.Null(), ShortageSchema]),
    createdAt: Type.String(),
  },
  { $id: 'Pool' },
);

export const HostSchema = Type.Object(
  {
    id: Type.String(),
    mac: Type.Union([Type.String(), Type.Null()]),
    labels: Type.Record(Type.String(), Type.String()),
    vars: Type.Record(Type.String(), Type.String(), { description: "the host's values for templates' per-host data" }),
    createdAt: Type.String(),
    mapping: Type.Optional(
      Type.Union([Type.Null(), Type.Object({ copyId: Type.String(), source: Type.String(), imageId: Type.String(), createdAt: Type.String() })]),
    ),
  },
  { $id: 'Host' },
);

export const AccessSchema = Type.Union([
  Type.Object({ kind: Type.Literal('path'), path: Type.String() }),
  Type.Object({ kind: Type.Literal('nbd'), uri: Type.String(), exportName: Type.String() }),
]);

export const ProvisionSchema = Type.Object(
  {
    hostId: Type.String(),
    source: Type.String(),
    image: Type.String(),
    copyId: Type.String(),
    access: AccessSchema,
    outcome: Type.Union([Type.Literal('warm'), Type.Literal('joined'), Type.Literal('cold')]),
    existing: Type.Boolean(),
    waitMs: Type.Number(),
  },
  { $id: 'Provision' },
);

export const CopySchema = Type.Object(
  {
    id: Type.String(),
    imageId: Type.String(),
    pool: Type.Union([Type.String(), Type.Null()]),
    state: Type.String(),
    volume: Type.String(),
    method: Type.Union([Type.String(), Type.Null()]),
    hostId: Type.Union([Type.String(), Type.Null()]),
    error: Type.Union([Type.String(), Type.Null()]),
    createdAt: Type.String(),
    readyAt: Type.Union([Type.String(), Type.Null()]),
    copyMs: Type.Union([Type.Integer(), Type.Null()]),
    progress: Type.Optional(Type.Object({ doneBytes: Type.Integer(), totalBytes: Type.Integer() })),
  },
  { $id: 'Copy' },
);

export const TaskSchema = Type.Object({
  kind: Type.String(),
  subject: Type.String(),
  doneBytes: Type.Integer(),
  totalBytes: Type.Integer(),
  startedAt: Type.String(),
});

export const SourceParam = Type.Object({ source: Type.String({ minLength: 1, maxLength: 80 }) });
export const HostParam = Type.Object({ id: Type.String({ minLength: 1, maxLength: 63 }) });
export const RefParam = Type.Object({ ref: Type.String({ minLength: 1, maxLength: 80 }) });
export const NameParam = Type.Object({ name: Type.String({ minLength: 1, maxLength: 63 }) });

export type ImageBody = Static<typeof ImageSchema>;

export const TemplateBuildSchema = Type.Object(
  {
    id: Type.String(),
    template: Type.String(),
    state: Type.Union([Type.Literal('building'), Type.Literal('done'), Type.Literal('unchanged'), Type.Literal('failed')]),
    trigger: Type.String(),
    baseImageId: Type.Union([Type.String(), Type.Null()]),
    imageId: Type.Union([Type.String(), Type.Null()]),
    version: Type.Union([Type.Integer(), Type.Null()]),
    error: Type.Union([Type.String(), Type.Null()]),
    startedAt: Type.String(),
    finishedAt: Type.Union([Type.String(), Type.Null()]),
    buildMs: Type.Union([Type.Integer(), Type.Null()]),
    rolloverMs: Type.Union([Type.Integer(), Type.Null()], { description: 'from the new base version until provisions got the new template version' }),
    refilledMs: Type.Union([Type.Integer(), Type.Null()], { description: 'from the new base version until the pool held its target of new-version spares' }),
    log: Type.Optional(Type.String()),
  },
  { $id: 'TemplateBuild' },
);

export const TemplateSchema = Type.Object(
  {
    name: Type.String(),
    base: Type.String(),
    rebuild: Type.String(),
    specSha256: Type.String(),
    spec: Type.Unknown(),
    createdAt: Type.String(),
    updatedAt: Type.String(),
    versions: Type.Array(Type.Unsafe({ $ref: 'Image#' })),
    latestBuild: Type.Union([Type.Null(), Type.Unsafe({ $ref: 'TemplateBuild#' })]),
  },
  { $id: 'Template' },
);
