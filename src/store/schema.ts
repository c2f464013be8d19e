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
}

export interface PoolsTable {
  source: string;
  policy: string;
  created_at: string;
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
}

export interface HostsTable {
  id: string;
  mac: string | null;
  labels: string;
  created_at: string;
  psk: string | null;
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

export interface Database {
  images: ImagesTable;
  pools: PoolsTable;
  copies: CopiesTable;
  hosts: HostsTable;
  mappings: MappingsTable;
  events: EventsTable;
}
