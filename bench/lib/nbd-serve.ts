/**
 * Our NBD server alone in a process, for `bench/nbd.ts`: the clients measured against it then
 * never share its event loop. Run as `node --import tsx bench/lib/nbd-serve.ts --file F --name N
 * [--tls psk|off]`; with TLS the one host's `identity:hexkey` comes in $PRESTAGE_BENCH_PSK.
 *
 * Prints one line `{"port":N}` on stdout once listening on 127.0.0.1, then serves until SIGTERM
 * or SIGINT, stops the server and exits 0 (so `--cpu-prof` gets written).
 */
import { parseArgs } from 'node:util';
import { NbdServer } from '../../src/exporters/nbd/index.js';

const { values } = parseArgs({
  options: {
    file: { type: 'string' },
    name: { type: 'string', default: 'disk' },
    tls: { type: 'string', default: 'off' },
  },
  strict: true,
});
const { file, name, tls } = values;
if (file === undefined || (tls !== 'psk' && tls !== 'off')) {
  process.stderr.write('usage: nbd-serve.ts --file PATH [--name NAME] [--tls psk|off]\n');
  process.exit(2);
}

let hostId = 'bench';
let key: Buffer | undefined;
if (tls === 'psk') {
  const line = process.env.PRESTAGE_BENCH_PSK ?? '';
  const colon = line.lastIndexOf(':');
  if (colon <= 0) {
    process.stderr.write('nbd-serve: --tls psk needs PRESTAGE_BENCH_PSK=identity:hexkey\n');
    process.exit(2);
  }
  hostId = line.slice(0, colon);
  key = Buffer.from(line.slice(colon + 1), 'hex');
}

const server = new NbdServer({ tls, keys: (id) => (id === hostId ? key : undefined), stopTimeoutMs: 2000 });
await server.addExport({ name, path: file, hostId });
const { port } = await server.start({ host: '127.0.0.1', port: 0 });
process.stdout.write(`${JSON.stringify({ port })}\n`);

let stopping = false;
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    server.stop().then(
      () => process.exit(0),
      (e: unknown) => {
        process.stderr.write(`nbd-serve: stop failed: ${e instanceof Error ? e.message : String(e)}\n`);
        process.exit(1);
      },
    );
  });
}
