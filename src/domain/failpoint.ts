/**
 * Named crash points for the crash tests. Compiled in everywhere, inert unless the environment
 * variable PRESTAGE_FAILPOINTS lists the point's name (comma-separated): then the process kills
 * itself with SIGKILL when it gets there, as a power cut or the OOM killer would, so that a test
 * can restart it and check that every invariant held. Never set in production.
 */
const armed: ReadonlySet<string> = new Set(
  (globalThis.process?.env?.['PRESTAGE_FAILPOINTS'] ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== ''),
);

/** Every point, so a test can walk them all and a typo is a type error. */
export const FAILPOINTS = [
  'import.after-temp',
  'import.after-seal',
  'copy.after-insert',
  'copy.before-ready',
  'claim.after-claim',
  'export.after-export',
  'release.after-unmap',
  'release.after-remove',
  'template.after-scratch',
  'template.after-seal',
  'rollover.after-discard',
] as const;
export type FailpointName = (typeof FAILPOINTS)[number];

export function failpoint(name: FailpointName): void {
  if (armed.size === 0 || !armed.has(name)) return;
  globalThis.process.stderr.write(`prestage: failpoint ${name} reached: SIGKILL\n`);
  globalThis.process.kill(globalThis.process.pid, 'SIGKILL');
}
