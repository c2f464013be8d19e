/**
 * Where the CPU went over a stretch of a bench (Linux /proc; figures are missing elsewhere):
 * the machine as a whole, this process (the bench's own client), and given groups of processes
 * (servers, database backends).
 */
import { readFileSync, readdirSync } from 'node:fs';
import { availableParallelism } from 'node:os';

/** utime + stime of a process in ms (clock ticks of 10 ms), or undefined when it is gone. */
export function processCpuMs(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return undefined;
  }
}

/** Busy and total ms of all CPUs together since boot (/proc/stat), or undefined. */
function machineMs(): { busy: number; total: number } | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const total = v.reduce((a, b) => a + b, 0);
    // idle + iowait are not busy.
    const busy = total - (v[3] ?? 0) - (v[4] ?? 0);
    return { busy: busy * 10, total: total * 10 };
  } catch {
    return undefined;
  }
}

/** Pids of every process whose command is `comm` (e.g. every PostgreSQL process on the machine). */
export function pidsNamed(comm: string): number[] {
  const pids: number[] = [];
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return pids;
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if (readFileSync(`/proc/${e}/comm`, 'utf8').trim() === comm) pids.push(Number(e));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

export interface CpuMark {
  readonly at: number;
  readonly client: NodeJS.CpuUsage;
  readonly machine: { busy: number; total: number } | undefined;
  readonly procs: ReadonlyMap<number, number>;
}

/** Marks the CPU counters now, of the machine, this process and `pids`. */
export function markCpu(pids: Iterable<number>): CpuMark {
  const procs = new Map<number, number>();
  for (const pid of pids) {
    const ms = processCpuMs(pid);
    if (ms !== undefined) procs.set(pid, ms);
  }
  return { at: performance.now(), client: process.cpuUsage(), machine: machineMs(), procs };
}

export interface CpuSpent {
  readonly wallMs: number;
  /** CPUs busy on average (1 = one CPU all along), over the whole machine; undefined when unknown. */
  readonly machine: number | undefined;
  readonly cpus: number;
  /** CPUs used on average by this process. */
  readonly client: number;
  /** CPUs used on average by each group (processes that appeared meanwhile count in full; gone ones not at all). */
  readonly groups: Readonly<Record<string, number>>;
}

/** What was spent from `from` to now; `groups` names the pids to add up. */
export function cpuSince(from: CpuMark, groups: Readonly<Record<string, readonly number[]>>): CpuSpent {
  const wallMs = performance.now() - from.at;
  const c = process.cpuUsage(from.client);
  const m = machineMs();
  const share = (ms: number) => ms / Math.max(wallMs, 1);
  const out: Record<string, number> = {};
  for (const [name, pids] of Object.entries(groups)) {
    let ms = 0;
    for (const pid of new Set(pids)) {
      const now = processCpuMs(pid);
      if (now !== undefined) ms += now - (from.procs.get(pid) ?? 0);
    }
    out[name] = share(ms);
  }
  return {
    wallMs,
    machine: m && from.machine ? ((m.busy - from.machine.busy) / Math.max(m.total - from.machine.total, 1)) * availableParallelism() : undefined,
    cpus: availableParallelism(),
    client: share((c.user + c.system) / 1000),
    groups: out,
  };
}

/**
 * `machine 1.93/2 CPUs busy: servers 1.10, postgres 0.55, bench client 0.21`, and with
 * `disjoint` (groups that share no process) `, everything else 0.07`: the machine's busy CPUs
 * less this process and those groups.
 */
export function describeCpu(s: CpuSpent, disjoint?: readonly string[]): string {
  const f = (x: number) => x.toFixed(2);
  const parts = [...Object.entries(s.groups).map(([k, v]) => `${k} ${f(v)}`), `bench client ${f(s.client)}`];
  if (disjoint && s.machine !== undefined) parts.push(`everything else ${f(Math.max(0, s.machine - s.client - disjoint.reduce((a, g) => a + (s.groups[g] ?? 0), 0)))}`);
  return `${s.machine === undefined ? 'machine ?' : `machine ${f(s.machine)}/${s.cpus}`} CPUs busy: ${parts.join(', ')}`;
}
