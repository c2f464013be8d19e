/** Table shapes as Kysely sees them. Sizes are integers of bytes; times are ISO-8601 strings. */
import type { Generated } from 'kysely';

export interface ImagesTable {
  id: string;
  name: string;
  version: number;
  sha256: string;
  size_bytes: number;
  volume: string;
  state: string;
  created_at: string;
  kind: Generated<string>;
  base_image_id: string | null;
}

export interface PoolsTable {
  source: string;
  policy: string;
  created_at: string;
  prewarm: Generated<string>;
  /** The forecaster's state (JSON), so demand history survives a restart. */
  forecast: string | null;
}

export interface CopiesTable {
  id: string;
  image_id: string;
  pool: string | null;
  state: string;
  volume: string;
  method: string | null;
  host_id: string | null;
  error: string | null;
  created_at: string;
  ready_at: string | null;
  copy_ms: number | null;
  /** When its state last changed (null only if written by something older than migration 0006). */
  changed_at: string | null;
  /** The instance that made it; null in rows from before migration 0007. */
  owner: string | null;
  /** Its pool lease's epoch when started as a spare; null on demand. */
  fence: number | null;
}

export interface HostsTable {
  id: string;
  mac: string | null;
  labels: string;
  created_at: string;
  psk: string | null;
  vars: Generated<string>;
  meta_secret: string | null;
  /** The host's iSCSI initiator name (null: from before 0009, made on first use). */
  iqn: string | null;
  /** The source it boots when it has no copy (`host add --boot`). */
  boot_source: string | null;
  /** 'nbd' | 'iscsi'; null: the server's --exporter. */
  exporter: string | null;
  /** Its CHAP secrets, kept like its PSK: never in a Host, only for its own credentials. */
  chap_secret: string | null;
  chap_mutual_secret: string | null;
}

export interface ApiTokensTable {
  name: string;
  role: string;
  host_id: string | null;
  sha256: string;
  created_at: string;
  expires_at: string | null;
}

export interface TemplatesTable {
  name: string;
  spec: string;
  spec_sha256: string;
  created_at: string;
  updated_at: string;
}

export interface TemplateBuildsTable {
  id: string;
  template: string;
  state: string;
  trigger: string;
  spec: string;
  base_image_id: string | null;
  image_id: string | null;
  version: number | null;
  log: string;
  error: string | null;
  started_at: string;
  finished_at: string | null;
  build_ms: number | null;
  rollover_ms: number | null;
  refilled_ms: number | null;
  owner: string | null;
}

export interface MappingsTable {
  host_id: string;
  copy_id: string;
  source: string;
  image_id: string;
  created_at: string;
}

export interface EventsTable {
  seq: Generated<number>;
  at: string;
  type: string;
  subject: string;
  data: string;
}

/** One row: events with `seq` below `before_seq` are past retention (see migration 0006). */
export interface EventHorizonTable {
  id: number;
  before_seq: number;
}

export interface InstancesTable {
  id: string;
  name: string;
  host: string;
  pid: number;
  version: string;
  api: string | null;
  nbd: string | null;
  started_at: string;
  heartbeat_at: string;
  stopped_at: string | null;
  reaped_at: string | null;
  reaped_by: string | null;
}

export interface PoolLeasesTable {
  source: string;
  instance_id: string;
  epoch: number;
  expires_at: string;
}

export interface Database {
  instances: InstancesTable;
  pool_leases: PoolLeasesTable;
  images: ImagesTable;
  pools: PoolsTable;
  copies: CopiesTable;
  hosts: HostsTable;
  mappings: MappingsTable;
  events: EventsTable;
  event_horizon: EventHorizonTable;
  templates: TemplatesTable;
  template_builds: TemplateBuildsTable;
  api_tokens: ApiTokensTable;
}
