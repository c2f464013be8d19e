/**
 * What the NBD benches measure a server with, whichever server it is (ours in a process of its
 * own, a `prestage serve`, qemu-nbd): sequential reads with nbdcopy and 4 KiB random reads with
 * fio's nbd engine, each with the server CPU it took; and qemu-nbd itself, the reference.
 */
import { spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { log } from './log.js';
import { CLIENT_ENV, runClient, runOk, startDaemon, type Daemon } from './nbd-procs.js';
import { freePort } from './server.js';

/** One server as a client reaches it. */
export interface NbdEndpoint {
  readonly name: string;
  readonly uri: string;
  /** CPU time (user + system, all threads) the server has used so far, in ms; undefined when unknown. */
  cpuMs(): number | undefined;
}

/** A measured figure (MiB/s or IOPS), the work it did (GiB or I/Os) and the server CPU it took. */
export interface Sample {
  readonly value: number;
  readonly work: number;
  readonly cpuMs: number | undefined;
}

/** How a test's figures read: its name, unit, and server CPU per unit of work. */
export interface Unit {
  readonly what: string;
  readonly unit: string;
  readonly cpu: (msPerWork: number) => string;
}

export const SEQ_UNIT: Unit = { what: 'seq read (nbdcopy)', unit: 'MiB/s', cpu: (msPerGiB) => `${(msPerGiB / 1000).toFixed(2)} CPU-s/GiB` };
export const RAND_UNIT: Unit = { what: 'rand 4k qd16 (fio)', unit: 'IOPS', cpu: (msPerIo) => `${(msPerIo * 1000).toFixed(1)} CPU-µs/IO` };

function cpuSince(ep: NbdEndpoint, before: number | undefined): number | undefined {
  const after = ep.cpuMs();
  return before === undefined || after === undefined ? undefined : after - before;
}

/** `nbdcopy URI null:` over an export of `mib` MiB, from spawn to exit. */
export async function seqRead(ep: NbdEndpoint, mib: number): Promise<Sample> {
  const cpu0 = ep.cpuMs();
  const r = await runOk('nbdcopy', [ep.uri, 'null:'], 600_000);
  return { value: mib / (r.ms / 1000), work: mib / 1024, cpuMs: cpuSince(ep, cpu0) };
}

interface FioJob {
  readonly error: number;
  readonly read: { readonly iops: number; readonly total_ios: number };
}

/** fio's nbd engine, 4 KiB random reads at queue depth 16 for `seconds`; its JSON report goes to `outFile`. */
export async function randRead(ep: NbdEndpoint, seconds: number, outFile: string): Promise<Sample> {
  const cpu0 = ep.cpuMs();
  const args = ['--name=rand4k', '--ioengine=nbd', `--uri=${ep.uri}`, '--rw=randread', '--bs=4k', '--iodepth=16', `--runtime=${seconds}`, '--time_based'];
  await runOk('fio', [...args, '--output-format=json', `--output=${outFile}`], (seconds + 120) * 1000);
  const cpuMs = cpuSince(ep, cpu0);
  const job = (JSON.parse(await readFile(outFile, 'utf8')) as { jobs: FioJob[] }).jobs[0];
  if (job === undefined || job.error !== 0 || !(job.read.total_ios > 0)) throw new Error(`fio against ${ep.name} did no reads: ${JSON.stringify(job)}`);
  return { value: job.read.iops, work: job.read.total_ios, cpuMs };
}

/** qemu's rbd block driver is a module of its own package: without it qemu-nbd cannot open `rbd:…`. */
export function requireQemuRbd(): void {
  // qemu-img lists rbd among its formats whether the module is there or not: open one instead.
  // With the module this fails on the missing ceph.conf; without, on the protocol.
  const probe = spawnSync('qemu-img', ['info', '-f', 'raw', 'rbd:none/none:conf=/nonexistent/ceph.conf'], { env: CLIENT_ENV, encoding: 'utf8' });
  if (probe.error !== undefined || /unknown protocol|unknown driver|not supported|whitelist/i.test(probe.stderr ?? '')) {
    throw new Error(`qemu-nbd cannot open RBD images (apt-get install qemu-block-extra): ${(probe.stderr ?? probe.error?.message ?? '').trim()}`);
  }
}

export interface QemuNbdOptions {
  readonly exportName: string;
  /** What to serve, last on the command line: a file, or `--cache=none rbd:POOL/IMAGE:conf=…`. */
  readonly image: readonly string[];
  /** More options, e.g. TLS. */
  readonly extraArgs?: readonly string[];
  /** The URI a client reaches the export on, given the port. */
  readonly uri: (port: number) => string;
}

/**
 * qemu-nbd as ENVIRONMENT.md has it (`-t -e 16`: persistent, 16 connections) on a free port of
 * 127.0.0.1, running until cleanup; resolves once a whole NBD handshake succeeds.
 */
export async function startQemuNbd(name: string, o: QemuNbdOptions): Promise<{ readonly daemon: Daemon; readonly uri: string }> {
  const port = await freePort();
  const args = ['-f', 'raw', '-b', '127.0.0.1', '-p', String(port), '-x', o.exportName, '-t', '-e', '16', ...(o.extraArgs ?? []), ...o.image];
  const daemon = startDaemon(name, 'qemu-nbd', args);
  const uri = o.uri(port);
  // A whole NBD handshake, not a bare TCP connect (which qemu-nbd logs as a failed negotiation).
  await daemon.waitReady('serving', async () => (await runClient('nbdinfo', ['--size', uri], 10_000)).status === 0, 30_000);
  log(`${name}: qemu-nbd (pid ${daemon.pid}) on 127.0.0.1:${port}`);
  return { daemon, uri };
}
