export { LocalPathExporter } from './local-path-exporter.js';
export { NbdExporter, type NbdExporterOptions, type NbdExporterStats } from './nbd-exporter.js';
export { RoutedExporter } from './routed-exporter.js';
