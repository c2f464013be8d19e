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
    summary: 'our NBD server against qemu-nbd: nbdcopy sequential reads (plain, TLS-PSK), fio 4 KiB random reads [--quick] [--tests seq,rand,tls] [--rounds N] [--cpu-prof]',
    load: () => import('./nbd.js'),
  },
  template: {
    summary: 'template builds and a pool rollover on a new golden version under a stream of provisions, through a real `prestage serve` [--quick]',
    load: () => import('./template.js'),
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
