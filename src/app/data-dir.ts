import { homedir } from 'node:os';
import { join } from 'node:path';

/** `$PRESTAGE_DATA` (when not empty), else `~/.local/share/prestage`. */
export function defaultDataDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.PRESTAGE_DATA || join(homedir(), '.local', 'share', 'prestage');
}

/**
 * An address of this machine only: `localhost`, `::1` (bracketed or not) or 127.x.y.z written as
 * an address — a host *name* that merely starts with "127." may resolve anywhere.
 */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, '$1');
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** The admin token the first start writes into the data directory (mode 0600). */
export const ADMIN_TOKEN_FILE = 'admin.token';
