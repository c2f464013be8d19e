import type { TemplateSpec } from './template.js';

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
  /** `golden`: imported; `template`: built from a golden version by a template. */
  readonly kind: ImageKind;
  /** For a template version: the golden version it was built from. */
  readonly baseImageId: string | null;
}

export type ImageKind = 'golden' | 'template';

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

/** Sized from the pool's demand: the fewest spares that serve `fillRate` of requests warm, within min..max. */
export interface PredictivePolicy {
  readonly kind: 'predictive';
  /** Target share of requests served warm, e.g. 0.999. */
  readonly fillRate: number;
  readonly min: number;
  readonly max: number;
}

/**
 * Sized from the pool's demand by what spares and misses cost: the number of spares that
 * maximizes (cold waits avoided per hour × missCostSpareHours − spares held), within min..max.
 */
export interface CostPolicy {
  readonly kind: 'cost';
  /** A cold wait costs as much as holding one spare for this many hours (e.g. 2). */
  readonly missCostSpareHours: number;
  readonly min: number;
  readonly max: number;
}

export type PoolPolicy = StaticPolicy | PredictivePolicy | CostPolicy;

export interface Pool {
  /** The normalized source spec: `name` (follows the latest version) or `name@N` (pinned). */
  readonly source: string;
  readonly policy: PoolPolicy;
  /** Known demand ahead, as `COUNT@HH:MM[/DAYS]` (UTC), e.g. `300@09:00/mon-fri`: the target rises early enough. */
  readonly prewarm: readonly string[];
  readonly createdAt: string;
}

export interface Host {
  readonly id: string;
  readonly mac: string | null;
  readonly labels: Readonly<Record<string, string>>;
  /** The host's own values for templates' per-host data (hostname, address, ssh_key, …). */
  readonly vars: Readonly<Record<string, string>>;
  readonly createdAt: string;
}

/**
 * Who may do what through the API: `admin` everything; `operator` pools, hosts, provisions,
 * templates and images; `reader` every read but keys and secrets; `host` provision, release and
 * read itself, bound to one host id.
 */
export type ApiRole = 'admin' | 'operator' | 'reader' | 'host';
export const API_ROLES: readonly ApiRole[] = ['admin', 'operator', 'reader', 'host'];

/** An API token as listed: never its secret, which is stored only as a SHA-256. */
export interface ApiToken {
  readonly name: string;
  readonly role: ApiRole;
  /** For role `host`: the one host it acts for. */
  readonly hostId: string | null;
  readonly createdAt: string;
  readonly expiresAt: string | null;
}

/** A template as applied: its current spec. Its versions are images of kind `template`. */
export interface TemplateRecord {
  readonly name: string;
  readonly spec: TemplateSpec;
  readonly specSha256: string;
  readonly createdAt: string;
  readonly updatedAt: string;
}

export type BuildState = 'building' | 'done' | 'unchanged' | 'failed';
export type BuildTrigger = 'apply' | 'build' | 'base-version';

/** One build of a template: its log, outcome and timings. */
export interface TemplateBuild {
  readonly id: string;
  readonly template: string;
  readonly state: BuildState;
  readonly trigger: BuildTrigger;
  readonly spec: TemplateSpec;
  readonly baseImageId: string | null;
  /** The template version it made (or found identical, for `unchanged`). */
  readonly imageId: string | null;
  readonly version: number | null;
  readonly log: string;
  readonly error: string | null;
  readonly startedAt: string;
  readonly finishedAt: string | null;
  readonly buildMs: number | null;
  /** From the new base version's import until provisions get the new template version. */
  readonly rolloverMs: number | null;
  /** From that import until the template's pool held its target of new-version spares. */
  readonly refilledMs: number | null;
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
