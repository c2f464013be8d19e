/**
 * The real iSCSI clients from tests: libiscsi's tools (Debian libiscsi-bin) and qemu's iscsi
 * driver (qemu-block-extra). Run asynchronously: the tgtd under test is supervised by this process.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';

const TOOLS: Record<string, string> = {
  'iscsi-ls': 'libiscsi-bin',
  'iscsi-inq': 'libiscsi-bin',
  'iscsi-readcapacity16': 'libiscsi-bin',
  'iscsi-perf': 'libiscsi-bin',
  'qemu-img': 'qemu-utils',
  'qemu-io': 'qemu-utils',
  tgtd: 'tgt',
  tgtadm: 'tgt',
  setpriv: 'util-linux',
};

const env = { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` };

/** Fails loudly, naming the Debian package, when a tool the tests need is missing. */
export function requireIscsiTools(): void {
  const missing = Object.entries(TOOLS).filter(([tool]) => spawnSync('sh', ['-c', `command -v ${tool}`], { env }).status !== 0);
  if (missing.length > 0) throw new Error(`iSCSI tools missing: ${missing.map(([t, pkg]) => `${t} (apt-get install ${pkg})`).join(', ')}`);
  // qemu's iscsi driver is a module of its own package.
  const drivers = spawnSync('qemu-img', ['--help'], { env, encoding: 'utf8' }).stdout;
  if (!/\biscsi\b/.test(drivers)) throw new Error("qemu-img has no iscsi driver (apt-get install qemu-block-extra)");
}

export interface ToolRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export function runTool(cmd: string, args: readonly string[], extraEnv: Record<string, string> = {}): Promise<ToolRun> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { env: { ...env, ...extraEnv }, timeout: 60_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err && (err as NodeJS.ErrnoException).code === 'ENOENT') reject(new Error(`${cmd} not found (scripts/install.sh installs it)`));
      else resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

/** A TCP port nobody listens on now (tgtd checks it got it: a clash fails loudly). */
export { freePort } from './server.js';

/** How an initiator logs in: its name and, optionally, CHAP both ways. */
export interface Login {
  readonly initiator: string;
  readonly user?: string;
  readonly secret?: string;
  /** Mutual CHAP: what the initiator expects the target to prove. */
  readonly targetUser?: string;
  readonly targetSecret?: string;
}

/** libiscsi's URL: `iscsi://[user%secret@]portal[/target/lun]`; mutual CHAP goes in the environment. */
export function iscsiUrl(portal: string, login: Login, target?: string, lun?: number): string {
  const cred = login.user !== undefined ? `${login.user}%${login.secret ?? ''}@` : '';
  return `iscsi://${cred}${portal}${target === undefined ? '' : `/${target}/${lun ?? 1}`}`;
}

function mutualEnv(login: Login): Record<string, string> {
  return login.targetUser === undefined ? {} : { LIBISCSI_CHAP_TARGET_USERNAME: login.targetUser, LIBISCSI_CHAP_TARGET_PASSWORD: login.targetSecret ?? '' };
}

/** `iscsi-ls -s`: the targets discovery shows this initiator, with their LUNs. */
export function iscsiLs(portal: string, login: Login): Promise<ToolRun> {
  return runTool('iscsi-ls', ['-i', login.initiator, '-s', iscsiUrl(portal, login)], mutualEnv(login));
}

export function iscsiInq(portal: string, login: Login, target: string, lun = 1): Promise<ToolRun> {
  return runTool('iscsi-inq', ['-i', login.initiator, iscsiUrl(portal, login, target, lun)], mutualEnv(login));
}

/** The LUN's size in bytes from READ CAPACITY(16), or the failed run. */
export async function readCapacity(portal: string, login: Login, target: string, lun = 1): Promise<number | ToolRun> {
  const r = await runTool('iscsi-readcapacity16', ['-i', login.initiator, iscsiUrl(portal, login, target, lun)], mutualEnv(login));
  const m = /Total size:(\d+)/.exec(r.stdout);
  return r.code === 0 && m?.[1] ? Number(m[1]) : r;
}

/**
 * qemu's iscsi driver as a `json:` filename. qemu parses an iscsi:// URL too, but takes no
 * initiator name from one (qemu-img has no -iscsi option), and the target lets in only the
 * host's name. The secret goes through a `--object secret`.
 */
export function qemuIscsi(portal: string, login: Login, target: string, lun = 1): { filename: string; objects: string[] } {
  const file: Record<string, unknown> = { driver: 'iscsi', transport: 'tcp', portal, target, lun, 'initiator-name': login.initiator };
  const objects: string[] = [];
  if (login.user !== undefined) {
    file.user = login.user;
    file['password-secret'] = 'chap0';
    objects.push('--object', `secret,id=chap0,data=${login.secret ?? ''}`);
  }
  return { filename: `json:${JSON.stringify({ driver: 'raw', file })}`, objects };
}

/** A bound on a wait that would otherwise hang the suite, not a measure of speed. */
const SESSION_END_MS = 60_000;

/**
 * A session that stays logged in and reading (libiscsi's iscsi-perf), until the target ends it
 * for good; `exited` resolves with its exit code and output.
 */
export function holdSession(portal: string, login: Login, target: string): { child: ChildProcess; exited: Promise<{ code: number | null; output: string }> } {
  // -x 0: after a dropped connection, one reconnect and no retry of a failed one (libiscsi
  // retries forever by default).
  const child = spawn('iscsi-perf', ['-x', '0', '-i', login.initiator, iscsiUrl(portal, login, target, 1)], { env: { ...env, ...mutualEnv(login) }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (b: Buffer) => (output = (output + b.toString()).slice(-4000)));
  child.stderr.on('data', (b: Buffer) => (output = (output + b.toString()).slice(-4000)));
  const exited = new Promise<{ code: number | null; output: string }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`iscsi-perf still runs after ${SESSION_END_MS} ms: its session was not ended for good\n${output}`)), SESSION_END_MS);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
  exited.catch(() => undefined); // awaited by the test that needs it; not every test does
  return { child, exited };
}
