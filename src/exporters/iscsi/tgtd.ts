/**
 * Runs and supervises one tgtd (Debian's tgt) for prestage: its own control socket in a private
 * directory, the one portal the caller chose, restarted with backoff when it dies, and never left
 * running after prestage is gone.
 *
 * Traps this handles (seen with tgt 1.0.85):
 * - tgtd ignores SIGTERM. It is stopped by asking it (`State offline`, targets deleted,
 *   `delete system`), and killed with SIGKILL when it does not leave in time.
 * - tgtd is started through `setpriv --pdeathsig KILL`, so the kernel kills it when the thread
 *   that started it ends: a crashed prestage takes its tgtd along. (Start it from the main thread:
 *   a worker thread's exit would kill it too.)
 * - Should one outlive its owner anyway (a crash between fork and prctl), the next start finds it
 *   by its control socket and its owner mark in /proc, and kills it when that owner is dead.
 * - When tgtd cannot bind the portal it was given, it does not exit: it listens on 0.0.0.0:3260
 *   and [::]:3260 instead. Every start checks the portals it listens on and refuses any other.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { constants } from 'node:fs';
import { access, mkdir } from 'node:fs/promises';
import { isIP } from 'node:net';
import { delimiter, isAbsolute, join } from 'node:path';
import type { Logger } from 'pino';
import { ConflictError, InputError, UnavailableError } from '../../domain/index.js';
import { findTgtd, formatTag, isAlive, parseTag, tagOf, type ProcessTag } from './proc.js';
import { isTgtadmError, Tgtadm } from './tgtadm.js';

/** Marks a tgtd with the prestage process that started it (`pid:starttime`). */
export const TGTD_OWNER_ENV = 'PRESTAGE_TGTD_OWNER';

export type TgtdState = 'INITIALIZED' | 'STARTING' | 'RUNNING' | 'RESTARTING' | 'STOPPING' | 'STOPPED' | 'FAILED';

export interface TgtdOptions {
  /**
   * A directory for this tgtd alone (made with mode 0700 if missing): its control socket
   * `tgtd.<controlPort>` and the socket's lock file live there. It must be short enough for a
   * Unix socket path (107 bytes with the socket's name).
   */
  readonly runDir: string;
  /** tgtd's `--control-port`: it names the control socket. Default 0. */
  readonly controlPort?: number;
  /** Where tgtd listens for iSCSI logins: an IP address (not a name) and a port. */
  readonly portal: { readonly host: string; readonly port: number };
  /** Default `tgtd` from PATH (`/usr/sbin` is searched too). */
  readonly tgtdCommand?: string;
  /** Default `tgtadm` from PATH (`/usr/sbin` is searched too). */
  readonly tgtadmCommand?: string;
  /** Delay before the first restart after tgtd died; doubled after each failed start. Default 100 ms. */
  readonly restartDelayMs?: number;
  /** The longest delay between restarts. Default 10 s. */
  readonly maxRestartDelayMs?: number;
  /** A run at least this long resets the restart delay to its first value. Default 60 s. */
  readonly stableAfterMs?: number;
  /** How long a start may take until tgtd answers on its control socket. Default 10 s. */
  readonly startTimeoutMs?: number;
  /** How long a stop waits for tgtd to leave after asking it to, before SIGKILL. Default 5 s. */
  readonly stopTimeoutMs?: number;
  /**
   * tgtd's I/O threads per LUN (`--nr_iothreads`). Default 4, not tgt's 16: every host's LUN has
   * its own, so a thousand hosts would be 16,000 threads, and starting 16 costs each export time.
   */
  readonly ioThreadsPerLun?: number;
  readonly logger?: Logger;
}

interface CompiledTgtdOptions {
  readonly runDir: string;
  readonly controlPort: number;
  readonly socketBase: string;
  readonly portal: { readonly host: string; readonly port: number };
  /** As `--iscsi portal=` takes it and `--op show --mode portal` prints it. */
  readonly portalText: string;
  readonly tgtdCommand: string;
  readonly tgtadmCommand: string;
  readonly restartDelayMs: number;
  readonly maxRestartDelayMs: number;
  readonly stableAfterMs: number;
  readonly startTimeoutMs: number;
  readonly stopTimeoutMs: number;
  readonly ioThreadsPerLun: number;
  readonly logger: Logger | undefined;
}

/** sizeof(sockaddr_un.sun_path) less its terminating NUL. */
const SUN_PATH_MAX = 107;

function positive(v: number | undefined, fallback: number, what: string): number {
  const n = v ?? fallback;
  if (!Number.isFinite(n) || n <= 0) throw new InputError(`${what} must be a positive number of milliseconds, got ${n}`, { field: what });
  return n;
}

function threads(n: number): number {
  if (!Number.isInteger(n) || n < 1 || n > 128) throw new InputError(`tgtd I/O threads per LUN must be an integer in 1..128, got ${n}`, { field: 'ioThreadsPerLun' });
  return n;
}

export function compileTgtdOptions(o: TgtdOptions): CompiledTgtdOptions {
  if (!isAbsolute(o.runDir)) throw new InputError(`tgtd runDir must be an absolute path, got '${o.runDir}'`, { field: 'runDir' });
  const controlPort = o.controlPort ?? 0;
  if (!Number.isInteger(controlPort) || controlPort < 0 || controlPort > 32767) throw new InputError(`tgtd control port must be an integer in 0..32767 (tgtd keeps it in a C short), got ${controlPort}`, { field: 'controlPort' });
  const socketBase = join(o.runDir, 'tgtd');
  const socketPath = `${socketBase}.${controlPort}`;
  if (Buffer.byteLength(socketPath) > SUN_PATH_MAX) throw new InputError(`tgtd's control socket ${socketPath} is longer than a Unix socket path may be (${SUN_PATH_MAX} bytes): choose a shorter runDir`, { field: 'runDir' });
  const { host, port } = o.portal;
  const family = isIP(host);
  if (family === 0) throw new InputError(`iSCSI portal address must be an IP address, got '${host}'`, { field: 'portal' });
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new InputError(`iSCSI portal port must be in 1..65535, got ${port}`, { field: 'portal' });
  const restartDelayMs = positive(o.restartDelayMs, 100, 'restartDelayMs');
  return Object.freeze({
    runDir: o.runDir,
    controlPort,
    socketBase,
    portal: Object.freeze({ host, port }),
    portalText: family === 6 ? `[${host}]:${port}` : `${host}:${port}`,
    tgtdCommand: o.tgtdCommand ?? 'tgtd',
    tgtadmCommand: o.tgtadmCommand ?? 'tgtadm',
    restartDelayMs,
    maxRestartDelayMs: Math.max(restartDelayMs, positive(o.maxRestartDelayMs, 10_000, 'maxRestartDelayMs')),
    stableAfterMs: positive(o.stableAfterMs, 60_000, 'stableAfterMs'),
    startTimeoutMs: positive(o.startTimeoutMs, 10_000, 'startTimeoutMs'),
    stopTimeoutMs: positive(o.stopTimeoutMs, 5_000, 'stopTimeoutMs'),
    ioThreadsPerLun: threads(o.ioThreadsPerLun ?? 4),
    logger: o.logger,
  });
}

/** Told after every start: the first (`restart: false`) and each restart after tgtd died, which came up empty. */
export interface TgtdStarted {
  readonly pid: number;
  readonly restart: boolean;
}

export interface TgtdStatus {
  readonly state: TgtdState;
  readonly pid: number | undefined;
  readonly portal: string;
  /** Restarts after tgtd died, since start(). */
  readonly restarts: number;
  /** Why the last start or restart failed, if it did. */
  readonly lastError: string | undefined;
}

// tgtd's chatter at every start, on machines without RDMA or as a user without CAP_SYS_RESOURCE.
const STARTUP_NOISE = /RDMA|oom-killer|nr_open|use timer_fd|use signalfd|work_timer_start|bs_init/;
const STDERR_TAIL = 20;

async function resolveCommand(cmd: string, pkg: string): Promise<string> {
  const dirs = cmd.includes('/') ? [''] : [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/sbin'];
  for (const dir of dirs) {
    const path = dir === '' ? cmd : join(dir, cmd);
    try {
      await access(path, constants.X_OK);
      return path;
    } catch {
      // not here
    }
  }
  throw new UnavailableError(`${cmd} not found: install ${pkg} (apt-get install ${pkg})`, { command: cmd });
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** One tgtd, started and kept running by this process. */
export class Tgtd {
  readonly admin: Tgtadm;
  private readonly o: CompiledTgtdOptions;
  private _state: TgtdState = 'INITIALIZED';
  private child: ChildProcess | undefined;
  private launching: Promise<void> | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private attempt = 0;
  private runningSince = 0;
  private _restarts = 0;
  private lastError: string | undefined;
  private ownerTag = '';
  private tgtdPath = '';
  private setprivPath = '';
  private readonly startedListeners = new Set<(e: TgtdStarted) => void>();
  private readonly stateWaiters = new Set<() => void>();

  constructor(options: TgtdOptions) {
    this.o = compileTgtdOptions(options);
    this.admin = new Tgtadm({ socketBase: this.o.socketBase, controlPort: this.o.controlPort, command: this.o.tgtadmCommand });
  }

  get state(): TgtdState {
    return this._state;
  }

  /** The running tgtd's pid. */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** `address:port` tgtd listens on (`[v6]:port`). */
  get portal(): string {
    return this.o.portalText;
  }

  status(): TgtdStatus {
    return { state: this._state, pid: this.pid, portal: this.o.portalText, restarts: this._restarts, lastError: this.lastError };
  }

  /** Calls `listener` after every start; returns a function that stops that. */
  onStarted(listener: (e: TgtdStarted) => void): () => void {
    this.startedListeners.add(listener);
    return () => this.startedListeners.delete(listener);
  }

  /**
   * Starts tgtd and resolves once it answers on its control socket and listens on the portal
   * (and nowhere else). A tgtd left on this control socket by a prestage that died is killed
   * first; one whose owner still runs is a ConflictError.
   */
  async start(): Promise<void> {
    if (this._state !== 'INITIALIZED' && this._state !== 'STOPPED' && this._state !== 'FAILED') throw new ConflictError(`tgtd is ${this._state.toLowerCase()}, not stopped`, { state: this._state });
    this.setState('STARTING');
    try {
      this.tgtdPath = await resolveCommand(this.o.tgtdCommand, 'tgt');
      this.setprivPath = await resolveCommand('setpriv', 'util-linux');
      await resolveCommand(this.o.tgtadmCommand, 'tgt');
      await mkdir(this.o.runDir, { recursive: true, mode: 0o700 });
      const self = await tagOf(process.pid);
      if (!self) throw new Error('cannot read /proc/self/stat');
      this.ownerTag = formatTag(self);
      await this.removeStale();
      this.attempt = 0;
      await this.launchOnce();
    } catch (err) {
      this.lastError = (err as Error).message;
      if (this.is('STARTING')) this.setState('FAILED');
      throw err;
    }
    if (!this.is('STARTING')) {
      // stop() came while tgtd was starting, maybe before there was a tgtd to stop.
      this.child?.kill('SIGKILL');
      this.child = undefined;
      throw new UnavailableError('tgtd was stopped while it was starting', { state: this._state });
    }
    this.setState('RUNNING');
    this.emitStarted(false);
  }

  /**
   * Resolves when tgtd runs (at once, or after the restart under way); an UnavailableError when it
   * is stopped, failed, or not back within `timeoutMs`.
   */
  async whenRunning(timeoutMs: number): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const state = this._state;
      if (state === 'RUNNING') return;
      if (state !== 'STARTING' && state !== 'RESTARTING') throw new UnavailableError(`tgtd is ${state.toLowerCase()}`, { state });
      const left = deadline - performance.now();
      if (left <= 0) throw new UnavailableError(`tgtd is not running (${state.toLowerCase()}${this.lastError ? `: ${this.lastError}` : ''})`, { state });
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer);
          this.stateWaiters.delete(done);
          resolve();
        };
        const timer = setTimeout(done, left);
        this.stateWaiters.add(done);
      });
    }
  }

  /**
   * Stops tgtd: no new logins, every target (and its sessions) deleted, then asked to exit;
   * SIGKILL after `stopTimeoutMs`. Restarts stop too. Safe to call more than once.
   */
  async stop(): Promise<void> {
    if (this._state === 'STOPPED' || this._state === 'INITIALIZED' || this._state === 'FAILED') {
      this.setState('STOPPED');
      return;
    }
    this.setState('STOPPING');
    clearTimeout(this.restartTimer);
    await this.launching?.catch(() => undefined);
    const child = this.child;
    if (child) {
      const exited = exitOf(child);
      try {
        await this.admin.setSystemState('offline');
        for (const t of await this.admin.targets()) await this.admin.deleteTarget(t.tid, { force: true });
        await this.admin.shutdown();
      } catch (err) {
        this.o.logger?.debug({ err }, 'tgtd did not take the request to stop; killing it');
      }
      if (!(await Promise.race([exited.then(() => true), sleep(this.o.stopTimeoutMs).then(() => false)]))) {
        child.kill('SIGKILL');
        await exited;
      }
    }
    this.child = undefined;
    this.setState('STOPPED');
  }

  /** Kills tgtds left on our control socket by a dead owner; refuses to touch a live owner's. */
  private async removeStale(): Promise<void> {
    for (const found of await findTgtd(this.o.socketBase, this.o.controlPort, TGTD_OWNER_ENV)) {
      const owner = parseTag(found.owner);
      if (!owner) throw new ConflictError(`a tgtd not started by prestage (pid ${found.tag.pid}) uses the control socket ${this.admin.socketPath}: stop it or choose another runDir`, { pid: found.tag.pid });
      if (found.owner === this.ownerTag || (await isAlive(owner))) {
        throw new ConflictError(`the control socket ${this.admin.socketPath} belongs to the tgtd (pid ${found.tag.pid}) of a running prestage (pid ${owner.pid}): give each instance its own runDir`, { pid: found.tag.pid, owner: owner.pid });
      }
      this.o.logger?.warn({ pid: found.tag.pid, owner: owner.pid }, 'killing a tgtd left behind by a prestage that is gone');
      try {
        process.kill(found.tag.pid, 'SIGKILL');
      } catch {
        // gone already
      }
      await this.waitGone(found.tag);
    }
  }

  private async waitGone(tag: ProcessTag): Promise<void> {
    const deadline = performance.now() + this.o.stopTimeoutMs;
    while (await isAlive(tag)) {
      if (performance.now() > deadline) throw new UnavailableError(`the stale tgtd (pid ${tag.pid}) did not die after SIGKILL`, { pid: tag.pid });
      await sleep(20);
    }
  }

  /** One start: spawn, wait for the control socket, check the portal. Kills the child on any failure. */
  private launchOnce(): Promise<void> {
    const p = this.launch();
    this.launching = p;
    return p.finally(() => {
      if (this.launching === p) this.launching = undefined;
    });
  }

  private async launch(): Promise<void> {
    const tail: string[] = [];
    const child = spawn(
      this.setprivPath,
      ['--pdeathsig', 'KILL', '--', this.tgtdPath, '-f', '-C', String(this.o.controlPort), '-t', String(this.o.ioThreadsPerLun), '--iscsi', `portal=${this.o.portalText}`],
      {
        env: { ...process.env, TGT_IPC_SOCKET: this.o.socketBase, [TGTD_OWNER_ENV]: this.ownerTag },
        stdio: ['ignore', 'pipe', 'pipe'],
        // Its own process group: a Ctrl-C meant for prestage must not kill tgtd before prestage
        // has taken its targets down (the parent-death signal covers a prestage that dies).
        detached: true,
      },
    );
    const exited = exitOf(child);
    let gone: string | undefined;
    void exited.then((how) => {
      gone = how;
    });
    this.readLines(child, tail);
    const fail = async (message: string): Promise<never> => {
      child.kill('SIGKILL');
      await exited;
      const said = tail.length > 0 ? `; tgtd said: ${tail.join(' | ')}` : '';
      throw new UnavailableError(`${message}${said}`, { portal: this.o.portalText });
    };
    const deadline = performance.now() + this.o.startTimeoutMs;
    for (;;) {
      if (gone !== undefined) return fail(`tgtd exited while starting (${gone})`);
      try {
        await this.admin.systemInfo();
        break;
      } catch (err) {
        if (!isTgtadmError(err, 'unreachable')) return fail(`tgtd did not answer as expected: ${(err as Error).message}`);
      }
      if (performance.now() > deadline) return fail(`tgtd did not answer on ${this.admin.socketPath} within ${this.o.startTimeoutMs} ms`);
      await sleep(20);
    }
    let portals: string[];
    try {
      portals = await this.admin.portals();
    } catch (err) {
      return fail(`cannot list tgtd's portals: ${(err as Error).message}`);
    }
    if (portals.length !== 1 || portals[0] !== this.o.portalText) {
      return fail(`tgtd could not listen on ${this.o.portalText} (it listens on ${portals.join(', ') || 'nothing'} instead): is the port in use?`);
    }
    this.child = child;
    void exited.then((how) => this.onExit(child, how));
  }

  private readLines(child: ChildProcess, tail: string[]): void {
    for (const stream of [child.stdout, child.stderr]) {
      let rest = '';
      stream?.setEncoding('utf8');
      stream?.on('data', (chunk: string) => {
        const lines = (rest + chunk).split('\n');
        rest = lines.pop() ?? '';
        for (const raw of lines) {
          const line = raw.trim();
          if (line === '') continue;
          tail.push(line);
          if (tail.length > STDERR_TAIL) tail.shift();
          if (STARTUP_NOISE.test(line)) this.o.logger?.debug({ pid: child.pid, tgtd: line }, 'tgtd');
          else this.o.logger?.warn({ pid: child.pid, tgtd: line }, 'tgtd');
        }
      });
    }
  }

  private onExit(child: ChildProcess, how: string): void {
    if (this.child !== child) return;
    this.child = undefined;
    if (this._state !== 'RUNNING') return;
    this.o.logger?.error({ pid: child.pid, exit: how }, 'tgtd died; restarting it');
    if (performance.now() - this.runningSince >= this.o.stableAfterMs) this.attempt = 0;
    this.scheduleRestart();
  }

  private scheduleRestart(): void {
    this.setState('RESTARTING');
    const delay = Math.min(this.o.maxRestartDelayMs, this.o.restartDelayMs * 2 ** this.attempt);
    this.attempt++;
    this.restartTimer = setTimeout(() => void this.restart(), delay);
  }

  private async restart(): Promise<void> {
    if (!this.is('RESTARTING')) return;
    try {
      await this.launchOnce();
    } catch (err) {
      this.lastError = (err as Error).message;
      if (!this.is('RESTARTING')) return;
      this.o.logger?.error({ err, attempt: this.attempt }, 'tgtd did not restart; trying again');
      this.scheduleRestart();
      return;
    }
    if (!this.is('RESTARTING')) return; // stop() took over; it ends this child
    this._restarts++;
    this.lastError = undefined;
    this.setState('RUNNING');
    this.o.logger?.info({ pid: this.pid, restarts: this._restarts }, 'tgtd restarted');
    this.emitStarted(true);
  }

  /** Read through a call: an await may have changed the state where the compiler narrowed it. */
  private is(state: TgtdState): boolean {
    return this._state === state;
  }

  private setState(state: TgtdState): void {
    this._state = state;
    if (state === 'RUNNING') this.runningSince = performance.now();
    for (const wake of [...this.stateWaiters]) wake();
  }

  private emitStarted(restart: boolean): void {
    const pid = this.pid;
    if (pid === undefined) return;
    for (const listener of this.startedListeners) {
      try {
        listener({ pid, restart });
      } catch (err) {
        this.o.logger?.error({ err }, 'a tgtd start listener failed');
      }
    }
  }
}

/** Resolves (never rejects) when the child has exited, with how: `code 1`, `signal SIGKILL`. */
function exitOf(child: ChildProcess): Promise<string> {
  if (child.exitCode !== null) return Promise.resolve(`code ${child.exitCode}`);
  if (child.signalCode !== null) return Promise.resolve(`signal ${child.signalCode}`);
  return new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve(signal ? `signal ${signal}` : `code ${code ?? '?'}`));
    // A spawn that fails (setpriv missing) emits 'error' and maybe no 'exit'.
    child.once('error', (err) => resolve(`spawn error: ${err.message}`));
  });
}
