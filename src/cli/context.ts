import type { Writable } from 'node:stream';
import { ApiClient, resolveServerUrl } from './client.js';
import { resolveToken, type TokenFlags } from './token-source.js';

/** Where a command writes and what it reads from its surroundings; tests pass their own. */
export interface CliIo {
  /** `--watch` redraws in place when this is a terminal, and `status` fits its width. */
  readonly stdout: Writable & { readonly isTTY?: boolean; readonly columns?: number; readonly rows?: number };
  /** Progress bars are drawn only when this is a terminal. */
  readonly stderr: Writable & { readonly isTTY?: boolean };
  readonly env: NodeJS.ProcessEnv;
  readonly cwd: string;
  /** Stands for Ctrl-C (tests abort it); without it, SIGINT is. */
  readonly interrupt?: AbortSignal;
}

export function processIo(): CliIo {
  return { stdout: process.stdout, stderr: process.stderr, env: process.env, cwd: process.cwd() };
}

/** What every command gets: its output streams and, on first use, a client of the server. */
export class CliContext {
  private clientValue: ApiClient | undefined;
  private sigint: { readonly controller: AbortController; readonly stop: () => void } | undefined;

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

  /**
   * Aborted by Ctrl-C. A command that runs until stopped (--follow, --watch) waits on it and then
   * ends as it should (exit code 0), instead of the process being killed mid-line.
   */
  interruption(): AbortSignal {
    if (this.io.interrupt) return this.io.interrupt;
    if (!this.sigint) {
      const controller = new AbortController();
      const onSigint = () => controller.abort();
      process.once('SIGINT', onSigint);
      this.sigint = { controller, stop: () => process.off('SIGINT', onSigint) };
    }
    return this.sigint.controller.signal;
  }

  async close(): Promise<void> {
    this.sigint?.stop();
    await this.clientValue?.close();
  }
}
