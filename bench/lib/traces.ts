/**
 * Where the real demand traces live: `$PRESTAGE_TRACES`, else `shared/traces` beside the
 * checkout (the layout of this project's machines), else /work/shared/traces (for a clone
 * made elsewhere on them). A missing trace is an error naming where it looked.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export function tracesDir(env: NodeJS.ProcessEnv = process.env): string {
  const candidates = [env.PRESTAGE_TRACES, fileURLToPath(new URL('../../../shared/traces/', import.meta.url)), '/work/shared/traces'].filter((d): d is string => d !== undefined && d !== '');
  const found = candidates.find((d) => existsSync(join(d, 'azure-v1', 'v1.dev.txt')));
  if (found === undefined) throw new Error(`the Azure trace (azure-v1/v1.dev.txt) is in none of ${candidates.join(', ')}; set PRESTAGE_TRACES to its folder`);
  return found;
}

/** The Azure VM trace folder (v1.train.txt, v1.dev.txt, README.md). */
export const azureTraceDir = (env?: NodeJS.ProcessEnv): string => join(tracesDir(env), 'azure-v1');
