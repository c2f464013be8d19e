import { Migrator, type Kysely, type Transaction, type Selectable } from 'kysely';
import {
  ConflictError,
  VersionTakenError,
  NotFoundError,
  type ApiRole,
  type ApiToken,
  canMove,
  type Copy,
  type CopyCounts,
  type CopyMethod,
  type CopyState,
  type EventRecord,
  type Host,
  type Image,
  type ImageState,
  type Mapping,
  type NewEvent,
  type Pool,
  type PoolPolicy,
  type Store,
  type BuildState,
  type BuildTrigger,
  type ImageKind,
  type TemplateBuild,
  type TemplateRecord,
  type TemplateSpec,
} from '../domain/index.js';
import type { ApiTokensTable, CopiesTable, Database, HostsTable, ImagesTable, MappingsTable, PoolsTable, TemplateBuildsTable, TemplatesTable } from './schema.js';
import { migrationProvider, type SqlDialectName } from './migrations.js';
import { withDbErrors } from './db-errors.js';

type Db = Kysely<Database> | Transaction<Database>;

const toImage = (r: Selectable<ImagesTable>): Image => ({
  id: r.id,
  name: r.name,
  version: Number(r.version),
  sha256: r.sha256,
  sizeBytes: Number(r.size_bytes),
  volume: r.volume,
  state: r.state as ImageState,
  createdAt: r.created_at,
  kind: r.kind as ImageKind,
  baseImageId: r.base_image_id,
});

const toToken = (r: Selectable<ApiTokensTable>): ApiToken => ({
  name: r.name,
  role: r.role as ApiRole,
  hostId: r.host_id,
  createdAt: r.created_at,
  expiresAt: r.expires_at,
});

const toCopy = (r: Selectable<CopiesTable>): Copy => ({
  id: r.id,
  imageId: r.image_id,
  pool: r.pool,
  state: r.state as CopyState,
  volume: r.volume,
  method: r.method as CopyMethod | null,
  hostId: r.host_id,
  error: r.error,
  createdAt: r.created_at,
  readyAt: r.ready_at,
  copyMs: r.copy_ms === null ? null : Number(r.copy_ms),
});

const toPool = (r: Selectable<PoolsTable>): Pool => ({
  source: r.source,
  policy: JSON.parse(r.policy) as PoolPolicy,
  prewarm: JSON.parse(r.prewarm) as string[],
  createdAt: r.created_at,
});

const toHost = (r: Selectable<HostsTable>): Host => ({
  id: r.id,
  mac: r.mac,
  labels: JSON.parse(r.labels) as Record<string, string>,
  vars: JSON.parse(r.vars) as Record<string, string>,
  createdAt: r.created_at,
});

const toTemplate = (r: Selectable<TemplatesTable>): TemplateRecord => ({
  name: r.name,
  spec: JSON.parse(r.spec) as TemplateSpec,
  specSha256: r.spec_sha256,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

const num = (v: number | null) => (v === null ? null : Number(v));

const toBuild = (r: Selectable<TemplateBuildsTable>): TemplateBuild => ({
  id: r.id,
  template: r.template,
  state: r.state as BuildState,
  trigger: r.trigger as BuildTrigger,
  spec: JSON.parse(r.spec) as TemplateSpec,
  baseImageId: r.base_image_id,
  imageId: r.image_id,
  version: num(r.version),
  log: r.log,
  error: r.error,
  startedAt: r.started_at,
  finishedAt: r.finished_at,
  buildMs: num(r.build_ms),
  rolloverMs: num(r.rollover_ms),
  refilledMs: num(r.refilled_ms),
});

/** TemplateBuild fields → their columns, for partial updates. */
const BUILD_COLUMNS = {
  state: 'state',
  trigger: 'trigger',
  baseImageId: 'base_image_id',
  imageId: 'image_id',
  version: 'version',
  log: 'log',
  error: 'error',
  startedAt: 'started_at',
  finishedAt: 'finished_at',
  buildMs: 'build_ms',
  rolloverMs: 'rollover_ms',
  refilledMs: 'refilled_ms',
} as const satisfies Record<keyof Omit<TemplateBuild, 'id' | 'template' | 'spec'>, keyof TemplateBuildsTable>;

const toMapping = (r: Selectable<MappingsTable>): Mapping => ({
  hostId: r.host_id,
  copyId: r.copy_id,
  source: r.source,
  imageId: r.image_id,
  createdAt: r.created_at,
});

/**
 * The state store on Kysely: one query code path for every SQL dialect. Each public method
 * is one transaction, and every change appends its event in that same transaction.
 */
export class KyselyStore implements Store {
  private constructor(
    private readonly db: Kysely<Database>,
    private readonly dialect: SqlDialectName,
    private readonly now: () => string,
  ) {}

  static async open(db: Kysely<Database>, dialect: SqlDialectName, opts: { readonly now?: () => string; readonly schema?: string } = {}): Promise<KyselyStore> {
    const now = opts.now ?? (() => new Date().toISOString());
    // With a schema of its own, the migrator's tables are looked for there only (it would take
    // another schema's for its own otherwise).
    const migrator = new Migrator({ db, provider: migrationProvider(dialect), ...(opts.schema !== undefined && { migrationTableSchema: opts.schema }) });
    const { error, results } = await migrator.migrateToLatest();
    const failed = results?.find((r) => r.status === 'Error');
    if (error !== undefined || failed) {
      throw new Error(`state store migration failed${failed ? ` at ${failed.migrationName}` : ''}`, { cause: error });
    }
    return withDbErrors(new KyselyStore(db, dialect, now));
  }

  private async event(db: Db, e: NewEvent): Promise<void> {
    await db
      .insertInto('events')
      .values({ at: this.now(), type: e.type, subject: e.subject, data: JSON.stringify(e.data ?? {}) })
      .execute();
  }

  // images ------------------------------------------------------------------------------

  async nextImageVersion(name: string): Promise<number> {
    const r = await this.db.selectFrom('images').select((eb) => eb.fn.max('version').as('v')).where('name', '=', name).executeTakeFirst();
    return Number(r?.v ?? 0) + 1;
  }

  async insertImage(image: Image, event: NewEvent): Promise<void> {
    await this.db.transaction().execute(async (tx) => {
      const clash = await tx.selectFrom('images').select('id').where('name', '=', image.name).where('version', '=', image.version).executeTakeFirst();
      if (clash) throw new VersionTakenError(`image ${image.name}@${image.version} exists already`, { name: image.name, version: image.version });
      // Golden images and templates share one namespace: a name is one or the other.
      const other = await tx.selectFrom('images').select('kind').where('name', '=', image.name).where('kind', '!=', image.kind).executeTakeFirst();
      const template = image.kind === 'golden' ? await tx.selectFrom('templates').select('name').where('name', '=', image.name).executeTakeFirst() : undefined;
      if (other || template) throw new ConflictError(`'${image.name}' is a ${image.kind === 'golden' ? 'template' : 'golden image'}'s name already`, { name: image.name });
      await tx
        .insertInto('images')
        .values({
          id: image.id,
          name: image.name,
          version: image.version,
          sha256: image.sha256,
          size_bytes: image.sizeBytes,
          volume: image.volume,
          state: image.state,
          created_at: image.createdAt,
          kind: image.kind,
          base_image_id: image.baseImageId,
        })
        .execute();
      await this.event(tx, event);
    });
  }

  async getImage(id: string): Promise<Image | undefined> {
    const r = await this.db.selectFrom('images').selectAll().where('id', '=', id).executeTakeFirst();
    return r && toImage(r);
  }

  async findImage(name: string, version: number | null): Promise<Image | undefined> {
    let q = this.db.selectFrom('images').selectAll().where('name', '=', name);
    q = version === null ? q.orderBy('version', 'desc').limit(1) : q.where('version', '=', version);
    const r = await q.executeTakeFirst();
    return r && toImage(r);
  }

  async listImages(): Promise<Image[]> {
    const rows = await this.db.selectFrom('images').selectAll().orderBy('name').orderBy('version').execute();
    return rows.map(toImage);
  }

  async setImageState(id: string, state: ImageState, event: NewEvent): Promise<void> {
    await this.db.transaction().execute(async (tx) => {
      await tx.updateTable('images').set({ state }).where('id', '=', id).execute();
      await this.event(tx, event);
    });
  }

  async deleteImage(id: string, event: NewEvent): Promise<void> {
    await this.db.transaction().execute(async (tx) => {
      const live = await tx
        .selectFrom('copies')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .where('image_id', '=', id)
        .where('state', 'not in', ['gone', 'failed'])
        .executeTakeFirstOrThrow();
      if (Number(live.n) > 0) {
        throw new ConflictError(`image has ${Number(live.n)} live copies; release the hosts using it and shrink its pools first`, { imageId: id });
      }
      await tx.deleteFrom('copies').where('image_id', '=', id).execute();
      const r = await tx.deleteFrom('images').where('id', '=', id).executeTakeFirst();
      if (Number(r.numDeletedRows) === 0) throw new NotFoundError('image', id);
      await this.event(tx, event);
    });
  }

  // pools -------------------------------------------------------------------------------

  async upsertPool(source: string, policy: PoolPolicy, event: NewEvent, prewarm?: readonly string[]): Promise<Pool> {
    return this.db.transaction().execute(async (tx) => {
      const existing = await tx.selectFrom('pools').selectAll().where('source', '=', source).executeTakeFirst();
      const events = prewarm ?? (existing ? (JSON.parse(existing.prewarm) as string[]) : []);
      const values = { policy: JSON.stringify(policy), prewarm: JSON.stringify(events) };
      if (existing) {
        await tx.updateTable('pools').set(values).where('source', '=', source).execute();
      } else {
        await tx.insertInto('pools').values({ source, ...values, created_at: this.now() }).execute();
      }
      await this.event(tx, event);
      return { source, policy, prewarm: events, createdAt: existing?.created_at ?? this.now() };
    });
  }

  async savePoolForecast(source: string, state: string): Promise<void> {
    await this.db.updateTable('pools').set({ forecast: state }).where('source', '=', source).execute();
  }

  async loadPoolForecasts(): Promise<Map<string, string>> {
    const rows = await this.db.selectFrom('pools').select(['source', 'forecast']).where('forecast', 'is not', null).execute();
    return new Map(rows.map((r) => [r.source, r.forecast!]));
  }

  async getPool(source: string): Promise<Pool | undefined> {
    const r = await this.db.selectFrom('pools').selectAll().where('source', '=', source).executeTakeFirst();
    return r && toPool(r);
  }

  async listPools(): Promise<Pool[]> {
    return (await this.db.selectFrom('pools').selectAll().orderBy('source').execute()).map(toPool);
  }

  async deletePool(source: string, event: NewEvent): Promise<void> {
    await this.db.transaction().execute(async (tx) => {
      const r = await tx.deleteFrom('pools').where('source', '=', source).executeTakeFirst();
      if (Number(r.numDeletedRows) === 0) throw new NotFoundError('pool', source);
      await this.event(tx, event);
    });
  }

  // copies ------------------------------------------------------------------------------

  async insertCopy(c: Copy): Promise<void> {
    await this.db
      .insertInto('copies')
      .values({
        id: c.id,
        image_id: c.imageId,
        pool: c.pool,
        state: c.state,
        volume: c.volume,
        method: c.method,
        host_id: c.hostId,
        error: c.error,
        created_at: c.createdAt,
        ready_at: c.readyAt,
        copy_ms: c.copyMs,
        changed_at: this.now(),
      })
      .execute();
  }

  async getCopy(id: string): Promise<Copy | undefined> {
    const r = await this.db.selectFrom('copies').selectAll().where('id', '=', id).executeTakeFirst();
    return r && toCopy(r);
  }

  async listCopies(filter: { state?: CopyState; imageId?: string; notImageId?: string; pool?: string | null } = {}): Promise<Copy[]> {
    let q = this.db.selectFrom('copies').selectAll();
    if (filter.notImageId !== undefined) q = q.where('image_id', '!=', filter.notImageId);
    if (filter.state !== undefined) q = q.where('state', '=', filter.state);
    if (filter.imageId !== undefined) q = q.where('image_id', '=', filter.imageId);
    if (filter.pool !== undefined) q = filter.pool === null ? q.where('pool', 'is', null) : q.where('pool', '=', filter.pool);
    return (await q.orderBy('created_at').orderBy('id').execute()).map(toCopy);
  }

  async countCopies(imageId: string, pool?: string | null): Promise<CopyCounts> {
    let q = this.db
      .selectFrom('copies')
      .select(['state', (eb) => eb.fn.countAll<number>().as('n')])
      .where('image_id', '=', imageId)
      .where('state', 'in', ['ready', 'making', 'mapped']);
    if (pool !== undefined) q = pool === null ? q.where('pool', 'is', null) : q.where('pool', '=', pool);
    const rows = await q.groupBy('state').execute();
    const n = (s: string) => Number(rows.find((r) => r.state === s)?.n ?? 0);
    return { ready: n('ready'), making: n('making'), mapped: n('mapped') };
  }

  async moveCopy(
    id: string,
    from: CopyState,
    to: CopyState,
    patch: Partial<Pick<Copy, 'method' | 'error' | 'readyAt' | 'copyMs'>> = {},
    event?: NewEvent,
  ): Promise<boolean> {
    if (!canMove(from, to)) throw new Error(`copy state ${from} → ${to} is not a transition`);
    return this.db.transaction().execute(async (tx) => {
      const r = await tx
        .updateTable('copies')
        .set({
          state: to,
          changed_at: this.now(),
          ...(patch.method !== undefined && { method: patch.method }),
          ...(patch.error !== undefined && { error: patch.error }),
          ...(patch.readyAt !== undefined && { ready_at: patch.readyAt }),
          ...(patch.copyMs !== undefined && { copy_ms: patch.copyMs }),
        })
        .where('id', '=', id)
        .where('state', '=', from)
        .executeTakeFirst();
      const moved = Number(r.numUpdatedRows) === 1;
      if (moved && event) await this.event(tx, event);
      return moved;
    });
  }

  async claim(
    args: { hostId: string; imageId: string; source: string; copyId?: string; at: string },
    event: NewEvent,
  ): Promise<{ copy: Copy; mapping: Mapping } | undefined> {
    return this.db.transaction().execute(async (tx) => {
      // The state check inside the UPDATE makes the claim atomic on every dialect: two
      // claimers of one copy cannot both see it move from ready to mapped.
      // On PostgreSQL concurrent claimers skip the spare another one has locked and take the
      // next: each gets a different spare at once, none waits on another's lock (SQLite has
      // one writer, so the plain subquery is enough there).
      const pick = tx
        .selectFrom('copies')
        .select('id')
        .where('image_id', '=', args.imageId)
        .where('state', '=', 'ready')
        .orderBy('ready_at')
        .orderBy('id')
        .limit(1)
        .$if(this.dialect === 'postgres', (q) => q.forUpdate().skipLocked());
      const row = await tx
        .updateTable('copies')
        .set({ state: 'mapped', host_id: args.hostId, changed_at: this.now() })
        .where('id', '=', args.copyId ?? pick)
        .where('state', '=', 'ready')
        .where('image_id', '=', args.imageId)
        .returningAll()
        .executeTakeFirst();
      if (!row) return undefined;
      const mapping: Mapping = { hostId: args.hostId, copyId: row.id, source: args.source, imageId: args.imageId, createdAt: args.at };
      await tx
        .insertInto('mappings')
        .values({ host_id: mapping.hostId, copy_id: mapping.copyId, source: mapping.source, image_id: mapping.imageId, created_at: mapping.createdAt })
        .execute();
      await this.event(tx, { ...event, data: { ...event.data, copyId: row.id } });
      return { copy: toCopy(row), mapping };
    });
  }

  async unmap(hostId: string, event: NewEvent): Promise<Copy | undefined> {
    return this.db.transaction().execute(async (tx) => {
      const m = await tx.selectFrom('mappings').selectAll().where('host_id', '=', hostId).executeTakeFirst();
      if (!m) return undefined;
      await tx.deleteFrom('mappings').where('host_id', '=', hostId).execute();
      const row = await tx
        .updateTable('copies')
        .set({ state: 'releasing', changed_at: this.now() })
        .where('id', '=', m.copy_id)
        .where('state', 'in', ['mapped', 'failed'])
        .returningAll()
        .executeTakeFirst();
      await this.event(tx, { ...event, data: { ...event.data, copyId: m.copy_id } });
      return row ? toCopy(row) : (await tx.selectFrom('copies').selectAll().where('id', '=', m.copy_id).executeTakeFirst().then((r) => r && toCopy(r)));
    });
  }

  // hosts -------------------------------------------------------------------------------

  async insertHost(host: Host, event: NewEvent): Promise<void> {
    await this.db.transaction().execute(async (tx) => {
      const clash = await tx.selectFrom('hosts').select('id').where('id', '=', host.id).executeTakeFirst();
      if (clash) throw new ConflictError(`host '${host.id}' exists already`, { hostId: host.id });
      if (host.mac !== null) {
        const macClash = await tx.selectFrom('hosts').select('id').where('mac', '=', host.mac).executeTakeFirst();
        if (macClash) throw new ConflictError(`MAC ${host.mac} belongs to host '${macClash.id}' already`, { mac: host.mac });
      }
      await tx
        .insertInto('hosts')
        .values({ id: host.id, mac: host.mac, labels: JSON.stringify(host.labels), vars: JSON.stringify(host.vars), created_at: host.createdAt, psk: null, meta_secret: null })
        .execute();
      await this.event(tx, event);
    });
  }

  async getHost(id: string): Promise<Host | undefined> {
    const r = await this.db.selectFrom('hosts').selectAll().where('id', '=', id).executeTakeFirst();
    return r && toHost(r);
  }

  async listHosts(): Promise<Host[]> {
    return (await this.db.selectFrom('hosts').selectAll().orderBy('id').execute()).map(toHost);
  }

  async deleteHost(id: string, event: NewEvent): Promise<void> {
    await this.db.transaction().execute(async (tx) => {
      const m = await tx.selectFrom('mappings').select('copy_id').where('host_id', '=', id).executeTakeFirst();
      if (m) throw new ConflictError(`host '${id}' holds a mapping; release it first`, { hostId: id });
      const r = await tx.deleteFrom('hosts').where('id', '=', id).executeTakeFirst();
      if (Number(r.numDeletedRows) === 0) throw new NotFoundError('host', id);
      // A host token dies with its host: a new host of the same id must not inherit it.
      await tx.deleteFrom('api_tokens').where('host_id', '=', id).execute();
      await this.event(tx, event);
    });
  }

  async setHostKey(id: string, pskHex: string, event: NewEvent): Promise<void> {
    await this.db.transaction().execute(async (tx) => {
      const r = await tx.updateTable('hosts').set({ psk: pskHex }).where('id', '=', id).executeTakeFirst();
      if (Number(r.numUpdatedRows) === 0) throw new NotFoundError('host', id);
      await this.event(tx, event);
    });
  }

  async listHostKeys(): Promise<{ hostId: string; psk: string }[]> {
    const rows = await this.db.selectFrom('hosts').select(['id', 'psk']).where('psk', 'is not', null).execute();
    return rows.map((r) => ({ hostId: r.id, psk: r.psk! }));
  }

  async getHostKey(id: string): Promise<string | undefined> {
    const r = await this.db.selectFrom('hosts').select('psk').where('id', '=', id).executeTakeFirst();
    return r?.psk ?? undefined;
  }

  async setHostMetaSecret(id: string, secretHex: string, event: NewEvent): Promise<void> {
    await this.db.transaction().execute(async (tx) => {
      const r = await tx.updateTable('hosts').set({ meta_secret: secretHex }).where('id', '=', id).executeTakeFirst();
      if (Number(r.numUpdatedRows) === 0) throw new NotFoundError('host', id);
      await this.event(tx, event);
    });
  }

  async getHostMetaSecret(id: string): Promise<string | undefined> {
    const r = await this.db.selectFrom('hosts').select('meta_secret').where('id', '=', id).executeTakeFirst();
    return r?.meta_secret ?? undefined;
  }

  async setHostVars(id: string, vars: Readonly<Record<string, string>>, event: NewEvent): Promise<void> {
    await this.db.transaction().execute(async (tx) => {
      const r = await tx.updateTable('hosts').set({ vars: JSON.stringify(vars) }).where('id', '=', id).executeTakeFirst();
      if (Number(r.numUpdatedRows) === 0) throw new NotFoundError('host', id);
      await this.event(tx, event);
    });
  }

  // templates ---------------------------------------------------------------------------

  async upsertTemplate(t: TemplateRecord, event: NewEvent): Promise<void> {
    await this.db.transaction().execute(async (tx) => {
      const golden = await tx.selectFrom('images').select('id').where('name', '=', t.name).where('kind', '=', 'golden').executeTakeFirst();
      if (golden) throw new ConflictError(`'${t.name}' is a golden image's name already; a template needs a name of its own`, { name: t.name });
      const values = { spec: JSON.stringify(t.spec), spec_sha256: t.specSha256, updated_at: t.updatedAt };
      const r = await tx.updateTable('templates').set(values).where('name', '=', t.name).executeTakeFirst();
      if (Number(r.numUpdatedRows) === 0) await tx.insertInto('templates').values({ name: t.name, created_at: t.createdAt, ...values }).execute();
      await this.event(tx, event);
    });
  }

  async getTemplate(name: string): Promise<TemplateRecord | undefined> {
    const r = await this.db.selectFrom('templates').selectAll().where('name', '=', name).executeTakeFirst();
    return r && toTemplate(r);
  }

  async listTemplates(): Promise<TemplateRecord[]> {
    return (await this.db.selectFrom('templates').selectAll().orderBy('name').execute()).map(toTemplate);
  }

  async deleteTemplate(name: string, event: NewEvent): Promise<void> {
    await this.db.transaction().execute(async (tx) => {
      const r = await tx.deleteFrom('templates').where('name', '=', name).executeTakeFirst();
      if (Number(r.numDeletedRows) === 0) throw new NotFoundError('template', name);
      await tx.deleteFrom('template_builds').where('template', '=', name).execute();
      await this.event(tx, event);
    });
  }

  async insertBuild(b: TemplateBuild): Promise<void> {
    await this.db
      .insertInto('template_builds')
      .values({
        id: b.id,
        template: b.template,
        state: b.state,
        trigger: b.trigger,
        spec: JSON.stringify(b.spec),
        base_image_id: b.baseImageId,
        image_id: b.imageId,
        version: b.version,
        log: b.log,
        error: b.error,
        started_at: b.startedAt,
        finished_at: b.finishedAt,
        build_ms: b.buildMs,
        rollover_ms: b.rolloverMs,
        refilled_ms: b.refilledMs,
      })
      .execute();
  }

  async updateBuild(id: string, patch: Partial<Omit<TemplateBuild, 'id' | 'template' | 'spec'>>, event?: NewEvent): Promise<void> {
    const set: Record<string, unknown> = {};
    for (const [field, column] of Object.entries(BUILD_COLUMNS)) {
      const v = patch[field as keyof typeof BUILD_COLUMNS];
      if (v !== undefined) set[column] = v;
    }
    await this.db.transaction().execute(async (tx) => {
      if (Object.keys(set).length > 0) await tx.updateTable('template_builds').set(set).where('id', '=', id).execute();
      if (event) await this.event(tx, event);
    });
  }

  async listBuilds(template: string): Promise<TemplateBuild[]> {
    return (await this.db.selectFrom('template_builds').selectAll().where('template', '=', template).orderBy('started_at', 'desc').orderBy('id', 'desc').execute()).map(toBuild);
  }

  async buildOfImage(imageId: string): Promise<TemplateBuild | undefined> {
    const r = await this.db.selectFrom('template_builds').selectAll().where('image_id', '=', imageId).where('state', '=', 'done').executeTakeFirst();
    return r && toBuild(r);
  }

  async getMapping(hostId: string): Promise<Mapping | undefined> {
    const r = await this.db.selectFrom('mappings').selectAll().where('host_id', '=', hostId).executeTakeFirst();
    return r && toMapping(r);
  }

  async listMappings(): Promise<Mapping[]> {
    return (await this.db.selectFrom('mappings').selectAll().orderBy('host_id').execute()).map(toMapping);
  }

  // API tokens --------------------------------------------------------------------------

  async insertToken(token: ApiToken, sha256: string, event: NewEvent): Promise<void> {
    await this.db.transaction().execute(async (tx) => {
      const clash = await tx.selectFrom('api_tokens').select('name').where('name', '=', token.name).executeTakeFirst();
      if (clash) throw new ConflictError(`token '${token.name}' exists already; revoke it first or pick another name`, { name: token.name });
      await tx
        .insertInto('api_tokens')
        .values({ name: token.name, role: token.role, host_id: token.hostId, sha256, created_at: token.createdAt, expires_at: token.expiresAt })
        .execute();
      await this.event(tx, event);
    });
  }

  async findToken(sha256: string): Promise<ApiToken | undefined> {
    const r = await this.db.selectFrom('api_tokens').selectAll().where('sha256', '=', sha256).executeTakeFirst();
    return r && toToken(r);
  }

  async listTokens(): Promise<ApiToken[]> {
    return (await this.db.selectFrom('api_tokens').selectAll().orderBy('name').execute()).map(toToken);
  }

  async deleteToken(name: string, event: NewEvent): Promise<void> {
    await this.db.transaction().execute(async (tx) => {
      const r = await tx.deleteFrom('api_tokens').where('name', '=', name).executeTakeFirst();
      if (Number(r.numDeletedRows) === 0) throw new NotFoundError('token', name);
      await this.event(tx, event);
    });
  }

  // events ------------------------------------------------------------------------------

  async appendEvent(event: NewEvent): Promise<void> {
    await this.event(this.db, event);
  }

  async listEvents(opts: { afterSeq?: number; limit?: number } = {}): Promise<EventRecord[]> {
    const rows = await this.db
      .selectFrom('events')
      .selectAll()
      .where('seq', '>', opts.afterSeq ?? 0)
      .orderBy('seq')
      .limit(opts.limit ?? 1000)
      .execute();
    return rows.map((r) => ({ seq: Number(r.seq), at: r.at, type: r.type, subject: r.subject, data: JSON.parse(r.data) as Record<string, unknown> }));
  }

  async prune(cutoffs: { eventsBefore: Date; copiesGoneBefore: Date }): Promise<{ events: number; copies: number }> {
    const eventsBefore = cutoffs.eventsBefore.toISOString();
    const copiesGoneBefore = cutoffs.copiesGoneBefore.toISOString();
    return this.db.transaction().execute(async (tx) => {
      const horizon = Number((await tx.selectFrom('event_horizon').select('before_seq').where('id', '=', 1).executeTakeFirstOrThrow()).before_seq);
      // Walks up from the horizon in seq order and stops at the first recent event: the cost is
      // the rows about to go, with no index on `at`. Times that step back (a clock reset) only
      // keep some old events longer; an event at or after the cutoff is never below the result.
      const firstKept = await tx.selectFrom('events').select('seq').where('seq', '>=', horizon).where('at', '>=', eventsBefore).orderBy('seq').limit(1).executeTakeFirst();
      let raised = horizon;
      if (firstKept) {
        raised = Number(firstKept.seq);
      } else {
        const last = await tx.selectFrom('events').select((eb) => eb.fn.max('seq').as('seq')).executeTakeFirst();
        if (last?.seq !== null && last?.seq !== undefined) raised = Number(last.seq) + 1;
      }
      let events = 0;
      if (raised > horizon) {
        await tx.updateTable('event_horizon').set({ before_seq: raised }).where('id', '=', 1).execute();
        events = Number((await tx.deleteFrom('events').where('seq', '<', raised).executeTakeFirst()).numDeletedRows);
      }
      // A gone copy has no volume and no mapping; the NOT EXISTS keeps the foreign key's promise
      // should a row ever say otherwise. A NULL changed_at never compares older: it stays.
      const copies = Number(
        (
          await tx
            .deleteFrom('copies')
            .where('state', '=', 'gone')
            .where('changed_at', '<', copiesGoneBefore)
            .where((eb) => eb.not(eb.exists(eb.selectFrom('mappings').select('mappings.copy_id').whereRef('mappings.copy_id', '=', 'copies.id'))))
            .executeTakeFirst()
        ).numDeletedRows,
      );
      if (events > 0 || copies > 0) {
        await this.event(tx, { type: 'retention.pruned', subject: 'store', data: { events, copies, eventsBeforeSeq: raised, eventsBefore, copiesGoneBefore } });
      }
      return { events, copies };
    });
  }

  get dialectName(): SqlDialectName {
    return this.dialect;
  }

  async close(): Promise<void> {
    await this.db.destroy();
  }
}
