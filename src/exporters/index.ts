export { LocalPathExporter } from './local-path-exporter.js';
