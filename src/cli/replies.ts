/**
 * The shapes of the API's replies as this client reads them. The CLI sits beside the API,
 * not on it, so these mirror `src/api/schemas.ts` instead of importing it.
 */

export interface ImageReply {
  readonly id: string;
  readonly name: string;
  readonly version: number;
  readonly ref: string;
  readonly sha256: string;
  readonly sizeBytes: number;
  readonly volume: string;
  readonly state: string;
  readonly createdAt: string;
  readonly kind: 'golden' | 'template';
  readonly baseImageId: string | null;
}

export interface TemplateBuildReply {
  readonly id: string;
  readonly template: string;
  readonly state: 'building' | 'done' | 'unchanged' | 'failed';
  readonly trigger: string;
  readonly baseImageId: string | null;
  readonly imageId: string | null;
  readonly version: number | null;
  readonly error: string | null;
  readonly startedAt: string;
  readonly finishedAt: string | null;
  readonly buildMs: number | null;
  readonly rolloverMs: number | null;
  readonly refilledMs: number | null;
  readonly log?: string;
}

export interface TemplateReply {
  readonly name: string;
  readonly base: string;
  readonly rebuild: string;
  readonly specSha256: string;
  readonly createdAt: string;
  readonly updatedAt: string;
  readonly versions: readonly ImageReply[];
  readonly latestBuild: TemplateBuildReply | null;
}

/** A pool (or a source asked for on demand) that a copy does not fit: it needs this, the store has that. */
export interface ShortageReply {
  readonly kind: 'space';
  readonly neededBytes: number;
  readonly freeBytes: number;
  readonly marginBytes: number;
  readonly since: string;
}

export interface ProblemReply extends ShortageReply {
  readonly source: string;
  readonly message: string;
}

export interface PoolReply {
  readonly source: string;
  readonly policy: { readonly kind: string; readonly min: number; readonly max: number; readonly fillRate?: number; readonly missCostSpareHours?: number };
  readonly prewarm: readonly string[];
  readonly image: string | null;
  readonly target: number;
  readonly ready: number;
  readonly making: number;
  readonly mapped: number;
  readonly createdAt: string;
  readonly plan: {
    readonly requestsPerHour: number;
    readonly meanBatch: number;
    readonly leadTimeS: number;
    readonly wanted: number;
    readonly granted: number;
    readonly historyCap: number | null;
    readonly expectedFill: number | null;
    readonly lastSpareHitsPerHour: number | null;
    readonly lastSpareHitsPerHourPerGiB: number | null;
    readonly reason: string;
  } | null;
  readonly shortage: ShortageReply | null;
}

export interface MappingReply {
  readonly copyId: string;
  readonly source: string;
  readonly imageId: string;
  readonly createdAt: string;
}

export interface HostReply {
  readonly id: string;
  readonly mac: string | null;
  readonly labels: Readonly<Record<string, string>>;
  readonly vars: Readonly<Record<string, string>>;
  readonly createdAt: string;
  readonly mapping?: MappingReply | null;
}

export type AccessReply = { readonly kind: 'path'; readonly path: string } | { readonly kind: 'nbd'; readonly uri: string; readonly exportName: string };

export interface ProvisionReply {
  readonly hostId: string;
  readonly source: string;
  readonly image: string;
  readonly copyId: string;
  readonly access: AccessReply;
  readonly outcome: 'warm' | 'joined' | 'cold';
  readonly existing: boolean;
  readonly waitMs: number;
}

export interface ReleaseReply {
  readonly hostId: string;
  readonly copyId: string;
}

export interface Progress {
  readonly doneBytes: number;
  readonly totalBytes: number;
}

export interface CopyReply {
  readonly id: string;
  readonly imageId: string;
  readonly pool: string | null;
  readonly state: string;
  readonly hostId: string | null;
  readonly createdAt: string;
  readonly progress?: Progress;
}

export interface TaskReply extends Progress {
  readonly kind: string;
  readonly subject: string;
  readonly startedAt: string;
}

export interface StatusReply {
  readonly version: string;
  readonly dataDir: string;
  readonly driver: string;
  readonly exporter: string;
  readonly replenisher: string;
  /** What needs attention (pools short of space); empty when all is well. */
  readonly problems: readonly ProblemReply[];
  readonly images: number;
  readonly hosts: number;
  readonly mapped: number;
  readonly waitingProvisions: number;
  readonly copiesInFlight: readonly ({ readonly copyId: string; readonly imageId: string; readonly pool: string | null } & Progress)[];
  readonly pools: readonly PoolReply[];
}

export interface HostKeyReply {
  readonly hostId: string;
  readonly identity: string;
  readonly key: string;
  readonly pskFileLine: string;
}

export interface TokenReply {
  readonly name: string;
  readonly role: 'admin' | 'operator' | 'reader' | 'host';
  readonly hostId: string | null;
  readonly createdAt: string;
  readonly expiresAt: string | null;
}

export interface NewTokenReply extends TokenReply {
  readonly token: string;
}

export interface MetaCredentialReply {
  readonly hostId: string;
  readonly user: string;
  readonly secret: string;
}
