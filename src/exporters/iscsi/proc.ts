/**
 * What /proc tells about processes that are not our children: whether one still runs (by pid
 * and start time, so a reused pid is not mistaken for it), and which tgtd serves a given
 * control socket. Linux only, like tgt.
 */
import { readdir, readFile } from 'node:fs/promises';

/** A process named by pid and start time (clock ticks after boot): unique for the machine's uptime. */
export interface ProcessTag {
  readonly pid: number;
  readonly startTime: number;
}

export function formatTag(tag: ProcessTag): string {
  return `${tag.pid}:${tag.startTime}`;
}

export function parseTag(text: string | undefined): ProcessTag | undefined {
  const m = /^(\d+):(\d+)$/.exec(text ?? '');
  return m?.[1] && m[2] ? { pid: Number(m[1]), startTime: Number(m[2]) } : undefined;
}

/** State letter and start time from /proc/PID/stat; undefined when there is no such process. */
async function statOf(pid: number): Promise<{ state: string; startTime: number } | undefined> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may hold spaces or ')': fields follow the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const state = rest[0];
  const startTime = Number(rest[19]); // field 22
  return state === undefined || !Number.isFinite(startTime) ? undefined : { state, startTime };
}

export async function tagOf(pid: number): Promise<ProcessTag | undefined> {
  const s = await statOf(pid);
  return s && { pid, startTime: s.startTime };
}

/** Whether the tagged process still runs (a zombie has ended: only its exit status is left). */
export async function isAlive(tag: ProcessTag): Promise<boolean> {
  const s = await statOf(tag.pid);
  return s !== undefined && s.startTime === tag.startTime && s.state !== 'Z' && s.state !== 'X';
}

/** A tgtd found on the machine, with the environment that names its control socket and owner. */
export interface FoundTgtd {
  readonly tag: ProcessTag;
  readonly socketBase: string;
  readonly controlPort: number;
  /** The value of `ownerEnv` in its environment, when it has one. */
  readonly owner: string | undefined;
}

/**
 * Every tgtd whose control socket is `socketBase.controlPort`. Processes we may not read (another
 * user's) are skipped: a tgtd of ours runs as we do.
 */
export async function findTgtd(socketBase: string, controlPort: number, ownerEnv: string): Promise<FoundTgtd[]> {
  const found: FoundTgtd[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    try {
      if ((await readFile(`/proc/${pid}/comm`, 'utf8')).trim() !== 'tgtd') continue;
      const env = parseNulList(await readFile(`/proc/${pid}/environ`, 'latin1'));
      const base = env.get('TGT_IPC_SOCKET');
      if (base !== socketBase) continue;
      const port = controlPortOf((await readFile(`/proc/${pid}/cmdline`, 'latin1')).split('\0'));
      if (port !== controlPort) continue;
      const tag = await tagOf(pid);
      if (tag) found.push({ tag, socketBase: base, controlPort: port, owner: env.get(ownerEnv) });
    } catch {
      // Gone meanwhile, or not ours to read.
    }
  }
  return found;
}

/** tgtd's `-C N` / `--control-port N` (`--control-port=N`), default 0. */
export function controlPortOf(argv: readonly string[]): number {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? '';
    if (a === '-C' || a === '--control-port') return Number(argv[i + 1]);
    if (a.startsWith('--control-port=')) return Number(a.slice('--control-port='.length));
    if (/^-C\d+$/.test(a)) return Number(a.slice(2));
  }
  return 0;
}

function parseNulList(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const item of text.split('\0')) {
    const eq = item.indexOf('=');
    if (eq > 0) out.set(item.slice(0, eq), item.slice(eq + 1));
  }
  return out;
}
