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
