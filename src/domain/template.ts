/**
 * Templates: a golden image configured once with what many hosts share, then sealed.
 * The spec (what an operator writes), the plan (what a build does to the disk), and the
 * per-host documents served as cloud-init NoCloud-net data at map time.
 */

/** Which partition of a raw disk holds the filesystem to change. Exactly one field is set. */
export type PartitionSelector =
  | { readonly number: number }
  | { readonly label: string }
  | { readonly guid: string };

/** What the build expects to find in the chosen partition; anything else is an error. */
export type FilesystemKind = 'ext' | 'vfat';

/** One file a template writes, as the spec gives it (content already inline, params not yet substituted). */
export interface TemplateFileSpec {
  /** Absolute path inside the filesystem, e.g. `/etc/resolv.conf`. */
  readonly path: string;
  /** Permission bits, e.g. 0o644. Default 0o644. */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  /** The bytes, base64. A spec file's `content:` (text) or `from:` (a file read by the CLI) both end here. */
  readonly contentBase64: string;
  /** Substitute `{{param}}` in the content. Default true for `content:`, false for `from:`. */
  readonly substitute: boolean;
}

/** The cloud-init NoCloud seed built into the template (common to every host). */
export interface SeedSpec {
  /** `iso`: an ISO 9660 image labelled `cidata` (xorriso) written into the partition; `vfat`: files copied into the partition's vfat filesystem (mtools), whose label should be `cidata`. */
  readonly as: 'iso' | 'vfat';
  readonly partition: PartitionSelector;
  readonly userData?: string;
  readonly metaData?: string;
  readonly networkConfig?: string;
}

/** The NoCloud-net documents served to each host at `/v1/meta/HOST/…`, rendered with the host's values. */
export interface PerHostSpec {
  /** The names a host must (or may, with a default) give, e.g. `hostname`, `address`, `ssh_key`. */
  readonly params: Readonly<Record<string, { readonly default?: string; readonly description?: string }>>;
  readonly metaData?: string;
  readonly userData?: string;
  readonly networkConfig?: string;
}

/** A validated template spec, as the API stores it. */
export interface TemplateSpec {
  /** Same rules as an image name; templates and golden images share one namespace. */
  readonly name: string;
  /** `golden` (follows the latest version) or `golden@N` (pinned). */
  readonly base: string;
  readonly description?: string;
  /** Default partition number 1; `whole-disk` for a disk image that is one filesystem (no partition table). */
  readonly partition?: PartitionSelector | 'whole-disk';
  /** Default `ext`. */
  readonly filesystem: FilesystemKind;
  /** `auto` (default): a new version of the base rebuilds the template; `manual`: only `template build` does. */
  readonly rebuild: 'auto' | 'manual';
  /** Values for `{{name}}` in file contents and seed documents. */
  readonly params: Readonly<Record<string, string>>;
  readonly files: readonly TemplateFileSpec[];
  /** Absolute paths to delete; a missing one is not an error. */
  readonly remove: readonly string[];
  readonly seed?: SeedSpec;
  readonly perHost?: PerHostSpec;
}

/** What a build does to one copy of the base disk: every param already substituted. */
export interface CustomizePlan {
  readonly partition: PartitionSelector | 'whole-disk';
  readonly filesystem: FilesystemKind;
  readonly writes: readonly { readonly path: string; readonly mode: number; readonly uid: number; readonly gid: number; readonly content: Buffer }[];
  readonly removes: readonly string[];
  readonly seed?: {
    readonly as: 'iso' | 'vfat';
    readonly partition: PartitionSelector;
    /** NoCloud file name (`user-data`, `meta-data`, `network-config`) → bytes. */
    readonly files: Readonly<Record<string, Buffer>>;
  };
  /** Every timestamp the build writes (inodes, superblock, ISO dates), in seconds since 1970: same inputs, same bytes. */
  readonly epoch: number;
}
