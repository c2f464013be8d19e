/** What the domain talks about. Plain data: rows of the store, replies of the services. */

export type ImageState = 'ready' | 'missing';

/** One sealed version of a golden image. */
export interface Image {
  readonly id: string;
  readonly name: string;
  readonly version: number;
  readonly sha256: string;
  readonly sizeBytes: number;
  /** Where the sealed, read-only volume lives (driver-specific locator). */
  readonly volume: string;
  readonly state: ImageState;
  readonly createdAt: string;
}

export type CopyState = 'making' | 'ready' | 'mapped' | 'releasing' | 'gone' | 'failed';

export type CopyMethod = 'reflink' | 'sparse-copy';

export interface Copy {
  readonly id: string;
  readonly imageId: string;
  /** The pool (source spec) that asked for it; null for an on-demand copy with no pool. */
  readonly pool: string | null;
  readonly state: CopyState;
  readonly volume: string;
  readonly method: CopyMethod | null;
  readonly hostId: string | null;
  readonly error: string | null;
  readonly createdAt: string;
  readonly readyAt: string | null;
  readonly copyMs: number | null;
}

export interface StaticPolicy {
  readonly kind: 'static';
  readonly min: number;
  readonly max: number;
}

export type PoolPolicy = StaticPolicy;

export interface Pool {
  /** The normalized source spec: `name` (follows the latest version) or `name@N` (pinned). */
  readonly source: string;
  readonly policy: PoolPolicy;
  readonly createdAt: string;
}

export interface Host {
  readonly id: string;
  readonly mac: string | null;
  readonly labels: Readonly<Record<string, string>>;
  readonly createdAt: string;
}

export interface Mapping {
  readonly hostId: string;
  readonly copyId: string;
  /** The source spec the host asked for, as normalized. */
  readonly source: string;
  readonly imageId: string;
  readonly createdAt: string;
}

export interface EventRecord {
  readonly seq: number;
  readonly at: string;
  readonly type: string;
  readonly subject: string;
  readonly data: Readonly<Record<string, unknown>>;
}

export type ProvisionOutcome = 'warm' | 'joined' | 'cold';

/** How a host reaches its copy; each exporter fills in its own kind. */
export type Access =
  | { readonly kind: 'path'; readonly path: string }
  | { readonly kind: 'nbd'; readonly uri: string; readonly exportName: string };
