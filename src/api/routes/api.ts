import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Logger } from 'pino';
import type { Replenisher } from '../../pool/index.js';
import type {
  CopyService,
  EventService,
  HostService,
  ImageService,
  PoolService,
  ProvisioningService,
  TemplateService,
  TokenService,
} from '../../service/index.js';
import type { TaskBoard } from '../tasks.js';

/** The Fastify instance the route modules register on (TypeBox types the requests). */
export type Api = FastifyInstance<Server, IncomingMessage, ServerResponse, FastifyBaseLogger, TypeBoxTypeProvider>;

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
  readonly info: { readonly version: string; readonly dataDir: string; readonly driver: string; readonly exporter: string };
}

/** What every route module gets. */
export interface RouteContext {
  readonly deps: ApiDeps;
  readonly tasks: TaskBoard;
}
