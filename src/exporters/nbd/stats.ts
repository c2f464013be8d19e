/**
 * Running totals of one NBD server since it started. Plain numbers bumped in place: the data
 * path pays an addition per request, and whoever wants them (the metrics) reads them when asked.
 */
export interface NbdStats {
  /** Connections accepted (those refused at a cap are counted by the server apart). */
  connections: number;
  /** Data bytes of READ requests served. */
  readBytes: number;
  /** Data bytes of WRITE requests stored. */
  writtenBytes: number;
  /** Requests refused as invalid (out of range, bad flags, a write on a read-only export). */
  requestErrors: number;
  /** Requests the storage failed: the client got an NBD error value. */
  storageErrors: number;
  /** Connections cut for bytes that break the protocol, in negotiation or transmission. */
  protocolErrors: number;
}

export function newNbdStats(): NbdStats {
  return { connections: 0, readBytes: 0, writtenBytes: 0, requestErrors: 0, storageErrors: 0, protocolErrors: 0 };
}
