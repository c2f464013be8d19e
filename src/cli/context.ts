import type { Writable } from 'node:stream';
import { ApiClient, resolveServerUrl } from './client.js';
import { resolveToken, type TokenFlags } from './token-source.js';

/** Where a command writes and what it reads from its surroundings; tests pass their own. */
export interface CliIo {
  readonly stdout: Writable;
  /** Progress bars are drawn only when this is a terminal. */
  readonly stderr: Writable & { readonly isTTY?: boolean };
  readonly env: NodeJS.ProcessEnv;
  readonly cwd: string;
}

export function processIo(): CliIo {
  return { stdout: process.stdout, stderr: process.stderr, env: process.env, cwd: process.cwd() };
}

/** What every command gets: its output streams and, on first use, a client of the server. */
export class CliContext {
  private clientValue: ApiClient | undefined;

  constructor(
    readonly io: CliIo,
    /** Reads the global `--server`, `--token` and `--token-file` options once commander has parsed them. */
    private readonly globalFlags: () => TokenFlags & { readonly server?: string | undefined },
  ) {}

  get client(): ApiClient {
    if (this.clientValue) return this.clientValue;
    const flags = this.globalFlags();
    const url = resolveServerUrl(flags.server, this.io.env);
    return (this.clientValue = new ApiClient(url, resolveToken(flags, this.io.env, url)));
  }

  get interactive(): boolean {
    return this.io.stderr.isTTY === true;
  }

  out(text: string): void {
    this.io.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  }

  err(text: string): void {
    this.io.stderr.write(text.endsWith('\n') ? text : `${text}\n`);
  }

  async close(): Promise<void> {
    await this.clientValue?.close();
  }
}
