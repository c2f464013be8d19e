export { ImageService, type ImageServiceOptions } from './images.js';
export { HostService, type HostKey } from './hosts.js';
export { PoolService, type PoolView } from './pools.js';
export { ProvisioningService, type ProvisionResult, type ProvisioningOptions } from './provisioning.js';
export { reconcile, type ReconcileReport } from './reconcile.js';
export * from './templates.js';
