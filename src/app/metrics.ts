/**
 * The Prometheus metrics of one app: a registry of its own (never prom-client's global one, so
 * that several apps in one process — the tests — keep apart), the definitions, and the observers
 * the services, the replenisher and the API are given. Nothing below `app/` imports prom-client:
 * each layer tells a narrow interface of its own, and the NBD server keeps plain totals that are
 * read here at scrape time.
 *
 * Counters and histograms are fed as things happen, through label children cached on first use
 * (the provision path runs thousands of times a second). Gauges and the NBD totals are read when
 * Prometheus scrapes, from the services that hold them.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { HTTP_STATUS, type ApiMetrics } from '../api/index.js';
import type { BuildState, ErrorCode, ProvisionOutcome, TemplateBuild } from '../domain/index.js';
import type { NbdExporterStats } from '../exporters/index.js';
import type { CopyMade, CopyObserver } from '../pool/index.js';
import type { PoolView, ProvisionObserver, ReconcileReport, TemplateObserver } from '../service/index.js';

/** What the gauges are read from, once the app has made it. */
export interface MetricSources {
  /** Every pool with its spares, copies in flight and mapped, and target (read from the state: cluster-wide). */
  pools(): Promise<readonly Pick<PoolView, 'source' | 'ready' | 'making' | 'mapped' | 'target'>[]>;
  /** Provisions waiting for a copy on this instance. */
  waiting(): number;
  /** The NBD server's totals; undefined when hosts reach copies another way. */
  nbd(): NbdExporterStats | undefined;
}

export interface MetricsOptions {
  /** The driver that holds a volume (`file`, `rbd`): the `driver` label of copies. */
  readonly driverOf: (volume: string) => string | undefined;
  /** Also export the Node process's own metrics (`process_*`, `nodejs_*`). Default true. */
  readonly processMetrics?: boolean;
}

type ProvisionEnd = ProvisionOutcome | 'failed';
const PROVISION_ENDS: readonly ProvisionEnd[] = ['warm', 'joined', 'cold', 'failed'];
const BUILD_RESULTS: readonly Exclude<BuildState, 'building'>[] = ['done', 'unchanged', 'failed'];

/** The label of each reconcile fix; a Record so that a new kind in the report cannot go uncounted. */
const RECONCILE_FIXES: Readonly<Record<keyof ReconcileReport, string>> = {
  interruptedCopies: 'interrupted_copy',
  finishedReleases: 'finished_release',
  orphanCopyFiles: 'orphan_copy_file',
  orphanImageFiles: 'orphan_image_file',
  tempFiles: 'temp_file',
  missingCopyVolumes: 'missing_copy_volume',
  missingImageVolumes: 'missing_image_volume',
  interruptedBuilds: 'interrupted_build',
};

/** A warm provision takes milliseconds, a cold one as long as a copy: both ends need buckets. */
const PROVISION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800];
/** A reflink or clone takes milliseconds, a byte copy of a large image many minutes. */
const COPY_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600];
const BUILD_BUCKETS = [1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200];

export class PrestageMetrics implements ProvisionObserver, CopyObserver, TemplateObserver, ApiMetrics {
  readonly registry = new Registry();
  private sources: MetricSources | undefined;

  private readonly provisions = new Counter({
    name: 'prestage_provisions_total',
    help: 'Provisions by how they ended: warm (a spare was ready), joined (a copy in flight), cold (a copy made on demand), failed (no copy came)',
    labelNames: ['source', 'outcome'] as const,
    registers: [this.registry],
  });
  private readonly provisionSeconds = new Histogram({
    name: 'prestage_provision_duration_seconds',
    help: 'From the provision request to the export handed to the host, by outcome',
    labelNames: ['outcome'] as const,
    buckets: PROVISION_BUCKETS,
    registers: [this.registry],
  });
  /** Label children by outcome, then source, made once: a provision costs two Map lookups, not a label check. */
  private readonly provisionChildren = new Map<ProvisionEnd, { bySource: Map<string, { inc(value?: number): void }>; seconds: { observe(v: number): void } }>();

  private readonly poolSpares = this.gauge('prestage_pool_spares', 'Ready spares of each pool', ['pool']);
  private readonly poolTarget = this.gauge('prestage_pool_target_spares', 'The number of spares each pool is kept at (its plan, else its policy)', ['pool']);
  private readonly poolInFlight = this.gauge('prestage_pool_copies_in_flight', 'Copies of each pool being made', ['pool']);
  private readonly poolMapped = this.gauge('prestage_pool_copies_mapped', 'Copies of each pool mapped to a host', ['pool']);
  private readonly waiting = this.gauge('prestage_provisions_waiting', 'Provisions waiting for a copy on this instance', []);

  private readonly copySeconds = new Histogram({
    name: 'prestage_copy_duration_seconds',
    help: 'Time to make one copy ready (written, flushed, verified), by driver and copy method',
    labelNames: ['driver', 'method'] as const,
    buckets: COPY_BUCKETS,
    registers: [this.registry],
  });
  private readonly copyBytes = this.counter('prestage_copy_bytes_total', 'Bytes of the copies made ready (the image size of each), by driver and copy method', ['driver', 'method']);

  private readonly nbdConnections = this.counter('prestage_nbd_connections_total', 'NBD connections accepted', []);
  private readonly nbdRefused = this.counter('prestage_nbd_connections_refused_total', 'NBD connections closed at a connection cap', []);
  private readonly nbdOpen = this.gauge('prestage_nbd_connections_open', 'NBD connections open now, negotiating or attached', []);
  private readonly nbdRead = this.counter('prestage_nbd_read_bytes_total', 'Bytes hosts read over NBD', []);
  private readonly nbdWritten = this.counter('prestage_nbd_written_bytes_total', 'Bytes hosts wrote over NBD', []);
  private readonly nbdErrors = this.counter('prestage_nbd_errors_total', 'NBD errors: request (refused as invalid), storage (the volume failed), protocol (the connection was cut)', ['kind']);

  private readonly reconcileFixes = this.counter('prestage_reconcile_fixes_total', 'What the reconcile at start put right, by kind', ['kind']);
  private readonly apiErrors = this.counter('prestage_api_errors_total', 'API error answers by code', ['code']);
  /** Children by code: an error answer costs one lookup. */
  private readonly apiErrorChildren = new Map<ErrorCode, { inc(value?: number): void }>();

  private readonly builds = this.counter('prestage_template_builds_total', 'Template builds by template and result (done: a new version, unchanged, failed)', ['template', 'result']);
  private readonly buildSeconds = new Histogram({
    name: 'prestage_template_build_duration_seconds',
    help: 'Time a template build took, by result',
    labelNames: ['result'] as const,
    buckets: BUILD_BUCKETS,
    registers: [this.registry],
  });
  private readonly rolloverSeconds = new Histogram({
    name: 'prestage_template_rollover_seconds',
    help: 'From a new base version to provisions getting the new template version (stage serving), and to its pool holding its target of new-version spares (stage refilled)',
    labelNames: ['stage'] as const,
    buckets: BUILD_BUCKETS,
    registers: [this.registry],
  });
  private readonly instanceInfo = this.gauge('prestage_instance_info', 'This instance: its name and version (always 1)', ['name', 'version']);

  constructor(private readonly o: MetricsOptions) {
    if (o.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
    // Series that exist from the start: rate() over a counter that appears only at its first
    // increment misses that increment.
    for (const kind of ['request', 'storage', 'protocol']) this.nbdErrors.labels(kind).inc(0);
    for (const kind of Object.values(RECONCILE_FIXES)) this.reconcileFixes.labels(kind).inc(0);
    for (const code of Object.keys(HTTP_STATUS) as ErrorCode[]) this.apiErrorChild(code).inc(0);
    for (const outcome of PROVISION_ENDS) {
      this.provisionChild(outcome);
      this.provisionSeconds.zero({ outcome });
    }
    for (const result of BUILD_RESULTS) this.buildSeconds.zero({ result });
    for (const stage of ['serving', 'refilled']) this.rolloverSeconds.zero({ stage });
  }

  /** Starts reading the gauges from the app's services (before it, they are empty). */
  watch(sources: MetricSources, instance: { readonly name: string; readonly version: string }): void {
    this.sources = sources;
    this.instanceInfo.labels(instance.name, instance.version).set(1);
  }

  provisioned(source: string, outcome: ProvisionEnd, seconds: number): void {
    const child = this.provisionChild(outcome);
    let counter = child.bySource.get(source);
    if (counter === undefined) child.bySource.set(source, (counter = this.provisions.labels(source, outcome)));
    counter.inc();
    child.seconds.observe(seconds);
  }

  copyMade(copy: CopyMade): void {
    const driver = this.o.driverOf(copy.volume) ?? 'unknown';
    this.copySeconds.labels(driver, copy.method).observe(copy.durationMs / 1000);
    this.copyBytes.labels(driver, copy.method).inc(copy.sizeBytes);
  }

  buildFinished(build: TemplateBuild): void {
    // `building` never reaches here: a build is told of once it ended.
    this.builds.labels(build.template, build.state).inc();
    if (build.buildMs !== null) this.buildSeconds.labels(build.state).observe(build.buildMs / 1000);
    if (build.rolloverMs !== null) this.rolloverSeconds.labels('serving').observe(build.rolloverMs / 1000);
  }

  refilled(_template: string, refilledMs: number): void {
    this.rolloverSeconds.labels('refilled').observe(refilledMs / 1000);
  }

  apiError(code: ErrorCode): void {
    this.apiErrorChild(code).inc();
  }

  /** Counts what the reconcile at start fixed. */
  reconciled(report: ReconcileReport): void {
    for (const key of Object.keys(RECONCILE_FIXES) as (keyof ReconcileReport)[]) {
      if (report[key] > 0) this.reconcileFixes.labels(RECONCILE_FIXES[key]).inc(report[key]);
    }
  }

  /** The exposition as Prometheus scrapes it. */
  async render(): Promise<{ contentType: string; body: string }> {
    await this.refresh();
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }

  /**
   * Reads the gauges and the NBD totals. Everything is read first and set after without a pause,
   * so two scrapes at once never see a half-set pool list; the registry renders its metrics
   * concurrently, which is why this is not done in their collect() callbacks.
   */
  private async refresh(): Promise<void> {
    const sources = this.sources;
    if (!sources) return;
    const pools = await sources.pools();
    const nbd = sources.nbd();
    // A pool removed since the last scrape must vanish, not keep its last values.
    for (const g of [this.poolSpares, this.poolTarget, this.poolInFlight, this.poolMapped]) g.reset();
    for (const p of pools) {
      this.poolSpares.labels(p.source).set(p.ready);
      this.poolTarget.labels(p.source).set(p.target);
      this.poolInFlight.labels(p.source).set(p.making);
      this.poolMapped.labels(p.source).set(p.mapped);
    }
    this.waiting.set(sources.waiting());
    if (nbd) {
      // Totals kept by the NBD server since its start: the counters take them as they are
      // (set after the awaits above, so no scrape renders one between its reset and its inc).
      setTotal(this.nbdConnections, nbd.connections);
      setTotal(this.nbdRefused, nbd.refused);
      setTotal(this.nbdRead, nbd.readBytes);
      setTotal(this.nbdWritten, nbd.writtenBytes);
      this.nbdErrors.reset();
      this.nbdErrors.labels('request').inc(nbd.requestErrors);
      this.nbdErrors.labels('storage').inc(nbd.storageErrors);
      this.nbdErrors.labels('protocol').inc(nbd.protocolErrors);
      this.nbdOpen.set(nbd.open);
    }
  }

  private provisionChild(outcome: ProvisionEnd): { bySource: Map<string, { inc(value?: number): void }>; seconds: { observe(v: number): void } } {
    let child = this.provisionChildren.get(outcome);
    if (child === undefined) this.provisionChildren.set(outcome, (child = { bySource: new Map(), seconds: this.provisionSeconds.labels(outcome) }));
    return child;
  }

  private apiErrorChild(code: ErrorCode): { inc(value?: number): void } {
    let child = this.apiErrorChildren.get(code);
    if (child === undefined) this.apiErrorChildren.set(code, (child = this.apiErrors.labels(code)));
    return child;
  }

  private counter<L extends string>(name: string, help: string, labelNames: readonly L[]): Counter<L> {
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }

  private gauge<L extends string>(name: string, help: string, labelNames: readonly L[]): Gauge<L> {
    return new Gauge({ name, help, labelNames, registers: [this.registry] });
  }
}

/** Sets a counter to a total kept elsewhere (which only grows while the process lives). */
function setTotal(counter: Counter, total: number): void {
  // prom-client has no set() on counters: it is zeroed and raised to the total.
  counter.reset();
  counter.inc(total);
}
