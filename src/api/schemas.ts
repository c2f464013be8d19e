import { Type, type Static, type TSchema } from '@sinclair/typebox';
import type { Access, ExporterAccess } from '../domain/index.js';

/**
 * A reference to a named schema (one with an `$id`, added to the API in server.ts), typed as
 * the schema itself. Named schemas become `components.schemas.<$id>` in the OpenAPI document,
 * and so the type names the CLI and the dashboard import (src/api/types.ts).
 */
export function ref<T extends TSchema>(schema: T) {
  if (schema.$id === undefined) throw new Error('ref() needs a schema with an $id');
  return Type.Unsafe<Static<T>>({ $ref: `${schema.$id}#` });
}

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
    driver: Type.Union([Type.String(), Type.Null()], { description: 'where its volume and its copies live: file (the data directory) or rbd (Ceph); null when no configured driver stores it' }),
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
export const ProblemSchema = Type.Object(
  {
    kind: Type.Literal('space'),
    source: Type.String({ description: 'the pool, or a source asked for on demand' }),
    message: Type.String(),
    neededBytes: Type.Integer(),
    freeBytes: Type.Integer(),
    marginBytes: Type.Integer(),
    since: Type.String(),
  },
  { $id: 'Problem' },
);

export const HealthSchema = Type.Object(
  {
    ok: Type.Boolean({ description: 'false while anything needs attention' }),
    status: Type.Union([Type.Literal('ok'), Type.Literal('degraded')]),
    replenisher: Type.String(),
    problems: Type.Array(ref(ProblemSchema)),
  },
  { $id: 'Health' },
);

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
    iqn: Type.Union([Type.String(), Type.Null()], { description: 'its iSCSI initiator name (null: from before iSCSI, made on first use)' }),
    boot: Type.Union([Type.String(), Type.Null()], { description: 'the source it boots when it has no copy' }),
    exporter: Type.Union([Type.Literal('nbd'), Type.Literal('iscsi'), Type.Null()], { description: "the exporter that serves it; null: the server's" }),
    mapping: Type.Optional(
      Type.Union([Type.Null(), Type.Object({ copyId: Type.String(), source: Type.String(), imageId: Type.String(), createdAt: Type.String() })]),
    ),
  },
  { $id: 'Host' },
);

/** The schema of the domain's one definition of how a host reaches its copy (`Access`, src/domain/access.ts). */
export const AccessSchema = Type.Union(
  [
    Type.Object({ kind: Type.Literal('path'), path: Type.String({ description: 'the copy as a file on the server (hosts that share its storage)' }) }),
    Type.Object({
      kind: Type.Literal('nbd'),
      uri: Type.String({ description: 'nbd:// or nbds:// URI; with TLS-PSK the identity is the user part (the host id)' }),
      exportName: Type.String(),
    }),
    Type.Object({
      kind: Type.Literal('iscsi'),
      portal: Type.String({ description: 'ADDRESS:PORT ([v6]:PORT) of the iSCSI portal' }),
      target: Type.String({ description: "the host's target name (IQN)" }),
      lun: Type.Integer({ description: 'the LUN of the copy (1: LUN 0 is the controller)' }),
      initiator: Type.String({ description: 'the one initiator name the target lets in' }),
      chapUser: Type.String({ description: 'the CHAP user the host logs in as' }),
      mutualChapUser: Type.Optional(Type.String({ description: 'with mutual CHAP: the user the target proves itself as' })),
    }),
  ],
  { description: 'how the host reaches its copy, by exporter' },
);

// Both ways assignable: the schema and the domain type stay the same type.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const accessSchemaIsTheDomainType: Same<Static<typeof AccessSchema>, Access> = true;
void accessSchemaIsTheDomainType;


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

export const TaskSchema = Type.Object(
  {
    kind: Type.String({ description: 'import: a file on the server; upload: a request body; download: a URL the server fetches; build: a template' }),
    subject: Type.String(),
    doneBytes: Type.Integer(),
    totalBytes: Type.Integer(),
    startedAt: Type.String(),
  },
  { $id: 'Task' },
);

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

export const EventSchema = Type.Object(
  {
    seq: Type.Integer({ description: 'its place in the log: ascending, never reused (a rolled-back change can leave a number out)' }),
    at: Type.String(),
    type: Type.String({ description: 'what happened, e.g. host.provisioned, copy.ready' }),
    subject: Type.String({ description: 'what it happened to: a host, copy, image, pool or template' }),
    data: Type.Record(Type.String(), Type.Unknown()),
  },
  { $id: 'Event' },
);

const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);

export const InstanceSchema = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    host: Type.String(),
    pid: Type.Integer(),
    version: Type.String(),
    api: Nullable(Type.String()),
    nbd: Nullable(Type.String()),
    startedAt: Type.String(),
    heartbeatAt: Type.String(),
    stoppedAt: Nullable(Type.String()),
    reapedAt: Nullable(Type.String()),
    reapedBy: Nullable(Type.String()),
    live: Type.Boolean({ description: 'heard of within the lease time (or known dead on this machine)' }),
    self: Type.Boolean({ description: 'the instance answering this request' }),
    pools: Type.Array(Type.String(), { description: 'pools whose lease it holds: it refills them' }),
  },
  { $id: 'Instance' },
);

export const StatusSchema = Type.Object(
  {
    version: Type.String(),
    dataDir: Type.String(),
    driver: Type.String({ description: 'the configured drivers, e.g. "file, rbd"' }),
    exporter: Type.String(),
    replenisher: Type.String(),
    problems: Type.Array(ref(ProblemSchema), { description: 'what needs attention; empty when all is well' }),
    images: Type.Integer(),
    hosts: Type.Integer(),
    mapped: Type.Integer({ description: 'hosts with a copy mapped' }),
    waitingProvisions: Type.Integer({ description: 'provisions waiting for a copy on this instance' }),
    copiesInFlight: Type.Array(
      Type.Object({ copyId: Type.String(), imageId: Type.String(), pool: Nullable(Type.String()), doneBytes: Type.Integer(), totalBytes: Type.Integer() }),
      { description: 'copies this instance is making' },
    ),
    pools: Type.Array(ref(PoolSchema)),
    instances: Type.Array(
      Type.Object({
        id: Type.String(),
        name: Type.String(),
        live: Type.Boolean(),
        self: Type.Boolean({ description: 'the instance answering this request' }),
        heartbeatAt: Type.String(),
        pools: Type.Array(Type.String(), { description: 'pools it leads (refills)' }),
      }),
      { description: 'the instances sharing the state (one with SQLite)' },
    ),
    iscsi: Nullable(
      Type.Object(
        {
          portal: Type.String(),
          tgtd: Type.String({ description: "the supervised tgtd's state: STARTING, RUNNING, RESTARTING, STOPPED…" }),
          restarts: Type.Integer({ description: 'times tgtd was restarted after it died' }),
          exported: Type.Integer({ description: 'hosts with a copy exported over iSCSI here' }),
          sessions: Type.Array(Type.Object({ hostId: Nullable(Type.String()), initiator: Type.String(), address: Nullable(Type.String()) })),
        },
        { description: 'the iSCSI exporter of this instance; null when it runs none' },
      ),
    ),
  },
  { $id: 'Status' },
);

export const HostKeySchema = Type.Object({ hostId: Type.String(), identity: Type.String(), key: Type.String(), pskFileLine: Type.String() }, { $id: 'HostKey' });

export const MetaCredentialSchema = Type.Object(
  {
    hostId: Type.String(),
    user: Type.String({ description: 'HTTP Basic user: the host id' }),
    secret: Type.String({ description: 'HTTP Basic password for /v1/meta/HOST/ only' }),
  },
  { $id: 'MetaCredential' },
);

export const IscsiCredentialSchema = Type.Object(
  {
    hostId: Type.String(),
    initiator: Type.String({ description: 'the initiator name the host must log in with' }),
    chapUser: Type.String(),
    chapSecret: Type.String({ description: 'the CHAP secret the host proves itself with' }),
    mutualChapUser: Nullable(Type.String({ description: 'with mutual CHAP: the user the target proves itself as' })),
    mutualChapSecret: Nullable(Type.String()),
  },
  { $id: 'IscsiCredential' },
);

export const HostAccessSchema = Type.Object(
  {
    hostId: Type.String(),
    mapping: Nullable(Type.Object({ copyId: Type.String(), source: Type.String() })),
    exporters: Type.Array(
      Type.Object({
        exporter: Type.Union([Type.Literal('nbd'), Type.Literal('iscsi'), Type.Literal('path')]),
        serves: Type.Boolean({ description: "this exporter serves the host's copy" }),
        access: Nullable(AccessSchema),
        credential: Type.String({ description: 'how the host proves itself, and where it gets the secret' }),
        sessions: Type.Integer({ description: 'its open NBD connections or iSCSI sessions on this instance now' }),
      }),
    ),
  },
  { $id: 'HostAccess' },
);
const hostAccessIsTheDomainType: Same<Static<typeof HostAccessSchema>['exporters'][number], ExporterAccess> = true;
void hostAccessIsTheDomainType;

export const RoleSchema = Type.Union([Type.Literal('admin'), Type.Literal('operator'), Type.Literal('reader'), Type.Literal('host'), Type.Literal('metrics')]);

const tokenFields = {
  name: Type.String(),
  role: RoleSchema,
  hostId: Nullable(Type.String()),
  createdAt: Type.String(),
  expiresAt: Nullable(Type.String()),
};

export const TokenSchema = Type.Object(tokenFields, { $id: 'Token' });

export const NewTokenSchema = Type.Object({ ...tokenFields, token: Type.String({ description: 'the secret: shown in this reply only' }) }, { $id: 'NewToken' });

/** Every named schema, added to the API in this order (server.ts); each is a type of src/api/types.ts. */
export const NAMED_SCHEMAS: readonly TSchema[] = [
  ErrorSchema,
  ImageSchema,
  PoolSchema,
  HostSchema,
  ProvisionSchema,
  CopySchema,
  TemplateBuildSchema,
  TemplateSchema,
  ProblemSchema,
  HealthSchema,
  TaskSchema,
  EventSchema,
  InstanceSchema,
  StatusSchema,
  HostKeySchema,
  MetaCredentialSchema,
  IscsiCredentialSchema,
  HostAccessSchema,
  TokenSchema,
  NewTokenSchema,
];
