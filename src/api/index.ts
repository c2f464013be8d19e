export { buildApi, type ApiDeps, type ApiOptions, type BuiltApi } from './server.js';
export type { ApiMetrics } from './routes/api.js';
export type { RouteAccess, Access } from './access.js';
export { HTTP_STATUS, errorBody, type ErrorBody } from './errors.js';
