import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
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
  stderr(): string;
  /** Sends a JSON request to the API and parses the reply. */
  call<T = unknown>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }>;
  kill(signal: NodeJS.Signals): Promise<void>;
}

/** `prestage serve` as a user starts it, in a child process, ready once /healthz answers. */
export async function startServe(dataDir: string, extraArgs: readonly string[] = []): Promise<ServeProcess> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(process.execPath, [BIN, 'serve', '--data', dataDir, '--listen', `127.0.0.1:${port}`, '--nbd-listen', '127.0.0.1:0', '--log-level', 'warn', ...extraArgs], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
  await waitFor(
    'prestage serve to answer /healthz',
    async () => {
      if (child.exitCode !== null) throw new Error(`prestage serve exited ${child.exitCode}: ${err}`);
      const res = await fetch(`${url}/healthz`).catch(() => undefined);
      return res?.ok === true;
    },
    60_000,
    100,
  );
  return {
    url,
    child,
    stderr: () => err,
    async call<T>(method: string, path: string, body?: unknown) {
      const res = await fetch(url + path, {
        method,
        ...(body !== undefined && { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
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
