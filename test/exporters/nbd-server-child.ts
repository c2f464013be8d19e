/**
 * An NbdServer in a process of its own, so a test can measure the server's memory (RSS) and
 * nothing else. Run with `node --import tsx --expose-gc` and an IPC channel (fork). argv[2]:
 * a ChildSetup as JSON. Sends { port } once listening; answers
 * 'stats' with { rss, peakRss, connectionsOpen } (peak since the last 'stats'); 'stop' stops.
 */
import { NbdServer, type NbdServerOptions } from '../../src/exporters/nbd/index.js';
import { fileExport, type FileExportSpec } from './nbd-helpers.js';

export interface ChildSetup {
  readonly options: Omit<NbdServerOptions, 'keys' | 'logger'>;
  /** Host id → PSK (hex), for `tls: 'psk'`. */
  readonly keys?: Readonly<Record<string, string>>;
  readonly exports: readonly FileExportSpec[];
}

export interface ChildStats {
  readonly rss: number;
  /** The highest RSS sampled since the previous 'stats'. */
  readonly peakRss: number;
  readonly connectionsOpen: number;
}

const send = (msg: unknown) => process.send?.(msg);
const { options, keys, exports } = JSON.parse(process.argv[2] ?? '{}') as ChildSetup;
const server = new NbdServer({ ...options, keys: (id) => (keys?.[id] === undefined ? undefined : Buffer.from(keys[id], 'hex')) });
for (const e of exports) await server.addExport(await fileExport(e));
const { port } = await server.start({ host: '127.0.0.1', port: 0 });

// RSS is sampled often: a buffer held for a moment still counts against the bound.
let peakRss = 0;
const sample = () => (peakRss = Math.max(peakRss, process.memoryUsage.rss()));
const sampler = setInterval(sample, 5);

process.on('message', (msg) => {
  if (msg === 'stats') {
    (globalThis as { gc?: () => void }).gc?.();
    sample();
    const stats: ChildStats = { rss: process.memoryUsage.rss(), peakRss, connectionsOpen: server.connectionsOpen };
    peakRss = 0;
    send(stats);
  } else if (msg === 'stop') {
    clearInterval(sampler);
    void server.stop().then(() => process.exit(0));
  }
});
send({ port });
