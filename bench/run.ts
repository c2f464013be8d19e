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
};

const [name, ...args] = process.argv.slice(2);
const bench = name !== undefined && Object.hasOwn(BENCHES, name) ? BENCHES[name] : undefined;
if (!bench) {
  if (name !== undefined) console.error(`bench: no benchmark named '${name}'`);
  console.error('usage: npm run bench -- NAME [options]\n\nbenchmarks:');
  for (const [n, b] of Object.entries(BENCHES)) console.error(`  ${n.padEnd(10)} ${b.summary}`);
  process.exit(2);
}
await (await bench.load()).run(args);
