import { isUsageError } from './lib/usage.js';

/**
 * Benchmarks: `npm run bench -- NAME [options]`. Each one lives in its own module, loaded only
 * when asked for, and exports `run(args)`.
 */
interface Bench {
  readonly summary: string;
  readonly load: () => Promise<{ run(args: string[]): Promise<void> }>;
}

const BENCHES: Readonly<Record<string, Bench>> = {
  provision: {
    summary: 'warm, cold and burst provisions through the HTTP API of a real `prestage serve` [--quick] [--phases warm,cold,burst] [--cpu-prof]',
    load: () => import('./provision.js'),
  },
  nbd: {
    summary: 'our NBD server against qemu-nbd on a file or an RBD clone (single-node Ceph): nbdcopy sequential reads (plain, TLS-PSK), fio 4 KiB random reads [--device file|rbd] [--quick] [--tests seq,rand,tls] [--rounds N] [--cpu-prof]',
    load: () => import('./nbd.js'),
  },
  rbd: {
    summary: 'prestage on single-node Ceph: time to make a spare (a clone vs a byte copy by the file driver), warm provisions through a real `prestage serve --driver rbd`, reads of a mapped copy against qemu-nbd on the same clone [--quick] [--rounds N]',
    load: () => import('./rbd.js'),
  },
  template: {
    summary: 'template builds and a pool rollover on a new golden version under a stream of provisions, through a real `prestage serve` [--quick]',
    load: () => import('./template.js'),
  },
  scale: {
    summary: 'warm provisions/s and p99 from 50 clients: SQLite 1 instance, PostgreSQL 1 and 3 instances; leader takeover after SIGKILL; double hand-outs [--quick] [--lease-ttl 5s] [--copy-concurrency 4] [--cpu-prof]',
    load: () => import('./scale.js'),
  },
  iscsi: {
    summary: 'a tgtd LUN (iscsi-perf) against our NBD server (fio nbd) on the same file: 64 KiB sequential and 4 KiB random reads at queue depth 16, interleaved; GET /v1/boot/ipxe time [--quick] [--rounds N]',
    load: () => import('./iscsi.js'),
  },
  policy: {
    summary: 'pool policies on the Azure VM trace: predictive (99.9 % fill target) against static pools, simulated [--seed N]',
    load: () => import('./policy.js'),
  },
};

function usage(problem: string | undefined): never {
  if (problem !== undefined) console.error(`bench: ${problem}`);
  console.error('usage: npm run bench -- NAME [options]\n\nbenchmarks:');
  for (const [n, b] of Object.entries(BENCHES)) console.error(`  ${n.padEnd(10)} ${b.summary}`);
  process.exit(2);
}

const [name, ...args] = process.argv.slice(2);
const bench = name !== undefined && Object.hasOwn(BENCHES, name) ? BENCHES[name] : undefined;
if (!bench) usage(name === undefined ? undefined : `no benchmark named '${name}'`);
try {
  await (await bench.load()).run(args);
} catch (e) {
  if (!isUsageError(e)) throw e;
  usage(`${name}: ${e.message}`);
}
