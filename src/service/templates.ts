import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import {
  ConflictError,
  NotFoundError,
  failpoint,
  formatBytes,
  isPrestageError,
  newId,
  parseSourceSpec,
  planFromSpec,
  renderPerHost,
  targetSpares,
  UnavailableError,
  validateTemplateSpec,
  type BuildTrigger,
  type Customizer,
  type Image,
  type Store,
  type TemplateBuild,
  type TemplateRecord,
  type TemplateSpec,
  type VolumeDriver,
} from '../domain/index.js';
import type { Replenisher } from '../pool/index.js';
import { ensureDefaultPool, insertNextVersion } from './image-versions.js';
import PQueue from 'p-queue';

/** Told when template builds end and rollovers complete (metrics). */
export interface TemplateObserver {
  /** A build ended: `done`, `unchanged` or `failed`, with its `buildMs` and, for a rebuild on a new base, its `rolloverMs`. */
  buildFinished(build: TemplateBuild): void;
  /** The template's pool holds its target of new-version spares, `refilledMs` after the new base version appeared. */
  refilled(template: string, refilledMs: number): void;
}

export interface TemplateServiceOptions {
  readonly store: Store;
  readonly driver: VolumeDriver;
  readonly customizer: Customizer;
  readonly replenisher: Replenisher;
  readonly logger: Logger;
  /** The static pool a template gets on its first version; null: none until one is set. */
  readonly defaultPool: { readonly min: number; readonly max: number } | null;
  /** How long a rollover's refill is watched for its `refilledMs` figure. Default 1 h. */
  readonly refillWatchMs?: number;
  /**
   * Builds running at once over all templates. Default 2. Each holds a working copy of its base
   * on disk and runs the customizer's tools: a new base version with many `rebuild: auto`
   * templates following it would otherwise start them all together.
   */
  readonly maxConcurrentBuilds?: number;
  /** The instance running the builds (recorded on each, so a dead one's builds are found). */
  readonly instanceId?: () => string;
  /** Default: nobody is told. */
  readonly observer?: TemplateObserver;
}

export interface TemplateView extends TemplateRecord {
  readonly versions: readonly Image[];
  readonly latestBuild: TemplateBuild | null;
}

/** A stable hash of a spec: the same spec applied twice is not a change. */
function specHash(spec: TemplateSpec): string {
  const canonical = (v: unknown): unknown =>
    Array.isArray(v) ? v.map(canonical) : v !== null && typeof v === 'object' ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, canonical((v as Record<string, unknown>)[k])])) : v;
  return createHash('sha256').update(JSON.stringify(canonical(spec))).digest('hex');
}

/**
 * Templates: apply a spec, build sealed versions from a golden image off the request path,
 * rebuild when the base gets a new version, and watch the pool roll over.
 *
 * A build waits first for the template's previous build, then for one of `maxConcurrentBuilds`
 * slots (first come, first served). It waits inside the service: its row, in state `building`,
 * is written when it starts, so the builds listed are the ones running or done; `buildSlots`
 * counts those waiting.
 */
export class TemplateService {
  /** One build at a time per template; later ones queue behind it. */
  private readonly building = new Map<string, Promise<unknown>>();
  /** Builds running and waiting their turn (first come, first served). */
  private readonly slots: PQueue;
  private readonly watchers = new Set<NodeJS.Timeout>();
  private closed = false;

  constructor(private readonly o: TemplateServiceOptions) {
    this.slots = new PQueue({ concurrency: o.maxConcurrentBuilds ?? 2 });
  }

  /** Builds running (at most `size`) and waiting for a slot now, over all templates. */
  get buildSlots(): { readonly size: number; readonly running: number; readonly waiting: number } {
    return { size: this.slots.concurrency, running: this.slots.pending, waiting: this.slots.size };
  }

  /** Creates or updates a template from its spec and builds it when the spec or base changed. */
  async apply(body: unknown): Promise<{ template: TemplateView; build: TemplateBuild }> {
    const spec = validateTemplateSpec(body);
    const { store } = this.o;
    await this.baseOf(spec);
    const now = new Date().toISOString();
    const old = await store.getTemplate(spec.name);
    const sha = specHash(spec);
    await store.upsertTemplate(
      { name: spec.name, spec, specSha256: sha, createdAt: old?.createdAt ?? now, updatedAt: now },
      { type: old ? 'template.updated' : 'template.created', subject: spec.name, data: { specSha256: sha, base: spec.base } },
    );
    try {
      const build = await this.build(spec.name, 'apply');
      return { template: await this.get(spec.name), build };
    } catch (e) {
      // A spec that cannot build changes nothing: the template is as it was (or not there).
      if (old) await store.upsertTemplate(old, { type: 'template.restored', subject: spec.name, data: { reason: 'the new spec did not build' } });
      else await store.deleteTemplate(spec.name, { type: 'template.removed', subject: spec.name, data: { reason: 'its first build failed' } });
      throw e;
    }
  }

  async list(): Promise<TemplateView[]> {
    const templates = await this.o.store.listTemplates();
    return Promise.all(templates.map((t) => this.view(t)));
  }

  async get(name: string): Promise<TemplateView> {
    const t = await this.o.store.getTemplate(name);
    if (!t) throw new NotFoundError('template', name);
    return this.view(t);
  }

  /** Builds, newest first; with `version`, the build that made that version. */
  async builds(name: string, version?: number): Promise<TemplateBuild[]> {
    await this.get(name);
    const all = await this.o.store.listBuilds(name);
    if (version === undefined) return all;
    const b = all.find((x) => x.version === version && x.state === 'done');
    if (!b) throw new NotFoundError('template build', `${name}@${version}`);
    return [b];
  }

  /**
   * Builds the template's spec on its base, once its previous build is over and a build slot is
   * free. An identical result to the latest version is
   * `unchanged` (no new version). `since` is when the base version that caused it appeared.
   */
  build(name: string, trigger: BuildTrigger = 'build', since?: number): Promise<TemplateBuild> {
    const previous = this.building.get(name) ?? Promise.resolve();
    const run = previous.catch(() => undefined).then(() => this.inSlot(name, () => this.buildNow(name, trigger, since)));
    const tail = run.catch(() => undefined);
    this.building.set(name, tail);
    void tail.then(() => {
      if (this.building.get(name) === tail) this.building.delete(name);
    });
    return run;
  }

  /** Runs the build once a slot is free; one still waiting when the service closes does not start. */
  private inSlot(name: string, buildNow: () => Promise<TemplateBuild>): Promise<TemplateBuild> {
    if (this.slots.pending >= this.slots.concurrency) {
      this.o.logger.info({ template: name, running: this.slots.pending, waiting: this.slots.size + 1 }, 'template build waits for a free build slot');
    }
    return this.slots.add(() => {
      if (this.closed) return Promise.reject(new UnavailableError(`template '${name}' build not started: the server is stopping`, { template: name }));
      return buildNow();
    });
  }

  /** Called after a golden image version is imported: rebuild every `rebuild: auto` template that follows its name. */
  async baseImported(image: Image): Promise<void> {
    if (image.kind !== 'golden') return;
    const since = Date.parse(image.createdAt);
    for (const t of await this.o.store.listTemplates()) {
      if (t.spec.rebuild !== 'auto' || t.spec.base !== image.name) continue;
      this.o.logger.info({ template: t.name, base: `${image.name}@${image.version}` }, 'new base version: rebuilding template');
      void this.build(t.name, 'base-version', since).catch((err: unknown) => this.o.logger.error({ err, template: t.name }, 'template rebuild failed'));
    }
  }

  /** Removes the template, its versions, its pools' spares and its builds; mapped copies block it. */
  async remove(name: string, removeImages: (ref: string) => Promise<unknown>): Promise<void> {
    const view = await this.get(name);
    await this.building.get(name);
    if (view.versions.length > 0) await removeImages(name);
    await this.o.store.deleteTemplate(name, { type: 'template.removed', subject: name });
  }

  /**
   * A host's NoCloud-net document, rendered from the spec of the template version mapped to it
   * with the host's values. A host without a template mapping gets meta-data naming it and an
   * empty user-data; `undefined` means the document does not exist (404).
   */
  async perHostDocument(hostId: string, doc: 'meta-data' | 'user-data' | 'network-config' | 'vendor-data'): Promise<string | undefined> {
    const { store } = this.o;
    const host = await store.getHost(hostId);
    if (!host) throw new NotFoundError('host', hostId);
    const mapping = await store.getMapping(hostId);
    const image = mapping && (await store.getImage(mapping.imageId));
    const build = image?.kind === 'template' ? await store.buildOfImage(image.id) : undefined;
    const docs = build
      ? renderPerHost(build.spec, { id: host.id, values: host.vars })
      : { metaData: `instance-id: ${host.id}\nlocal-hostname: ${host.vars['hostname'] ?? host.id}\n`, userData: '' };
    switch (doc) {
      case 'meta-data':
        return docs.metaData;
      case 'user-data':
        return docs.userData;
      case 'network-config':
        return docs.networkConfig;
      case 'vendor-data':
        return '';
    }
  }

  /**
   * On shutdown: stops watching refills and lets builds in flight finish, at most `timeoutMs`
   * (one cut short is marked failed by the next start's reconcile, its working copy removed).
   * Builds still waiting for a slot do not start: they fail with UnavailableError, unrecorded.
   */
  async close(timeoutMs: number): Promise<void> {
    this.closed = true;
    for (const t of this.watchers) clearInterval(t);
    this.watchers.clear();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(this.building.values()), new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(timer);
  }

  private async view(t: TemplateRecord): Promise<TemplateView> {
    const versions = (await this.o.store.listImages()).filter((i) => i.name === t.name && i.kind === 'template');
    const latestBuild = (await this.o.store.listBuilds(t.name))[0] ?? null;
    return { ...t, versions, latestBuild };
  }

  private async baseOf(spec: TemplateSpec): Promise<Image> {
    const ref = parseSourceSpec(spec.base);
    const base = await this.o.store.findImage(ref.name, ref.version);
    if (!base || base.kind !== 'golden') throw new NotFoundError('golden image', spec.base);
    return base;
  }

  private async buildNow(name: string, trigger: BuildTrigger, since: number | undefined): Promise<TemplateBuild> {
    const { store, driver, logger } = this.o;
    const t = await store.getTemplate(name);
    if (!t) throw new NotFoundError('template', name);
    const base = await this.baseOf(t.spec);
    const started = Date.now();
    const lines: string[] = [];
    const log = (line: string) => lines.push(`${String(Date.now() - started).padStart(6)} ms  ${line}`);
    let build: TemplateBuild = {
      id: newId('bld'),
      template: name,
      state: 'building',
      trigger,
      spec: t.spec,
      baseImageId: base.id,
      imageId: null,
      version: null,
      log: '',
      error: null,
      startedAt: new Date(started).toISOString(),
      finishedAt: null,
      buildMs: null,
      rolloverMs: null,
      refilledMs: null,
      owner: this.o.instanceId?.() ?? null,
    };
    await store.insertBuild(build);
    log(`build ${build.id} of template '${name}' (${trigger}) on ${base.name}@${base.version} (${formatBytes(base.sizeBytes)}, sha256 ${base.sha256})`);
    // Named by the build, so that whoever finds the build interrupted knows which volume to remove.
    const scratchId = build.id;
    try {
      const scratch = await driver.scratchFile(base, scratchId);
      failpoint('template.after-scratch');
      log(`working copy made by ${scratch.method} in ${scratch.durationMs} ms`);
      // The base's import time, not the clock: the same inputs build the same bytes.
      const epoch = Math.floor(Date.parse(base.createdAt) / 1000);
      await this.o.customizer.customize(scratch.path, planFromSpec(t.spec, epoch), log);
      // A template version lives where its base does, so its pool keeps one kind of storage.
      const sealed = await driver.importImage(scratch.path, undefined, driver.driverOf(base.volume));
      failpoint('template.after-seal');
      log(`sealed read-only: sha256 ${sealed.sha256}`);
      const latest = await store.findImage(name, null);
      let image: Image;
      if (latest?.sha256 === sealed.sha256) {
        image = latest;
        log(`identical to ${name}@${latest.version}: no new version`);
        build = { ...build, state: 'unchanged' };
      } else {
        image = await insertNextVersion(store, { name, sha256: sealed.sha256, sizeBytes: sealed.sizeBytes, volume: sealed.volume, kind: 'template', baseImageId: base.id }, (i) => ({
          type: 'image.built',
          subject: `${name}@${i.version}`,
          data: { imageId: i.id, sha256: i.sha256, base: `${base.name}@${base.version}` },
        }));
        log(`version ${name}@${image.version}`);
        build = { ...build, state: 'done' };
      }
      const finished = Date.now();
      build = {
        ...build,
        imageId: image.id,
        version: image.version,
        finishedAt: new Date(finished).toISOString(),
        buildMs: finished - started,
        rolloverMs: build.state === 'done' && since !== undefined ? finished - since : null,
      };
      log(`${build.state} in ${build.buildMs} ms${build.rolloverMs === null ? '' : `; provisions get the new version ${build.rolloverMs} ms after the base version appeared`}`);
      build = { ...build, log: lines.join('\n') };
      await store.updateBuild(build.id, build, { type: `template.${build.state === 'done' ? 'built' : 'unchanged'}`, subject: `${name}@${image.version}`, data: { buildId: build.id, buildMs: build.buildMs, rolloverMs: build.rolloverMs } });
      logger.info({ template: name, version: image.version, state: build.state, buildMs: build.buildMs }, 'template built');
      this.o.observer?.buildFinished(build);
      if (build.state === 'done') await this.afterNewVersion(name, image, build, since ?? started);
      return build;
    } catch (e) {
      log(`failed: ${e instanceof Error ? e.message : String(e)}`);
      const finished = Date.now();
      build = { ...build, state: 'failed', error: e instanceof Error ? e.message : String(e), log: lines.join('\n'), finishedAt: new Date(finished).toISOString(), buildMs: finished - started };
      this.o.observer?.buildFinished(build);
      await store.updateBuild(build.id, build, { type: 'template.build-failed', subject: name, data: { buildId: build.id, error: build.error } });
      logger.warn({ template: name, err: e }, 'template build failed');
      throw isPrestageError(e) ? e : new ConflictError(`template '${name}' build failed: ${build.error}`, { buildId: build.id }, { cause: e });
    } finally {
      await driver.removeCopy(scratchId);
    }
  }

  /** A default pool on the first version; then the replenisher replaces old-version spares. */
  private async afterNewVersion(name: string, image: Image, build: TemplateBuild, since: number): Promise<void> {
    await ensureDefaultPool(this.o.store, name, this.o.defaultPool);
    this.o.replenisher.poke(true);
    this.watchRefill(name, image, build, since);
  }

  /** Records when the pool first holds its target of spares of the new version. */
  private watchRefill(name: string, image: Image, build: TemplateBuild, since: number): void {
    if (this.closed) return;
    const deadline = Date.now() + (this.o.refillWatchMs ?? 3_600_000);
    let checking = false;
    const timer = setInterval(() => {
      if (checking) return;
      checking = true;
      void this.refilled(name, image)
        .then(async (done) => {
          if (done) {
            const refilledMs = Date.now() - since;
            await this.o.store.updateBuild(build.id, { refilledMs }, { type: 'template.rolled-over', subject: `${name}@${image.version}`, data: { buildId: build.id, rolloverMs: build.rolloverMs, refilledMs } });
            this.o.logger.info({ template: name, version: image.version, refilledMs }, 'template pool holds new-version spares');
            this.o.observer?.refilled(name, refilledMs);
          }
          if (done || Date.now() > deadline) {
            clearInterval(timer);
            this.watchers.delete(timer);
          }
        })
        .catch((err: unknown) => this.o.logger.warn({ err, template: name }, 'refill watch failed'))
        .finally(() => (checking = false));
    }, 100);
    timer.unref();
    this.watchers.add(timer);
  }

  private async refilled(name: string, image: Image): Promise<boolean> {
    const pool = await this.o.store.getPool(name);
    if (!pool) return true;
    const want = this.o.replenisher.planFor(name)?.target ?? targetSpares(pool.policy);
    const counts = await this.o.store.countCopies(image.id, name);
    return counts.ready >= want;
  }
}
