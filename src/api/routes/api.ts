import type { BootNetworks } from '../../service/boot-script.js';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Logger } from 'pino';
import type { Replenisher } from '../../pool/index.js';
import type { ErrorCode, InstanceRecord } from '../../domain/index.js';
import type {
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
} from '../../service/index.js';
import type { TaskBoard } from '../tasks.js';

/** The Fastify instance the route modules register on (TypeBox types the requests). */
export type Api = FastifyInstance<Server, IncomingMessage, ServerResponse, FastifyBaseLogger, TypeBoxTypeProvider>;

/** One instance as `GET /v1/instances` shows it. */
export interface InstanceInfo extends InstanceRecord {
  readonly live: boolean;
  readonly self: boolean;
  readonly pools: readonly string[];
}

/** The metrics `/metrics` serves, and the API's own count of error answers. */
export interface ApiMetrics {
  /** The exposition in Prometheus text format, read now. */
  render(): Promise<{ readonly contentType: string; readonly body: string }>;
  /** An error answer went out with this code. */
  apiError(code: ErrorCode): void;
}

export interface ApiDeps {
  readonly images: ImageService;
  readonly hosts: HostService;
  readonly pools: PoolService;
  readonly provisioning: ProvisioningService;
  readonly templates: TemplateService;
  readonly copies: CopyService;
  readonly events: EventService;
  readonly tokens: TokenService;
  readonly replenisher: Replenisher;
  readonly logger: Logger;
  /** The instances sharing the state (one with SQLite), with the pools each leads. */
  readonly instances: () => Promise<readonly InstanceInfo[]>;
  readonly info: { readonly version: string; readonly dataDir: string; readonly driver: string; readonly exporter: string };
  /** Network boot: the networks `GET /v1/boot/ipxe` answers. */
  readonly boot: { readonly networks: BootNetworks };
  /** The driver storing a volume (`file`, `rbd`), or undefined when none configured here does. */
  readonly driverOf: (volume: string) => string | undefined;
  readonly metrics: ApiMetrics;
  /** The pools' recent past, for the dashboard's charts. */
  readonly history: PoolHistory;
  /** Policy comparisons on demand traces (the dashboard's simulator page). */
  readonly simulations: SimulationService;
  /** The iSCSI exporter of this instance, when it runs one. */
  readonly iscsi: IscsiStatusSource | null;
}

/** What `/v1/status` shows of the iSCSI exporter. */
export interface IscsiStatusSource {
  status(): { readonly tgtd: { readonly state: string; readonly restarts: number }; readonly portal: string; readonly exported: number };
  sessions(): Promise<readonly { readonly hostId: string | null; readonly initiator: string; readonly address: string | null }[]>;
}

/** What every route module gets. */
export interface RouteContext {
  readonly deps: ApiDeps;
  readonly tasks: TaskBoard;
}
