import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createSecureContext } from 'node:tls';
import type { FastifyInstance } from 'fastify';
import { pino, type Logger } from 'pino';
import { buildApi, type RouteAccess } from '../api/index.js';
import { InputError, errnoCode, type Customizer, type Exporter, type Store, type VolumeDriver } from '../domain/index.js';
import { FileDriver } from '../drivers/index.js';
import { LocalPathExporter, NbdExporter } from '../exporters/index.js';
import { Replenisher } from '../pool/index.js';
import {
  CopyService,
  EventService,
  HostService,
  ImageService,
  PoolService,
  ProvisioningService,
  TemplateService,
  TokenService,
  reconcile,
  type ReconcileReport,
} from '../service/index.js';
import { Retention } from '../service/retention.js';
import { customizeDisk } from '../customize/index.js';
import { lockPostgresState, openPostgresStore, openSqliteStore } from '../store/index.js';
import type { Config } from './config.js';
import { ADMIN_TOKEN_FILE } from './data-dir.js';
import { lockDataDir } from './data-dir-lock.js';
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
      // Before anything in it is read or changed: another prestage on it must be left untouched.
      // Registered first, so released last, after the store is closed.
      const lock = await lockDataDir(config.dataDir);
      this.onStop('data-dir-lock', () => lock.release());
      await chmod(config.dataDir, 0o700);
      if (config.db.kind === 'postgres') {
        // Like the directory lock, before the state is read or changed.
        const dbLock = await lockPostgresState({ url: config.db.url, ...(config.db.schema !== undefined && { schema: config.db.schema }) });
        this.onStop('db-lock', () => dbLock.release());
      }
      const store = config.db.kind === 'postgres' ? await openPostgresStore({ url: config.db.url, ...(config.db.schema !== undefined && { schema: config.db.schema }) }) : await openSqliteStore({ file: join(config.dataDir, 'state.db') });
      this.storeValue = store;
      this.onStop('store', () => store.close());
      const driver: VolumeDriver = await FileDriver.open({
        dataDir: config.dataDir,
        workers: config.copyConcurrency,
        reflink: config.reflink,
        logger: logger.child({ component: 'driver' }),
      });
      this.onStop('driver', () => driver.close());
      const exporter: Exporter = await this.openExporter();
      this.onStop('exporter', () => exporter.close());
      for (const { hostId, psk } of await store.listHostKeys()) exporter.setHostKey(hostId, psk);

      this.reconcileValue = await reconcile(store, driver, logger);
      const retention = new Retention({ store, retentionMs: config.retentionMs, logger: logger.child({ component: 'retention' }) });
      await retention.start();
      this.onStop('retention', () => retention.stop());

      const replenisher = new Replenisher({ store, driver, logger: logger.child({ component: 'replenisher' }), concurrency: config.copyConcurrency, budget: config.poolBudget });
      await replenisher.loadDemand();
      this.replenisherValue = replenisher;
      this.onStop('replenisher', () => replenisher.drain(config.drainTimeoutMs));
      const provisioning = new ProvisioningService({
        store,
        driver,
        exporter,
        replenisher,
        logger: logger.child({ component: 'provisioning' }),
        waitTimeoutMs: config.provisionWaitTimeoutMs,
      });
      const reexported = await provisioning.exportAll();
      logger.info({ mappings: reexported }, 'mappings exported');

      const defaultPool = config.poolAutoCreate ? config.poolDefaults : null;
      const customizer: Customizer = {
        customize: async (disk, plan, log) => {
          await customizeDisk(disk, plan, { log });
        },
      };
      const templates = new TemplateService({ store, driver, customizer, replenisher, logger: logger.child({ component: 'templates' }), defaultPool, maxConcurrentBuilds: config.templateBuilds });
      this.onStop('templates', () => templates.close(config.drainTimeoutMs));
      const tokens = new TokenService(store);
      await this.firstAdminToken(tokens);
      const { app: http, routes } = await buildApi(
        {
          images: new ImageService({ store, driver, replenisher, logger, defaultPool, importDirs: config.importDirs, dataDir: config.dataDir, onImported: (image) => void templates.baseImported(image).catch((err: unknown) => logger.error({ err }, 'template rebuilds not started')) }),
          templates,
          hosts: new HostService(store, exporter),
          pools: new PoolService(store, replenisher, config.poolDefaults),
          provisioning,
          copies: new CopyService(store, replenisher),
          events: new EventService(store),
          tokens,
          replenisher,
          logger: logger.child({ component: 'api' }),
          info: { version: VERSION, dataDir: config.dataDir, driver: driver.name, exporter: this.nbd ? `nbd ${this.nbd.address}${config.nbdTls === 'off' ? '' : config.nbdTls === 'psk' ? ' (TLS-PSK)' : ' (TLS X.509)'}` : exporter.name },
        },
        apiTls && { https: apiTls },
      );
      this.httpValue = http;
      this.routesValue = routes;
      this.onStop('http', () => http.close());
      this.onStop('provisioning', () => provisioning.stop()); // hooks run in reverse: waiting provisions get their 503 before http closes and the replenisher drains
      replenisher.start();
      if (opts.listen !== false) {
        await http.listen({ host: config.listen.host, port: config.listen.port });
        logger.info({ address: this.address, dataDir: config.dataDir }, 'prestage is serving');
      } else {
        await http.ready();
      }
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

  private async openExporter(): Promise<Exporter> {
    const { config } = this;
    if (config.exporter === 'path') return new LocalPathExporter();
    const nbd = new NbdExporter({
      listen: config.nbdListen,
      tls: config.nbdTls,
      ...(config.nbdTls === 'x509' && { x509: await readX509Dir(config.nbdTlsDir) }),
      ...(config.nbdAdvertise !== undefined && { advertise: config.nbdAdvertise }),
      logger: this.logger, // the NBD server names its own component
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
