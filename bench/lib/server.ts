import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, open, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { followOutput } from './child-output.js';
import { onCleanup } from './cleanup.js';
import { Api } from './http.js';
import { log, sleep } from './log.js';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** Scratch space of every bench (gitignored). */
export const BENCH_DATA = join(REPO, '.bench-data');

/** A fresh directory under .bench-data/, removed at cleanup. */
export async function workDir(name: string): Promise<string> {
  const dir = join(BENCH_DATA, `${name}-${process.pid}`);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  onCleanup(`remove ${dir}`, () => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A file of random bytes, written in 1 MiB blocks. */
export async function writeRandomFile(path: string, mib: number): Promise<void> {
  const fh = await open(path, 'wx');
  try {
    for (let i = 0; i < mib; i++) await fh.write(randomBytes(1 << 20));
  } finally {
    await fh.close();
  }
}

/** A port nothing listens on right now (bound on 127.0.0.1, then let go). */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolvePort(port));
    });
  });
}

export interface ServerOptions {
  readonly dataDir: string;
  readonly copyConcurrency?: number;
  /** Write a V8 CPU profile of the server into this directory when it stops. */
  readonly cpuProfDir?: string;
  readonly maxSockets?: number;
  /** PostgreSQL state instead of SQLite: `--db URL --db-schema SCHEMA`. */
  readonly db?: { readonly url: string; readonly schema: string };
  /** `--instance-name`: this instance's name among those sharing a --db state. */
  readonly instanceName?: string;
  /** `--lease-ttl`, e.g. '5s'. */
  readonly leaseTtl?: string;
  /** More `prestage serve` arguments, after the others. */
  readonly extraArgs?: readonly string[];
}

export interface Server {
  readonly api: Api;
  readonly pid: number;
  readonly port: number;
  /** The --instance-name it was given, else 'server'. */
  readonly name: string;
  /** CPU time used so far (user + system) by the server's main thread and by the whole process; undefined off Linux. */
  cpuMs(): { main: number; all: number } | undefined;
  stop(): Promise<void>;
  /** Sends `signal` (e.g. SIGKILL) and waits until the process is gone; its exit is no news. */
  kill(signal: NodeJS.Signals): Promise<void>;
}

/** utime + stime of a /proc stat file, in ms (clock ticks of 10 ms). */
function procCpuMs(path: string): number {
  const stat = readFileSync(path, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/**
 * Starts `prestage serve` as a child process on a free port and waits until /healthz answers.
 * Its warnings are passed on to stderr; it is stopped (SIGTERM, then SIGKILL) at cleanup.
 */
export async function startServer(o: ServerOptions): Promise<Server> {
  const port = await freePort();
  // The NBD exporter (the default) listens too; on a free port, two servers never clash on 10809.
  const nbdPort = await freePort();
  const nodeFlags = o.cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${o.cpuProfDir}`] : [];
  const args = [
    ...nodeFlags,
    join(REPO, 'bin', 'prestage.js'),
    'serve',
    '--data', o.dataDir,
    '--listen', `127.0.0.1:${port}`,
    '--log-level', 'warn',
    '--copy-concurrency', String(o.copyConcurrency ?? 2),
    '--nbd-listen', `127.0.0.1:${nbdPort}`,
    // Benchmarks import the images they generate under .bench-data/, on the server's disk.
    '--import-dir', BENCH_DATA,
    ...(o.db ? ['--db', o.db.url, '--db-schema', o.db.schema] : []),
    ...(o.instanceName !== undefined ? ['--instance-name', o.instanceName] : []),
    ...(o.leaseTtl !== undefined ? ['--lease-ttl', o.leaseTtl] : []),
    ...(o.extraArgs ?? []),
  ];
  const name = o.instanceName ?? 'server';
  const child = spawn(process.execPath, args, { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | string>((r) => child.once('exit', (code, signal) => r(code ?? signal ?? '?')));
  let exitStatus: number | string | undefined;
  let stopping = false;
  void exited.then((s) => {
    exitStatus = s;
    if (!stopping) log(`prestage serve ${name} exited unexpectedly with ${s}`);
  });
  const tail = followOutput(child, name);

  const api = new Api('127.0.0.1', port, o.maxSockets);
  const stop = async () => {
    api.close();
    if (exitStatus !== undefined) return;
    stopping = true;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    const status = await exited;
    clearTimeout(timer);
    if (status !== 0) log(`server exited with ${status}`);
  };
  onCleanup(`stop the server ${name}`, stop);
  const kill = async (signal: NodeJS.Signals) => {
    api.close();
    if (exitStatus !== undefined) return;
    stopping = true;
    child.kill(signal);
    await exited;
  };

  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exitStatus !== undefined) throw new Error(`prestage serve exited with ${exitStatus} at start:\n${tail.join('\n')}`);
    try {
      if ((await api.request('GET', '/healthz')).status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`prestage serve did not answer on port ${port} within 30 s`);
    await sleep(100);
  }
  api.token = readFileSync(join(o.dataDir, 'admin.token'), 'utf8').trim();
  log(`prestage serve${o.instanceName !== undefined ? ` ${name}` : ''} (pid ${child.pid}) on 127.0.0.1:${port}, data ${o.dataDir}${o.db ? `, PostgreSQL schema ${o.db.schema}` : ''}`);
  const pid = child.pid!;
  const cpuMs = () => {
    try {
      return { main: procCpuMs(`/proc/${pid}/task/${pid}/stat`), all: procCpuMs(`/proc/${pid}/stat`) };
    } catch {
      return undefined;
    }
  };
  return { api, pid, port, name, cpuMs, stop, kill };
}
