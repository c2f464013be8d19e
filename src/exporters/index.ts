export { LocalPathExporter } from './local-path-exporter.js';
export { NbdExporter, type NbdExporterOptions } from './nbd-exporter.js';
