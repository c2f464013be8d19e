import { randomBytes } from 'node:crypto';
import { InputError, NotFoundError, type Exporter, type Host, type Store } from '../domain/index.js';

/** A host's TLS-PSK credentials, in the key-file line format nbdinfo and qemu read (`identity:hexkey`). */
export interface HostKey {
  readonly hostId: string;
  readonly identity: string;
  readonly key: string;
  readonly pskFileLine: string;
}

const HOST_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const LABEL_KEY = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$/;

export class HostService {
  constructor(
    private readonly store: Store,
    private readonly exporter: Exporter,
  ) {}

  async add(input: { id: string; mac?: string | null; labels?: Record<string, string> }): Promise<Host> {
    if (!HOST_ID.test(input.id)) {
      throw new InputError(`invalid host id '${input.id}': use 1-63 characters of A-Z, a-z, 0-9, '.', '_', '-'`, { field: 'id' });
    }
    const mac = input.mac ? input.mac.toLowerCase().replaceAll('-', ':') : null;
    if (mac !== null && !MAC.test(mac)) throw new InputError(`invalid MAC address '${input.mac}': expected six hex pairs like 52:54:00:12:34:56`, { field: 'mac' });
    const labels = input.labels ?? {};
    for (const [k, v] of Object.entries(labels)) {
      if (!LABEL_KEY.test(k) || typeof v !== 'string' || v.length > 256) throw new InputError(`invalid label '${k}'`, { field: 'labels' });
    }
    const host: Host = { id: input.id, mac, labels, createdAt: new Date().toISOString() };
    await this.store.insertHost(host, { type: 'host.added', subject: host.id, data: { mac } });
    await this.rotateKey(host.id);
    return host;
  }

  list(): Promise<Host[]> {
    return this.store.listHosts();
  }

  async get(id: string): Promise<Host> {
    const h = await this.store.getHost(id);
    if (!h) throw new NotFoundError('host', id);
    return h;
  }

  /** The host's key, made on first use. */
  async key(id: string): Promise<HostKey> {
    await this.get(id);
    const key = await this.store.getHostKey(id);
    return key === undefined ? this.rotateKey(id) : hostKey(id, key);
  }

  /** A new 256-bit key; connections already open keep theirs, new ones need the new key. */
  async rotateKey(id: string): Promise<HostKey> {
    const key = randomBytes(32).toString('hex');
    await this.store.setHostKey(id, key, { type: 'host.key-rotated', subject: id });
    this.exporter.setHostKey(id, key);
    return hostKey(id, key);
  }

  async remove(id: string): Promise<void> {
    await this.store.deleteHost(id, { type: 'host.removed', subject: id });
    this.exporter.setHostKey(id, null);
  }
}

function hostKey(hostId: string, key: string): HostKey {
  return { hostId, identity: hostId, key, pskFileLine: `${hostId}:${key}` };
}
