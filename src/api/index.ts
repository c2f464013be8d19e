export { buildApi, type ApiDeps } from './server.js';
export { HTTP_STATUS, errorBody, type ErrorBody } from './errors.js';
