/**
 * Processes of the NBD bench: servers that run for the whole bench (ours in a child process,
 * qemu-nbd) and the clients timed against them (nbdcopy, fio). Everything started here is
 * stopped at cleanup, on failure and on SIGINT too.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { followOutput } from './child-output.js';
import { onCleanup } from './cleanup.js';
import { log, sleep } from './log.js';

/** Debian's binaries first (a pyenv or nvm PATH may shadow them); libnbd kept quiet. */
export const CLIENT_ENV: NodeJS.ProcessEnv = { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}`, LIBNBD_DEBUG: '0' };

/** Fails naming the Debian package of every tool missing. */
export function requireTools(tools: Readonly<Record<string, string>>): void {
  const missing = Object.entries(tools).filter(([tool]) => spawnSync('sh', ['-c', `command -v ${tool}`], { env: CLIENT_ENV }).status !== 0);
  if (missing.length > 0) throw new Error(`missing: ${missing.map(([t, pkg]) => `${t} (apt-get install ${pkg})`).join(', ')}`);
}


let clockTick: number | undefined;
/** Milliseconds per clock tick of /proc's CPU times (10 on every usual Linux). */
function msPerTick(): number {
  if (clockTick === undefined) {
    try {
      clockTick = 1000 / Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    } catch {
      clockTick = 10;
    }
    if (!Number.isFinite(clockTick) || clockTick <= 0) clockTick = 10;
  }
  return clockTick;
}

/** CPU time (user + system, all threads) a process has used so far, in ms; undefined once it is gone or off Linux. */
export function processCpuMs(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * msPerTick();
  } catch {
    return undefined;
  }
}

export interface Daemon {
  readonly name: string;
  readonly pid: number;
  cpuMs(): number | undefined;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it exited. Idempotent. */
  stop(): Promise<void>;
  /** Resolves with the first stdout line matching, or rejects when the process exits first or time runs out. */
  waitForLine(match: RegExp, timeoutMs: number): Promise<string>;
  /** Polls `probe` until it holds; rejects when the process exits first or time runs out. */
  waitReady(what: string, probe: () => Promise<boolean>, timeoutMs: number): Promise<void>;
}

/**
 * A long-running process. Its output goes to stderr prefixed with its name (and is kept for
 * error messages); an exit before stop() is reported. Stopped at cleanup.
 */
export function startDaemon(name: string, cmd: string, args: readonly string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; graceMs?: number } = {}): Daemon {
  const child = spawn(cmd, args, { env: opts.env ?? CLIENT_ENV, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let exitStatus: number | string | undefined;
  let stopping = false;
  const exited = new Promise<number | string>((resolve) => {
    child.once('error', (err) => resolve(err.message));
    child.once('exit', (code, signal) => resolve(code ?? signal ?? '?'));
  });
  void exited.then((s) => {
    exitStatus = s;
    if (!stopping) log(`${name} exited unexpectedly with ${s}`);
  });
  const lineWaiters = new Set<(line: string) => void>();
  const tail = followOutput(child, name, (line) => {
    for (const w of lineWaiters) w(line);
  });
  const pid = child.pid ?? -1;
  const graceMs = opts.graceMs ?? 10_000;
  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      stopping = true;
      if (exitStatus !== undefined || pid < 0) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => {
        log(`${name} did not stop within ${graceMs} ms of SIGTERM: killing it`);
        child.kill('SIGKILL');
      }, graceMs);
      const status = await exited;
      clearTimeout(timer);
      if (status !== 0 && status !== 'SIGTERM') log(`${name} exited with ${status}`);
    })());
  onCleanup(`stop ${name}`, stop);

  const failure = (what: string) => new Error(`${name} ${what}:\n${tail.join('\n')}`);
  const waitForLine = (match: RegExp, timeoutMs: number) =>
    new Promise<string>((resolve, reject) => {
      const done = (f: () => void) => {
        clearTimeout(timer);
        lineWaiters.delete(onLine);
        f();
      };
      const onLine = (line: string) => match.test(line) && done(() => resolve(line));
      const timer = setTimeout(() => done(() => reject(failure(`printed no line like ${match} within ${timeoutMs} ms`))), timeoutMs);
      lineWaiters.add(onLine);
      void exited.then((s) => done(() => reject(failure(`exited with ${s} at start`))));
    });
  const waitReady = async (what: string, probe: () => Promise<boolean>, timeoutMs: number) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (exitStatus !== undefined) throw failure(`exited with ${exitStatus} at start`);
      if (await probe()) return;
      if (Date.now() > deadline) throw failure(`was not ${what} within ${timeoutMs} ms`);
      await sleep(50);
    }
  };
  return { name, pid, cpuMs: () => processCpuMs(pid), stop, waitForLine, waitReady };
}

export interface Ran {
  /** Exit code, or the signal that ended it. */
  readonly status: number | string;
  readonly stdout: string;
  readonly stderr: string;
  /** Wall time from spawn to exit. */
  readonly ms: number;
}

const clients = new Set<ChildProcess>();
let clientCleanup = false;

/**
 * Runs a client to its end, timing it. A client still running at cleanup (a SIGINT mid-run) is
 * killed; one running past `timeoutMs` is too.
 */
export function runClient(cmd: string, args: readonly string[], timeoutMs: number): Promise<Ran> {
  if (!clientCleanup) {
    clientCleanup = true;
    onCleanup('kill running clients', () => {
      for (const c of clients) c.kill('SIGKILL');
      return Promise.resolve();
    });
  }
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, { env: CLIENT_ENV, stdio: ['ignore', 'pipe', 'pipe'] });
    clients.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => {
      stderr += `\n(killed after ${timeoutMs} ms)`;
      child.kill('SIGKILL');
    }, timeoutMs);
    let settled = false;
    const finish = (status: number | string) => {
      if (settled) return;
      settled = true;
      const ms = performance.now() - t0;
      clearTimeout(timer);
      clients.delete(child);
      resolve({ status, stdout, stderr, ms });
    };
    child.once('error', (err) => finish(err.message));
    child.once('close', (code, signal) => finish(code ?? signal ?? '?'));
  });
}

/** Runs a client that must succeed; its output in the error otherwise. */
export async function runOk(cmd: string, args: readonly string[], timeoutMs: number): Promise<Ran> {
  const r = await runClient(cmd, args, timeoutMs);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}):\n${(r.stderr + r.stdout).trim().slice(-2000)}`);
  return r;
}
