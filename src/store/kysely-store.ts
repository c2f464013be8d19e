import { Migrator, sql, type Compilable, type Kysely, type QueryResult, type Transaction, type Selectable } from 'kysely';
import {
  ConflictError,
  VersionTakenError,
  NotFoundError,
  type ApiRole,
  type ApiToken,
  canMove,
  type Copy,
  type CopyCounts,
  type CopyState,
  type EventRecord,
  type Host,
  type HostIscsiSecrets,
  type Image,
  type ImageState,
  type InstanceRecord,
  type PoolLease,
  type ReapedWork,
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
import type { ApiTokensTable, CopiesTable, Database, HostsTable, ImagesTable, InstancesTable, MappingsTable, PoolLeasesTable, PoolsTable, TemplateBuildsTable, TemplatesTable } from './schema.js';
import { migrationProvider, type SqlDialectName } from './migrations.js';
import { withDbErrors } from './db-errors.js';

type Db = Kysely<Database> | Transaction<Database>;

/** How long a live reader of the log waits for the transactions that may fill a gap (`tailEvents`). */
const TAIL_SETTLE_MS = 10_000;
/** The moment between a statement taking an event's number and its transaction taking an id. */
const TAIL_GRACE_MS = 50;

/** The index of the first event that does not follow the one before it (`afterSeq` before the first); -1 when none. */
function firstGap(afterSeq: number, events: readonly EventRecord[]): number {
  return events.findIndex((e, i) => e.seq !== (i === 0 ? afterSeq : events[i - 1]!.seq) + 1);
}

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

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
  method: r.method,
  hostId: r.host_id,
  error: r.error,
  createdAt: r.created_at,
  readyAt: r.ready_at,
  copyMs: r.copy_ms === null ? null : Number(r.copy_ms),
  owner: r.owner,
  fence: r.fence === null ? null : Number(r.fence),
});

const toPool = (r: Selectable<PoolsTable>): Pool => ({
  source: r.source,
  policy: JSON.parse(r.policy) as PoolPolicy,
  prewarm: JSON.parse(r.prewarm) as string[],
  createdAt: r.created_at,
});

const toHost = (r: Pick<Selectable<HostsTable>, 'id' | 'mac' | 'labels' | 'vars' | 'created_at' | 'iqn' | 'boot_source' | 'exporter'>): Host => ({
  id: r.id,
  mac: r.mac,
  labels: JSON.parse(r.labels) as Record<string, string>,
  vars: JSON.parse(r.vars) as Record<string, string>,
  createdAt: r.created_at,
  iqn: r.iqn,
  boot: r.boot_source,
  exporter: r.exporter === 'nbd' || r.exporter === 'iscsi' ? r.exporter : null,
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
  owner: r.owner,
});

const toInstance = (r: Selectable<InstancesTable>): InstanceRecord => ({
  id: r.id,
  name: r.name,
  host: r.host,
  pid: Number(r.pid),
  version: r.version,
  api: r.api,
  nbd: r.nbd,
  startedAt: r.started_at,
  heartbeatAt: r.heartbeat_at,
  stoppedAt: r.stopped_at,
  reapedAt: r.reaped_at,
  reapedBy: r.reaped_by,
});

/**
 * A lease given up or taken from the dead is not deleted but made expired (the empty string sorts
 * before every time), so the next holder's epoch is one more than the last: epochs never repeat.
 */
const EXPIRED = '';

const toLease = (r: Selectable<PoolLeasesTable>): PoolLease => ({ source: r.source, instanceId: r.instance_id, epoch: Number(r.epoch), expiresAt: r.expires_at });

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
  owner: 'owner',
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
    /** Waited for after the connections closed (SQLite: its checkpointer's own connection). */
    private readonly afterClose?: () => Promise<void>,
  ) {}

  static async open(db: Kysely<Database>, dialect: SqlDialectName, opts: { readonly now?: () => string; readonly schema?: string; readonly afterClose?: () => Promise<void> } = {}): Promise<KyselyStore> {
    const now = opts.now ?? (() => new Date().toISOString());
    // With a schema of its own, the migrator's tables are looked for there only (it would take
    // another schema's for its own otherwise).
    const migrator = new Migrator({ db, provider: migrationProvider(dialect), ...(opts.schema !== undefined && { migrationTableSchema: opts.schema }) });
    const { error, results } = await migrator.migrateToLatest();
    const failed = results?.find((r) => r.status === 'Error');
    if (error !== undefined || failed) {
      throw new Error(`state store migration failed${failed ? ` at ${failed.migrationName}` : ''}`, { cause: error });
    }
    return withDbErrors(new KyselyStore(db, dialect, now, opts.afterClose));
  }

  private async event(db: Db, e: NewEvent): Promise<void> {
    await db
      .insertInto('events')
      .values({ at: this.now(), type: e.type, subject: e.subject, data: JSON.stringify(e.data ?? {}) })
      .execute();
    if (db === this.db) this.eventsAppended();
    else this.appendedIn.add(db);
  }

  /** Transactions that appended events: their listeners are told once they committed (`transact`). */
  private readonly appendedIn = new WeakSet<object>();
  private readonly appendListeners = new Set<() => void>();

  onEventsAppended(listener: () => void): () => void {
    this.appendListeners.add(listener);
    return () => this.appendListeners.delete(listener);
  }

  private eventsAppended(): void {
    for (const listener of this.appendListeners) {
      try {
        listener();
      } catch {
        // A listener only wakes readers up; its failure must not fail the change that committed.
      }
    }
  }

  /** One transaction; when it appended events, their listeners are told after the commit (not before: a reader woken early would find nothing). */
  private async transact<T>(fn: (tx: Transaction<Database>) => Promise<T>): Promise<T> {
    let appended = false;
    const result = await this.db.transaction().execute(async (tx) => {
      const r = await fn(tx);
      appended = this.appendedIn.has(tx);
      return r;
    });
    if (appended) this.eventsAppended();
    return result;
  }

  // images ------------------------------------------------------------------------------

  async nextImageVersion(name: string): Promise<number> {
    const r = await this.db.selectFrom('images').select((eb) => eb.fn.max('version').as('v')).where('name', '=', name).executeTakeFirst();
    return Number(r?.v ?? 0) + 1;
  }

  async insertImage(image: Image, event: NewEvent): Promise<void> {
    await this.transact(async (tx) => {
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
    const r = (await this.hot.getImage(this.db, id)).rows[0];
    return r && toImage(r);
  }

  async findImage(name: string, version: number | null): Promise<Image | undefined> {
    const r = (version === null ? await this.hot.findNewestImage(this.db, name) : await this.hot.findImageVersion(this.db, name, version)).rows[0];
    return r && toImage(r);
  }

  async listImages(): Promise<Image[]> {
    const rows = await this.db.selectFrom('images').selectAll().orderBy('name').orderBy('version').execute();
    return rows.map(toImage);
  }

  async setImageState(id: string, state: ImageState, event: NewEvent): Promise<void> {
    await this.transact(async (tx) => {
      await tx.updateTable('images').set({ state }).where('id', '=', id).execute();
      await this.event(tx, event);
    });
  }

  async deleteImage(id: string, event: NewEvent): Promise<void> {
    await this.transact(async (tx) => {
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
    return this.transact(async (tx) => {
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
    await this.transact(async (tx) => {
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
        owner: c.owner ?? null,
        fence: c.fence ?? null,
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
    return this.transact(async (tx) => {
      let q = tx
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
        .where('state', '=', from);
      if (from === 'making' && to === 'ready') {
        // The fence: a spare whose maker lost its pool's lease (paused, partitioned, declared
        // dead) stays unready even if its bytes are complete; the new leader makes its own.
        q = q.where((eb) =>
          eb.or([
            eb('fence', 'is', null),
            eb.exists(
              eb
                .selectFrom('pool_leases')
                .select(eb.lit(1).as('one'))
                .whereRef('pool_leases.source', '=', 'copies.pool')
                .whereRef('pool_leases.instance_id', '=', 'copies.owner')
                .whereRef('pool_leases.epoch', '=', 'copies.fence'),
            ),
          ]),
        );
      }
      const r = await q.executeTakeFirst();
      const moved = Number(r.numUpdatedRows) === 1;
      if (moved && event) await this.event(tx, event);
      return moved;
    });
  }

  // the provision path's queries, prepared -------------------------------------------------

  /**
   * A query built and compiled once, then run with new values: Kysely's builders and compiler
   * cost more per call than SQLite's own work on these lookups (measured here: a primary-key
   * select 35 µs built anew, 18 µs precompiled). `build` gets one placeholder per argument and
   * puts each where its value goes; each run swaps the placeholders among the compiled
   * parameters for its arguments, in the same places, and keeps the query's own constants.
   * The store's Kysely has no plugins, so the query the compiler saw is the query that runs.
   */
  private static prepare<R>(this: void, db: Kysely<Database>, arity: number, build: (...slots: never[]) => Compilable<R>): (executor: Db, ...args: unknown[]) => Promise<QueryResult<R>> {
    const slots = Array.from({ length: arity }, (_, i) => ({ preparedArgument: i }));
    const compiled = build(...(slots as never[])).compile();
    const from = compiled.parameters.map((p) => slots.indexOf(p as (typeof slots)[number]));
    for (let i = 0; i < arity; i++) if (!from.includes(i)) throw new Error(`prepared query: argument ${i} is not in ${compiled.sql}`);
    return (executor, ...args) => {
      if (args.length !== arity) throw new Error(`prepared query: ${args.length} arguments for ${arity}`);
      return executor.executeQuery<R>({ ...compiled, parameters: from.map((i, j) => (i >= 0 ? args[i] : compiled.parameters[j])) });
    };
  }

  private hotQueries: ReturnType<KyselyStore['prepareHot']> | undefined;

  /** The prepared queries, made on first use (the migrations ran by then). */
  private get hot(): ReturnType<KyselyStore['prepareHot']> {
    return (this.hotQueries ??= this.prepareHot());
  }

  private prepareHot() {
    const { db } = this;
    const prepare = KyselyStore.prepare;
    // SQLite's claims (PostgreSQL's are one statement, `claimInOneStatement`): the state check
    // inside the UPDATE makes a claim atomic: two claimers of one copy cannot both see it move
    // from ready to mapped.
    const claimSet = (hostId: string, at: string) => ({ state: 'mapped', host_id: hostId, changed_at: at });
    return {
      getImage: prepare(db, 1, (id: string) => db.selectFrom('images').selectAll().where('id', '=', id)),
      findNewestImage: prepare(db, 1, (name: string) => db.selectFrom('images').selectAll().where('name', '=', name).orderBy('version', 'desc').limit(1)),
      findImageVersion: prepare(db, 2, (name: string, version: number) => db.selectFrom('images').selectAll().where('name', '=', name).where('version', '=', version)),
      getHost: prepare(db, 1, (id: string) => db.selectFrom('hosts').selectAll().where('id', '=', id)),
      getMapping: prepare(db, 1, (hostId: string) => db.selectFrom('mappings').selectAll().where('host_id', '=', hostId)),
      findToken: prepare(db, 1, (sha256: string) => db.selectFrom('api_tokens').selectAll().where('sha256', '=', sha256)),
      claimOldest: prepare(db, 3, (hostId: string, at: string, imageId: string) =>
        db
          .updateTable('copies')
          .set(claimSet(hostId, at))
          .where('id', '=', (eb) =>
            eb
              .selectFrom('copies')
              .select('id')
              .where('image_id', '=', imageId)
              .where('state', '=', 'ready')
              .orderBy('ready_at')
              .orderBy('id')
              .limit(1),
          )
          .where('state', '=', 'ready')
          .where('image_id', '=', imageId)
          .returningAll(),
      ),
      claimCopy: prepare(db, 4, (hostId: string, at: string, copyId: string, imageId: string) =>
        db.updateTable('copies').set(claimSet(hostId, at)).where('id', '=', copyId).where('state', '=', 'ready').where('image_id', '=', imageId).returningAll(),
      ),
      insertMapping: prepare(db, 5, (hostId: string, copyId: string, source: string, imageId: string, at: string) =>
        db.insertInto('mappings').values({ host_id: hostId, copy_id: copyId, source, image_id: imageId, created_at: at }),
      ),
      // The same row `event` writes.
      insertEvent: prepare(db, 4, (at: string, type: string, subject: string, data: string) => db.insertInto('events').values({ at, type, subject, data })),
      // Around each claim of a transaction that holds several (`claimBatches`).
      savepoint: sql`savepoint claim`.compile(db),
      releaseSavepoint: sql`release savepoint claim`.compile(db),
      rollbackToSavepoint: sql`rollback to savepoint claim`.compile(db),
    };
  }

  /**
   * Claims in one SQLite transaction at most (about 40 µs each): SQLite has one connection and
   * one writer, so one transaction of claims runs at a time, shared by the claims waiting for
   * it, and the bound keeps it from holding the writer for long.
   */
  private static readonly MAX_CLAIMS_PER_TRANSACTION = 32;
  /** Claims asked for and not yet in a transaction, first come first served. */
  private readonly claimQueue: { args: Parameters<Store['claim']>[0]; event: NewEvent; resolve: (r: Awaited<ReturnType<Store['claim']>>) => void; reject: (e: unknown) => void }[] = [];
  /** A transaction of claims is running now. */
  private claiming = false;
  /** A transaction of claims is due at the next check phase of the event loop. */
  private claimsScheduled = false;

  /**
   * On SQLite claims share transactions (group commit; PostgreSQL: `claimInOneStatement`): the
   * claims asked for in one turn of the event loop — every request read in its poll phase — and
   * those that come while the transaction of claims before them runs go into one transaction,
   * which starts at the next check phase (setImmediate: right after the poll phase, so a lone
   * claim waits for no timer). SQLite has one writer, and a commit — its WAL writes, Kysely's
   * transaction machinery — costs more than a claim's own statements, so under a burst one
   * commit for many claims is what lets the burst through. (Without the deferral no two claims
   * would meet: SQLite's driver is synchronous, so each request runs to its export before the
   * next one is read.) Each claim keeps
   * its guarantees in a shared transaction: its UPDATE … WHERE state = 'ready' moves the copy
   * only if no claim before it (in this transaction or another) did, its mapping and its event
   * are written with it, and a savepoint around the three undoes them together if one fails,
   * failing that claim only. The result is handed out only after the commit; if the commit
   * fails, every claim of the transaction fails and none of them happened. A claim alone in its
   * transaction runs as before, without savepoints.
   */
  async claim(args: Parameters<Store['claim']>[0], event: NewEvent): Promise<Awaited<ReturnType<Store['claim']>>> {
    if (this.dialect === 'postgres') return this.claimInOneStatement(args, event);
    return new Promise<Awaited<ReturnType<Store['claim']>>>((resolve, reject) => {
      this.claimQueue.push({ args, event, resolve, reject });
      this.scheduleClaims();
    });
  }

  private scheduleClaims(): void {
    if (this.claimsScheduled) return;
    this.claimsScheduled = true;
    setImmediate(() => {
      this.claimsScheduled = false;
      if (this.claimQueue.length > 0 && !this.claiming) void this.claimBatches();
    });
  }

  /** Runs the queued claims, up to MAX_CLAIMS_PER_TRANSACTION in a transaction, until none is left. */
  private async claimBatches(): Promise<void> {
    this.claiming = true;
    try {
      while (this.claimQueue.length > 0) {
        const batch = this.claimQueue.splice(0, KyselyStore.MAX_CLAIMS_PER_TRANSACTION);
        let outcomes: ({ ok: true; value: Awaited<ReturnType<Store['claim']>> } | { ok: false; error: unknown })[];
        try {
          outcomes = await this.transact(async (tx) => {
            if (batch.length === 1) return [{ ok: true, value: await this.claimIn(tx, batch[0]!.args, batch[0]!.event) }];
            const done: typeof outcomes = [];
            for (const c of batch) {
              await tx.executeQuery(this.hot.savepoint);
              try {
                done.push({ ok: true, value: await this.claimIn(tx, c.args, c.event) });
              } catch (error) {
                await tx.executeQuery(this.hot.rollbackToSavepoint);
                done.push({ ok: false, error });
              }
              await tx.executeQuery(this.hot.releaseSavepoint);
            }
            return done;
          });
        } catch (error) {
          outcomes = batch.map(() => ({ ok: false, error }));
        }
        batch.forEach((c, i) => {
          const o = outcomes[i]!;
          if (o.ok) c.resolve(o.value);
          else c.reject(o.error);
        });
      }
    } finally {
      this.claiming = false;
      this.scheduleClaims();
    }
  }

  /**
   * PostgreSQL: the whole claim — pick the oldest spare (skipping those other claimers hold),
   * move it, insert the mapping and the event — is one statement, so one round trip and its own
   * transaction; concurrent claims commit side by side (PostgreSQL flushes their commits
   * together). If any part fails (the host is mapped already), none of it happened. A named
   * copy (a hand-off to a waiter) is waited for if another claimer holds it, then re-checked.
   */
  private async claimInOneStatement(args: Parameters<Store['claim']>[0], event: NewEvent): Promise<Awaited<ReturnType<Store['claim']>>> {
    const now = this.now();
    const pick =
      args.copyId === undefined
        ? sql`SELECT id FROM copies WHERE image_id = ${args.imageId} AND state = 'ready' ORDER BY ready_at, id LIMIT 1 FOR UPDATE SKIP LOCKED`
        : sql`SELECT id FROM copies WHERE id = ${args.copyId} AND image_id = ${args.imageId} AND state = 'ready' FOR UPDATE`;
    const data = JSON.stringify(event.data ?? {});
    const r = await sql<Selectable<CopiesTable>>`
      WITH picked AS (${pick}),
      moved AS (
        UPDATE copies SET state = 'mapped', host_id = ${args.hostId}, changed_at = ${now}
        FROM picked WHERE copies.id = picked.id AND copies.state = 'ready'
        RETURNING copies.*
      ),
      mapped AS (
        INSERT INTO mappings (host_id, copy_id, source, image_id, created_at)
        SELECT ${args.hostId}, id, ${args.source}, ${args.imageId}, ${args.at} FROM moved
      ),
      logged AS (
        INSERT INTO events (at, type, subject, data)
        SELECT ${now}, ${event.type}, ${event.subject}, (${data}::jsonb || jsonb_build_object('copyId', id))::text FROM moved
      )
      SELECT * FROM moved`.execute(this.db);
    const row = r.rows[0];
    if (!row) return undefined;
    this.eventsAppended();
    return { copy: toCopy(row), mapping: { hostId: args.hostId, copyId: row.id, source: args.source, imageId: args.imageId, createdAt: args.at } };
  }

  /** One claim's statements, inside a transaction. */
  private async claimIn(tx: Transaction<Database>, args: Parameters<Store['claim']>[0], event: NewEvent): Promise<Awaited<ReturnType<Store['claim']>>> {
    const q = this.hot;
    const now = this.now();
    const [row] = (args.copyId === undefined ? await q.claimOldest(tx, args.hostId, now, args.imageId) : await q.claimCopy(tx, args.hostId, now, args.copyId, args.imageId)).rows;
    if (!row) return undefined;
    const mapping: Mapping = { hostId: args.hostId, copyId: row.id, source: args.source, imageId: args.imageId, createdAt: args.at };
    await q.insertMapping(tx, mapping.hostId, mapping.copyId, mapping.source, mapping.imageId, mapping.createdAt);
    await q.insertEvent(tx, now, event.type, event.subject, JSON.stringify({ ...event.data, copyId: row.id }));
    this.appendedIn.add(tx);
    return { copy: toCopy(row), mapping };
  }

  async unmap(hostId: string, event: NewEvent): Promise<Copy | undefined> {
    return this.transact(async (tx) => {
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
    await this.transact(async (tx) => {
      const clash = await tx.selectFrom('hosts').select('id').where('id', '=', host.id).executeTakeFirst();
      if (clash) throw new ConflictError(`host '${host.id}' exists already`, { hostId: host.id });
      if (host.mac !== null) {
        const macClash = await tx.selectFrom('hosts').select('id').where('mac', '=', host.mac).executeTakeFirst();
        if (macClash) throw new ConflictError(`MAC ${host.mac} belongs to host '${macClash.id}' already`, { mac: host.mac });
      }
      if (host.iqn !== null) {
        const iqnClash = await tx.selectFrom('hosts').select('id').where('iqn', '=', host.iqn).executeTakeFirst();
        if (iqnClash) throw new ConflictError(`initiator name ${host.iqn} belongs to host '${iqnClash.id}' already`, { iqn: host.iqn });
      }
      await tx
        .insertInto('hosts')
        .values({
          id: host.id,
          mac: host.mac,
          labels: JSON.stringify(host.labels),
          vars: JSON.stringify(host.vars),
          created_at: host.createdAt,
          psk: null,
          meta_secret: null,
          iqn: host.iqn,
          boot_source: host.boot,
          exporter: host.exporter,
          chap_secret: null,
          chap_mutual_secret: null,
        })
        .execute();
      await this.event(tx, event);
    });
  }

  async getHost(id: string): Promise<Host | undefined> {
    const r = (await this.hot.getHost(this.db, id)).rows[0];
    return r && toHost(r);
  }

  private lookupQueries: ReturnType<KyselyStore['prepareLookup']> | undefined;

  /**
   * The host, its mapping and the image, read by one statement where a provision ran three (or
   * four): hosts left-joined to its mapping and to the image the source names. Each row read is
   * the same one getHost, getMapping and findImage would read.
   */
  private prepareLookup() {
    const { db } = this;
    const prepare = KyselyStore.prepare;
    const base = (hostId: string) =>
      db
        .selectFrom('hosts')
        .leftJoin('mappings', 'mappings.host_id', 'hosts.id')
        .where('hosts.id', '=', hostId)
        .select([
          'hosts.id as h_id',
          'hosts.mac as h_mac',
          'hosts.labels as h_labels',
          'hosts.vars as h_vars',
          'hosts.created_at as h_created_at',
          'hosts.iqn as h_iqn',
          'hosts.boot_source as h_boot_source',
          'hosts.exporter as h_exporter',
          'mappings.host_id as m_host_id',
          'mappings.copy_id as m_copy_id',
          'mappings.source as m_source',
          'mappings.image_id as m_image_id',
          'mappings.created_at as m_created_at',
        ]);
    const image = [
      'images.id as i_id',
      'images.name as i_name',
      'images.version as i_version',
      'images.sha256 as i_sha256',
      'images.size_bytes as i_size_bytes',
      'images.volume as i_volume',
      'images.state as i_state',
      'images.created_at as i_created_at',
      'images.kind as i_kind',
      'images.base_image_id as i_base_image_id',
    ] as const;
    return {
      newest: prepare(db, 2, (hostId: string, name: string) =>
        base(hostId)
          .leftJoin('images', (join) =>
            join.on((eb) => eb('images.id', '=', eb.selectFrom('images as newest').select('newest.id').where('newest.name', '=', name).orderBy('newest.version', 'desc').limit(1))),
          )
          .select(image),
      ),
      version: prepare(db, 3, (hostId: string, name: string, version: number) =>
        base(hostId)
          .leftJoin('images', (join) => join.on('images.name', '=', name).on('images.version', '=', version))
          .select(image),
      ),
    };
  }

  async provisionLookup(hostId: string, name: string, version: number | null): Promise<{ host: Host; mapping: Mapping | undefined; image: Image | undefined } | undefined> {
    const q = (this.lookupQueries ??= this.prepareLookup());
    const [r] = (version === null ? await q.newest(this.db, hostId, name) : await q.version(this.db, hostId, name, version)).rows;
    if (!r) return undefined;
    const host = toHost({ id: r.h_id, mac: r.h_mac, labels: r.h_labels, vars: r.h_vars, created_at: r.h_created_at, iqn: r.h_iqn, boot_source: r.h_boot_source, exporter: r.h_exporter });
    const mapping =
      r.m_host_id === null
        ? undefined
        : toMapping({ host_id: r.m_host_id, copy_id: r.m_copy_id!, source: r.m_source!, image_id: r.m_image_id!, created_at: r.m_created_at! });
    const image =
      r.i_id === null
        ? undefined
        : toImage({
            id: r.i_id,
            name: r.i_name!,
            version: r.i_version!,
            sha256: r.i_sha256!,
            size_bytes: r.i_size_bytes!,
            volume: r.i_volume!,
            state: r.i_state!,
            created_at: r.i_created_at!,
            kind: r.i_kind!,
            base_image_id: r.i_base_image_id,
          });
    return { host, mapping, image };
  }

  async listHosts(): Promise<Host[]> {
    return (await this.db.selectFrom('hosts').selectAll().orderBy('id').execute()).map(toHost);
  }

  async deleteHost(id: string, event: NewEvent): Promise<void> {
    await this.transact(async (tx) => {
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
    await this.transact(async (tx) => {
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

  async setHostIscsi(id: string, iscsi: HostIscsiSecrets, event: NewEvent): Promise<void> {
    await this.transact(async (tx) => {
      const clash = await tx.selectFrom('hosts').select('id').where('iqn', '=', iscsi.iqn).where('id', '!=', id).executeTakeFirst();
      if (clash) throw new ConflictError(`initiator name ${iscsi.iqn} belongs to host '${clash.id}' already`, { iqn: iscsi.iqn });
      const r = await tx.updateTable('hosts').set({ iqn: iscsi.iqn, chap_secret: iscsi.chapSecret, chap_mutual_secret: iscsi.mutualSecret }).where('id', '=', id).executeTakeFirst();
      if (Number(r.numUpdatedRows) === 0) throw new NotFoundError('host', id);
      await this.event(tx, event);
    });
  }

  async getHostIscsi(id: string): Promise<HostIscsiSecrets | undefined> {
    const r = await this.db.selectFrom('hosts').select(['iqn', 'chap_secret', 'chap_mutual_secret']).where('id', '=', id).executeTakeFirst();
    return r?.iqn && r.chap_secret ? { iqn: r.iqn, chapSecret: r.chap_secret, mutualSecret: r.chap_mutual_secret } : undefined;
  }

  async listHostIscsi(): Promise<({ hostId: string } & HostIscsiSecrets)[]> {
    const rows = await this.db.selectFrom('hosts').select(['id', 'iqn', 'chap_secret', 'chap_mutual_secret']).where('iqn', 'is not', null).where('chap_secret', 'is not', null).orderBy('id').execute();
    return rows.map((r) => ({ hostId: r.id, iqn: r.iqn!, chapSecret: r.chap_secret!, mutualSecret: r.chap_mutual_secret }));
  }

  async getHostByMac(mac: string): Promise<Host | undefined> {
    const r = await this.db.selectFrom('hosts').selectAll().where('mac', '=', mac).executeTakeFirst();
    return r && toHost(r);
  }

  async setHostMetaSecret(id: string, secretHex: string, event: NewEvent): Promise<void> {
    await this.transact(async (tx) => {
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
    await this.transact(async (tx) => {
      const r = await tx.updateTable('hosts').set({ vars: JSON.stringify(vars) }).where('id', '=', id).executeTakeFirst();
      if (Number(r.numUpdatedRows) === 0) throw new NotFoundError('host', id);
      await this.event(tx, event);
    });
  }

  // templates ---------------------------------------------------------------------------

  async upsertTemplate(t: TemplateRecord, event: NewEvent): Promise<void> {
    await this.transact(async (tx) => {
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
    await this.transact(async (tx) => {
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
        owner: b.owner ?? null,
      })
      .execute();
  }

  async updateBuild(id: string, patch: Partial<Omit<TemplateBuild, 'id' | 'template' | 'spec'>>, event?: NewEvent): Promise<void> {
    const set: Record<string, unknown> = {};
    for (const [field, column] of Object.entries(BUILD_COLUMNS)) {
      const v = patch[field as keyof typeof BUILD_COLUMNS];
      if (v !== undefined) set[column] = v;
    }
    await this.transact(async (tx) => {
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
    const r = (await this.hot.getMapping(this.db, hostId)).rows[0];
    return r && toMapping(r);
  }

  async listMappings(): Promise<Mapping[]> {
    return (await this.db.selectFrom('mappings').selectAll().orderBy('host_id').execute()).map(toMapping);
  }

  // API tokens --------------------------------------------------------------------------

  async insertToken(token: ApiToken, sha256: string, event: NewEvent): Promise<void> {
    await this.transact(async (tx) => {
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
    const r = (await this.hot.findToken(this.db, sha256)).rows[0];
    return r && toToken(r);
  }

  async listTokens(): Promise<ApiToken[]> {
    return (await this.db.selectFrom('api_tokens').selectAll().orderBy('name').execute()).map(toToken);
  }

  async deleteToken(name: string, event: NewEvent): Promise<void> {
    await this.transact(async (tx) => {
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

  async lastEventSeq(): Promise<number> {
    const r = await this.db.selectFrom('events').select((eb) => eb.fn.max('seq').as('seq')).executeTakeFirst();
    return Number(r?.seq ?? 0);
  }

  /**
   * SQLite commits one writer at a time, in the order it numbers events: what a reader sees is
   * final. PostgreSQL numbers an event when it is inserted: a gap after `afterSeq` may be an
   * event whose transaction has not committed yet, or one rolled back (or pruned) for good. A
   * gap is settled before anything behind it is returned: once every transaction in flight when
   * it was seen has ended, what of it committed is visible and the rest never will be.
   */
  async tailEvents(afterSeq: number, limit: number): Promise<EventRecord[]> {
    const seen = await this.listEvents({ afterSeq, limit });
    if (this.dialect !== 'postgres') return seen;
    const gap = firstGap(afterSeq, seen);
    if (gap === -1) return seen;
    await this.writersInFlightEnded();
    // Below the event after the gap, what is visible now is all there will be; after it, gaps are checked again.
    const settled = await this.listEvents({ afterSeq, limit });
    const through = seen[gap]!.seq;
    const final = settled.filter((e) => e.seq <= through);
    const rest = settled.slice(final.length);
    const next = firstGap(final.at(-1)?.seq ?? afterSeq, rest);
    return [...final, ...(next === -1 ? rest : rest.slice(0, next))];
  }

  /**
   * Waits until every PostgreSQL transaction in flight now has ended, at most TAIL_SETTLE_MS: a
   * transaction stuck longer (an idle session elsewhere holding one open) must not stop the log's
   * readers for good, so they go on past the gap then.
   */
  private async writersInFlightEnded(): Promise<void> {
    // A statement takes its sequence number a moment before its transaction id, which is what the snapshot lists.
    await delay(TAIL_GRACE_MS);
    const horizon = await sql<{ xmax: string }>`SELECT pg_snapshot_xmax(pg_current_snapshot())::text AS xmax`.execute(this.db);
    const xmax = horizon.rows[0]!.xmax;
    const deadline = Date.now() + TAIL_SETTLE_MS;
    for (let pause = 5; ; pause = Math.min(pause * 2, 200)) {
      const r = await sql<{ ended: boolean }>`SELECT pg_snapshot_xmin(pg_current_snapshot()) >= ${xmax}::xid8 AS ended`.execute(this.db);
      if (r.rows[0]?.ended === true || Date.now() >= deadline) return;
      await delay(pause);
    }
  }

  async prune(cutoffs: { eventsBefore: Date; copiesGoneBefore: Date }): Promise<{ events: number; copies: number }> {
    const eventsBefore = cutoffs.eventsBefore.toISOString();
    const copiesGoneBefore = cutoffs.copiesGoneBefore.toISOString();
    return this.transact(async (tx) => {
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
      // Instances that stopped or were reaped that long ago: one row per start would pile up.
      await tx
        .deleteFrom('instances')
        .where((eb) => eb.or([eb('stopped_at', '<', copiesGoneBefore), eb('reaped_at', '<', copiesGoneBefore)]))
        .execute();
      if (events > 0 || copies > 0) {
        await this.event(tx, { type: 'retention.pruned', subject: 'store', data: { events, copies, eventsBeforeSeq: raised, eventsBefore, copiesGoneBefore } });
      }
      return { events, copies };
    });
  }

  get dialectName(): SqlDialectName {
    return this.dialect;
  }

  // cluster ------------------------------------------------------------------------------

  async registerInstance(i: InstanceRecord, event: NewEvent): Promise<void> {
    await this.transact(async (tx) => {
      await tx
        .insertInto('instances')
        .values({
          id: i.id,
          name: i.name,
          host: i.host,
          pid: i.pid,
          version: i.version,
          api: i.api,
          nbd: i.nbd,
          started_at: i.startedAt,
          heartbeat_at: i.heartbeatAt,
          stopped_at: null,
          reaped_at: null,
          reaped_by: null,
        })
        .execute();
      await this.event(tx, event);
    });
  }

  async heartbeatInstance(id: string, at: string): Promise<boolean> {
    const r = await this.db.updateTable('instances').set({ heartbeat_at: at }).where('id', '=', id).where('reaped_at', 'is', null).where('stopped_at', 'is', null).executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  async stopInstance(id: string, at: string, event: NewEvent): Promise<void> {
    await this.transact(async (tx) => {
      await tx.updateTable('pool_leases').set({ expires_at: EXPIRED }).where('instance_id', '=', id).execute();
      const r = await tx.updateTable('instances').set({ stopped_at: at }).where('id', '=', id).where('stopped_at', 'is', null).where('reaped_at', 'is', null).executeTakeFirst();
      if (Number(r.numUpdatedRows) === 1) await this.event(tx, event);
    });
  }

  async listInstances(): Promise<InstanceRecord[]> {
    return (await this.db.selectFrom('instances').selectAll().where('stopped_at', 'is', null).where('reaped_at', 'is', null).orderBy('started_at').orderBy('id').execute()).map(toInstance);
  }

  async reapInstance(id: string, by: string, at: string, event: NewEvent): Promise<ReapedWork | undefined> {
    return this.transact(async (tx) => {
      // The compare-and-set that makes one reaper the only one: the others update nothing.
      const r = await tx.updateTable('instances').set({ reaped_at: at, reaped_by: by }).where('id', '=', id).where('reaped_at', 'is', null).where('stopped_at', 'is', null).executeTakeFirst();
      if (Number(r.numUpdatedRows) !== 1) return undefined;
      const making = await tx.selectFrom('copies').select(['id', 'pool', 'image_id']).where('owner', '=', id).where('state', '=', 'making').execute();
      const copies = making.map((c) => c.id);
      if (copies.length > 0) {
        await tx.updateTable('copies').set({ state: 'failed', error: 'its instance died while making it', changed_at: at }).where('owner', '=', id).where('state', '=', 'making').execute();
      }
      const builds = (await tx.selectFrom('template_builds').select('id').where('owner', '=', id).where('state', '=', 'building').execute()).map((b) => b.id);
      if (builds.length > 0) {
        await tx.updateTable('template_builds').set({ state: 'failed', error: 'its instance died during the build; build it again', finished_at: at }).where('owner', '=', id).where('state', '=', 'building').execute();
      }
      await tx.updateTable('pool_leases').set({ expires_at: EXPIRED }).where('instance_id', '=', id).execute();
      await this.event(tx, { ...event, data: { ...event.data, copies, builds } });
      // Each undone piece of work is logged as reconcile at start logs it, so either way one query finds them.
      for (const c of making) await this.event(tx, { type: 'reconcile.interrupted', subject: c.id, data: { imageId: c.image_id, pool: c.pool, instance: id } });
      for (const b of builds) await this.event(tx, { type: 'reconcile.interrupted-build', subject: b, data: { buildId: b, instance: id } });
      return { copies, builds };
    });
  }

  async acquireLease(source: string, instanceId: string, at: string, expiresAt: string, event: NewEvent): Promise<number | undefined> {
    return this.transact(async (tx) => {
      const r = await tx
        .insertInto('pool_leases')
        .values({ source, instance_id: instanceId, epoch: 1, expires_at: expiresAt })
        .onConflict((oc) =>
          oc
            .column('source')
            .doUpdateSet((eb) => ({ instance_id: instanceId, epoch: eb(eb.ref('pool_leases.epoch'), '+', 1), expires_at: expiresAt }))
            // Times are ISO-8601 UTC strings of one width, so text order is time order.
            .where((eb) => eb.or([eb('pool_leases.expires_at', '<', at), eb('pool_leases.instance_id', '=', instanceId)])),
        )
        .returning('epoch')
        .executeTakeFirst();
      if (r === undefined) return undefined;
      const epoch = Number(r.epoch);
      await this.event(tx, { ...event, data: { ...event.data, epoch } });
      return epoch;
    });
  }

  async renewLeases(instanceId: string, expiresAt: string): Promise<PoolLease[]> {
    return (await this.db.updateTable('pool_leases').set({ expires_at: expiresAt }).where('instance_id', '=', instanceId).returningAll().execute()).map(toLease);
  }

  async releaseLease(source: string, instanceId: string): Promise<void> {
    await this.db.updateTable('pool_leases').set({ expires_at: EXPIRED }).where('source', '=', source).where('instance_id', '=', instanceId).execute();
  }

  async listLeases(): Promise<PoolLease[]> {
    return (await this.db.selectFrom('pool_leases').selectAll().orderBy('source').execute()).map(toLease);
  }

  async close(): Promise<void> {
    await this.db.destroy();
    await this.afterClose?.();
  }
}
