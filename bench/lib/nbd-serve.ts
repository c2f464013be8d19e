/**
 * Our NBD server alone in a process, for `bench/nbd.ts`: the clients measured against it then
 * never share its event loop. Run as `node --import tsx bench/lib/nbd-serve.ts --file F --name N
 * [--tls psk|off]`; with TLS the one host's `identity:hexkey` comes in $PRESTAGE_BENCH_PSK.
 *
 * Instead of a file, an RBD volume as prestage serves a copy: `--volume rbd:POOL/copy-ID
 * --ceph-conf CONF [--ceph-id ID] --staging DIR` opens it through RbdDriver.openVolume (read-write,
 * as a host's copy) and serves that device.
 *
 * Prints one line `{"port":N}` on stdout once listening on 127.0.0.1, then serves until SIGTERM
 * or SIGINT, stops the server and exits 0 (so `--cpu-prof` gets written).
 */
import { parseArgs } from 'node:util';
import { RbdDriver } from '../../src/drivers/rbd/index.js';
import { FileDevice } from '../../src/drivers/file/file-device.js';
import { NbdServer } from '../../src/exporters/nbd/index.js';

const { values } = parseArgs({
  options: {
    file: { type: 'string' },
    volume: { type: 'string' },
    'ceph-conf': { type: 'string' },
    'ceph-id': { type: 'string', default: 'admin' },
    staging: { type: 'string' },
    name: { type: 'string', default: 'disk' },
    tls: { type: 'string', default: 'off' },
  },
  strict: true,
});
const { file, volume, name, tls } = values;
const cephConf = values['ceph-conf'];
const staging = values.staging;
const rbd = volume !== undefined && cephConf !== undefined && staging !== undefined;
if ((file === undefined) === (volume === undefined) || (volume !== undefined && !rbd) || (tls !== 'psk' && tls !== 'off')) {
  process.stderr.write('usage: nbd-serve.ts (--file PATH | --volume rbd:POOL/IMAGE --ceph-conf CONF [--ceph-id ID] --staging DIR) [--name NAME] [--tls psk|off]\n');
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
let driver: RbdDriver | undefined;
if (rbd) {
  const pool = /^rbd:([^/@]+)\//.exec(volume)?.[1] ?? '';
  driver = await RbdDriver.open({ confPath: cephConf, pool, id: values['ceph-id'], stagingDir: staging });
  const device = await driver.openVolume(volume, { readOnly: false });
  await server.addExport({ name, device, volume, hostId });
} else {
  await server.addExport({ name, device: await FileDevice.open(file!, false), volume: file!, hostId });
}
const { port } = await server.start({ host: '127.0.0.1', port: 0 });
process.stdout.write(`${JSON.stringify({ port })}\n`);

let stopping = false;
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    // The server closes its exports' devices; the driver's cluster handle goes after them.
    server
      .stop()
      .then(() => driver?.close())
      .then(
        () => process.exit(0),
        (e: unknown) => {
          process.stderr.write(`nbd-serve: stop failed: ${e instanceof Error ? e.message : String(e)}\n`);
          process.exit(1);
        },
      );
  });
}
