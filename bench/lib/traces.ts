/**
 * Where the real demand traces live: `$PRESTAGE_TRACES` when set, else the repository's own
 * `data/traces/` (found from this module, so it works from any clone and any working
 * directory). Nothing outside the repository is looked at unless `$PRESTAGE_TRACES` says so.
 * A missing trace is an error naming where it looked.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** `data/traces/` of this checkout (bench/lib/ → ../../data/traces/). */
export const repoTracesDir = (): string => fileURLToPath(new URL('../../data/traces', import.meta.url));

export function tracesDir(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env.PRESTAGE_TRACES;
  const dir = fromEnv !== undefined && fromEnv !== '' ? fromEnv : repoTracesDir();
  if (!existsSync(join(dir, 'azure-v1', 'v1.dev.txt'))) {
    const where = dir === fromEnv ? `${dir} ($PRESTAGE_TRACES)` : `${dir} (the repository's data/traces; PRESTAGE_TRACES is not set)`;
    throw new Error(`the Azure trace (azure-v1/v1.dev.txt) is not in ${where}`);
  }
  return dir;
}

/** The Azure VM trace folder (v1.train.txt, v1.dev.txt, flavor_map.txt, README.md, LICENSE). */
export const azureTraceDir = (env?: NodeJS.ProcessEnv): string => join(tracesDir(env), 'azure-v1');
