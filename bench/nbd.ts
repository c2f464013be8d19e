/**
 * Our NBD server against qemu-nbd, same device, same clients, same run, on loopback:
 *
 *   seq   `nbdcopy URI null:` reads the whole export (plaintext), timed from spawn to exit
 *   rand  fio's nbd engine: 4 KiB random reads at queue depth 16 for a fixed time (plaintext)
 *   tls   as seq, over TLS-PSK (the client's identity and key in a `identity:hexkey` file)
 *
 * Our server runs in a child process (bench/lib/nbd-serve.ts), so the clients never share its
 * event loop; qemu-nbd runs as ENVIRONMENT.md has it (`-t -e 16`). Every server runs for the
 * whole bench; each round measures every test on both, alternating which goes first, and a
 * figure is the median of its rounds. The file is read once beforehand, so both serve it from the
 * page cache.
 *
 * `--device rbd` serves an RBD copy instead of the file: a throwaway single-node Ceph cluster
 * (bench/lib/rbd-copy.ts), the same random data imported as a sealed image, a clone of its
 * snapshot made as prestage makes a copy; ours serves the clone through RbdDriver.openVolume,
 * qemu-nbd through its rbd block driver (`--cache=none`: librbd's client cache off, as the RBD
 * driver has it). Its figures and JSON keys are prefixed `rbd_`.
 *
 * Progress goes to stderr; the summary to stdout, its last line one JSON object.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { cleanup, cleanupOnSignals, interrupted } from './lib/cleanup.js';
import { log } from './lib/log.js';
import { nowUs, summarizeProfile, type Window } from './lib/nbd-profile.js';
import { RAND_UNIT, SEQ_UNIT, randRead, requireQemuRbd, seqRead, startQemuNbd, type NbdEndpoint, type Sample, type Unit } from './lib/nbd-clients.js';
import { requireTools, runOk, startDaemon, type Daemon } from './lib/nbd-procs.js';
import { BENCH_DATA, REPO, workDir, writeRandomFile } from './lib/server.js';
import { makeRbdCopy, type RbdCopy } from './lib/rbd-copy.js';
import { percentile, round2 } from './lib/stats.js';
import { planFromArgs, UsageError } from './lib/usage.js';

interface Plan {
  readonly mib: number;
  readonly rounds: number;
  readonly fioSeconds: number;
}

const FULL: Plan = { mib: 1024, rounds: 3, fioSeconds: 10 };
const QUICK: Plan = { mib: 256, rounds: 1, fioSeconds: 3 };
const TESTS = ['seq', 'rand', 'tls'] as const;
type Test = (typeof TESTS)[number];
const DEVICES = ['file', 'rbd'] as const;
type Device = (typeof DEVICES)[number];

/** Ours / qemu-nbd, at least. */
const TARGET: Readonly<Record<Test, number>> = { seq: 0.9, rand: 0.8, tls: 1 };

const EXPORT = 'disk';
const IDENTITY = 'bench-host';
const SIDES = ['ours', 'qemu-nbd'] as const;
type Side = (typeof SIDES)[number];

/** One server as a client reaches it: a process of this bench. */
interface Endpoint extends NbdEndpoint {
  readonly daemon: Daemon;
  /** Where its CPU profiles go, when asked for (ours only). */
  readonly profileDir?: string;
}

function endpoint(uri: string, daemon: Daemon, profileDir?: string): Endpoint {
  return { name: daemon.name, uri, daemon, cpuMs: () => daemon.cpuMs(), ...(profileDir === undefined ? {} : { profileDir }) };
}

type Samples = Record<Test, Record<Side, Sample[]>>;

interface Setup {
  /** The random data: what is served with `--device file`, imported into Ceph with `rbd`. */
  readonly file: string;
  /** Served instead of the file with `--device rbd`. */
  readonly rbd: RbdCopy | undefined;
  readonly keyFile: string;
  readonly qemuPskDir: string;
  readonly pskLine: string;
  readonly cpuProfDir: string | undefined;
}

async function startOurs(s: Setup, tls: 'psk' | 'off'): Promise<Endpoint> {
  // A directory per server: tsx's loader thread writes a profile of its own next to the main thread's.
  const profileDir = s.cpuProfDir === undefined ? undefined : join(s.cpuProfDir, `nbd-ours-${tls === 'psk' ? 'tls' : 'plain'}-${stamp()}`);
  const prof = profileDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${profileDir}`];
  const what = s.rbd === undefined ? ['--file', s.file] : ['--volume', s.rbd.volume, '--ceph-conf', s.rbd.confPath, '--ceph-id', s.rbd.id, '--staging', s.rbd.stagingDir];
  const args = ['--import', 'tsx', ...prof, join(REPO, 'bench', 'lib', 'nbd-serve.ts'), ...what, '--name', EXPORT, '--tls', tls];
  const env = { ...process.env, ...(tls === 'psk' ? { PRESTAGE_BENCH_PSK: s.pskLine } : {}) };
  const daemon = startDaemon(`ours ${tls === 'psk' ? 'TLS' : 'plain'}`, process.execPath, args, { env, cwd: REPO });
  const line = await daemon.waitForLine(/^\{"port":\d+\}$/, 30_000);
  const { port } = JSON.parse(line) as { port: number };
  log(`${daemon.name}: our server (pid ${daemon.pid}) on 127.0.0.1:${port}`);
  return endpoint(uri(port, tls, s.keyFile), daemon, profileDir);
}

async function startQemu(s: Setup, tls: 'psk' | 'off'): Promise<Endpoint> {
  const tlsArgs = tls === 'psk' ? ['--object', `tls-creds-psk,id=tls0,endpoint=server,dir=${s.qemuPskDir}`, '--tls-creds', 'tls0'] : [];
  // librbd's client cache off, as the RBD driver runs it (qemu turns it on unless cache=none).
  const image = s.rbd === undefined ? [s.file] : ['--cache=none', s.rbd.qemuSpec];
  const q = await startQemuNbd(`qemu-nbd ${tls === 'psk' ? 'TLS' : 'plain'}`, { exportName: EXPORT, image, extraArgs: tlsArgs, uri: (port) => uri(port, tls, s.keyFile) });
  return endpoint(q.uri, q.daemon);
}

/** 20260125-231400: sorts by time, names this run's files. */
function stamp(): string {
  return new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
}

function uri(port: number, tls: 'psk' | 'off', keyFile: string): string {
  return tls === 'psk' ? `nbds://${IDENTITY}@127.0.0.1:${port}/${EXPORT}?tls-psk-file=${keyFile}` : `nbd://127.0.0.1:${port}/${EXPORT}`;
}

const median = (xs: readonly number[]) => percentile(xs, 0.5);

const UNITS: Readonly<Record<Test, Unit>> = { seq: SEQ_UNIT, rand: RAND_UNIT, tls: { ...SEQ_UNIT, what: 'seq read, TLS-PSK' } };

function report(tests: ReadonlySet<Test>, samples: Samples, title: string, device: Device): void {
  const figure = (t: Test, side: Side) => (tests.has(t) ? median(samples[t][side].map((s) => s.value)) : undefined);
  const ratio = (t: Test) => {
    const [ours, qemu] = [figure(t, 'ours'), figure(t, 'qemu-nbd')];
    return ours === undefined || qemu === undefined ? undefined : round2(ours / qemu) ?? undefined;
  };
  console.log(`\n${title}`);
  console.log(`${'test'.padEnd(20)} ${'ours'.padStart(16)} ${'qemu-nbd'.padStart(16)}  ours/qemu  target`);
  for (const t of TESTS) {
    if (!tests.has(t)) continue;
    const u = UNITS[t];
    const r = ratio(t);
    const f = (side: Side) => `${figure(t, side)!.toFixed(0)} ${u.unit}`.padStart(16);
    const verdict = r === undefined ? '' : `${r >= TARGET[t] ? 'PASS' : 'MISS'} ≥ ${TARGET[t]}`;
    console.log(`${u.what.padEnd(20)} ${f('ours')} ${f('qemu-nbd')}  ${(r === undefined ? '-' : r.toFixed(2)).padStart(9)}  ${verdict}`);
  }
  console.log('rounds (in order) and server CPU (median per unit of work, all threads):');
  for (const t of TESTS) {
    if (!tests.has(t)) continue;
    for (const side of SIDES) {
      const s = samples[t][side];
      const cpu = s.filter((x) => x.cpuMs !== undefined).map((x) => x.cpuMs! / x.work);
      console.log(`  ${t.padEnd(4)} ${side.padEnd(8)} ${s.map((x) => x.value.toFixed(0)).join(', ').padEnd(24)} ${UNITS[t].unit.padEnd(5)}  ${cpu.length > 0 ? UNITS[t].cpu(median(cpu)) : ''}`);
    }
  }
  const fig = (t: Test, side: Side) => round2(figure(t, side));
  const figures = {
    seq_mib_s: fig('seq', 'ours'),
    qemu_nbd_seq_mib_s: fig('seq', 'qemu-nbd'),
    seq_ratio: ratio('seq') ?? null,
    rand4k_iops: fig('rand', 'ours'),
    qemu_nbd_rand4k_iops: fig('rand', 'qemu-nbd'),
    rand_ratio: ratio('rand') ?? null,
    tls_seq_mib_s: fig('tls', 'ours'),
    qemu_nbd_tls_seq_mib_s: fig('tls', 'qemu-nbd'),
    tls_seq_ratio: ratio('tls') ?? null,
  };
  const prefix = device === 'file' ? '' : `${device}_`;
  console.log(JSON.stringify(Object.fromEntries(Object.entries(figures).map(([k, v]) => [`${prefix}${k}`, v]))));
}

/** Reads the file once, so every server serves it from the page cache. */
async function readThrough(file: string): Promise<void> {
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) void chunk;
}

export async function run(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      tests: { type: 'string', default: TESTS.join(',') },
      device: { type: 'string', default: 'file' },
      rounds: { type: 'string' },
      'cpu-prof': { type: 'boolean', default: false },
    },
    strict: true,
  });
  const plan: Plan = planFromArgs(values.quick, values.rounds, { quick: QUICK, full: FULL });
  const tests = new Set<Test>();
  for (const t of values.tests.split(',').map((s) => s.trim())) {
    if (!(TESTS as readonly string[]).includes(t)) throw new UsageError(`--tests: unknown test '${t}' (use ${TESTS.join(', ')})`);
    tests.add(t as Test);
  }
  const plain = tests.has('seq') || tests.has('rand');
  if (!(DEVICES as readonly string[]).includes(values.device)) throw new UsageError(`--device: '${values.device}' is not one of ${DEVICES.join(', ')}`);
  const device = values.device as Device;

  cleanupOnSignals();
  const t0 = performance.now();
  // Client and servers share this machine (and its CPUs): other load on it shows in every figure.
  const loadAtStart = loadavg()[0]!.toFixed(2);
  try {
    requireTools({ nbdcopy: 'libnbd-bin', nbdinfo: 'libnbd-bin', 'qemu-nbd': 'qemu-utils', ...(tests.has('rand') ? { fio: 'fio' } : {}) });
    if (device === 'rbd') requireQemuRbd();
    const dir = await workDir('nbd');
    const cpuProfDir = values['cpu-prof'] ? join(BENCH_DATA, 'profiles') : undefined;
    if (cpuProfDir) await mkdir(cpuProfDir, { recursive: true });

    const key = randomBytes(32).toString('hex');
    const pskLine = `${IDENTITY}:${key}`;
    const file = join(dir, 'disk.raw');
    const keyFile = join(dir, 'keys.psk');
    const qemuPskDir = join(dir, 'qemu-psk');
    await writeFile(keyFile, `${pskLine}\n`, { mode: 0o600 });
    await mkdir(qemuPskDir);
    await writeFile(join(qemuPskDir, 'keys.psk'), `${pskLine}\n`, { mode: 0o600 });
    const tw = performance.now();
    await writeRandomFile(file, plan.mib);
    await readThrough(file);
    log(`${plan.mib} MiB of random data written and read back in ${((performance.now() - tw) / 1000).toFixed(1)} s`);
    const rbd = device === 'rbd' ? await makeRbdCopy(file, dir) : undefined;
    const setup: Setup = { file, rbd, keyFile, qemuPskDir, pskLine, cpuProfDir };

    const endpoints: Record<'plain' | 'tls', Partial<Record<Side, Endpoint>>> = { plain: {}, tls: {} };
    if (plain) endpoints.plain = { ours: await startOurs(setup, 'off'), 'qemu-nbd': await startQemu(setup, 'off') };
    if (tests.has('tls')) endpoints.tls = { ours: await startOurs(setup, 'psk'), 'qemu-nbd': await startQemu(setup, 'psk') };
    const at = (mode: 'plain' | 'tls', side: Side): Endpoint => endpoints[mode][side]!;

    // Warm-up, not measured: every server reads the file once (and JIT-compiles its read path),
    // every TLS one does a handshake, fio's path runs a second.
    const fioOut = join(dir, 'fio.json');
    for (const side of SIDES) {
      if (plain) await runOk('nbdcopy', [at('plain', side).uri, 'null:'], 600_000);
      if (tests.has('rand')) await randRead(at('plain', side), 1, fioOut);
      if (tests.has('tls')) await runOk('nbdinfo', [at('tls', side).uri], 60_000);
    }
    log('warm-up done');

    const samples: Samples = { seq: { ours: [], 'qemu-nbd': [] }, rand: { ours: [], 'qemu-nbd': [] }, tls: { ours: [], 'qemu-nbd': [] } };
    /** When each test ran against our server, to read its CPU profile per test. */
    const windows: Record<Test, Window[]> = { seq: [], rand: [], tls: [] };
    for (let round = 1; round <= plan.rounds; round++) {
      const order: readonly Side[] = round % 2 === 1 ? SIDES : [...SIDES].reverse();
      for (const t of TESTS) {
        if (!tests.has(t)) continue;
        for (const side of order) {
          const from = nowUs();
          const s =
            t === 'rand'
              ? await randRead(at('plain', side), plan.fioSeconds, fioOut)
              : await seqRead(at(t === 'tls' ? 'tls' : 'plain', side), plan.mib);
          samples[t][side].push(s);
          if (side === 'ours') windows[t].push([from, nowUs()]);
          const cpu = s.cpuMs === undefined ? '' : `, server CPU ${(s.cpuMs / 1000).toFixed(2)} s`;
          log(`round ${round}/${plan.rounds} ${t.padEnd(4)} ${side.padEnd(8)} ${s.value.toFixed(0)} ${UNITS[t].unit}${cpu}`);
        }
      }
    }

    // Stopped now rather than at cleanup: a CPU profile is written when its process exits.
    for (const mode of ['plain', 'tls'] as const) for (const side of SIDES) await endpoints[mode][side]?.daemon.stop();
    for (const [ep, profiled] of [[endpoints.plain.ours, ['seq', 'rand']], [endpoints.tls.ours, ['tls']]] as const) {
      if (ep?.profileDir === undefined) continue;
      // Node names them CPU.DATE.TIME.PID.THREAD.SEQ.cpuprofile; thread 0 is the main thread.
      const main = (await readdir(ep.profileDir)).find((n) => /^CPU\.\d+\.\d+\.\d+\.0\.\d+\.cpuprofile$/.test(n));
      if (main === undefined) {
        log(`${ep.daemon.name}: no main-thread CPU profile in ${ep.profileDir}`);
        continue;
      }
      for (const t of profiled) {
        if (!tests.has(t)) continue;
        console.log(`\nCPU profile of our server's main thread during '${t}' (${windows[t].length} run${windows[t].length > 1 ? 's' : ''}): ${join(ep.profileDir, main)}`);
        for (const line of await summarizeProfile(join(ep.profileDir, main), REPO, windows[t])) console.log(line);
      }
    }

    const minutes = ((performance.now() - t0) / 60_000).toFixed(1);
    const machine = `${availableParallelism()} CPUs, load average ${loadAtStart} before, ${loadavg()[0]!.toFixed(2)} after`;
    const fio = tests.has('rand') ? `, fio ${plan.fioSeconds} s` : '';
    const served = device === 'rbd' ? 'RBD clone (single-node Ceph)' : 'file';
    report(tests, samples, `nbd benchmark: ${plan.mib} MiB ${served}, ${plan.rounds} round${plan.rounds > 1 ? 's' : ''} interleaved${fio}${values.quick ? ' (--quick)' : ''}, ${minutes} min; ${machine}`, device);
  } catch (e) {
    // After a signal, clients fail because their servers are stopping: no news, the handler exits.
    if (!interrupted()) {
      log(`nbd bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      process.exitCode = 1;
    }
  } finally {
    await cleanup();
  }
}
