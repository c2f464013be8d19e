/** The drivers layer's public surface: how volumes are stored and copied. */
export { FileDriver, type FileDriverOptions, type FileCopy } from './file/file-driver.js';
export { DriverSet } from './driver-set.js';
