/**
 * `npm run bench -- iscsi [--quick] [--rounds N]`: the same file of random data read over a tgtd
 * LUN (tgtd run by src/exporters/iscsi, the target with an ACL and CHAP, as the exporter makes
 * them) and over our NBD server (bench/lib/nbd-serve.ts, a process of its own), interleaved rounds:
 *
 *   seq   64 KiB sequential reads at queue depth 16 for a fixed time (iscsi-perf against tgtd
 *         falls from ~230 to ~65 MB/s with 256 KiB or 1 MiB requests here: 64 KiB is its best)
 *   rand  4 KiB random reads at queue depth 16 for a fixed time
 *
 * iSCSI with libiscsi's `iscsi-perf` (Debian's fio has no libiscsi engine), NBD with fio's nbd
 * engine: two load generators, both single-threaded userspace initiators with 16 requests in
 * flight. Then `boot_script_ms`: GET /v1/boot/ipxe?mac= of a real `prestage serve --exporter
 * iscsi` for a host with no mapping and a warm spare (null, said so, while the server has no such
 * endpoint). The last line is one JSON object.
 */
import { readFile } from 'node:fs/promises';
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { newHostAuth, Tgtd } from '../src/exporters/iscsi/index.js';
import { cleanup, cleanupOnSignals, onCleanup } from './lib/cleanup.js';
import { log } from './lib/log.js';
import { requireTools, runOk, startDaemon, type Daemon } from './lib/nbd-procs.js';
import { REPO, freePort, startServer, workDir, writeRandomFile } from './lib/server.js';
import { percentile, round2 } from './lib/stats.js';
import { planFromArgs } from './lib/usage.js';

interface Plan {
  readonly mib: number;
  readonly rounds: number;
  readonly seconds: number;
  /** Hosts that each network-boot once, a warm spare ready each time. */
  readonly boots: number;
}
const FULL: Plan = { mib: 1024, rounds: 3, seconds: 10, boots: 12 };
const QUICK: Plan = { mib: 256, rounds: 1, seconds: 3, boots: 4 };
/** The target for boot_script_ms. */
const BOOT_SCRIPT_TARGET_MS = 20;
const QD = 16;
const TARGET = 'iqn.2026-12.io.prestage:bench';
const INITIATOR = 'iqn.2026-12.io.prestage.bench:initiator';
const EXPORT = 'disk';
const SIDES = ['iscsi', 'nbd'] as const;
type Side = (typeof SIDES)[number];
const TESTS = ['seq', 'rand'] as const;
type Test = (typeof TESTS)[number];
const MiB = 1 << 20;
const SEQ_BYTES = 64 * 1024;

interface Sample {
  /** MiB/s for seq, IOPS for rand. */
  readonly value: number;
  readonly serverCpuMs: number | undefined;
}

/** `iscsi-perf` prints `iops average N (… MB/s)` last; the figure is requests per second. */
async function iscsiPerf(url: string, test: Test, seconds: number, tgtdPid: () => number | undefined): Promise<Sample> {
  const blocks = test === 'seq' ? SEQ_BYTES / 512 : 8;
  const cpu0 = await pidCpuMs(tgtdPid());
  const r = await runOk('iscsi-perf', ['-i', INITIATOR, ...(test === 'rand' ? ['-r'] : []), '-b', String(blocks), '-m', String(QD), '-t', String(seconds), url], (seconds + 60) * 1000);
  const cpu1 = await pidCpuMs(tgtdPid());
  const all = [...r.stdout.matchAll(/iops average (\d+)/g)];
  const iops = Number(all.at(-1)?.[1]);
  if (!(iops > 0)) throw new Error(`iscsi-perf printed no average: ${r.stdout.slice(-500)} ${r.stderr.slice(-500)}`);
  return { value: test === 'seq' ? (iops * blocks * 512) / MiB : iops, serverCpuMs: cpu0 === undefined || cpu1 === undefined ? undefined : cpu1 - cpu0 };
}

interface FioJob {
  readonly error: number;
  readonly read: { readonly iops: number; readonly bw_bytes: number; readonly total_ios: number };
}

async function fioNbd(uri: string, test: Test, seconds: number, outFile: string, daemon: Daemon): Promise<Sample> {
  const cpu0 = daemon.cpuMs();
  const rw = test === 'seq' ? ['--rw=read', `--bs=${SEQ_BYTES / 1024}k`] : ['--rw=randread', '--bs=4k'];
  await runOk('fio', [`--name=${test}`, '--ioengine=nbd', `--uri=${uri}`, ...rw, `--iodepth=${QD}`, `--runtime=${seconds}`, '--time_based', '--output-format=json', `--output=${outFile}`], (seconds + 120) * 1000);
  const cpu1 = daemon.cpuMs();
  const job = (JSON.parse(await readFile(outFile, 'utf8')) as { jobs: FioJob[] }).jobs[0];
  if (job === undefined || job.error !== 0 || !(job.read.total_ios > 0)) throw new Error(`fio did no reads: ${JSON.stringify(job)}`);
  return { value: test === 'seq' ? job.read.bw_bytes / MiB : job.read.iops, serverCpuMs: cpu0 === undefined || cpu1 === undefined ? undefined : cpu1 - cpu0 };
}

/** CPU time of a pid (utime + stime, ms), or undefined once it is gone. */
async function pidCpuMs(pid: number | undefined): Promise<number | undefined> {
  if (pid === undefined) return undefined;
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  if (stat === undefined) return undefined;
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
}

/**
 * GET /v1/boot/ipxe?mac= for a host with no mapping whose boot source has a warm spare, on a real
 * `prestage serve --exporter iscsi` (the claim's refill copy starts while the reply is made, as it
 * would); the median of `boots`, or null (and why) when the server could not do it.
 */
async function bootScriptMs(dir: string, file: string, boots: number): Promise<number | null> {
  let server: Awaited<ReturnType<typeof startServer>> | undefined;
  try {
    server = await startServer({ dataDir: join(dir, 'serve'), extraArgs: ['--exporter', 'iscsi', '--boot-networks', '127.0.0.0/8,10.0.2.0/24'] });
    const img = await server.api.request('POST', '/v1/images', { name: 'bench-boot', path: file });
    if (img.status !== 201) throw new Error(`import: ${img.status} ${JSON.stringify(img.body)}`);
    await server.api.request('PUT', '/v1/pools/bench-boot', { min: 4, max: 4 });
    const deadline = Date.now() + 600_000;
    while ((await server.api.request<{ ready: number }>('GET', '/v1/pools/bench-boot')).body.ready < 4) {
      if (Date.now() > deadline) throw new Error('pool bench-boot did not fill in 10 min');
      await new Promise((r) => setTimeout(r, 200));
    }
    const ms: number[] = [];
    for (let i = 0; i < boots; i++) {
      const mac = `52:54:00:be:00:${i.toString(16).padStart(2, '0')}`;
      const h = await server.api.request('POST', '/v1/hosts', { id: `boot-${i}`, mac, boot: 'bench-boot' });
      if (h.status !== 201) throw new Error(`host add: ${h.status} ${JSON.stringify(h.body)}`);
      const r = await server.api.request<unknown>('GET', `/v1/boot/ipxe?mac=${mac}`);
      if (r.status !== 200) throw new Error(`GET /v1/boot/ipxe: ${r.status} ${JSON.stringify(r.body)}`);
      ms.push(r.ms);
      // The pool refills before the next host asks: each GET finds a warm spare.
      while ((await server.api.request<{ ready: number }>('GET', '/v1/pools/bench-boot')).body.ready < 4) await new Promise((res) => setTimeout(res, 200));
    }
    log(`boot_script_ms: ${ms.map((m) => m.toFixed(1)).join(', ')} ms`);
    return round2(percentile(ms, 0.5));
  } catch (e) {
    log(`boot_script_ms: null — ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`);
    return null;
  } finally {
    await server?.stop();
  }
}

export async function run(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { quick: { type: 'boolean', default: false }, rounds: { type: 'string' } }, strict: true });
  const plan: Plan = planFromArgs(values.quick, values.rounds, { quick: QUICK, full: FULL });
  cleanupOnSignals();
  const loadAtStart = loadavg()[0]!.toFixed(2);
  const t0 = performance.now();
  try {
    requireTools({ 'iscsi-perf': 'libiscsi-bin', tgtd: 'tgt', tgtadm: 'tgt', fio: 'fio' });
    const dir = await workDir('iscsi');
    const file = join(dir, 'disk.raw');
    await writeRandomFile(file, plan.mib);
    log(`${plan.mib} MiB of random data written`);

    const portal = `127.0.0.1:${await freePort()}`;
    const tgtd = new Tgtd({ runDir: join(dir, 'run'), portal: { host: '127.0.0.1', port: Number(portal.split(':')[1]) } });
    await tgtd.start();
    onCleanup('tgtd', async () => {
      await tgtd.admin.deleteTarget(1, { force: true }).catch(() => undefined);
      await tgtd.stop();
    });
    const auth = newHostAuth('bench', INITIATOR);
    await tgtd.admin.newTarget(1, TARGET);
    await tgtd.admin.newLun(1, 1, { path: file, type: 'rdwr' });
    await tgtd.admin.bindInitiator(1, INITIATOR);
    await tgtd.admin.newAccount(auth.chap.user, auth.chap.secret);
    await tgtd.admin.bindAccount(1, auth.chap.user);
    const iscsiUrl = `iscsi://${auth.chap.user}%${auth.chap.secret}@${portal}/${TARGET}/1`;
    log(`tgtd (pid ${tgtd.status().pid}) on ${portal}, LUN 1 = the file, ACL + CHAP`);

    const nbd = startDaemon('ours', process.execPath, ['--import', 'tsx', join(REPO, 'bench', 'lib', 'nbd-serve.ts'), '--file', file, '--name', EXPORT, '--tls', 'off'], { cwd: REPO });
    const { port } = JSON.parse(await nbd.waitForLine(/^\{"port":\d+\}$/, 30_000)) as { port: number };
    const nbdUri = `nbd://127.0.0.1:${port}/${EXPORT}`;
    log(`our NBD server (pid ${nbd.pid}) on 127.0.0.1:${port}`);
    const fioOut = join(dir, 'fio.json');

    const measure = async (side: Side, test: Test, seconds: number): Promise<Sample> => {
      if (side === 'nbd') return fioNbd(nbdUri, test, seconds, fioOut, nbd);
      return iscsiPerf(iscsiUrl, test, seconds, () => tgtd.status().pid);
    };
    // Warm-up, not measured: the page cache holds the file, both paths run once.
    for (const side of SIDES) for (const test of TESTS) await measure(side, test, 1);
    log('warm-up done');

    const samples: Record<Test, Record<Side, Sample[]>> = { seq: { iscsi: [], nbd: [] }, rand: { iscsi: [], nbd: [] } };
    for (let round = 1; round <= plan.rounds; round++) {
      const order: readonly Side[] = round % 2 === 1 ? SIDES : [...SIDES].reverse();
      for (const test of TESTS) {
        for (const side of order) {
          const s = await measure(side, test, plan.seconds);
          samples[test][side].push(s);
          const cpu = s.serverCpuMs === undefined ? '' : `, server CPU ${(s.serverCpuMs / 1000).toFixed(2)} s`;
          log(`round ${round}/${plan.rounds} ${test.padEnd(4)} ${side.padEnd(5)} ${s.value.toFixed(0)} ${test === 'seq' ? 'MiB/s' : 'IOPS'}${cpu}`);
        }
      }
    }
    await nbd.stop();

    const bootMs = await bootScriptMs(dir, file, plan.boots);
    const med = (test: Test, side: Side) => round2(percentile(samples[test][side].map((s) => s.value), 0.5));
    const machine = `${availableParallelism()} CPUs, load average ${loadAtStart} before, ${loadavg()[0]!.toFixed(2)} after`;
    console.log(`\niscsi benchmark: ${plan.mib} MiB file, ${plan.rounds} round${plan.rounds > 1 ? 's' : ''} interleaved, ${plan.seconds} s each, queue depth ${QD}${values.quick ? ' (--quick)' : ''}, ${((performance.now() - t0) / 60_000).toFixed(1)} min; ${machine}`);
    console.log('iSCSI: tgtd (rdwr backing store) read by iscsi-perf; NBD: our server read by fio --ioengine=nbd');
    console.log(`${'test'.padEnd(22)}${'iscsi'.padStart(12)}${'nbd'.padStart(12)}`);
    console.log(`${'seq 64 KiB (MiB/s)'.padEnd(22)}${String(med('seq', 'iscsi')).padStart(12)}${String(med('seq', 'nbd')).padStart(12)}`);
    console.log(`${'rand 4 KiB (IOPS)'.padEnd(22)}${String(med('rand', 'iscsi')).padStart(12)}${String(med('rand', 'nbd')).padStart(12)}`);
    const ratio = (test: Test) => (med(test, 'iscsi') ?? NaN) / (med(test, 'nbd') ?? NaN);
    console.log(`iscsi/nbd: seq ${ratio('seq').toFixed(2)}×, rand 4 KiB ${ratio('rand').toFixed(2)}×`);
    console.log(bootMs === null ? `MISS  boot_script_ms: not measured` : `${bootMs <= BOOT_SCRIPT_TARGET_MS ? 'PASS' : 'MISS'}  boot_script_ms ${bootMs} ≤ ${BOOT_SCRIPT_TARGET_MS} (median of ${plan.boots})`);
    console.log(
      JSON.stringify({
        iscsi_seq_mib_s: med('seq', 'iscsi'),
        nbd_seq_mib_s: med('seq', 'nbd'),
        iscsi_rand4k_iops: med('rand', 'iscsi'),
        nbd_rand4k_iops: med('rand', 'nbd'),
        boot_script_ms: bootMs,
      }),
    );
  } finally {
    await cleanup();
  }
}
