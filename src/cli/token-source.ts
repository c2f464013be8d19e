import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ADMIN_TOKEN_FILE, defaultDataDir, isLoopback } from '../app/data-dir.js';
import { InputError, errnoCode } from '../domain/index.js';

export interface TokenFlags {
  readonly token?: string | undefined;
  readonly tokenFile?: string | undefined;
}

function readTokenFile(file: string, flag: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new InputError(`${flag} ${file}: cannot read it (${errnoCode(e) ?? String(e)})`, { field: 'tokenFile' });
  }
  const token = text.trim();
  if (token === '') throw new InputError(`${flag} ${file}: the file is empty`, { field: 'tokenFile' });
  return token;
}

/**
 * The API token a command sends: `--token`, `$PRESTAGE_TOKEN`, `--token-file`,
 * `$PRESTAGE_TOKEN_FILE`, and last the admin token the local server wrote into its data
 * directory — only when the server is on this machine, so that token never goes elsewhere.
 */
export function resolveToken(flags: TokenFlags, env: NodeJS.ProcessEnv, server: URL): string | undefined {
  if (flags.token !== undefined && flags.token.trim() !== '') return flags.token.trim();
  if (env.PRESTAGE_TOKEN !== undefined && env.PRESTAGE_TOKEN.trim() !== '') return env.PRESTAGE_TOKEN.trim();
  if (flags.tokenFile !== undefined) return readTokenFile(flags.tokenFile, '--token-file');
  if (env.PRESTAGE_TOKEN_FILE !== undefined && env.PRESTAGE_TOKEN_FILE !== '') return readTokenFile(env.PRESTAGE_TOKEN_FILE, '$PRESTAGE_TOKEN_FILE');
  if (!isLoopback(server.hostname)) return undefined;
  try {
    return readFileSync(join(defaultDataDir(env), ADMIN_TOKEN_FILE), 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}
