/**
 * A stand-in for a prestage process that runs a tgtd: starts one (runDir and portal port from
 * argv), prints its pid as a JSON line, then waits to be killed.
 */
import { Tgtd } from '../../src/exporters/iscsi/index.js';

const [runDir, port] = process.argv.slice(2);
if (!runDir || !port) throw new Error('usage: iscsi-tgtd-child.ts RUNDIR PORT');
const tgtd = new Tgtd({ runDir, portal: { host: '127.0.0.1', port: Number(port) } });
tgtd
  .start()
  .then(() => {
    process.stdout.write(`${JSON.stringify({ pid: tgtd.pid })}\n`);
    setInterval(() => undefined, 60_000);
  })
  .catch((err: unknown) => {
    process.stderr.write(`${String(err)}\n`);
    process.exit(1);
  });
