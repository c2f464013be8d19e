export { Replenisher, type ReplenisherOptions, type ReplenisherState, type InFlightCopy, type CopyMade, type CopyObserver } from './replenisher.js';
export { resolveSource } from './resolve-source.js';
export { shortageText, type SpaceShortage } from './space.js';
export * from './policy/index.js';
