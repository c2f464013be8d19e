/**
 * Where a V8 CPU profile (`node --cpu-prof`) spent its time, readable without DevTools: self time
 * per function, per file, and per nearest frame of our own code (`src/`, or `dist/` for a server
 * run from the build), idle time left out.
 * Only the samples inside the given time windows count, so one profile of a server that ran
 * several tests can be read per test.
 *
 * V8 samples wall time: a sample taken while the thread waits for a CPU (or in a syscall) counts
 * for the function on top of the stack, as busy time.
 */
import { readFile } from 'node:fs/promises';
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  readonly children?: readonly number[];
}

interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  /** µs of the monotonic clock (process.hrtime's, in µs, on Linux). */
  readonly startTime: number;
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

/** [from, to] in µs of the monotonic clock: `process.hrtime.bigint() / 1000n`. */
export type Window = readonly [number, number];

export const nowUs = (): number => Number(process.hrtime.bigint() / 1000n);

function place(url: string, root: string): string {
  if (url === '') return '';
  const path = url.startsWith('file://') ? fileURLToPath(url) : url;
  const rel = path.startsWith(root) ? relative(root, path) : path;
  return rel.replace(/^.*node_modules\//, 'node_modules/');
}

/** Our own code: the sources (run through tsx) or their build (a `prestage serve` runs dist/). */
const isOurs = (where: string) => where.startsWith('src/') || where.startsWith('dist/');

/**
 * Lines describing the `top` functions and files by self time, as shares of the busy time in the
 * windows (all of the profile when none are given).
 */
export async function summarizeProfile(path: string, root: string, windows?: readonly Window[], top = 12): Promise<string[]> {
  const profile = JSON.parse(await readFile(path, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

  const selfUs = new Map<number, number>();
  let t = profile.startTime;
  profile.samples.forEach((id, i) => {
    const dt = profile.timeDeltas[i] ?? 0;
    t += dt;
    if (windows && !windows.some(([from, to]) => t >= from && t <= to)) return;
    selfUs.set(id, (selfUs.get(id) ?? 0) + dt);
  });

  const label = (frame: ProfileNode['callFrame']) => {
    const where = place(frame.url, root);
    // tsx compiles a file to one line: its line numbers say nothing.
    const line = where.startsWith('src/') || where.startsWith('bench/') || where === '' ? '' : `:${frame.lineNumber + 1}`;
    return `${frame.functionName || '(anonymous)'}${where ? ` ${where}${line}` : ''}`;
  };
  /** The nearest caller of a node (itself included) in our own code, or undefined. */
  const ours = (id: number): string | undefined => {
    for (let n: number | undefined = id; n !== undefined; n = parent.get(n)) {
      const frame = byId.get(n)?.callFrame;
      if (frame && isOurs(place(frame.url, root))) return label(frame);
    }
    return undefined;
  };

  const fns = new Map<string, number>();
  const files = new Map<string, number>();
  const under = new Map<string, number>();
  const add = (m: Map<string, number>, k: string, us: number) => m.set(k, (m.get(k) ?? 0) + us);
  let busy = 0;
  let idle = 0;
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (node === undefined) continue;
    const frame = node.callFrame;
    if (frame.functionName === '(idle)') {
      idle += us;
      continue;
    }
    busy += us;
    // A native function is named after its JS caller too: `read` alone says little.
    const caller = frame.url === '' && parent.has(id) ? byId.get(parent.get(id)!)?.callFrame : undefined;
    add(fns, caller && caller.functionName !== '(root)' ? `${label(frame)} ← ${label(caller)}` : label(frame), us);
    add(files, place(frame.url, root) || frame.functionName, us);
    add(under, ours(id) ?? '(not under src/ or dist/)', us);
  }
  const pct = (us: number) => `${((100 * us) / Math.max(busy, 1)).toFixed(1).padStart(5)} %`;
  const ranked = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]).slice(0, top);
  return [
    `busy ${(busy / 1e6).toFixed(2)} s, idle ${(idle / 1e6).toFixed(2)} s; self time by function:`,
    ...ranked(fns).map(([fn, us]) => `  ${pct(us)}  ${fn}`),
    'self time by file:',
    ...ranked(files).map(([file, us]) => `  ${pct(us)}  ${file}`),
    'time under the nearest function of src/ (or dist/):',
    ...ranked(under).map(([fn, us]) => `  ${pct(us)}  ${fn}`),
  ];
}
