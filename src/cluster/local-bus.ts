import type { ClusterBus, ClusterMessage } from '../domain/index.js';

/** The bus of a lone instance (SQLite): there is nobody to tell. */
export class LocalBus implements ClusterBus {
  publish(_message: ClusterMessage): void {}
  subscribe(_handler: (message: ClusterMessage) => void): void {}
  onResync(_handler: () => void): void {}
  close(): Promise<void> {
    return Promise.resolve();
  }
}
