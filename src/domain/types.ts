import type { ExporterKind } from './access.js';
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

/**
 * How a driver made a copy, in its own words: the file driver's `reflink` or `sparse-copy`, the
 * RBD driver's `clone`. A name for people and metrics, never a branch in the core.
 */
export type CopyMethod = string;

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
  /** The instance that made it (or is making it); null in rows older than the cluster migration. */
  readonly owner?: string | null;
  /** The epoch of its pool's lease when it was started as a spare; null for an on-demand copy. */
  readonly fence?: number | null;
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
  /** Its iSCSI initiator name: the one its target lets in (null only for hosts from before iSCSI, until first used). */
  readonly iqn: string | null;
  /** The source it is provisioned from when it network-boots with no copy (`host add --boot`). */
  readonly boot: string | null;
  /** The exporter that serves its copy; null: the server's `--exporter`. */
  readonly exporter: ExporterKind | null;
}

/**
 * Who may do what through the API: `admin` everything; `operator` pools, hosts, provisions,
 * templates and images; `reader` every read but keys and secrets; `host` provision, release and
 * read itself, bound to one host id; `metrics` scrape `/metrics` and nothing else (Prometheus).
 */
export type ApiRole = 'admin' | 'operator' | 'reader' | 'host' | 'metrics';
export const API_ROLES: readonly ApiRole[] = ['admin', 'operator', 'reader', 'host', 'metrics'];

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
  /** The instance running (or that ran) the build. */
  readonly owner?: string | null;
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


/** One `prestage serve` process sharing the state with others (one row per start). */
export interface InstanceRecord {
  readonly id: string;
  /** `--instance-name`, else host:pid. */
  readonly name: string;
  readonly host: string;
  readonly pid: number;
  readonly version: string;
  /** Where its API and NBD server listen, as it advertises them (null when not listening). */
  readonly api: string | null;
  readonly nbd: string | null;
  readonly startedAt: string;
  readonly heartbeatAt: string;
  /** Set when it stopped cleanly. */
  readonly stoppedAt: string | null;
  /** Set when another instance (or its own next start) found it dead and took over its work. */
  readonly reapedAt: string | null;
  readonly reapedBy: string | null;
}

/** The right of one instance to refill one pool; every spare it starts carries the epoch. */
export interface PoolLease {
  readonly source: string;
  readonly instanceId: string;
  /** Raised each time the lease changes hands: a spare started under an older epoch is never marked ready. */
  readonly epoch: number;
  readonly expiresAt: string;
}

/** What a dead instance left unfinished, handed to the one that reaped it to clean up. */
export interface ReapedWork {
  /** Copies it was making, now failed: their volumes are to be removed. */
  readonly copies: readonly string[];
  /** Template builds it was running, now failed: their scratch volumes (named by build id) are to be removed. */
  readonly builds: readonly string[];
}
