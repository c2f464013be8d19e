import { it, type TestContext } from 'node:test';

/**
 * Tests that share one costly setup (a bootable golden, a server). When the setup fails, every
 * step fails with its error — named, never skipped — instead of the suite dying in `before`.
 */
export function guardedSteps(): { setupFailed: (e: unknown) => void; step: (name: string, fn: (t: TestContext) => Promise<void>) => void } {
  let setupError: Error | undefined;
  return {
    setupFailed: (e) => {
      setupError = e instanceof Error ? e : new Error(String(e));
    },
    step: (name, fn) => {
      it(name, async (t) => {
        if (setupError !== undefined) throw setupError;
        await fn(t);
      });
    },
  };
}
