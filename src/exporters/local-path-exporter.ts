import type { Access, Copy, Exporter, Mapping } from '../domain/index.js';

/**
 * Hands the host the copy's local path: for hosts that share this machine's storage (a VM
 * host starting a guest from the file). Nothing to set up or tear down.
 */
export class LocalPathExporter implements Exporter {
  readonly name = 'path';

  export(_mapping: Mapping, copy: Copy): Promise<Access> {
    return Promise.resolve({ kind: 'path', path: copy.volume });
  }

  setHostKey(_hostId: string, _pskHex: string | null): void {
    // A local path needs no credentials.
  }

  unexport(_hostId: string): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
