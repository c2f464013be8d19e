export { ClusterExporter } from './cluster-exporter.js';
export { ClusterSync, type ClusterSyncOptions } from './cluster-sync.js';
export { LocalBus } from './local-bus.js';
export { Membership, type InstanceView, type MembershipOptions } from './membership.js';
export { PgBus, type PgBusOptions } from './pg-bus.js';
