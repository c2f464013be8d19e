export * from './errors.js';
export * from './types.js';
export * from './ports.js';
export * from './copy-state.js';
export * from './source-spec.js';
export * from './units.js';
export * from './ids.js';
export * from './policy.js';
