/** The built-in NBD exporter: the server, and the pure protocol pieces for tests and tools. */
export { NbdServer, DEFAULT_PSK_CIPHERS, type NbdServerOptions, type NbdExportSpec, type NbdServerState } from './nbd-server.js';
export {
  Handshake,
  ALLOCATION_CONTEXT_ID,
  transmissionFlags,
  type HandshakeConfig,
  type HandshakeNext,
  type HandshakeOutput,
  type NbdExportInfo,
  type Negotiated,
  type BlockSizes,
} from './handshake.js';
export { execute, checkRequest, nbdErrno, MAX_EXTENTS, type BlockDevice, type TransmissionContext } from './transmission.js';
export type { NbdStats } from './stats.js';
export * as nbdProtocol from './protocol.js';
export { NbdProtocolError } from './protocol.js';
