/** Running the real NBD clients (libnbd's and qemu's tools) from tests, asynchronously: the server under test may live in this process. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';

// Debian's python3 must come first for nbdsh; the other tools live there too.
export const nbdToolEnv = { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}`, LIBNBD_DEBUG: '0' };

export interface ToolRun {
  code: number;
  stdout: string;
  stderr: string;
}

export function run(cmd: string, args: readonly string[]): Promise<ToolRun> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { env: nbdToolEnv, timeout: 120_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err && (err as NodeJS.ErrnoException).code === 'ENOENT') reject(new Error(`${cmd} not found (scripts/install.sh installs it)`));
      else resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

/** Runs a tool that must succeed; its stdout. */
export async function ok(cmd: string, args: readonly string[]): Promise<string> {
  const r = await run(cmd, args);
  assert.equal(r.code, 0, `${cmd} ${args.join(' ')} failed (${r.code}):\n${r.stderr}${r.stdout}`);
  return r.stdout;
}
