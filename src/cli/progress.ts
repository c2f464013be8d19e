import { setTimeout as sleep } from 'node:timers/promises';
import { SingleBar } from 'cli-progress';
import { formatBytes } from '../domain/index.js';
import type { CliContext } from './context.js';

/**
 * Calls `tick` every `everyMs` (first after `delayMs`) until `pending` settles. A tick that
 * fails is ignored: the progress shown is a courtesy, the pending request is what counts.
 */
export async function pollWhile(pending: Promise<unknown>, tick: () => Promise<void>, everyMs: number, delayMs = everyMs): Promise<void> {
  const stop = new AbortController();
  const settled = pending.then(
    () => stop.abort(),
    () => stop.abort(),
  );
  let wait = delayMs;
  while (!stop.signal.aborted) {
    try {
      await sleep(wait, undefined, { signal: stop.signal });
    } catch {
      break;
    }
    // A tick still running when the request settles is left behind, not waited for.
    await Promise.race([tick().catch(() => undefined), settled]);
    wait = everyMs;
  }
  await settled;
}

/** A progress bar on stderr, drawn from the first `update` on; clears itself when stopped. */
export class ByteBar {
  private bar: SingleBar | undefined;

  constructor(
    private readonly ctx: CliContext,
    /** Show `done / total` bytes after the percentage; off where bytes are work, not size (copy + verify). */
    private readonly showBytes = true,
  ) {}

  update(doneBytes: number, totalBytes: number, label: string): void {
    const payload = { label, doneText: formatBytes(doneBytes), totalText: formatBytes(totalBytes) };
    if (!this.bar) {
      this.bar = new SingleBar({
        stream: this.ctx.io.stderr,
        format: this.showBytes ? '{label} [{bar}] {percentage}% {doneText} / {totalText}' : '{label} [{bar}] {percentage}%',
        hideCursor: false, // a Ctrl-C mid-bar would leave the cursor hidden
        clearOnComplete: true,
        barsize: 30,
      });
      this.bar.start(Math.max(totalBytes, 1), doneBytes, payload);
      return;
    }
    this.bar.setTotal(Math.max(totalBytes, 1));
    this.bar.update(doneBytes, payload);
  }

  stop(): void {
    this.bar?.stop();
    this.bar = undefined;
  }
}
