/**
 * tgt's administration, addressed at one tgtd: its control socket is
 * `$TGT_IPC_SOCKET.<control port>` (tgtd and tgtadm both read TGT_IPC_SOCKET; Debian 12 has tgt 1.0.85), so
 * several tgtd run side by side and a system tgtd at /var/run/tgtd is never touched. Targets,
 * LUNs, accounts, ACLs and connections go to the socket as tgtadm would send them (tgtd-ipc.ts):
 * a provision exports in a few requests, where a `tgtadm` process each cost ~20 ms and put a CHAP
 * secret on a command line. The system-wide rest (state, shutdown, portals) runs `tgtadm`
 * (execFile, no shell). Every argument is checked first, and a refusal becomes a TgtadmError
 * carrying tgt's own message.
 */
import { execFile } from 'node:child_process';
import { isAbsolute } from 'node:path';
import { PrestageError } from '../../domain/index.js';
import { checkChapSecret, checkChapUser, checkIscsiName } from './names.js';
import { parseAccounts, parseConnections, parsePortals, parseSystem, parseTargets, type TgtConnection, type TgtSystem, type TgtTarget } from './tgtadm-show.js';
import { TGT_MODE, TGT_OP, tgtdRequest, type TgtdRequest } from './tgtd-ipc.js';

/** Why tgtadm failed, as far as a caller needs to tell: tearing down what is gone already is fine. */
export type TgtadmReason = 'unreachable' | 'not-found' | 'exists' | 'busy' | 'refused';

/** tgtadm failed, or tgtd refused; `tgtMessage` is tgt's own words. */
export class TgtadmError extends PrestageError {
  constructor(
    readonly operation: string,
    readonly reason: TgtadmReason,
    readonly tgtMessage: string,
    options?: { cause?: unknown },
  ) {
    super(reason === 'unreachable' ? 'PRESTAGE_UNAVAILABLE' : 'PRESTAGE_INTERNAL', `tgtadm ${operation}: ${tgtMessage}`, { operation, reason }, options);
  }
}

export function isTgtadmError(e: unknown, reason?: TgtadmReason): e is TgtadmError {
  return e instanceof TgtadmError && (reason === undefined || e.reason === reason);
}

function reasonOf(message: string, exitCode: number | string | undefined): TgtadmReason {
  // 107 is ENOTCONN, 111 ECONNREFUSED, 2 ENOENT: tgtadm's exit code is the errno of its connect.
  if (exitCode === 107 || exitCode === 111 || exitCode === 2 || /tgt daemon|can't connect|Transport endpoint|Connection refused|tgtd closed/i.test(message)) return 'unreachable';
  if (/can't find|does not exist/.test(message)) return 'not-found';
  if (/already exists|already has/.test(message)) return 'exists';
  if (/still active|busy|Prevent Removal/.test(message)) return 'busy';
  return 'refused';
}

/** Backing stores the exporter may ask for (tgtd lists what it was built with in `systemInfo()`). */
export type BackingStoreType = 'rdwr' | 'aio' | 'rbd';

export interface TgtadmOptions {
  /** `$TGT_IPC_SOCKET`: the control socket is this path followed by `.<controlPort>`. */
  readonly socketBase: string;
  /** tgtd's `--control-port`. */
  readonly controlPort: number;
  /** The tgtadm binary; default `tgtadm` from PATH. */
  readonly command?: string;
  /** How long one tgtadm call may take (a stopped tgtd never answers); default 10 s. */
  readonly timeoutMs?: number;
}

function checkId(n: number, what: string, min: number, max: number): string {
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new TypeError(`${what} must be an integer in ${min}..${max}, got ${n}`);
  return String(n);
}
const checkTid = (tid: number) => Number(checkId(tid, 'target id', 1, 0x7fff_ffff));
const checkLun = (lun: number) => Number(checkId(lun, 'LUN', 1, 16383));

/**
 * One tgtd's administration. Every method is one tgtadm call (or one control-socket request) and
 * either succeeds or throws a TgtadmError; none retries.
 */
export class Tgtadm {
  private readonly command: string;
  private readonly timeoutMs: number;
  private readonly env: NodeJS.ProcessEnv;

  constructor(private readonly o: TgtadmOptions) {
    checkId(o.controlPort, 'control port', 0, 32767); // tgtd keeps it in a C short
    this.command = o.command ?? 'tgtadm';
    this.timeoutMs = o.timeoutMs ?? 10_000;
    // Debian installs tgtadm in /usr/sbin, which a non-login PATH may lack.
    this.env = { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin`, TGT_IPC_SOCKET: o.socketBase };
  }

  /** The control socket's path. */
  get socketPath(): string {
    return `${this.o.socketBase}.${this.o.controlPort}`;
  }

  async systemInfo(): Promise<TgtSystem> {
    return parseSystem(await this.run('show system', ['--op', 'show', '--mode', 'system']));
  }

  /** Portals tgtd listens on, as `address:port` (`[v6]:port`). */
  async portals(): Promise<string[]> {
    return parsePortals(await this.run('show portal', ['--lld', 'iscsi', '--op', 'show', '--mode', 'portal']));
  }

  async targets(): Promise<TgtTarget[]> {
    return parseTargets(await this.ask('show target', { mode: TGT_MODE.target, op: TGT_OP.show, params: '' }));
  }

  /** Every connection of the target's sessions (a session of several connections lists each). */
  async connections(tid: number): Promise<TgtConnection[]> {
    return parseConnections(await this.ask('show conn', { mode: TGT_MODE.connection, op: TGT_OP.show, tid: checkTid(tid), params: '' }));
  }

  /** Account names (tgt keeps accounts in one table shared by all targets). */
  async accounts(): Promise<string[]> {
    return parseAccounts(await this.ask('show account', { mode: TGT_MODE.account, op: TGT_OP.show, params: '' }));
  }

  async newTarget(tid: number, name: string): Promise<void> {
    checkIscsiName(name, 'target name');
    await this.ask('new target', { mode: TGT_MODE.target, op: TGT_OP.new, tid: checkTid(tid), params: `targetname=${name}` });
  }

  /** With `force`, a target with sessions is deleted too: its connections are closed and its LUNs go with it. */
  async deleteTarget(tid: number, opts: { readonly force?: boolean } = {}): Promise<void> {
    await this.ask('delete target', { mode: TGT_MODE.target, op: TGT_OP.delete, tid: checkTid(tid), force: opts.force === true, params: '' });
  }

  /** A LUN backed by a file or device `path` (or, for `rbd`, `pool/image`). */
  async newLun(tid: number, lun: number, backing: { readonly path: string; readonly type: BackingStoreType }): Promise<void> {
    const { path, type } = backing;
    // tgtadm sends `path=…,bstype=…` as one string that tgtd splits at ','.
    if (/[,\n\0]/.test(path) || (type !== 'rbd' && !isAbsolute(path))) throw new TypeError(`backing store path must be absolute and hold no ',' or newline: ${JSON.stringify(path)}`);
    await this.ask('new logicalunit', { mode: TGT_MODE.device, op: TGT_OP.new, tid: checkTid(tid), lun: checkLun(lun), params: `path=${path},bstype=${type}` });
  }

  async deleteLun(tid: number, lun: number): Promise<void> {
    await this.ask('delete logicalunit', { mode: TGT_MODE.device, op: TGT_OP.delete, tid: checkTid(tid), lun: checkLun(lun), params: '' });
  }

  /** Lets the initiator of this name log in to the target (tgt's ACL; without one nobody may). */
  async bindInitiator(tid: number, initiator: string): Promise<void> {
    checkIscsiName(initiator, 'initiator name');
    await this.ask('bind initiator', { mode: TGT_MODE.target, op: TGT_OP.bind, tid: checkTid(tid), params: `initiator-name=${initiator}` });
  }

  async unbindInitiator(tid: number, initiator: string): Promise<void> {
    checkIscsiName(initiator, 'initiator name');
    await this.ask('unbind initiator', { mode: TGT_MODE.target, op: TGT_OP.unbind, tid: checkTid(tid), params: `initiator-name=${initiator}` });
  }

  /** A CHAP account. The secret goes over the control socket, never on a command line. */
  async newAccount(user: string, secret: string): Promise<void> {
    checkChapUser(user);
    checkChapSecret(secret);
    await this.ask('new account', { mode: TGT_MODE.account, op: TGT_OP.new, params: `user=${user},password=${secret}` });
  }

  async deleteAccount(user: string): Promise<void> {
    checkChapUser(user);
    await this.ask('delete account', { mode: TGT_MODE.account, op: TGT_OP.delete, params: `user=${user}` });
  }

  /** Binds an account to the target: incoming (the initiator proves itself) or `outgoing` (the target does: mutual CHAP). */
  async bindAccount(tid: number, user: string, opts: { readonly outgoing?: boolean } = {}): Promise<void> {
    checkChapUser(user);
    await this.ask('bind account', { mode: TGT_MODE.account, op: TGT_OP.bind, tid: checkTid(tid), acDir: opts.outgoing ? 1 : 0, params: `user=${user}` });
  }

  /** Closes one connection at once; its initiator may log in again if the ACL still lets it. */
  async deleteConnection(tid: number, sid: number, cid: number): Promise<void> {
    checkId(sid, 'session id', 0, 0xffff);
    checkId(cid, 'connection id', 0, 0xffff_ffff);
    await this.ask('delete conn', { mode: TGT_MODE.connection, op: TGT_OP.delete, tid: checkTid(tid), sid, cid, params: '' });
  }

  /** `offline` refuses new logins and I/O on every target; `ready` is the normal state. */
  async setSystemState(state: 'offline' | 'ready'): Promise<void> {
    await this.run('update system', ['--op', 'update', '--mode', 'sys', '--name', 'State', '-v', state]);
  }

  /** Asks tgtd to exit; tgt refuses while any target exists. tgtadm returns once tgtd is gone. */
  async shutdown(): Promise<void> {
    await this.run('delete system', ['--op', 'delete', '--mode', 'system']);
  }

  /** One request on the control socket; resolves with tgtd's text (what tgtadm would print). */
  private async ask(operation: string, req: TgtdRequest): Promise<string> {
    let reply;
    try {
      reply = await tgtdRequest(this.socketPath, req, this.timeoutMs);
    } catch (err) {
      throw new TgtadmError(operation, 'unreachable', `can't reach tgtd at ${this.socketPath}: ${(err as Error).message}`, { cause: err });
    }
    if (reply.err !== 0) throw new TgtadmError(operation, reasonOf(reply.message, undefined), reply.message);
    return reply.text;
  }

  private run(operation: string, args: readonly string[]): Promise<string> {
    return new Promise((resolve, reject) => {
      execFile(this.command, ['-C', String(this.o.controlPort), ...args], { env: this.env, timeout: this.timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
        if (!err) return resolve(stdout);
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') return reject(new TgtadmError(operation, 'unreachable', `${this.command} not found: install tgt (apt-get install tgt)`, { cause: err }));
        if (err.killed) return reject(new TgtadmError(operation, 'unreachable', `no answer from tgtd at ${this.socketPath} within ${this.timeoutMs} ms`, { cause: err }));
        const message = stderr.trim().replace(/^tgtadm: /gm, '') || `exit code ${String(code)}`;
        reject(new TgtadmError(operation, reasonOf(message, code), message, { cause: err }));
      });
    });
  }
}
