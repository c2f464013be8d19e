/**
 * How a host reaches its copy: the one definition. Each exporter fills in its own kind; the API
 * serves it as `AccessSchema` (src/api/schemas.ts), checked at compile time to be this very type,
 * so the domain, the API document and the CLI's generated types cannot disagree. It never holds
 * a secret: a host gets those with its credentials.
 */
export type Access =
  | { readonly kind: 'path'; readonly path: string }
  | { readonly kind: 'nbd'; readonly uri: string; readonly exportName: string }
  | {
      readonly kind: 'iscsi';
      readonly portal: string;
      readonly target: string;
      readonly lun: number;
      readonly initiator: string;
      readonly chapUser: string;
      readonly mutualChapUser?: string;
    };

/** The exporters a host may be served by: `nbd` (the built-in NBD server) or `iscsi` (tgtd). */
export type ExporterKind = 'nbd' | 'iscsi';

/** How a host reaches its copy over one exporter of this server, without a secret (`prestage host access`). */
export interface ExporterAccess {
  readonly exporter: ExporterKind | 'path';
  /** This exporter serves the host's copy (with several, the one its record or the server chose). */
  readonly serves: boolean;
  /** What the host dials; null when there is nothing to dial here (no copy mapped, or another exporter serves it). */
  readonly access: Access | null;
  /** How the host proves itself, and where it gets the secret. */
  readonly credential: string;
  /** The host's open NBD connections or iSCSI sessions here now. */
  readonly sessions: number;
}

/** A CHAP account: who proves itself, and the shared secret it proves itself with. */
export interface ChapAccount {
  readonly user: string;
  readonly secret: string;
}

/** What lets one host in over iSCSI: its initiator name (the only one its target accepts) and its CHAP accounts. */
export interface IscsiHostAuth {
  /** The host's initiator name (IQN, EUI or NAA form). */
  readonly initiator: string;
  /** The host proves itself with this account (tgt's incoming account). */
  readonly chap: ChapAccount;
  /** Mutual CHAP: the target proves itself to the host with this account (tgt's outgoing account). */
  readonly mutual?: ChapAccount;
}

/**
 * Everything a host proves itself with, one part per exporter: each exporter takes its own part
 * (Exporter.setHostCredentials) and lets in nobody else. Secrets: never served in an Access.
 */
export interface HostCredentials {
  /** The NBD TLS-PSK key (hex); its identity is the host id. */
  readonly psk: string | null;
  readonly iscsi: IscsiHostAuth | null;
}
