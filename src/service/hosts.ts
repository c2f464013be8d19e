import { randomBytes, timingSafeEqual } from 'node:crypto';
import { InputError, NotFoundError, type Exporter, type ExporterAccess, type ExporterKind, type Host, type HostIscsiSecrets, type Mapping, type Store } from '../domain/index.js';
import { checkIscsiName, initiatorNameFor, newHostAuth, type IscsiHostAuth } from '../exporters/iscsi/names.js';
import { iscsiHostAuth, readHostCredentials } from './host-credentials.js';

/** A host's TLS-PSK credentials, in the key-file line format nbdinfo and qemu read (`identity:hexkey`). */
export interface HostKey {
  readonly hostId: string;
  readonly identity: string;
  readonly key: string;
  readonly pskFileLine: string;
}

/** A host's HTTP Basic credential for `/v1/meta/HOST/…` (user: the host id). */
export interface MetaCredential {
  readonly hostId: string;
  readonly user: string;
  readonly secret: string;
}

export type HostView = Host & { readonly mapping: Mapping | null };

/** How a host reaches its copy over each exporter of this server (`prestage host access`). */
export interface HostAccess {
  readonly hostId: string;
  readonly mapping: { readonly copyId: string; readonly source: string } | null;
  readonly exporters: readonly ExporterAccess[];
}

/** A host's iSCSI login with its secrets, for the host's own set-up. */
export interface IscsiCredential {
  readonly hostId: string;
  readonly initiator: string;
  readonly chapUser: string;
  readonly chapSecret: string;
  readonly mutualChapUser: string | null;
  readonly mutualChapSecret: string | null;
}

const HOST_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const VAR_NAME = /^[A-Za-z_][A-Za-z0-9_.-]{0,62}$/;
const VAR_MAX_BYTES = 16 * 1024;
const LABEL_KEY = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$/;

export class HostService {
  constructor(
    private readonly store: Store,
    private readonly exporter: Exporter,
    /** Whether new iSCSI logins get mutual CHAP (the target proves itself to the host too). */
    private readonly iscsiMutual = false,
  ) {}

  /** Tells the exporters the host's credentials as stored now: each lets in only those. */
  private async credentialsChanged(id: string): Promise<void> {
    await this.exporter.setHostCredentials(id, await readHostCredentials(this.store, id));
  }

  async add(input: {
    id: string;
    mac?: string | null;
    labels?: Record<string, string>;
    vars?: Record<string, string>;
    /** Its iSCSI initiator name; made from its id when not given. */
    iqn?: string | null;
    /** The source it is provisioned from when it network-boots with no copy. */
    boot?: string | null;
    exporter?: ExporterKind | null;
  }): Promise<Host> {
    if (!HOST_ID.test(input.id)) {
      throw new InputError(`invalid host id '${input.id}': use 1-63 characters of A-Z, a-z, 0-9, '.', '_', '-'`, { field: 'id' });
    }
    const mac = input.mac ? input.mac.toLowerCase().replaceAll('-', ':') : null;
    if (mac !== null && !MAC.test(mac)) throw new InputError(`invalid MAC address '${input.mac}': expected six hex pairs like 52:54:00:12:34:56`, { field: 'mac' });
    const labels = input.labels ?? {};
    for (const [k, v] of Object.entries(labels)) {
      if (!LABEL_KEY.test(k) || typeof v !== 'string' || v.length > 256) throw new InputError(`invalid label '${k}'`, { field: 'labels' });
    }
    const iqn = input.iqn ? checkIscsiName(input.iqn, 'iqn') : initiatorNameFor(input.id);
    const boot = input.boot ?? null;
    if (boot !== null && (typeof boot !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._:@-]{0,79}$/.test(boot))) {
      throw new InputError(`invalid boot source '${String(boot)}': a source name such as ubuntu-24.04 or ubuntu-24.04@3`, { field: 'boot' });
    }
    const exporter = input.exporter ?? null;
    if (exporter !== null && exporter !== 'nbd' && exporter !== 'iscsi') throw new InputError(`exporter must be 'nbd' or 'iscsi'`, { field: 'exporter' });
    const host: Host = { id: input.id, mac, labels, vars: checkVars(input.vars ?? {}), createdAt: new Date().toISOString(), iqn, boot, exporter };
    await this.store.insertHost(host, { type: 'host.added', subject: host.id, data: { mac, iqn, boot, exporter } });
    await this.rotateKey(host.id);
    await this.rotateMetaCredential(host.id);
    await this.rotateIscsiAuth(host.id);
    return host;
  }

  /** Sets (a string) or removes (null) the host's values for templates' per-host data. */
  async setVars(id: string, changes: Record<string, string | null>): Promise<Host> {
    const host = await this.get(id);
    const vars: Record<string, string> = { ...host.vars };
    for (const [k, v] of Object.entries(changes)) {
      if (v === null) delete vars[k];
      else vars[k] = v;
    }
    await this.store.setHostVars(id, checkVars(vars), { type: 'host.vars-set', subject: id, data: { names: Object.keys(changes) } });
    return { ...host, vars };
  }

  list(): Promise<Host[]> {
    return this.store.listHosts();
  }

  async get(id: string): Promise<Host> {
    const h = await this.store.getHost(id);
    if (!h) throw new NotFoundError('host', id);
    return h;
  }

  /** The host with this MAC (any case, ':' or '-'), if one has it. */
  async getByMac(mac: string): Promise<Host | undefined> {
    const m = mac.toLowerCase().replaceAll('-', ':');
    return MAC.test(m) ? this.store.getHostByMac(m) : undefined;
  }

  /** The host with the copy mapped to it, if any. */
  async getWithMapping(id: string): Promise<HostView> {
    return { ...(await this.get(id)), mapping: (await this.store.getMapping(id)) ?? null };
  }

  async listWithMappings(): Promise<HostView[]> {
    const mappings = new Map((await this.store.listMappings()).map((m) => [m.hostId, m]));
    return (await this.list()).map((h) => ({ ...h, mapping: mappings.get(h.id) ?? null }));
  }

  /**
   * Whether `secret` is the host's credential for its cloud-init documents, compared in
   * constant time. It is not the NBD key: that one never travels over HTTP.
   */
  async checkMetaCredential(id: string, secret: string): Promise<boolean> {
    const known = await this.store.getHostMetaSecret(id);
    if (known === undefined) return false;
    const a = Buffer.from(known, 'utf8');
    const b = Buffer.from(secret.toLowerCase(), 'utf8');
    return a.length === b.length && timingSafeEqual(a, b);
  }

  /** The host's meta-data credential, made on first use. */
  async metaCredential(id: string): Promise<MetaCredential> {
    await this.get(id);
    const secret = await this.store.getHostMetaSecret(id);
    return secret === undefined ? this.rotateMetaCredential(id) : { hostId: id, user: id, secret };
  }

  /** A new meta-data credential; the old one stops working at once. */
  async rotateMetaCredential(id: string): Promise<MetaCredential> {
    const secret = randomBytes(16).toString('hex');
    await this.store.setHostMetaSecret(id, secret, { type: 'host.meta-credential-rotated', subject: id });
    return { hostId: id, user: id, secret };
  }

  /** The host's key, made on first use. */
  async key(id: string): Promise<HostKey> {
    await this.get(id);
    const key = await this.store.getHostKey(id);
    return key === undefined ? this.rotateKey(id) : hostKey(id, key);
  }

  /** A new 256-bit key; the host's open NBD connections are cut, new ones need the new key. */
  async rotateKey(id: string): Promise<HostKey> {
    const key = randomBytes(32).toString('hex');
    await this.store.setHostKey(id, key, { type: 'host.key-rotated', subject: id });
    await this.credentialsChanged(id);
    return hostKey(id, key);
  }

  async access(id: string): Promise<HostAccess> {
    await this.get(id);
    const mapping = await this.store.getMapping(id);
    const copy = mapping ? await this.store.getCopy(mapping.copyId) : undefined;
    const mapped = copy?.state === 'mapped' ? copy : null;
    return {
      hostId: id,
      mapping: mapping ? { copyId: mapping.copyId, source: mapping.source } : null,
      exporters: await this.exporter.accessOf(id, mapped),
    };
  }

  /** The iSCSI login as a host configures it. */
  async iscsiCredential(id: string, rotate = false): Promise<IscsiCredential> {
    const auth = rotate ? await this.rotateIscsiAuth(id) : await this.iscsiAuth(id);
    return { hostId: id, initiator: auth.initiator, chapUser: auth.chap.user, chapSecret: auth.chap.secret, mutualChapUser: auth.mutual?.user ?? null, mutualChapSecret: auth.mutual?.secret ?? null };
  }

  /**
   * The host's iSCSI login (initiator name, CHAP user and secrets), made on first use for hosts
   * from before iSCSI. For the host itself and admins: a reader never sees it.
   */
  async iscsiAuth(id: string): Promise<IscsiHostAuth> {
    await this.get(id);
    const stored = await this.store.getHostIscsi(id);
    return stored ? iscsiHostAuth(id, stored) : this.rotateIscsiAuth(id);
  }

  /** New CHAP secrets (the initiator name stays); the host's iSCSI sessions end, new ones need the new secrets. */
  async rotateIscsiAuth(id: string): Promise<IscsiHostAuth> {
    const host = await this.get(id);
    const made = newHostAuth(id, host.iqn ?? initiatorNameFor(id), { mutual: this.iscsiMutual });
    const secrets: HostIscsiSecrets = { iqn: made.initiator, chapSecret: made.chap.secret, mutualSecret: made.mutual?.secret ?? null };
    await this.store.setHostIscsi(id, secrets, { type: 'host.iscsi-credentials-rotated', subject: id });
    await this.credentialsChanged(id);
    return made;
  }

  async remove(id: string): Promise<void> {
    await this.store.deleteHost(id, { type: 'host.removed', subject: id });
    await this.exporter.setHostCredentials(id, null);
  }
}

function hostKey(hostId: string, key: string): HostKey {
  return { hostId, identity: hostId, key, pskFileLine: `${hostId}:${key}` };
}

/** Per-host values: names as template params have them, values up to 16 KiB (an SSH key list fits). */
function checkVars(vars: Record<string, string>): Record<string, string> {
  if (Object.keys(vars).length > 256) throw new InputError('a host has at most 256 values', { field: 'vars' });
  for (const [k, v] of Object.entries(vars)) {
    if (!VAR_NAME.test(k)) throw new InputError(`invalid value name '${k}': use a letter or '_' then letters, digits, '_', '.', '-' (up to 63)`, { field: 'vars' });
    if (typeof v !== 'string' || Buffer.byteLength(v) > VAR_MAX_BYTES) throw new InputError(`value '${k}' must be a string of at most 16 KiB`, { field: 'vars' });
  }
  return vars;
}
