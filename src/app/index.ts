export { PrestageApp, type AppState } from './prestage-app.js';
export { compileConfig, defaultDataDir, parseListen, DEFAULT_LISTEN, DEFAULT_NBD_LISTEN, type Config, type RawConfig } from './config.js';
export { VERSION } from './version.js';
export { defaultLogFormat, makeLogger, type LogFormat } from './logger.js';
