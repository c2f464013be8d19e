import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitFor } from './files.js';

export const BIN = fileURLToPath(new URL('../../bin/prestage.js', import.meta.url));

/** A port nothing listens on right now: bind port 0, read what the kernel gave, let it go. */
export async function freePort(): Promise<number> {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const addr = srv.address();
  assert.ok(addr !== null && typeof addr === 'object');
  srv.close();
  await once(srv, 'close');
  return addr.port;
}

export interface ServeProcess {
  readonly url: string;
  readonly child: ChildProcess;
  /** The admin token the server wrote on its first start. */
  readonly token: string;
  /** What a CLI run needs to reach this server: PRESTAGE_URL and PRESTAGE_TOKEN. */
  readonly env: NodeJS.ProcessEnv;
  stderr(): string;
  /** Sends a JSON request to the API and parses the reply. */
  call<T = unknown>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }>;
  kill(signal: NodeJS.Signals): Promise<void>;
}

/**
 * `prestage serve` as a user starts it, in a child process, ready once /healthz answers.
 * `env` is added to this process's environment for the child (e.g. PRESTAGE_FAILPOINTS).
 */
/** Until startServe returns, nobody else holds the child: on a failure it must not outlive the test run. */
async function guardChild<T>(child: ChildProcess, step: Promise<T>): Promise<T> {
  try {
    return await step;
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
}

export async function startServe(dataDir: string, extraArgs: readonly string[] = [], env: NodeJS.ProcessEnv = {}): Promise<ServeProcess> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(process.execPath, [BIN, 'serve', '--data', dataDir, '--listen', `127.0.0.1:${port}`, '--nbd-listen', '127.0.0.1:0', '--log-level', 'warn', '--import-dir', tmpdir(), ...extraArgs], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, ...env },
  });
  let err = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
  await guardChild(child, waitFor(
    'prestage serve to answer /healthz',
    async () => {
      if (child.exitCode !== null) throw new Error(`prestage serve exited ${child.exitCode}: ${err}`);
      const res = await fetch(`${url}/healthz`).catch(() => undefined);
      return res?.ok === true;
    },
    60_000,
    100,
  ));
  const token = (await guardChild(child, readFile(join(dataDir, 'admin.token'), 'utf8'))).trim();
  return {
    url,
    child,
    token,
    env: { PRESTAGE_URL: url, PRESTAGE_TOKEN: token },
    stderr: () => err,
    async call<T>(method: string, path: string, body?: unknown) {
      const res = await fetch(url + path, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
        ...(body !== undefined && { body: JSON.stringify(body) }),
      });
      const text = await res.text();
      return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T };
    },
    async kill(signal) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill(signal);
      await exited;
    },
  };
}
