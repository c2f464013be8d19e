export { ImageService, type ImageServiceOptions } from './images.js';
export { HostService, type HostKey, type HostView, type MetaCredential } from './hosts.js';
export { PoolService, type PoolView } from './pools.js';
export { ProvisioningService, type ProvisionResult, type ProvisioningOptions } from './provisioning.js';
export { reconcile, type ReconcileReport } from './reconcile.js';
export * from './templates.js';
export { CopyService, type CopyView } from './copies.js';
export { EventService } from './events.js';
export { TokenService, type NewToken, type TokenRequest } from './tokens.js';
