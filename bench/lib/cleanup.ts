import { log } from './log.js';

/**
 * Undo steps run once, last registered first: at the end of a bench, on failure, and on
 * SIGINT/SIGTERM (after which the process exits).
 */
const steps: { what: string; run: () => Promise<void> }[] = [];
let running: Promise<void> | undefined;
let signalled = false;

export function onCleanup(what: string, run: () => Promise<void>): void {
  steps.push({ what, run });
}

export function cleanup(): Promise<void> {
  running ??= (async () => {
    for (let step = steps.pop(); step; step = steps.pop()) {
      try {
        await step.run();
      } catch (e) {
        log(`cleanup: ${step.what} failed: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
  })();
  return running;
}

/** True once a signal started the cleanup (what fails after that is no news). */
export function interrupted(): boolean {
  return signalled;
}

export function cleanupOnSignals(): void {
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    process.once(signal, () => {
      signalled = true;
      log(`${signal}: cleaning up`);
      void cleanup().finally(() => process.exit(code));
    });
  }
}
