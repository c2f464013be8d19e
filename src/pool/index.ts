export { Replenisher, type ReplenisherOptions, type ReplenisherState, type InFlightCopy } from './replenisher.js';
export { resolveSource } from './resolve-source.js';
export * from './policy/index.js';
