import { ConflictError, type Access, type Copy, type Exporter, type ExporterAccess, type Mapping } from '../domain/index.js';

/**
 * Hands the host the copy's local path: for hosts that share this machine's storage (a VM
 * host starting a guest from the file). Nothing to set up or tear down.
 */
export class LocalPathExporter implements Exporter {
  readonly name = 'path';

  export(_mapping: Mapping, copy: Pick<Copy, 'volume'>): Promise<Access> {
    // A volume that is not a file here (an RBD image) has no path to hand out.
    if (!copy.volume.startsWith('/')) return Promise.reject(new ConflictError(`copy volume ${copy.volume} is not a local file: serve it with --exporter nbd`, { volume: copy.volume }));
    return Promise.resolve({ kind: 'path', path: copy.volume });
  }

  setHostCredentials(): Promise<void> {
    // A local path needs no credentials.
    return Promise.resolve();
  }

  accessOf(_hostId: string, copy: Pick<Copy, 'volume'> | null): Promise<ExporterAccess[]> {
    const access: Access | null = copy && copy.volume.startsWith('/') ? { kind: 'path', path: copy.volume } : null;
    return Promise.resolve([{ exporter: 'path', serves: true, access, credential: 'none: a path on this machine, for its own VMs', sessions: 0 }]);
  }

  unexport(_hostId: string): Promise<void> {
    return Promise.resolve();
  }

  exportedHosts(): readonly string[] {
    return [];
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
