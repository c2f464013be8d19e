import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { createSecureContext } from 'node:tls';
import type { FastifyInstance } from 'fastify';
import { pino, type Logger } from 'pino';
import { buildApi, type RouteAccess } from '../api/index.js';
import { InputError, errnoCode, type ClusterBus, type Customizer, type Exporter, type Store, type VolumeDriver } from '../domain/index.js';
import { DriverSet, FileDriver } from '../drivers/index.js';
import { LocalPathExporter, NbdExporter, RoutedExporter } from '../exporters/index.js';
import { IscsiExporter, Tgtd } from '../exporters/iscsi/index.js';
import { Replenisher } from '../pool/index.js';
import {
  CopyService,
  EventService,
  HostService,
  ImageService,
  PoolHistory,
  PoolService,
  ProvisioningService,
  SimulationService,
  TemplateService,
  TokenService,
  readAllHostCredentials,
  readHostCredentials,
  reconcile,
  removeDeadWork,
  type ReconcileReport,
} from '../service/index.js';
import { Retention } from '../service/retention.js';
import { customizeDisk } from '../customize/index.js';
import { lockPostgresStartup, openPostgresStore, openSqliteStore } from '../store/index.js';
import { ClusterExporter, ClusterSync, LocalBus, Membership, PgBus } from '../cluster/index.js';
import { exporterForHost, type Config } from './config.js';
import { ADMIN_TOKEN_FILE } from './data-dir.js';
import { lockDataDir } from './data-dir-lock.js';
import { PrestageMetrics } from './metrics.js';
import { VERSION } from './version.js';

export type AppState = 'INITIALIZED' | 'STARTING' | 'RUNNING' | 'STOPPING' | 'STOPPED' | 'FAILED';

/**
 * The composition root: the one place that knows every concrete implementation. `start`
 * opens the store, reconciles, re-exports every mapping, starts the replenisher and listens;
 * `stop` undoes it in reverse through one registry of shutdown hooks.
 */
export class PrestageApp {
  private stateValue: AppState = 'INITIALIZED';
  private readonly shutdownHooks: { name: string; run: () => Promise<void> }[] = [];
  private httpValue: FastifyInstance | undefined;
  private replenisherValue: Replenisher | undefined;
  private storeValue: Store | undefined;
  private reconcileValue: ReconcileReport | undefined;
  private routesValue: readonly RouteAccess[] = [];
  private membershipValue: Membership | undefined;
  readonly logger: Logger;

  constructor(
    readonly config: Config,
    logger?: Logger,
  ) {
    this.logger = logger ?? pino({ level: config.logLevel });
  }

  get state(): AppState {
    return this.stateValue;
  }

  get http(): FastifyInstance {
    if (!this.httpValue) throw new Error('the app is not started');
    return this.httpValue;
  }

  get replenisher(): Replenisher {
    if (!this.replenisherValue) throw new Error('the app is not started');
    return this.replenisherValue;
  }

  /** This instance among those sharing the state. */
  get membership(): Membership {
    if (!this.membershipValue) throw new Error('the app is not started');
    return this.membershipValue;
  }

  get store(): Store {
    if (!this.storeValue) throw new Error('the app is not started');
    return this.storeValue;
  }

  /** Every API route with the access it declares. */
  get routes(): readonly RouteAccess[] {
    return this.routesValue;
  }

  /** Where the first start wrote the admin token. */
  get adminTokenFile(): string {
    return join(this.config.dataDir, ADMIN_TOKEN_FILE);
  }

  get reconcileReport(): ReconcileReport | undefined {
    return this.reconcileValue;
  }

  /** The address it listens on (the port is known only after listening when 0 was asked). */
  get address(): string {
    const a = this.http.server.address();
    if (a === null || typeof a === 'string') return String(a);
    return `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
  }

  private onStop(name: string, run: () => Promise<void>): void {
    this.shutdownHooks.push({ name, run });
  }

  async start(opts: { listen?: boolean } = {}): Promise<void> {
    if (this.stateValue !== 'INITIALIZED') throw new Error(`cannot start from ${this.stateValue}`);
    this.stateValue = 'STARTING';
    const { config, logger } = this;
    try {
      // Bad TLS files are refused before anything is created or changed.
      const apiTls = config.apiTls && (await readApiTls(config.apiTls));
      // Keys, the database and every disk live here: nobody but the service's user reads them.
      await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
      const shared = config.db.kind === 'postgres';
      // Before anything in it is read or changed: a server on SQLite has the directory to itself;
      // instances on one PostgreSQL state share it. Registered first, so released last.
      const lock = await lockDataDir(config.dataDir, shared ? 'shared' : 'exclusive');
      this.onStop('data-dir-lock', () => lock.release());
      await chmod(config.dataDir, 0o700);
      const pg = config.db.kind === 'postgres' ? { url: config.db.url, ...(config.db.schema !== undefined && { schema: config.db.schema }) } : undefined;
      // Instances on one PostgreSQL state start one at a time (held until this one serves).
      const startup = pg && (await lockPostgresStartup(pg));
      if (startup) this.onStop('startup-lock', () => startup.release());
      const store = pg ? await openPostgresStore(pg) : await openSqliteStore({ file: join(config.dataDir, 'state.db') });
      this.storeValue = store;
      this.onStop('store', () => store.close());
      const memberId = () => this.membershipValue?.id ?? '';
      const bus: ClusterBus = pg ? await PgBus.open({ ...pg, instanceId: memberId, logger: logger.child({ component: 'bus' }) }) : new LocalBus();
      this.onStop('bus', () => bus.close());
      // Followers of the event log (`GET /v1/events` streams) read on when events were appended
      // here, or by another instance (told on the bus, batched: one message says it for many).
      const events = new EventService(store, logger.child({ component: 'events' }));
      this.onStop('events', () => Promise.resolve(events.close()));
      store.onEventsAppended(() => {
        events.appended();
        bus.publish({ kind: 'events' });
      });
      // Wake-ups sent while the bus was down are lost: read the log again.
      bus.onResync(() => events.appended());
      const driver = await this.openDrivers(memberId);
      this.onStop('driver', () => driver.close());
      const metrics = new PrestageMetrics({ driverOf: (volume) => driver.driverOf(volume) });
      const localExporter: Exporter = await this.openExporter(driver, store);
      this.onStop('exporter', () => localExporter.close());
      const exporter = new ClusterExporter(localExporter, bus);
      // Every host's credentials, before the mappings are exported again below.
      for (const [hostId, credentials] of await readAllHostCredentials(store)) await localExporter.setHostCredentials(hostId, credentials);

      const membership = new Membership({
        store,
        bus,
        logger: logger.child({ component: 'cluster' }),
        version: VERSION,
        ...(config.instanceName !== undefined && { name: config.instanceName }),
        leaseTtlMs: config.leaseTtlMs,
        exclusive: !shared,
        onReaped: (dead, work) => removeDeadWork(store, driver, dead, work, logger.child({ component: 'cluster' })),
        busy: (source) => this.replenisherValue?.makingFor(source) ?? false,
        wake: () => this.replenisherValue?.poke(),
      });
      this.membershipValue = membership;
      // Registered, and the dead reaped, before reconcile: it leaves alone what live instances are doing.
      await membership.join({ api: config.listen.port === 0 ? null : `${config.listen.host}:${config.listen.port}`, nbd: this.nbd?.address ?? null });
      // Stopped after the replenisher drained (hooks run in reverse): copies in flight finish under their leases.
      this.onStop('membership', () => membership.stop());
      this.reconcileValue = await reconcile(store, driver, logger, membership);
      metrics.reconciled(this.reconcileValue);
      const retention = new Retention({ store, retentionMs: config.retentionMs, logger: logger.child({ component: 'retention' }) });
      await retention.start();
      this.onStop('retention', () => retention.stop());

      const replenisher = new Replenisher({ store, driver, logger: logger.child({ component: 'replenisher' }), concurrency: config.copyConcurrency, budget: config.poolBudget, leadership: membership, observer: metrics });
      // A spare made here may be what a provision waiting on another instance needs.
      replenisher.on('copy-ready', (copy) => bus.publish({ kind: 'copy-ready', copyId: copy.id, imageId: copy.imageId }));
      await replenisher.loadDemand();
      this.replenisherValue = replenisher;
      this.onStop('replenisher', () => replenisher.drain(config.drainTimeoutMs));
      // The dashboard's charts: sampled from the pools (made below) once the server runs.
      const history = new PoolHistory({ pools: () => pools.list(), logger: logger.child({ component: 'history' }) });
      const provisioning = new ProvisioningService({
        store,
        driver,
        exporter,
        replenisher,
        logger: logger.child({ component: 'provisioning' }),
        waitTimeoutMs: config.provisionWaitTimeoutMs,
        observer: {
          provisioned: (source, outcome, seconds) => {
            metrics.provisioned(source, outcome, seconds);
            history.provisioned(source, outcome, seconds);
          },
        },
      });
      const reexported = await provisioning.exportAll();
      logger.info({ mappings: reexported }, 'mappings exported');
      const tokens = new TokenService(store, Date.now, (name) => bus.publish({ kind: 'token-revoked', name: name ?? null }));
      if (shared) {
        const sync = new ClusterSync({
          bus,
          store,
          exporter: localExporter,
          credentialsOf: (hostId) => readHostCredentials(store, hostId),
          allCredentials: () => readAllHostCredentials(store),
          volumeOf: (copyId, image) => driver.copyVolumeFor(copyId, image),
          logger: logger.child({ component: 'cluster' }),
          onCopyReady: (copyId, imageId) => provisioning.copyReadyElsewhere(copyId, imageId),
          onPools: () => {
            membership.poke();
            replenisher.poke(true);
          },
          // Only a leader refills: the others would run a pass for nothing on every provision.
          onClaimOrRelease: () => {
            if (membership.leading > 0) replenisher.poke();
          },
          onTokenRevoked: (name) => tokens.forget(name ?? undefined),
          onEvents: () => events.appended(),
        });
        sync.start();
        this.onStop('cluster-sync', () => sync.stop());
      }

      const defaultPool = config.poolAutoCreate ? config.poolDefaults : null;
      const customizer: Customizer = {
        customize: async (disk, plan, log) => {
          await customizeDisk(disk, plan, { log });
        },
      };
      const templates = new TemplateService({ store, driver, customizer, replenisher, logger: logger.child({ component: 'templates' }), defaultPool, maxConcurrentBuilds: config.templateBuilds, instanceId: () => membership.id, observer: metrics });
      this.onStop('templates', () => templates.close(config.drainTimeoutMs));
      await this.firstAdminToken(tokens);
      const pools = new PoolService(store, replenisher, config.poolDefaults);
      metrics.watch(
        { pools: () => pools.list(), waiting: () => provisioning.waitingCount(), nbd: () => this.nbd?.stats() },
        // The name Membership registers under (--instance-name, else host:pid).
        { name: config.instanceName ?? `${hostname()}:${process.pid}`, version: VERSION },
      );
      const simulations = new SimulationService();
      this.onStop('simulations', () => simulations.close());
      const { app: http, routes } = await buildApi(
        {
          images: new ImageService({ store, driver, replenisher, logger, defaultPool, importDirs: config.importDirs, dataDir: config.dataDir, onImported: (image) => void templates.baseImported(image).catch((err: unknown) => logger.error({ err }, 'template rebuilds not started')) }),
          templates,
          // Hosts get iSCSI credentials even when no tgtd runs here: a later --exporter iscsi serves them at once.
          hosts: new HostService(store, exporter, config.iscsiMutualChap),
          pools,
          provisioning,
          copies: new CopyService(store, replenisher),
          events,
          tokens,
          replenisher,
          logger: logger.child({ component: 'api' }),
          instances: () => membership.view(),
          driverOf: (volume) => driver.driverOf(volume),
          metrics,
          history,
          simulations,
          boot: { networks: config.bootNetworks },
          iscsi: this.iscsi ?? null,
          info: { version: VERSION, dataDir: config.dataDir, driver: driver.names.join(', '), exporter: this.exporterInfo() ?? exporter.name },
        },
        apiTls && { https: apiTls },
      );
      this.httpValue = http;
      this.routesValue = routes;
      this.onStop('http', () => http.close());
      this.onStop('provisioning', () => provisioning.stop()); // hooks run in reverse: waiting provisions get their 503 before http closes and the replenisher drains
      await membership.start();
      replenisher.start();
      history.start();
      this.onStop('history', () => history.stop());
      if (opts.listen !== false) {
        await http.listen({ host: config.listen.host, port: config.listen.port });
        logger.info({ address: this.address, dataDir: config.dataDir }, 'prestage is serving');
      } else {
        await http.ready();
      }
      // Serving: the next instance may start.
      await startup?.release();
      this.stateValue = 'RUNNING';
    } catch (e) {
      this.stateValue = 'FAILED';
      await this.runShutdownHooks();
      throw e;
    }
  }

  /**
   * With no token at all (a new data directory, or every token revoked), makes an admin token and
   * writes it where only the service's user reads it, so the CLI on this machine works at once.
   */
  private async firstAdminToken(tokens: TokenService): Promise<void> {
    if (await tokens.any()) return;
    const made = await tokens.create({ name: `admin-${Date.now().toString(36)}`, role: 'admin' });
    const file = this.adminTokenFile;
    await writeFile(`${file}.tmp`, `${made.token}\n`, { mode: 0o600 });
    await chmod(`${file}.tmp`, 0o600);
    await rename(`${file}.tmp`, file);
    this.logger.warn({ file, token: made.name }, 'no API token existed: wrote an admin token (mode 0600); `prestage token create` makes more');
  }

  /** The address hosts reach copies at, when the exporter is a network server. */
  get exporterAddress(): string | undefined {
    return this.nbd?.address;
  }

  private nbd: NbdExporter | undefined;
  private iscsi: IscsiExporter | undefined;

  /** The exporters running here, as `status` shows them. */
  private exporterInfo(): string | undefined {
    const { nbdTls } = this.config;
    const parts = [
      this.nbd && `nbd ${this.nbd.address}${nbdTls === 'off' ? '' : nbdTls === 'psk' ? ' (TLS-PSK)' : ' (TLS X.509)'}`,
      this.iscsi && `iscsi ${this.iscsi.portal} (CHAP${this.config.iscsiMutualChap ? ', mutual' : ''})`,
    ].filter((p): p is string => p !== undefined);
    return parts.length === 0 ? undefined : parts.join(', ');
  }

  /** The data directory's file driver always (uploads stage there), and Ceph when configured. */
  private async openDrivers(owner: () => string): Promise<DriverSet> {
    const { config, logger } = this;
    const file = await FileDriver.open({
      dataDir: config.dataDir,
      workers: config.copyConcurrency,
      reflink: config.reflink,
      ...(config.copyRateBytesPerSec !== null && { copyRateBytesPerSec: config.copyRateBytesPerSec }),
      logger: logger.child({ component: 'driver' }),
      owner,
    });
    if (config.ceph === null) return new DriverSet([file], 'file');
    try {
      // Loaded only when asked for: it loads librbd, which a machine without Ceph does not have.
      const { RbdDriver } = await import('../drivers/rbd/index.js');
      const rbd = await RbdDriver.open({ ...config.ceph, stagingDir: join(config.dataDir, 'rbd-staging'), logger: logger.child({ component: 'rbd' }), owner });
      return new DriverSet([file, rbd], config.driver);
    } catch (e) {
      await file.close();
      throw e;
    }
  }

  private async openExporter(driver: VolumeDriver, store: Store): Promise<Exporter> {
    const { config } = this;
    if (config.exporter === 'path') return new LocalPathExporter();
    if (config.exporter === 'nbd') return this.openNbd(driver);
    // tgtd's control socket lives here: per data directory, so per instance on one machine (the
    // path must stay short enough for a Unix socket, which a data directory normally is).
    const tgtd = new Tgtd({ runDir: join(config.dataDir, 'tgt'), portal: config.iscsiPortal, logger: this.logger.child({ component: 'tgtd' }) });
    const iscsi = new IscsiExporter({ tgtd, ...(config.nbdAdvertise !== undefined && { advertise: config.nbdAdvertise }), logger: this.logger.child({ component: 'iscsi' }) });
    await iscsi.start();
    this.iscsi = iscsi;
    this.logger.info({ portal: iscsi.portal }, 'iSCSI exporter listening');
    try {
      const nbd = config.exporter === 'both' ? await this.openNbd(driver) : undefined;
      return new RoutedExporter({ iscsi, ...(nbd && { nbd }) }, async (hostId) => {
        const kind = exporterForHost(config.exporter, (await store.getHost(hostId)) ?? { exporter: null });
        return kind === 'path' ? 'nbd' : kind;
      });
    } catch (e) {
      await iscsi.close();
      throw e;
    }
  }

  private async openNbd(driver: VolumeDriver): Promise<NbdExporter> {
    const { config } = this;
    const nbd = new NbdExporter({
      listen: config.nbdListen,
      tls: config.nbdTls,
      ...(config.nbdTls === 'x509' && { x509: await readX509Dir(config.nbdTlsDir) }),
      ...(config.nbdAdvertise !== undefined && { advertise: config.nbdAdvertise }),
      logger: this.logger, // the NBD server names its own component
      openVolume: (volume, opts) => driver.openVolume(volume, opts),
    });
    await nbd.start();
    this.nbd = nbd;
    this.logger.info({ address: nbd.address, tls: config.nbdTls }, 'NBD exporter listening');
    return nbd;
  }

  async stop(): Promise<void> {
    if (this.stateValue === 'STOPPED' || this.stateValue === 'STOPPING') return;
    this.stateValue = 'STOPPING';
    await this.runShutdownHooks();
    this.stateValue = 'STOPPED';
  }

  private async runShutdownHooks(): Promise<void> {
    // Reverse order of start: stop taking requests, let copies finish, then close adapters.
    for (const hook of this.shutdownHooks.splice(0).reverse()) {
      try {
        await hook.run();
      } catch (err) {
        this.logger.error({ err, hook: hook.name }, 'shutdown hook failed');
      }
    }
  }
}

async function readApiTls(files: { certFile: string; keyFile: string }): Promise<{ cert: Buffer; key: Buffer }> {
  const read = async (file: string, flag: string) => {
    try {
      return await readFile(file);
    } catch (e) {
      throw new InputError(`${flag} ${file}: cannot read it (${errnoCode(e) ?? String(e)})`, { field: flag }, { cause: e });
    }
  };
  const pair = { cert: await read(files.certFile, '--tls-cert'), key: await read(files.keyFile, '--tls-key') };
  try {
    createSecureContext(pair);
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    throw new InputError(`--tls-cert ${files.certFile} --tls-key ${files.keyFile}: not a usable PEM certificate and matching key (${why})`, { field: 'tlsCert' }, { cause: e });
  }
  return pair;
}

/** The server side of the qemu/libnbd certificate directory layout, with errors that name the file. */
async function readX509Dir(dir: string | undefined): Promise<{ cert: Buffer; key: Buffer; ca: Buffer }> {
  if (dir === undefined) throw new InputError('--nbd-tls x509 needs --nbd-tls-dir');
  const read = async (file: string) => {
    try {
      return await readFile(join(dir, file));
    } catch (e) {
      throw new InputError(`--nbd-tls-dir ${dir}: cannot read ${file} (${errnoCode(e) ?? String(e)}); it needs ca-cert.pem, server-cert.pem and server-key.pem`, { field: 'nbdTlsDir' }, { cause: e });
    }
  };
  return { ca: await read('ca-cert.pem'), cert: await read('server-cert.pem'), key: await read('server-key.pem') };
}
