/**
 * prestage on Ceph RBD: a 1 GiB golden of random data in a throwaway single-node Ceph cluster,
 * served by a real `prestage serve --driver rbd` (its HTTP API, its replenisher, its NBD exporter):
 *
 *   spare  the time to make a spare, as the server records it for each copy of a pool (copyMs):
 *          the RBD driver's clone against the file driver's byte copy of the same image on this
 *          machine's disk (the same server runs both drivers side by side)
 *   warm   provisions through the API, each with a spare ready (p50)
 *   seq    `nbdcopy URI null:` of a mapped copy: the server's NBD exporter against qemu-nbd
 *          exporting the same RBD clone (`rbd:POOL/copy-ID:conf=…`, --cache=none since the driver
 *          runs librbd without its cache), same clients, interleaved rounds
 *   rand   fio's nbd engine, 4 KiB random reads at queue depth 16 for a fixed time, the same two
 *
 * The server's NBD exporter runs plaintext (`--nbd-tls off`), as qemu-nbd does here: the reads
 * compare the RBD data paths, not TLS. Its CPU figures are the whole server process's (idle but
 * for the reads then). Progress goes to stderr; the summary to stdout, its last line one JSON
 * object.
 */
import { join } from 'node:path';
import { availableParallelism, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { startBenchCeph, qemuRbdSpec } from './lib/ceph.js';
import { cleanup, cleanupOnSignals, interrupted } from './lib/cleanup.js';
import type { Api } from './lib/http.js';
import { log } from './lib/log.js';
import { RAND_UNIT, SEQ_UNIT, randRead, requireQemuRbd, seqRead, startQemuNbd, type NbdEndpoint, type Sample, type Unit } from './lib/nbd-clients.js';
import { requireTools, runOk } from './lib/nbd-procs.js';
import { addHosts, waitPool, warmPhase, type Provision } from './lib/provisioning.js';
import { startServer, workDir, writeRandomFile } from './lib/server.js';
import { describe, percentile, round2 } from './lib/stats.js';
import { planFromArgs } from './lib/usage.js';

interface Plan {
  readonly mib: number;
  /** Spares of the golden on the file driver, each a byte copy timed. */
  readonly fileSpares: number;
  /** The RBD pool's size: spares timed, then the batch of warm provisions between refills. */
  readonly rbdPool: number;
  readonly warm: number;
  readonly rounds: number;
  readonly fioSeconds: number;
}

const FULL: Plan = { mib: 1024, fileSpares: 3, rbdPool: 20, warm: 100, rounds: 3, fioSeconds: 10 };
const QUICK: Plan = { mib: 256, fileSpares: 2, rbdPool: 10, warm: 30, rounds: 1, fioSeconds: 3 };

const TARGET = { rbdSpareMs: 200, rbdWarmP50Ms: 5, seqRatio: 0.9, randRatio: 0.8 };

const TESTS = ['seq', 'rand'] as const;
type Test = (typeof TESTS)[number];
const UNITS: Readonly<Record<Test, Unit>> = { seq: SEQ_UNIT, rand: RAND_UNIT };
const SIDES = ['ours', 'qemu-nbd'] as const;
type Side = (typeof SIDES)[number];

interface ImageRow {
  readonly id: string;
  readonly name: string;
}

interface CopyRow {
  readonly id: string;
  readonly imageId: string;
  readonly volume: string;
  readonly method: string | null;
  readonly copyMs: number | null;
}

const median = (xs: readonly number[]) => percentile(xs, 0.5);

/** Imports the golden into the server with `driver`, under `name`. */
async function importGolden(api: Api, name: string, file: string, driver: 'rbd' | 'file'): Promise<ImageRow> {
  const t0 = performance.now();
  const image = await api.call<ImageRow>('POST', '/v1/images', { name, path: file, driver });
  log(`golden imported as ${name} (${driver} driver) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return image;
}

/**
 * Fills the pool of `image` to `n` spares and returns how long each took to make (copyMs, the
 * driver's own time for the copy and its checks), with the copy method the driver named.
 */
async function timeSpares(api: Api, image: ImageRow, n: number): Promise<{ ms: number[]; method: string }> {
  await api.call('PUT', `/v1/pools/${image.name}`, { min: n, max: n });
  const waited = await waitPool(api, image.name, (p) => p.ready >= n, 10_000);
  const copies = (await api.all<CopyRow>('/v1/copies?state=ready')).filter((c) => c.imageId === image.id && c.copyMs !== null);
  if (copies.length < n) throw new Error(`pool ${image.name}: ${copies.length} ready copies with a copy time, ${n} expected`);
  const ms = copies.map((c) => c.copyMs!);
  const method = [...new Set(copies.map((c) => c.method ?? '?'))].join(', ');
  log(`${image.name}: ${n} spares (${method}) in ${(waited / 1000).toFixed(1)} s; each ${describe(ms)}`);
  return { ms, method };
}

/** Empties the pool of `image` (its spares removed) and waits until it is. */
async function emptyPool(api: Api, image: ImageRow): Promise<void> {
  await api.call('PUT', `/v1/pools/${image.name}`, { min: 0, max: 0 });
  await waitPool(api, image.name, (p) => p.ready === 0 && p.making === 0, 10_000);
}

interface Reads {
  readonly samples: Record<Test, Record<Side, Sample[]>>;
}

/** Every test on both servers, each round alternating which goes first; warmed up beforehand. */
async function measureReads(eps: Readonly<Record<Side, NbdEndpoint>>, plan: Plan, fioOut: string): Promise<Reads> {
  // Not measured: each server reads the whole copy once (the clone's reads go through to the
  // golden's objects either way) and runs its random-read path a second.
  for (const side of SIDES) {
    await runOk('nbdcopy', [eps[side].uri, 'null:'], 600_000);
    await randRead(eps[side], 1, fioOut);
  }
  log('warm-up done');
  const samples: Reads['samples'] = { seq: { ours: [], 'qemu-nbd': [] }, rand: { ours: [], 'qemu-nbd': [] } };
  for (let round = 1; round <= plan.rounds; round++) {
    const order: readonly Side[] = round % 2 === 1 ? SIDES : [...SIDES].reverse();
    for (const t of TESTS) {
      for (const side of order) {
        const s = t === 'seq' ? await seqRead(eps[side], plan.mib) : await randRead(eps[side], plan.fioSeconds, fioOut);
        samples[t][side].push(s);
        const cpu = s.cpuMs === undefined ? '' : `, server CPU ${(s.cpuMs / 1000).toFixed(2)} s`;
        log(`round ${round}/${plan.rounds} ${t.padEnd(4)} ${side.padEnd(8)} ${s.value.toFixed(0)} ${UNITS[t].unit}${cpu}`);
      }
    }
  }
  return { samples };
}

interface Results {
  readonly rbdSpareMs: readonly number[];
  readonly fileSpareMs: readonly number[];
  readonly warm: readonly number[];
  readonly warmFailures: readonly string[];
  readonly reads: Reads;
}

function report(r: Results, title: string): void {
  const figure = (t: Test, side: Side) => median(r.reads.samples[t][side].map((s) => s.value));
  const ratio = (t: Test) => figure(t, 'ours') / figure(t, 'qemu-nbd');
  const rbdSpare = median(r.rbdSpareMs);
  const fileSpare = median(r.fileSpareMs);
  const warmP50 = median(r.warm);
  console.log(`\n${title}`);
  console.log(`spare, RBD clone        ${describe(r.rbdSpareMs)}`);
  console.log(`spare, file byte copy   ${describe(r.fileSpareMs)}  (${(fileSpare / rbdSpare).toFixed(0)} × the clone)`);
  console.log(`warm provision (API)    ${describe(r.warm)}${r.warmFailures.length > 0 ? `; ${r.warmFailures.length} failed, first: ${r.warmFailures[0]}` : ''}`);
  console.log(`${'reads of a mapped copy'.padEnd(22)} ${'ours'.padStart(16)} ${'qemu-nbd'.padStart(16)}  ours/qemu`);
  for (const t of TESTS) {
    const u = UNITS[t];
    const f = (side: Side) => `${figure(t, side).toFixed(0)} ${u.unit}`.padStart(16);
    console.log(`${u.what.padEnd(22)} ${f('ours')} ${f('qemu-nbd')}  ${ratio(t).toFixed(2).padStart(9)}`);
  }
  console.log('rounds (in order) and server CPU (median per unit of work, all threads):');
  for (const t of TESTS) {
    for (const side of SIDES) {
      const s = r.reads.samples[t][side];
      const cpu = s.filter((x) => x.cpuMs !== undefined).map((x) => x.cpuMs! / x.work);
      console.log(`  ${t.padEnd(4)} ${side.padEnd(8)} ${s.map((x) => x.value.toFixed(0)).join(', ').padEnd(24)} ${UNITS[t].unit.padEnd(5)}  ${cpu.length > 0 ? UNITS[t].cpu(median(cpu)) : ''}`);
    }
  }
  const target = (ok: boolean, text: string) => console.log(`${ok ? 'PASS' : 'MISS'}  ${text}`);
  target(rbdSpare <= TARGET.rbdSpareMs, `rbd_spare_ms ${rbdSpare.toFixed(0)} ≤ ${TARGET.rbdSpareMs}`);
  target(warmP50 <= TARGET.rbdWarmP50Ms && r.warmFailures.length === 0, `rbd_warm_p50_ms ${warmP50.toFixed(2)} ≤ ${TARGET.rbdWarmP50Ms}, ${r.warmFailures.length} failures (0 wanted)`);
  target(ratio('seq') >= TARGET.seqRatio, `rbd_seq_ratio ${ratio('seq').toFixed(2)} ≥ ${TARGET.seqRatio}`);
  target(ratio('rand') >= TARGET.randRatio, `rbd_rand_ratio ${ratio('rand').toFixed(2)} ≥ ${TARGET.randRatio}`);
  console.log(
    JSON.stringify({
      rbd_spare_ms: round2(rbdSpare),
      file_spare_ms: round2(fileSpare),
      rbd_warm_p50_ms: round2(warmP50),
      rbd_seq_ratio: round2(ratio('seq')),
      rbd_rand_ratio: round2(ratio('rand')),
    }),
  );
}

export async function run(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { quick: { type: 'boolean', default: false }, rounds: { type: 'string' } }, strict: true });
  const plan: Plan = planFromArgs(values.quick, values.rounds, { quick: QUICK, full: FULL });

  cleanupOnSignals();
  const t0 = performance.now();
  // Ceph, the server and the clients share this machine's CPUs: other load shows in every figure.
  const loadAtStart = loadavg()[0]!.toFixed(2);
  try {
    requireTools({ nbdcopy: 'libnbd-bin', nbdinfo: 'libnbd-bin', 'qemu-nbd': 'qemu-utils', fio: 'fio' });
    requireQemuRbd();
    const dir = await workDir('rbd');
    const file = join(dir, 'golden.raw');
    const tw = performance.now();
    await writeRandomFile(file, plan.mib);
    log(`${plan.mib} MiB of random data written in ${((performance.now() - tw) / 1000).toFixed(1)} s`);

    const ceph = await startBenchCeph();
    // One copy at a time: each copy's time is its own, not shared with another's.
    const server = await startServer({
      dataDir: join(dir, 'data'),
      copyConcurrency: 1,
      extraArgs: ['--driver', 'rbd', '--ceph-conf', ceph.confPath, '--ceph-pool', ceph.pool, '--ceph-id', ceph.id, '--nbd-tls', 'off'],
    });
    const { api } = server;

    const fileImage = await importGolden(api, 'golden-file', file, 'file');
    const fileSpares = await timeSpares(api, fileImage, plan.fileSpares);
    // Their bytes and the disk bandwidth go back before the RBD phases.
    await emptyPool(api, fileImage);
    const rbdImage = await importGolden(api, 'golden-rbd', file, 'rbd');
    const rbdSpares = await timeSpares(api, rbdImage, plan.rbdPool);

    const warm = await warmPhase(api, rbdImage.name, { label: 'rbd', mib: plan.mib, pool: plan.rbdPool }, plan.warm);
    log(`warm provisions: ${describe(warm.samples)}`);

    // A host's mapped copy, and qemu-nbd on the same clone.
    const [reader] = await addHosts(api, 'reader', 1);
    await waitPool(api, rbdImage.name, (p) => p.ready >= 1, 10_000);
    const mapped = await api.call<Provision & { access: { kind: string; uri?: string } }>('POST', `/v1/hosts/${reader}/provision`, { source: rbdImage.name });
    if (mapped.access.kind !== 'nbd' || mapped.access.uri === undefined) throw new Error(`the server exported the copy as ${JSON.stringify(mapped.access)}, not over NBD`);
    const copy = (await api.all<CopyRow>('/v1/copies?state=mapped')).find((c) => c.id === mapped.copyId);
    if (copy === undefined) throw new Error(`copy ${mapped.copyId} of host ${reader} is not listed as mapped`);
    log(`host ${reader} has copy ${copy.volume} at ${mapped.access.uri}`);
    const qemu = await startQemuNbd('qemu-nbd', {
      exportName: 'disk',
      image: ['--cache=none', qemuRbdSpec(copy.volume, ceph)],
      uri: (port) => `nbd://127.0.0.1:${port}/disk`,
    });
    const eps: Record<Side, NbdEndpoint> = {
      ours: { name: 'prestage serve', uri: mapped.access.uri, cpuMs: () => server.cpuMs()?.all },
      'qemu-nbd': { name: 'qemu-nbd', uri: qemu.uri, cpuMs: () => qemu.daemon.cpuMs() },
    };
    const reads = await measureReads(eps, plan, join(dir, 'fio.json'));
    // Stopped now rather than at cleanup, so that nothing they print comes after the summary.
    await qemu.daemon.stop();
    await server.stop();

    const minutes = ((performance.now() - t0) / 60_000).toFixed(1);
    const machine = `${availableParallelism()} CPUs, load average ${loadAtStart} before, ${loadavg()[0]!.toFixed(2)} after`;
    const title = `rbd benchmark: ${plan.mib} MiB golden on single-node Ceph, ${plan.rounds} read round${plan.rounds > 1 ? 's' : ''} interleaved, fio ${plan.fioSeconds} s${values.quick ? ' (--quick)' : ''}, ${minutes} min; ${machine}`;
    report({ rbdSpareMs: rbdSpares.ms, fileSpareMs: fileSpares.ms, warm: warm.samples, warmFailures: warm.failures, reads }, title);
  } catch (e) {
    // After a signal, clients fail because their servers are stopping: no news, the handler exits.
    if (!interrupted()) {
      log(`rbd bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      process.exitCode = 1;
    }
  } finally {
    await cleanup();
  }
}
